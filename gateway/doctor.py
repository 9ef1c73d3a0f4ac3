"""`gateway doctor`: is this deployment healthy, and if not, what to do.

Each check gives one finding: ok, or what is wrong and what to do about it. The checks
use their own connections (not a gateway's services) so that they work, and say
something useful, exactly when the gateway itself cannot start.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.heartbeat import TTL_SECONDS, live_workers
from gateway.settings import Settings
from gateway.storage.db import head_revision, make_engine, schema_state
from gateway.storage.health import database_now, queue_health
from gateway.storage.partitions import PARTITIONED, day_of_id, existing_partitions, is_partitioned

# Each check's time limit: a database or Redis that does not answer in this is down.
CHECK_SECONDS = 10.0
# PostgreSQL: days ahead that partitions must cover (retention runs make 14, hourly).
MIN_PARTITION_DAYS_AHEAD = 2


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # database, schema, redis, workers, queue, clock, partitions (PostgreSQL)
    ok: bool
    message: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _problem(exc: BaseException) -> str:
    """The error in one line; the driver's own words rather than SQLAlchemy's wrapper."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(settings: Settings) -> str:
    if settings.database_url is None:
        return f"the SQLite file {(settings.data_dir / 'gateway.db').resolve()}"
    url = make_url(settings.sqlalchemy_url)
    return f"{url.get_backend_name()} at {url.host or 'localhost'}:{url.port or ''}/{url.database}"


async def diagnose(
    settings: Settings, *, max_lag_seconds: float = 60.0, max_skew_seconds: float = 2.0
) -> list[Finding]:
    """Every check's finding, in order; later checks that need an unreachable part say
    so instead of failing."""
    findings: list[Finding] = []
    engine: AsyncEngine | None = None
    if settings.embedded_database and not (settings.data_dir / "gateway.db").exists():
        findings.append(
            Finding(
                "database",
                False,
                f"no database at {_where(settings)}: set DATABASE_URL, or run "
                "`gateway migrate` (or `gateway serve`) in this directory first",
            )
        )
    else:
        engine = make_engine(settings.sqlalchemy_url)
    try:
        database_ok = engine is not None and await _check_database(engine, settings, findings)
        redis_ok = await _check_redis(settings, findings)
        if engine is not None and database_ok:
            if all(finding.ok for finding in findings if finding.check == "schema"):
                await _check_queue(engine, findings, max_lag_seconds, workers_known=redis_ok)
            else:
                findings.append(Finding("queue", False, "not checked: migrate the schema first"))
            await _check_clock(engine, findings, max_skew_seconds)
            await _check_partitions(engine, findings)
    finally:
        if engine is not None:
            await engine.dispose()
    return findings


async def _check_database(engine: AsyncEngine, settings: Settings, findings: list[Finding]) -> bool:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            state = await schema_state(engine)
    except Exception as exc:
        findings.append(
            Finding(
                "database",
                False,
                f"cannot reach {_where(settings)} ({_problem(exc)}): check DATABASE_URL "
                "and that the database server runs and accepts this machine",
            )
        )
        return False
    findings.append(Finding("database", True, f"reachable: {_where(settings)}"))
    if state == "ok":
        findings.append(
            Finding("schema", True, f"at revision {head_revision()}, as the code needs")
        )
    else:
        findings.append(Finding("schema", False, state))
    return True


async def _check_redis(settings: Settings, findings: list[Finding]) -> bool:
    if settings.redis_url is None:
        findings.append(
            Finding(
                "redis",
                True,
                "embedded (no REDIS_URL): it runs inside `gateway serve`, with its worker; "
                "set REDIS_URL to check a shared Redis and its workers",
            )
        )
        return False
    redis: Redis = Redis.from_url(settings.redis_url, socket_connect_timeout=CHECK_SECONDS)
    try:
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                await redis.ping()
        except Exception as exc:
            findings.append(
                Finding(
                    "redis",
                    False,
                    f"cannot reach REDIS_URL ({_problem(exc)}): check the URL and that "
                    "Redis runs; without it nothing is delivered and live events stop",
                )
            )
            return False
        findings.append(Finding("redis", True, "reachable"))
        async with asyncio.timeout(CHECK_SECONDS):
            workers = await live_workers(redis)
    finally:
        await redis.aclose()
    if workers:
        names = ", ".join(f"{beat.host} pid {beat.pid}" for beat in workers)
        findings.append(Finding("workers", True, f"{len(workers)} alive: {names}"))
    else:
        findings.append(
            Finding(
                "workers",
                False,
                f"no worker alive (no heartbeat in Redis for {TTL_SECONDS} s): start "
                "`gateway worker` (or `gateway serve` without --no-worker) with this "
                "DATABASE_URL and REDIS_URL; until then web hooks are not called",
            )
        )
    return True


async def _check_queue(
    engine: AsyncEngine, findings: list[Finding], max_lag_seconds: float, *, workers_known: bool
) -> None:
    try:
        async with asyncio.timeout(CHECK_SECONDS), engine.connect() as connection:
            health = await queue_health(connection, now=datetime.now(UTC))
    except Exception as exc:
        findings.append(Finding("queue", False, f"cannot read the deliveries ({_problem(exc)})"))
        return
    held = (
        f"; {health.held} held for {health.webhooks_disabled} disabled web hooks "
        "(enableWebhook sends them)"
        if health.held or health.webhooks_disabled
        else ""
    )
    lag = timedelta(seconds=round(health.lag_seconds))
    if health.lag_seconds > max_lag_seconds:
        what = "workers are not keeping up: start more `gateway worker`"
        if not workers_known:
            what = "check that workers run (`gateway worker`) and keep up"
        findings.append(
            Finding(
                "queue",
                False,
                f"{health.due} deliveries due, the oldest waiting {lag} (over "
                f"{max_lag_seconds:g} s): {what}{held}",
            )
        )
    else:
        findings.append(
            Finding(
                "queue",
                True,
                f"{health.due} deliveries due (oldest waiting {lag}), "
                f"{health.scheduled} waiting for a retry{held}",
            )
        )


async def _check_clock(
    engine: AsyncEngine, findings: list[Finding], max_skew_seconds: float
) -> None:
    try:
        async with asyncio.timeout(CHECK_SECONDS), engine.connect() as connection:
            started = time.time()
            remote = await database_now(connection)
            ended = time.time()
    except Exception as exc:
        findings.append(
            Finding("clock", False, f"cannot read the database's clock ({_problem(exc)})")
        )
        return
    # The database read its clock somewhere within the round trip.
    local = datetime.fromtimestamp((started + ended) / 2, UTC)
    skew = (remote - local).total_seconds()
    uncertain = (ended - started) / 2
    if abs(skew) - uncertain > max_skew_seconds:
        side = "behind" if skew > 0 else "ahead of"
        findings.append(
            Finding(
                "clock",
                False,
                f"this machine's clock is {abs(skew):.1f} s {side} the database's: "
                "synchronize both with NTP (chrony, systemd-timesyncd); retries, leases "
                "and event times compare clocks across machines",
            )
        )
    else:
        findings.append(
            Finding("clock", True, f"within {max(abs(skew), uncertain):.3f} s of the database's")
        )


async def _check_partitions(engine: AsyncEngine, findings: list[Finding]) -> None:
    """PostgreSQL: whether the partitions of each partitioned table reach far enough
    ahead (an event with no partition for its day is refused). Nothing to say on SQLite
    or a schema before partitions."""
    try:
        async with asyncio.timeout(CHECK_SECONDS), engine.connect() as connection:
            if not await is_partitioned(connection):
                return
            found = await existing_partitions(connection)
            today = (await database_now(connection)).date()
    except Exception as exc:
        findings.append(Finding("partitions", False, f"could not list them ({_problem(exc)})"))
        return
    # The first day no partition covers, by table (an attached partition's upper bound).
    ends = {
        table: max(
            (day_of_id(bounds[1]) for bounds in found[table].values() if bounds), default=today
        )
        for table in PARTITIONED
    }
    short = {
        table: end for table, end in ends.items() if (end - today).days <= MIN_PARTITION_DAYS_AHEAD
    }
    if short:
        tables = ", ".join(
            f"{table} until {end.isoformat()} ({max((end - today).days, 0)} days ahead)"
            for table, end in sorted(short.items())
        )
        findings.append(
            Finding(
                "partitions",
                False,
                f"partitions run out soon: {tables}; events past the last one are refused. "
                "Start a worker (its retention run makes them, hourly) or run `gateway migrate`",
            )
        )
        return
    until = min(ends.values())
    findings.append(
        Finding(
            "partitions",
            True,
            f"ready until {until.isoformat()} ({(until - today).days} days ahead)",
        )
    )

"""scripts/bench scale: how the gateway's costs grow with size and processes (PostgreSQL).

Each figure beside its reference from the same run, as a ratio:

(1) at 10,000,000 stored events beside the same at 1,000,000 (``--sizes``): single-event
    ingest (``POST /ingest/brevo/{token}``, 32 keep-alive connections, as ``scripts/bench
    ingest`` (a)), batched ingest (arrays of 500, 8 connections), and ``events(where:
    {email})``, ``{messageId}`` and ``{tags: [a, b]}`` p50/p99 over HTTP;
(2) single-event ingest while the retention purge (``purge_expired``, the job arq's cron
    runs on a worker, here in this process) works through a backlog of old events of
    the same account, beside ingest alone;
(3) two ``gateway serve --no-worker`` replicas and two ``gateway worker`` processes
    sharing one PostgreSQL and one Redis, beside one of each: events/s from ingest to a
    local receiver through a web hook, and single-event ingest with the connections
    taking the replicas in turn.

The store is filled the way ``scripts/bench ingest`` fills it (``bench_store.insert_direct``:
the gateway's own ``insert_events``) up to the smaller size; to reach the larger one,
PostgreSQL copies those rows, with their tag rows and counts, under new ids (older by a
few minutes a copy), message ids and dedupe keys: the same addresses, tags and times,
more of each. The backlog of (2) is copied likewise, received 30 days before the
account's retention of one day allows, and about events 120 days older than ingest's (as
old events are: the eventStats hours the purge takes them off are not those ingest adds to).

A database of its own per run (dropped at the end) and, unless ``--redis-url`` is given,
a redis-server of its own on a free port. It prints a table and writes the figures as
JSON to ``bench-results/``. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import bench_delivery
import bench_events
import bench_load
import bench_queries
import bench_store
from bench_queries import QueryClass
from bench_run import Numbering, log, write_results
from bench_servers import ServerProcess, free_port
from redis.asyncio import Redis

from gateway.heartbeat import live_workers
from gateway.ids import id_floor_for_ms, unix_ms
from gateway.runtime import open_services
from gateway.settings import Settings
from gateway.storage.db import begin_write, make_engine
from gateway.storage.partitions import day_of_id, ensure_partitions
from gateway.worker import purge_expired

ROOT = Path(__file__).resolve().parent.parent
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ID_SHIFT = 22  # gateway.ids: an id is its millisecond shifted past node and sequence bits
BACKLOG_AGE_DAYS = 30  # the backlog's ids are this much older than the fill's
RETENTION_DAYS = 1  # the account's own retention while (2) runs
BACKLOG_OCCURRED_DAYS_BACK = 120  # bench_events spreads its events over 90 days
EVENT_TYPES = (
    "QUEUED SENT DELIVERED DEFERRED BOUNCED REJECTED FAILED OPENED CLICKED COMPLAINED "
    "UNSUBSCRIBED AUTORESPONDED UNKNOWN"
)


@dataclass(frozen=True)
class Plan:
    small: int  # stored events of the reference store
    large: int  # ... of the grown one (a whole multiple of small)
    backlog: int  # old events for the retention purge (rounded to whole copies of small)
    warmup: float
    duration: float
    queries: int  # requests per query class
    query_warmup: int
    delivery_events: int  # events through ingest to the receiver, per configuration
    purge_grace: float  # seconds the purge may go on after the ingest window


FULL = Plan(1_000_000, 10_000_000, 500_000, 3.0, 10.0, 200, 20, 20_000, 30.0)
QUICK = Plan(100_000, 1_000_000, 300_000, 2.0, 5.0, 100, 10, 5_000, 10.0)


@contextlib.contextmanager
def phase(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time a phase of the run, and say so."""
    log(f"{name}: started")
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started
        log(f"{name}: {timings[name]:.0f} s")


def message_id(n: int, copy: int) -> str:
    """The bare message id of event ``n`` of the fill in its ``copy`` (0: the original)."""
    bare = str(bench_events.brevo_event(n)["message-id"]).strip("<>")
    return bare if copy == 0 else f"c{copy}.{bare}"


def query_classes(count: int, *, fill: int, copies: int, seed: int = 11) -> list[QueryClass]:
    """bench_queries' classes (email, and each pair of tags), with messageId after email:
    a message of the store (of any copy) each request."""
    rng = random.Random(seed)
    wheres = [
        {"messageId": message_id(rng.randrange(fill), rng.randrange(copies + 1))}
        for _ in range(count)
    ]
    classes = bench_queries.query_classes(count)
    return [classes[0], QueryClass("messageId", wheres), *classes[1:]]


# -- growing the store in PostgreSQL ---------------------------------------------------

_COPY_EVENTS = """
INSERT INTO events (id, account_id, source_id, type, provider, provider_event, message_id,
    email, email_key, occurred_at, sent_at, subject, template, tags, custom_id, details, raw,
    dedupe_key, received_at)
SELECT id - $3, account_id, source_id, type, provider, provider_event, $4 || message_id,
    email, email_key, occurred_at - make_interval(days => $6),
    sent_at - make_interval(days => $6), subject, template, tags, custom_id, details,
    CASE WHEN message_id IS NULL THEN raw ELSE replace(raw, message_id, $4 || message_id) END,
    md5($4 || dedupe_key), received_at - $5 * interval '1 millisecond'
FROM events WHERE id BETWEEN $1 AND $2 ORDER BY id
"""
_COPY_TAGS = """
INSERT INTO event_tags (account_id, tag, event_id)
SELECT account_id, tag, event_id - $3 FROM event_tags WHERE event_id BETWEEN $1 AND $2
"""
# The fill's counts, kept aside before anything else is stored, are added once a copy.
_KEEP_COUNTS = """
CREATE TABLE bench_fill_tag_counts AS SELECT * FROM tag_counts;
CREATE TABLE bench_fill_event_counts AS SELECT * FROM event_counts;
"""
_ADD_COUNTS = """
INSERT INTO tag_counts (account_id, tag, count)
SELECT account_id, tag, count * $1 FROM bench_fill_tag_counts ORDER BY account_id, tag
ON CONFLICT (account_id, tag) DO UPDATE SET count = tag_counts.count + excluded.count
"""
_ADD_EVENT_COUNTS = """
INSERT INTO event_counts (account_id, dimension, span, hour, key, type, count)
SELECT account_id, dimension, span, hour - 24 * $2, key, type, count * $1
FROM bench_fill_event_counts
ORDER BY account_id, dimension, span, hour, key, type
ON CONFLICT (account_id, dimension, span, hour, key, type)
DO UPDATE SET count = event_counts.count + excluded.count
"""


@dataclass(frozen=True)
class Fill:
    """The ids the fill's events were stored under (every copy is of these)."""

    first_id: int
    last_id: int
    events: int

    @property
    def span_ms(self) -> int:
        return (self.last_id >> ID_SHIFT) - (self.first_id >> ID_SHIFT) + 1


async def record_fill(store: bench_store.Store) -> Fill:
    assert store.postgres_dsn is not None
    connection = await asyncpg.connect(store.postgres_dsn)
    try:
        first, last, count = await connection.fetchrow(
            "SELECT min(id), max(id), count(*) FROM events"
        )
        await connection.execute(_KEEP_COUNTS)
    finally:
        await connection.close()
    return Fill(int(first), int(last), int(count))


async def add_copies(
    store: bench_store.Store,
    fill: Fill,
    *,
    copies: range,
    older_ms: int,
    label: str,
    occurred_days_back: int = 0,
) -> float:
    """Copy the fill's events, tags and counts once for each number in ``copies``: copy
    ``k`` gets ids (and times of receipt) ``older_ms`` + k fill-spans older, message ids
    prefixed ``c{k}.``, and dedupe keys of its own; their events happened
    ``occurred_days_back`` whole days earlier. Seconds taken, with VACUUM ANALYZE."""
    assert store.postgres_dsn is not None
    started = time.perf_counter()
    # Partitioned tables (PostgreSQL, storage.partitions) need partitions for the old
    # days the copies go to: the gateway makes them only from today on.
    oldest_shift = (older_ms + copies[-1] * (fill.span_ms + 1000)) << ID_SHIFT
    engine = make_engine(store.sqlalchemy_url)
    try:
        async with begin_write(engine) as sa_connection:
            await ensure_partitions(
                sa_connection,
                today=datetime.now(UTC).date(),
                first=day_of_id(fill.first_id - oldest_shift),
            )
    finally:
        await engine.dispose()
    connection = await asyncpg.connect(store.postgres_dsn, timeout=10, command_timeout=None)
    try:
        for copy in copies:
            shift_ms = older_ms + copy * (fill.span_ms + 1000)
            shift = shift_ms << ID_SHIFT
            async with connection.transaction():
                await connection.execute("SET LOCAL synchronous_commit = off")
                await connection.execute(
                    _COPY_EVENTS,
                    fill.first_id,
                    fill.last_id,
                    shift,
                    f"c{copy}.",
                    shift_ms,
                    occurred_days_back,
                )
                await connection.execute(_COPY_TAGS, fill.first_id, fill.last_id, shift)
            log(f"  {label}: copy {copy} of {copies[-1]}, {time.perf_counter() - started:.0f} s")
        async with connection.transaction():
            await connection.execute(_ADD_COUNTS, len(copies))
            await connection.execute(_ADD_EVENT_COUNTS, len(copies), occurred_days_back)
    finally:
        await connection.close()
    await bench_store.after_bulk_load(store)
    return time.perf_counter() - started


async def stored_events(store: bench_store.Store, *, below_id: int | None = None) -> int:
    assert store.postgres_dsn is not None
    connection = await asyncpg.connect(store.postgres_dsn)
    try:
        if below_id is None:
            return int(await connection.fetchval("SELECT count(*) FROM events"))
        return int(await connection.fetchval("SELECT count(*) FROM events WHERE id < $1", below_id))
    finally:
        await connection.close()


async def sample_waits(store: bench_store.Store, stop: asyncio.Event) -> dict[str, int]:
    """What the database's busy sessions wait on, sampled every 0.2 s until ``stop``:
    ``wait type/event: statement start`` -> samples (a lock held by another shows here)."""
    assert store.postgres_dsn is not None
    connection = await asyncpg.connect(store.postgres_dsn)
    seen: dict[str, int] = {}
    try:
        while not stop.is_set():
            for row in await connection.fetch(
                "SELECT coalesce(wait_event_type, 'CPU') || '/' || coalesce(wait_event, '-')"
                " || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 40) AS what"
                " FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND pid <> pg_backend_pid()"
            ):
                seen[row["what"]] = seen.get(row["what"], 0) + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await connection.close()
    return dict(sorted(seen.items(), key=lambda item: -item[1]))


# -- (1) and (2): one gateway on the store ---------------------------------------------


async def at_size(
    gateway: ServerProcess,
    account: Any,
    plan: Plan,
    numbers: Numbering,
    queries: list[QueryClass],
) -> dict[str, Any]:
    """(1)'s figures at the store's present size: queries first, then ingest."""
    results: dict[str, Any] = {"queries": {}}
    for query in queries:
        results["queries"][query.name] = await bench_queries.http_latency(
            gateway.base_url, account.api_key, query, warmup=plan.query_warmup, time_limit=120
        )
    results["single"] = single_ingest(gateway.base_url, account, plan, numbers, gateway.pid)
    budget = int(40_000 * (plan.warmup + plan.duration))
    results["batch"] = bench_load.run_load(
        f"{gateway.base_url}/ingest/brevo/{account.ingest_tokens['brevo']}",
        first=numbers.take(budget),
        max_events=budget,
        batch=500,
        connections=8,
        server_pid=gateway.pid,
        warmup=plan.warmup,
        duration=plan.duration,
    )
    return results


def single_ingest(
    base_urls: str | list[str], account: Any, plan: Plan, numbers: Numbering, pid: int | None
) -> dict[str, Any]:
    """Single-event ingest over 32 connections (scripts/bench ingest's (a))."""
    budget = int(20_000 * (plan.warmup + plan.duration))
    token = account.ingest_tokens["brevo"]
    urls = [base_urls] if isinstance(base_urls, str) else base_urls
    return bench_load.run_load(
        [f"{url}/ingest/brevo/{token}" for url in urls],
        first=numbers.take(budget),
        max_events=budget,
        server_pid=pid,
        warmup=plan.warmup,
        duration=plan.duration,
    )


async def ingest_beside_purge(
    store: bench_store.Store,
    gateway: ServerProcess,
    account: Any,
    plan: Plan,
    numbers: Numbering,
    redis_url: str,
    work_dir: Path,
) -> dict[str, Any]:
    """(2): single-event ingest alone, then while purge_expired (with the account's
    retention at RETENTION_DAYS) works through the backlog in a process of its own, as
    on a worker; stopped (its transaction rolled back) if it outlasts the grace."""
    alone = single_ingest(gateway.base_url, account, plan, numbers, gateway.pid)
    results: dict[str, Any] = {"alone": alone}
    settings = Settings(
        database_url=store.database_url,
        redis_url=redis_url,
        data_dir=work_dir,
        _env_file=None,  # type: ignore[call-arg]
    )
    below = id_floor_for_ms(unix_ms() - RETENTION_DAYS * DAY_MS)
    async with open_services(settings) as services:
        await services.retention.set_account_retention(account.account_id, RETENTION_DAYS)
        old_before = await stored_events(store, below_id=below)
        stop_sampling = asyncio.Event()
        waits = asyncio.create_task(sample_waits(store, stop_sampling))
        started = time.perf_counter()
        purge = subprocess.Popen(
            [sys.executable, __file__, "--purge", store.database_url, redis_url, str(work_dir)],
            stdout=subprocess.PIPE,
        )
        results["beside_purge"] = await asyncio.to_thread(
            single_ingest, gateway.base_url, account, plan, numbers, gateway.pid
        )
        load_seconds = time.perf_counter() - started
        stop_sampling.set()
        results["database_waits"] = await waits
        old_at_load_end = await stored_events(store, below_id=below)
        purge_running = purge.poll() is None
        try:
            output, _ = await asyncio.to_thread(purge.communicate, timeout=plan.purge_grace)
            results["purge_seconds"] = time.perf_counter() - started
            results["purged_total"] = int(output or 0)
        except subprocess.TimeoutExpired:
            purge.kill()
            purge.wait(timeout=10)
        old_after = await stored_events(store, below_id=below)
    results.update(
        backlog=old_before,
        purged_during_load=old_before - old_at_load_end,
        purge_events_per_s=(old_before - old_at_load_end) / load_seconds,
        purge_still_running_at_load_end=purge_running,
        old_left=old_after,
        retention_batch_size=settings.retention_batch_size,
    )
    return results


async def store_phases(
    plan: Plan, redis_url: str, work_dir: Path, timings: dict[str, float]
) -> dict[str, Any]:
    """(1) and (2), on one database."""
    results: dict[str, Any] = {}
    copies = plan.large // plan.small - 1
    store = await bench_store.create_store("postgres", work_dir)
    try:
        account = await bench_store.create_account(store)
        ids = await bench_store.node_ids(store)
        numbers = Numbering(10 * plan.large)
        with phase(timings, f"fill {plan.small:,} (insert_events)"):
            results["fill"] = await bench_store.insert_direct(
                store,
                account_id=account.account_id,
                source_id=0,
                ids=ids,
                first=0,
                count=plan.small,
                rows_per_transaction=10_000,
                progress="fill",
            )
            fill = await record_fill(store)
            await bench_store.after_bulk_load(store)
        gateway = ServerProcess(
            "gateway",
            log_path=work_dir / "gateway.log",
            database_url=store.database_url,
            redis_url=redis_url,
            data_dir=str(work_dir),
        )
        with gateway:
            with phase(timings, f"(1) at {plan.small:,}"):
                results["small_stored"] = await stored_events(store)
                results["small"] = await at_size(
                    gateway,
                    account,
                    plan,
                    numbers,
                    query_classes(plan.queries, fill=plan.small, copies=0),
                )
            with phase(timings, f"grow to {plan.large:,} (copies in SQL)"):
                results["grow_seconds"] = await add_copies(
                    store, fill, copies=range(1, copies + 1), older_ms=60_000, label="grow"
                )
            with phase(timings, f"(1) at {plan.large:,}"):
                results["large_stored"] = await stored_events(store)
                results["large"] = await at_size(
                    gateway,
                    account,
                    plan,
                    numbers,
                    query_classes(plan.queries, fill=plan.small, copies=copies),
                )
            backlog_copies = max(1, round(plan.backlog / plan.small))
            with phase(timings, f"backlog {backlog_copies * plan.small:,} old events"):
                results["backlog_seconds"] = await add_copies(
                    store,
                    fill,
                    copies=range(copies + 1, copies + 1 + backlog_copies),
                    older_ms=BACKLOG_AGE_DAYS * DAY_MS,
                    occurred_days_back=BACKLOG_OCCURRED_DAYS_BACK,
                    label="backlog",
                )
            with phase(timings, "(2) ingest beside the retention purge"):
                results["retention"] = await ingest_beside_purge(
                    store, gateway, account, plan, numbers, redis_url, work_dir
                )
    finally:
        await bench_store.drop_store_if_exists()
    return results


# -- (3): replicas and workers ---------------------------------------------------------


class Processes:
    """`gateway serve --no-worker` replicas and `gateway worker` processes on one
    database and Redis; stopped (SIGINT, as a terminal would) on exit."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []
        self.replicas: list[str] = []

    def _start(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *arguments],
                cwd=ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.running.append(process)
        return process

    def replica(self, name: str) -> str:
        port = free_port()
        process = self._start(name, "serve", "--no-worker", "--port", str(port))
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {self.log_dir}/{name}.log")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as answer,
            ):
                if answer.status == 200:
                    break
            time.sleep(0.1)
        self.replicas.append(base_url)
        return base_url

    def worker(self, name: str) -> int:
        return self._start(name, "worker").pid

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def wait_for_workers(redis_url: str, pids: set[int], limit: float = 60) -> None:
    redis = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + limit
        while {beat.pid for beat in await live_workers(redis)} < pids:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


async def receiver_count(session: aiohttp.ClientSession, receiver: str) -> int:
    async with session.get(f"{receiver}/stats") as answer:
        return int((await answer.json())["count"])


async def deliver_through(
    replicas: list[str], token: str, receiver: str, numbers: Numbering, total: int
) -> dict[str, float]:
    """``total`` events in arrays of 500, four requests at a time, the replicas in turn;
    seconds until the receiver has every one."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async with session.post(f"{receiver}/reset"):
            pass
        first = numbers.take(total)
        bodies = [bench_events.batch_body(n, 500) for n in range(first, first + total, 500)]
        started = time.perf_counter()

        async def poster(index: int) -> None:
            for body in bodies[index::4]:
                url = f"{replicas[index % len(replicas)]}/ingest/brevo/{token}"
                async with session.post(
                    url, data=body, headers={"content-type": "application/json"}
                ) as answer:
                    await answer.read()
                    answer.raise_for_status()

        await asyncio.gather(*(poster(index) for index in range(4)))
        ingested = time.perf_counter() - started
        deadline = time.monotonic() + 300
        while (delivered := await receiver_count(session, receiver)) < total:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    return {
        "events": float(total),
        "delivered": float(delivered),
        "ingest_seconds": ingested,
        "seconds": elapsed,
        "deliveries_per_s": delivered / elapsed,
    }


async def create_webhook(base_url: str, api_key: str, url: str) -> None:
    mutation = (
        "mutation($u: String!) { createWebhook(input: {url: $u, "
        f"events: [{EVENT_TYPES.replace(' ', ', ')}], format: GATEWAY, backfillDays: 0}}) "
        "{ secret } }"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base_url}/graphql",
            json={"query": mutation, "variables": {"u": url}},
            headers={"authorization": f"Bearer {api_key}"},
        ) as answer,
    ):
        document = await answer.json()
    if answer.status != 200 or document.get("errors"):
        raise RuntimeError(f"createWebhook failed: {document}")


async def processes_run(
    count: int, plan: Plan, redis_url: str, receiver: str, work_dir: Path
) -> dict[str, Any]:
    """(3) with ``count`` replicas and ``count`` workers, on a database of their own."""
    store = await bench_store.create_store("postgres", work_dir)
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    processes = Processes(
        {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
            "DATABASE_URL": store.database_url,
            "REDIS_URL": redis_url,
            "GATEWAY_DATA_DIR": str(work_dir),
            "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
        },
        work_dir,
    )
    try:
        account = await bench_store.create_account(store)
        replicas = [processes.replica(f"replica-{count}-{n}") for n in range(count)]
        pids = {processes.worker(f"worker-{count}-{n}") for n in range(count)}
        await wait_for_workers(redis_url, pids)
        await create_webhook(replicas[0], account.api_key, f"{receiver}/hook")
        numbers = Numbering(0)
        token = account.ingest_tokens["brevo"]
        await deliver_through(replicas, token, receiver, numbers, 1000)  # warm-up
        results: dict[str, Any] = {
            "delivery": await deliver_through(
                replicas, token, receiver, numbers, plan.delivery_events
            ),
            # Last: the deliveries it leaves behind go with the database.
            "single": single_ingest(replicas, account, plan, numbers, None),
        }
    finally:
        processes.stop()
        await bench_store.drop_store_if_exists()
    return results


async def processes_phases(
    plan: Plan, redis_url: str, work_dir: Path, timings: dict[str, float]
) -> dict[str, Any]:
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, bench_delivery.__file__, "--receiver", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver_url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        await bench_delivery.wait_until(_answers(receiver_url), 30)
        for count in (1, 2):
            with phase(timings, f"(3) {count} replica(s) + {count} worker(s)"):
                results[str(count)] = await processes_run(
                    count, plan, redis_url, receiver_url, work_dir
                )
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    return results


def _answers(url: str) -> Any:
    async def answers() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/stats"):
                return True
        except aiohttp.ClientError:
            return False

    return answers


# -- the table ------------------------------------------------------------------------


def _label(count: int) -> str:
    return f"{count / 1_000_000:g}M" if count >= 1_000_000 else f"{count // 1000}k"


def _problems(result: dict[str, Any]) -> str:
    errors = result.get("errors", 0)
    return f" ({errors} errors)" if errors else ""


def table_rows(results: dict[str, Any], plan: Plan) -> list[tuple[str, str, str, str]]:
    """(figure, value, reference, ratio) rows."""
    rows: list[tuple[str, str, str, str]] = []
    small, large = _label(plan.small), _label(plan.large)
    if "small" in results and "large" in results:
        a, b = results["small"], results["large"]
        for key, name in (("single", "single-event ingest, 32 conns"), ("batch", "batched x500")):
            rows.append(
                (
                    f"(1) {name} @{large} (ref @{small})",
                    f"{b[key]['events_per_s']:,.0f}/s" + _problems(b[key]),
                    f"{a[key]['events_per_s']:,.0f}/s" + _problems(a[key]),
                    f"{b[key]['events_per_s'] / a[key]['events_per_s']:.2f}"
                    if a[key]["events_per_s"]
                    else "-",
                )
            )
        for name, query in b["queries"].items():
            reference = a["queries"][name]
            rows.append(
                (
                    f"(1) {name} @{large} (ref @{small}), p50 (p99)",
                    f"{query['p50_ms']:.1f} ms ({query['p99_ms']:.1f})",
                    f"{reference['p50_ms']:.1f} ms ({reference['p99_ms']:.1f})",
                    f"{query['p50_ms'] / reference['p50_ms']:.2f} "
                    f"({query['p99_ms'] / reference['p99_ms']:.2f})",
                )
            )
    if "retention" in results:
        retention = results["retention"]
        alone, beside = retention["alone"], retention["beside_purge"]
        still = "" if retention["purge_still_running_at_load_end"] else ", purge ended first"
        rows.append(
            (
                f"(2) single-event ingest beside purge of {retention['backlog']:,} old "
                f"(purging {retention['purge_events_per_s']:,.0f}/s{still})",
                f"{beside['events_per_s']:,.0f}/s" + _problems(beside),
                f"{alone['events_per_s']:,.0f}/s alone" + _problems(alone),
                f"{beside['events_per_s'] / alone['events_per_s']:.2f}"
                if alone["events_per_s"]
                else "-",
            )
        )
    if "processes" in results and len(results["processes"]) == 2:
        one, two = results["processes"]["1"], results["processes"]["2"]
        d1, d2 = one["delivery"], two["delivery"]
        rows.append(
            (
                f"(3) ingest -> receiver, {d2['events']:,.0f} events, 2+2 (ref 1+1)",
                f"{d2['deliveries_per_s']:,.0f}/s",
                f"{d1['deliveries_per_s']:,.0f}/s",
                f"{d2['deliveries_per_s'] / d1['deliveries_per_s']:.2f}",
            )
        )
        s1, s2 = one["single"], two["single"]
        rows.append(
            (
                "(3) single-event ingest, 32 conns, 2+2 (ref 1+1)",
                f"{s2['events_per_s']:,.0f}/s" + _problems(s2),
                f"{s1['events_per_s']:,.0f}/s" + _problems(s1),
                f"{s2['events_per_s'] / s1['events_per_s']:.2f}" if s1["events_per_s"] else "-",
            )
        )
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("figure", "value", "reference", "ratio")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(4)]
    print("\nPostgreSQL, at scale")
    print("  ".join(title.ljust(width) for title, width in zip(header, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


# -- running it -----------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(url: str | None, work_dir: Path) -> Iterator[str]:
    """``url``, or a redis-server of this run's own on a free port."""
    if url:
        yield url
        return
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=work_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def purge_main(database_url: str, redis_url: str, data_dir: str) -> None:
    """``--purge``: run purge_expired once, as arq's cron does; print the rows purged."""
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=Path(data_dir),
        _env_file=None,  # type: ignore[call-arg]
    )

    async def purge() -> int:
        async with open_services(settings) as services:
            return await purge_expired({"services": services})

    print(asyncio.run(purge()))


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench scale",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="100k beside 1M, 5 s windows, 100 queries"
    )
    parser.add_argument(
        "--sizes", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="stored events for (1)"
    )
    parser.add_argument("--backlog", type=int, help="old events for the purge of (2)")
    parser.add_argument("--only", choices=["store", "processes"], help="(1) and (2), or (3) alone")
    parser.add_argument("--redis-url", help="default: a redis-server of its own")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.sizes:
        small, large = args.sizes
        plan = Plan(**{**plan.__dict__, "small": small, "large": max(large // small, 2) * small})
    if args.backlog:
        plan = Plan(**{**plan.__dict__, "backlog": args.backlog})

    started = time.perf_counter()
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    work_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-scale-"))
    failed = False
    try:
        with redis_server(args.redis_url, work_dir) as redis_url:
            if args.only != "processes":
                results.update(asyncio.run(store_phases(plan, redis_url, work_dir, timings)))
            if args.only != "store":
                results["processes"] = asyncio.run(
                    processes_phases(plan, redis_url, work_dir, timings)
                )
    except Exception as exc:
        traceback.print_exc()
        results["error"] = repr(exc)
        failed = True
        print(f"failed; server logs kept in {work_dir}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    if not failed:
        shutil.rmtree(work_dir, ignore_errors=True)

    rows = table_rows(results, plan)
    results["table"] = rows
    print_table(rows)
    print("\nphases: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
    write_results(
        args.out,
        name="scale",
        quick=args.quick,
        command="scripts/bench scale",
        seconds=elapsed,
        results=results,
        plan=plan.__dict__,
        phase_seconds=timings,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--purge":
        purge_main(*sys.argv[2:])
    else:
        sys.exit(main())

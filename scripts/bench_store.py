"""Benchmark databases: create and drop them, an account, bulk fill, the insert ceiling.

Writes go through the gateway's own storage code (``insert_events``), so the data the
queries later read is exactly what ingest would have stored: rows, tag rows, tag counts,
the eventStats rollup.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import bench_events
from sqlalchemy import text

from gateway.domain.events import NormalizedEvent
from gateway.ids import IdGenerator
from gateway.providers.base import IngestRequest, SourceConfig
from gateway.providers.brevo import adapter as brevo
from gateway.services.accounts import AccountService, CreatedAccount
from gateway.services.nodes import NodeLease
from gateway.settings import async_database_url
from gateway.storage import events as event_store
from gateway.storage.db import make_engine, migrate

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
# Of this run only: benchmarks run side by side (say, from two work trees) must not
# drop each other's database.
POSTGRES_BENCH_DB = f"gateway_bench_{os.getpid()}"
EVENT_TABLES = ("event_tags", "tag_counts", "event_counts", "events")


@dataclass(frozen=True)
class Store:
    """One benchmark database: its gateway URL, and how to reach it with a raw driver."""

    backend: str  # "sqlite" | "postgres"
    database_url: str  # as the gateway's DATABASE_URL takes it
    sqlite_path: Path | None = None
    postgres_dsn: str | None = None

    @property
    def sqlalchemy_url(self) -> str:
        return async_database_url(self.database_url)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_store(backend: str, work_dir: Path) -> Store:
    """A new, migrated, empty database for ``backend``."""
    if backend == "sqlite":
        path = work_dir / "gateway.db"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        store = Store(backend, f"sqlite:///{path}", sqlite_path=path)
    else:
        await drop_store_if_exists()
        await _admin(f'CREATE DATABASE "{POSTGRES_BENCH_DB}"')
        dsn = f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{POSTGRES_BENCH_DB}"
        store = Store(backend, dsn, postgres_dsn=dsn)
    engine = make_engine(store.sqlalchemy_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return store


async def drop_store_if_exists() -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{POSTGRES_BENCH_DB}" WITH (FORCE)')


async def create_account(store: Store) -> CreatedAccount:
    engine = make_engine(store.sqlalchemy_url)
    try:
        service = AccountService(engine, await node_ids(store), cache_seconds=0, cache_size=1)
        return await service.create_account(f"bench-{int(time.time())}")
    finally:
        await engine.dispose()


async def node_ids(store: Store) -> IdGenerator:
    """An id generator with a node number of its own, leased as every gateway leases
    one, for a day (longer than a run; the benchmark's database goes with it)."""
    engine = make_engine(store.sqlalchemy_url)
    try:
        ids = IdGenerator.unleased()
        await NodeLease(engine, ids, lease_seconds=86_400).renew()
        return ids
    finally:
        await engine.dispose()


async def empty_events(store: Store) -> None:
    """Remove every event (and its tags and counts): back to an empty store."""
    engine = make_engine(store.sqlalchemy_url)
    try:
        async with engine.begin() as connection:
            if store.backend == "postgres":
                # And the events' dedupe keys (storage.partitions), PostgreSQL's own.
                tables = ", ".join((*EVENT_TABLES, "event_dedupe"))
                await connection.execute(text(f"TRUNCATE {tables}"))
            else:
                for table in EVENT_TABLES:
                    await connection.execute(text(f"DELETE FROM {table}"))
        if store.backend == "sqlite":
            async with engine.connect() as connection:
                await connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    finally:
        await engine.dispose()


async def count_events(store: Store) -> int:
    engine = make_engine(store.sqlalchemy_url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text("SELECT count(*) FROM events"))).scalar_one())
    finally:
        await engine.dispose()


async def after_bulk_load(store: Store) -> None:
    """PostgreSQL: VACUUM ANALYZE, what autovacuum does shortly after a bulk load anyway.

    SQLite is left as the gateway leaves it (no ANALYZE): queries must not depend on it.
    """
    if store.backend != "postgres":
        if store.sqlite_path is not None:
            engine = make_engine(store.sqlalchemy_url)
            try:
                async with engine.connect() as connection:
                    await connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            finally:
                await engine.dispose()
        return
    assert store.postgres_dsn is not None
    connection = await asyncpg.connect(store.postgres_dsn, timeout=10)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


def _normalized(first: int, size: int) -> list[NormalizedEvent]:
    body = bench_events.batch_body(first, size)
    return brevo.parse(
        IngestRequest(
            method="POST",
            body=body,
            content_type="application/json",
            query=[],
            route_event=None,
            received_at=datetime.now(UTC),
        ),
        SourceConfig(timezone="UTC", parameters={}),
    ).events


def _chunks(first: int, count: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(first, first + count, size):
        yield start, min(size, first + count - start)


async def insert_direct(
    store: Store,
    *,
    account_id: int,
    source_id: int,
    ids: IdGenerator,
    first: int,
    count: int,
    rows_per_transaction: int,
    progress: str | None = None,
) -> dict[str, float]:
    """Insert events ``first..first+count`` with ``insert_events``, no HTTP in between.

    Parsing happens outside the timed part: what is timed is the storage write alone,
    the ceiling for batched ingest ("batched Core inserts").
    """
    engine = make_engine(store.sqlalchemy_url)
    timed = 0.0
    started = time.perf_counter()
    last_report = started
    stored_total = 0
    try:
        for start, size in _chunks(first, count, rows_per_transaction):
            events = _normalized(start, size)
            new = [
                event_store.NewEvent(ids.next_id(), account_id, source_id, event)
                for event in events
            ]
            t0 = time.perf_counter()
            async with engine.begin() as connection:
                stored = await event_store.insert_events(
                    connection, events=new, now=datetime.now(UTC)
                )
            timed += time.perf_counter() - t0
            stored_total += len(stored)
            now = time.perf_counter()
            if progress and now - last_report > 15:
                last_report = now
                done = start + size - first
                print(
                    f"  {progress}: {done:,}/{count:,} events, {now - started:.0f} s",
                    flush=True,
                )
    finally:
        await engine.dispose()
    return {
        "events": float(stored_total),
        "seconds": timed,
        "events_per_s": stored_total / timed if timed else 0.0,
        "wall_seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":  # a quick manual check: python scripts/bench_store.py
    import sys
    import tempfile

    async def main() -> None:
        backend = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
        count = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
        with tempfile.TemporaryDirectory() as tmp:
            store = await create_store(backend, Path(tmp))
            account = await create_account(store)
            ids = await node_ids(store)
            result = await insert_direct(
                store,
                account_id=account.account_id,
                source_id=0,
                ids=ids,
                first=0,
                count=count,
                rows_per_transaction=2000,
            )
            print(backend, result)
            if backend == "postgres":
                await drop_store_if_exists()

    asyncio.run(main())

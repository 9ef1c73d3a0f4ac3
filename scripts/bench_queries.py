"""Query latency: ``events(where:)`` over HTTP, beside the same SQL run with the raw driver.

The SQL is not written by hand: it is captured from SQLAlchemy while the gateway's own
``find_events`` runs (every statement it sends for one page, with its parameters), then
replayed with ``sqlite3`` or ``asyncpg`` directly. The ratio HTTP / raw is what the
gateway (HTTP, GraphQL, SQLAlchemy, decoding) adds on top of the database's own work.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import bench_events
from bench_store import Store
from sqlalchemy import event

from gateway.domain.query import EventFilter
from gateway.storage import events as event_store
from gateway.storage.db import make_engine

PAGE_SIZE = 50  # the gateway's default page size: events(where:) without first
EVENTS_QUERY = """
query Bench($where: EventFilter!) {
  events(where: $where) {
    edges { cursor node { id type provider providerEvent email occurredAt messageId tags } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@dataclass(frozen=True)
class QueryClass:
    name: str  # "email", "tags common+common", ...
    wheres: list[dict[str, Any]]  # one GraphQL EventFilter per request, in order


def query_classes(count: int, *, seed: int = 7) -> list[QueryClass]:
    """The query classes of the benchmark, ``count`` requests each."""
    rng = random.Random(seed)
    emails = [bench_events.address(rng.randrange(bench_events.ADDRESSES)) for _ in range(count)]
    classes = [QueryClass("email", [{"email": email} for email in emails])]
    for pair_name, (first, second) in bench_events.TAG_PAIRS.items():
        classes.append(QueryClass(f"tags {pair_name}", [{"tags": [first, second]}] * count))
    return classes


def _domain_filter(where: dict[str, Any]) -> EventFilter:
    return EventFilter(email=where.get("email"), tags=tuple(where.get("tags", ())))


def _quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "mean_ms": sum(ordered) / len(ordered) * 1000,
        "count": len(ordered),
    }


async def http_latency(
    base_url: str, api_key: str, query: QueryClass, *, warmup: int, time_limit: float
) -> dict[str, Any]:
    """Sequential GraphQL POSTs on one keep-alive connection; p50/p99 of each."""
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=1)
    samples: list[float] = []
    edges: list[int] = []
    async with aiohttp.ClientSession(
        base_url, connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def one(where: dict[str, Any]) -> int:
            payload = {"query": EVENTS_QUERY, "variables": {"where": where}}
            async with session.post("/graphql", json=payload) as response:
                body = await response.json()
            if response.status != 200 or body.get("errors"):
                raise RuntimeError(f"GraphQL failed: {response.status} {body}")
            return len(body["data"]["events"]["edges"])

        for where in query.wheres[:warmup]:
            await one(where)
        deadline = time.monotonic() + time_limit
        for where in query.wheres:
            started = time.perf_counter()
            edges.append(await one(where))
            samples.append(time.perf_counter() - started)
            if time.monotonic() > deadline:
                break
    return {**_quantiles(samples), "rows_mean": sum(edges) / len(edges)}


async def captured_sql(store: Store, account_id: int, where: dict[str, Any]) -> list[Any]:
    """Every statement (and parameters) ``find_events`` sends for the first page."""
    engine = make_engine(store.sqlalchemy_url)
    statements: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _capture(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
        statements.append((sql, params))

    try:
        async with engine.connect() as connection:
            await event_store.find_events(
                connection, account_id=account_id, where=_domain_filter(where), limit=PAGE_SIZE + 1
            )
    finally:
        await engine.dispose()
    return statements


def _with_value(params: Any, old: Any, new: Any) -> Any:
    """The parameters with ``old`` replaced by ``new`` (the next request's address)."""
    if isinstance(params, dict):
        return {key: new if value == old else value for key, value in params.items()}
    return type(params)(new if value == old else value for value in params)


async def raw_latency(
    store: Store, account_id: int, query: QueryClass, *, warmup: int, time_limit: float
) -> dict[str, Any]:
    """The captured SQL of each request, replayed with the raw driver; p50/p99."""
    template = await captured_sql(store, account_id, query.wheres[0])
    first_email = query.wheres[0].get("email")

    def statements_for(where: dict[str, Any]) -> list[tuple[str, Any]]:
        email = where.get("email")
        if email is None or first_email is None:
            return template
        return [(sql, _with_value(params, first_email, email)) for sql, params in template]

    run: Callable[[list[tuple[str, Any]]], Awaitable[int]]
    close: Callable[[], Awaitable[None]]
    if store.backend == "sqlite":
        assert store.sqlite_path is not None
        db = sqlite3.connect(store.sqlite_path, isolation_level=None)
        # The gateway's connection settings (gateway/storage/db.py).
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
            db.execute(f"PRAGMA {pragma}")

        async def run_sqlite(statements: list[tuple[str, Any]]) -> int:
            rows = 0
            for sql, params in statements:
                rows = len(db.execute(sql, params).fetchall())
            return rows

        async def close_sqlite() -> None:
            db.close()

        run, close = run_sqlite, close_sqlite
    else:
        assert store.postgres_dsn is not None
        connection = await asyncpg.connect(store.postgres_dsn)

        async def run_postgres(statements: list[tuple[str, Any]]) -> int:
            rows = 0
            for sql, params in statements:
                rows = len(await connection.fetch(sql, *params))
            return rows

        async def close_postgres() -> None:
            await connection.close()

        run, close = run_postgres, close_postgres
    samples: list[float] = []
    rows: list[int] = []
    try:
        for where in query.wheres[:warmup]:
            await run(statements_for(where))
        deadline = time.monotonic() + time_limit
        for where in query.wheres:
            statements = statements_for(where)
            started = time.perf_counter()
            rows.append(await run(statements))
            samples.append(time.perf_counter() - started)
            if time.monotonic() > deadline:
                break
    finally:
        await close()
    return {
        **_quantiles(samples),
        "rows_mean": sum(rows) / len(rows),
        "statements": len(template),
        "sql": [sql for sql, _ in template],
    }

"""A delivery's claim on SQLite: on the writer's thread, found by id, undone with its
transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage import deliveries as delivery_store
from gateway.storage import delivery_runs
from gateway.storage.db import WriteTransactions, make_engine, migrate
from gateway.storage.webhooks import webhooks_table

DUE = 2_000  # open deliveries of one web hook


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A SQLite database with one web hook and DUE pending deliveries."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    await migrate(engine)
    at = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', :at)"), {"at": at}
        )
        await connection.execute(
            insert(webhooks_table).values(
                id=1,
                account_id=1,
                url="http://127.0.0.1:9/",
                method="POST",
                format="GATEWAY",
                secret="s",
                created_at=at,
                updated_at=at,
            )
        )
        await connection.execute(
            insert(delivery_store.deliveries_table),
            [
                {
                    "id": delivery_id,
                    "account_id": 1,
                    "webhook_id": 1,
                    "status": "PENDING",
                    "next_attempt_at": at,
                    "created_at": at,
                    "updated_at": at,
                }
                for delivery_id in range(1, DUE + 1)
            ],
        )
    yield engine
    await engine.dispose()


async def test_a_claim_finds_its_deliveries_by_id_not_among_all_open_ones(
    engine: AsyncEngine,
) -> None:
    transactions = WriteTransactions(engine)

    def claim_and_plan(connection: Connection) -> tuple[list[int], list[str]]:
        # The statement as SQLite ran it (its values in place), through sqlite3's trace.
        sqlite = connection.connection.driver_connection
        assert isinstance(sqlite, sqlite3.Connection)  # the writer's thread: plain sqlite3
        statements: list[str] = []
        sqlite.set_trace_callback(statements.append)
        try:
            claimed = delivery_runs.claim_deliveries(
                connection, delivery_ids=list(range(5, 15)), now=datetime.now(UTC), lease_seconds=10
            )
        finally:
            sqlite.set_trace_callback(None)
        [statement] = [s for s in statements if s.startswith("UPDATE deliveries")]
        plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement)
        return [record.id for record in claimed], [row[3] for row in plan]

    try:
        claimed, plan = await transactions.run(claim_and_plan)
    finally:
        await transactions.close()
    assert sorted(claimed) == list(range(5, 15))
    # SQLite's planner, left to itself, reads every open delivery by the status index.
    assert plan == ["SEARCH deliveries USING INDEX sqlite_autoindex_deliveries_1 (id=?)"]


async def test_a_claim_on_the_writers_thread_is_undone_when_its_work_fails(
    engine: AsyncEngine,
) -> None:
    transactions = WriteTransactions(engine)

    def claim_then_fail(connection: Connection) -> None:
        delivery_runs.claim_deliveries(
            connection, delivery_ids=[8], now=datetime.now(UTC), lease_seconds=10
        )
        raise RuntimeError("after the claim")

    try:
        with pytest.raises(RuntimeError):
            await transactions.run(claim_then_fail)
        # Rolled back: the delivery is free to claim again.
        claimed = await transactions.run(
            lambda connection: delivery_runs.claim_deliveries(
                connection, delivery_ids=[8], now=datetime.now(UTC), lease_seconds=10
            )
        )
    finally:
        await transactions.close()
    assert [record.id for record in claimed] == [8]

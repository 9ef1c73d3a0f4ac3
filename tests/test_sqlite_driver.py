"""The SQLite driver under SQLAlchemy: one trip to the connection's thread a statement,
and everything SQLAlchemy reads from a cursor still right (rows, rowcount, lastrowid,
errors, transactions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage import sqlite_driver
from gateway.storage.db import begin_write, make_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    yield engine
    await engine.dispose()


async def test_the_engine_uses_the_one_trip_driver(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite_driver.OneTripConnection)


async def test_a_query_is_one_trip_and_returns_every_row(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with begin_write(engine) as connection:
        await connection.execute(
            text("INSERT INTO t (id, v) VALUES (:id, :v)"),
            [{"id": i, "v": f"v{i}"} for i in range(1, 151)],
        )
    async with engine.connect() as connection:
        trips.clear()
        result = await connection.execute(
            text("SELECT id, v FROM t WHERE id > :n ORDER BY id"), {"n": 10}
        )
        rows = result.all()
        assert trips == ["_run"]
    assert len(rows) == 140
    assert rows[0] == (11, "v11") and rows[-1] == (150, "v150")


async def test_rowcount_lastrowid_and_returning(engine: AsyncEngine) -> None:
    async with begin_write(engine) as connection:
        inserted = await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert inserted.lastrowid == 1
        await connection.execute(text("INSERT INTO t (v) VALUES ('b'), ('c')"))
        updated = await connection.execute(text("UPDATE t SET v = v || '!' WHERE id > 1"))
        assert updated.rowcount == 2
        returned = await connection.execute(
            text("UPDATE t SET v = 'z' WHERE id = 3 RETURNING id, v")
        )
        assert returned.all() == [(3, "z")]
        nothing = await connection.execute(text("SELECT id FROM t WHERE id > 99"))
        assert nothing.first() is None


async def test_errors_reach_the_caller_and_roll_back(engine: AsyncEngine) -> None:
    async with begin_write(engine) as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('one')"))
    with pytest.raises(IntegrityError):
        async with begin_write(engine) as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('two')"))
            await connection.execute(text("INSERT INTO t (v) VALUES ('one')"))
    async with engine.connect() as connection:
        values = (await connection.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
    # The failed transaction left nothing behind, and the connection still works.
    assert values == ["one"]


async def test_a_returned_connection_holds_no_transaction(engine: AsyncEngine) -> None:
    """The pool does not roll back on return (a wasted trip); a connection closed in the
    middle of a transaction must still not hand it to the next user."""
    connection = await engine.connect()
    await connection.execute(text("INSERT INTO t (v) VALUES ('uncommitted')"))
    await connection.close()
    async with begin_write(engine) as writer:
        await writer.execute(text("INSERT INTO t (v) VALUES ('committed')"))
    async with engine.connect() as reader:
        values = (await reader.execute(text("SELECT v FROM t"))).scalars().all()
    assert values == ["committed"]


async def test_run_joins_the_open_transaction_in_one_trip(
    engine: AsyncEngine, trips: list[str]
) -> None:
    def insert_two(sqlite: Any) -> int:
        sqlite.executemany("INSERT INTO t (v) VALUES (?)", [("a",), ("b",)])
        return int(sqlite.execute("SELECT count(*) FROM t").fetchone()[0])

    with pytest.raises(RuntimeError):
        async with begin_write(engine) as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            trips.clear()
            assert await raw.run(insert_two) == 2
            assert trips == ["insert_two"]
            raise RuntimeError("roll back")
    async with begin_write(engine) as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert await raw.run(insert_two) == 2  # the first two were rolled back with it
    async with engine.connect() as connection:
        count = (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one()
    assert count == 2

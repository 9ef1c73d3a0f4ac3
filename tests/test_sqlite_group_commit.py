"""SQLite group commits: a small batch with nothing else to write is inserted and
committed on the event loop's thread, in one go, with no hand-off to the driver's
thread; in-transaction hooks run only when their work table has rows of the batch's
accounts; a failure leaves nothing behind; and checkpoints happen in a thread, never
inside those commits."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.events import NormalizedEvent
from gateway.domain.query import StoredEvent
from gateway.ids import IdGenerator
from gateway.services.ingest import IngestWriter
from gateway.storage.db import WalCheckpoints, begin_write, make_engine, migrate
from gateway.storage.events import NewEvent, insert_prepared, prepare_events
from tests.support import delivered_events

ACCOUNT = 1


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    await migrate(engine)
    async with begin_write(engine) as connection:
        await connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES (:id, 'a', :at)"),
            {"id": ACCOUNT, "at": datetime.now(UTC)},
        )
    yield engine
    await engine.dispose()


def events(count: int) -> list[NormalizedEvent]:
    return delivered_events(count, padding=600)


async def stored_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM events"))).scalar_one())


# Work tables: the account has no web hooks; every stored event is a row of its own.
NEVER = "webhooks"
ALWAYS = "events"


def assert_write_lock_free(database: Path) -> None:
    """Another process could take the write lock at once (raises if not)."""
    other = sqlite3.connect(database, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


class RecordingHook:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def __call__(self, connection: AsyncConnection, stored: Sequence[StoredEvent]) -> None:
        # It runs inside the batch's transaction: it sees the events, uncommitted.
        count = (await connection.execute(text("SELECT count(*) FROM events"))).scalar_one()
        assert count >= len(stored)
        self.calls.append([event.id for event in stored])


async def test_a_small_batch_is_committed_without_a_trip_to_the_thread(
    engine: AsyncEngine, trips: list[str]
) -> None:
    hook = RecordingHook()
    writer = IngestWriter(engine, IdGenerator(1))
    writer.add_hooks(in_transaction=hook, work_in=NEVER)
    try:
        trips.clear()
        result = await writer.write(ACCOUNT, None, events(3))
        assert trips == []
    finally:
        await writer.stop()
    assert result.stored == 3
    assert hook.calls == []  # its work table had no rows of the account
    # Committed: another connection (another thread) sees the events.
    assert await stored_count(engine) == 3


async def test_hooks_run_in_the_transaction_when_their_work_table_has_rows(
    engine: AsyncEngine,
) -> None:
    hook = RecordingHook()
    writer = IngestWriter(engine, IdGenerator(1))
    writer.add_hooks(in_transaction=hook, work_in=ALWAYS)
    try:
        result = await writer.write(ACCOUNT, None, events(2))
    finally:
        await writer.stop()
    assert hook.calls == [list(result.ids)]
    assert await stored_count(engine) == 2


async def test_a_hook_without_a_work_table_always_runs(engine: AsyncEngine) -> None:
    hook = RecordingHook()
    writer = IngestWriter(engine, IdGenerator(1))
    writer.add_hooks(in_transaction=RecordingHook(), work_in=NEVER)
    writer.add_hooks(in_transaction=hook)
    try:
        result = await writer.write(ACCOUNT, None, events(2))
    finally:
        await writer.stop()
    assert hook.calls == [list(result.ids)]


async def test_a_failed_batch_leaves_nothing_and_the_next_one_is_stored(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    failing = IngestWriter(engine, IdGenerator(1))
    failing.add_hooks(in_transaction=RecordingHook(), work_in="no_such_table")
    try:
        # The work table is read after the inserts, in the same transaction.
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await failing.write(ACCOUNT, None, events(4))
        # Its own connection, kept for the next batch, holds no transaction: another
        # process could take the write lock at once.
        assert_write_lock_free(tmp_path / "gateway.db")
    finally:
        await failing.stop()
    assert await stored_count(engine) == 0
    writer = IngestWriter(engine, IdGenerator(2))
    try:
        assert (await writer.write(ACCOUNT, None, events(4))).stored == 4
    finally:
        await writer.stop()
    assert await stored_count(engine) == 4


async def test_inline_commits_leave_checkpoints_to_a_thread(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    database = tmp_path / "gateway.db"
    wal = tmp_path / "gateway.db-wal"
    async with engine.connect() as connection:
        await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    size = database.stat().st_size
    ids = IdGenerator(1)
    for _ in range(40):  # well over SQLite's 1,000-page automatic checkpoint
        new = [NewEvent(ids.next_id(), ACCOUNT, None, event) for event in events(16)]
        async with begin_write(engine) as connection:
            inserted = await insert_prepared(
                connection,
                prepare_events(connection.dialect, new, datetime.now(UTC)),
                commit_unless=[],
            )
        assert inserted.committed and inserted.checkpoint_owed
    assert wal.stat().st_size > 1000 * 4096
    # Every page is still in the WAL: no commit ran a checkpoint.
    assert database.stat().st_size == size

    checkpoints = WalCheckpoints(engine, every_events=640)
    checkpoints.owed(639)
    await checkpoints.close()
    assert database.stat().st_size == size  # not yet owed enough
    checkpoints.owed(1)
    await checkpoints.close()
    assert database.stat().st_size > size + 640 * 600
    assert await stored_count(engine) == 640


async def test_a_large_batch_commits_in_one_trip_to_the_thread(
    engine: AsyncEngine, trips: list[str]
) -> None:
    ids = IdGenerator(1)
    new = [NewEvent(ids.next_id(), ACCOUNT, None, event) for event in events(200)]
    async with begin_write(engine) as connection:
        prepared = prepare_events(connection.dialect, new, datetime.now(UTC))
        trips.clear()
        inserted = await insert_prepared(connection, prepared, commit_unless=[NEVER])
        assert inserted.committed and not inserted.checkpoint_owed
    assert trips == ["write"]  # the begin_write's own commit had nothing left to do
    assert await stored_count(engine) == 200


async def test_a_batch_waits_for_another_process_lock_off_the_loop(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    """Another process (here: another connection) holds the write lock: the batch
    waits for it in the driver's thread, and the event loop keeps running meanwhile."""
    other = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writer = IngestWriter(engine, IdGenerator(1))
    writer.add_hooks(in_transaction=RecordingHook(), work_in=NEVER)
    try:
        write = asyncio.create_task(writer.write(ACCOUNT, None, events(2)))
        ticks: list[float] = []
        loop = asyncio.get_running_loop()
        while len(ticks) < 30:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)
        assert not write.done()  # still waiting for the lock
        other.execute("COMMIT")
        assert (await asyncio.wait_for(write, 10)).stored == 2
        # The attempt on the loop left nothing open behind it: the next batch is
        # written there again.
        trips.clear()
        assert (await writer.write(ACCOUNT, None, events(1))).stored == 1
        assert trips == []
    finally:
        other.close()
        await writer.stop()
    # The loop was never held up while the batch waited (a blocked loop: 0.3 s at once).
    assert max(later - earlier for earlier, later in itertools.pairwise(ticks)) < 0.1
    assert await stored_count(engine) == 3


async def test_the_writer_gives_its_connection_back_without_a_transaction(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Its work always ends what it begins; should a transaction still be open at stop
    (here: begun by hand), it is rolled back before the connection goes back to the
    pool, where it would hold the write lock for good (the pool resets nothing)."""
    writer = IngestWriter(engine, IdGenerator(1))
    writer.add_hooks(in_transaction=RecordingHook(), work_in=NEVER)
    try:
        assert (await writer.write(ACCOUNT, None, events(1))).stored == 1
        own = writer._own_driver
        assert own is not None
        own.run_inline(lambda sqlite: sqlite.execute("BEGIN IMMEDIATE"))
    finally:
        await writer.stop()
    assert_write_lock_free(tmp_path / "gateway.db")

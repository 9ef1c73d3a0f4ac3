"""SQLite group commits: a batch with nothing else to write is inserted and committed
in one trip to the writer's own thread, on a plain sqlite3 connection, and no
statement runs on the event loop's thread; in-transaction hooks run only when their
work table has rows of the batch's accounts; a failure leaves nothing behind; and the
writer's thread and the engine's writers of the same process never wait for each
other in a circle."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import uuid
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
from gateway.storage.db import SqliteThread, begin_write, make_engine, migrate
from tests.support import delivered_events

ACCOUNT = 1
BUSY = 2  # an account with a row in the work table (WORK)
WORK = "api_keys"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    await migrate(engine)
    now = datetime.now(UTC)
    async with begin_write(engine) as connection:
        for account in (ACCOUNT, BUSY):
            await connection.execute(
                text("INSERT INTO accounts (id, name, created_at) VALUES (:id, :name, :at)"),
                {"id": account, "name": f"a{account}", "at": now},
            )
        await connection.execute(
            text(
                "INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at)"
                " VALUES (1, :account, :hash, 'k', :at)"
            ),
            {"account": BUSY, "hash": uuid.uuid4().hex, "at": now},
        )
    yield engine
    await engine.dispose()


def events(count: int) -> list[NormalizedEvent]:
    return delivered_events(count, padding=600)


async def stored_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM events"))).scalar_one())


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


def recording_writer(engine: AsyncEngine) -> tuple[IngestWriter, RecordingHook]:
    hook = RecordingHook()
    writer = IngestWriter(engine, IdGenerator(1))
    writer.add_hooks(in_transaction=hook, work_in=WORK)
    return writer, hook


async def test_a_batch_without_work_is_one_trip_to_the_writers_thread(
    engine: AsyncEngine, trips: list[str], sqlite_statements: list[tuple[str, str]]
) -> None:
    writer, hook = recording_writer(engine)
    try:
        result = await writer.write(ACCOUNT, None, events(3))
    finally:
        await writer.stop()
    assert result.stored == 3
    assert trips == ["write_alone"]
    statements = [words for words, _rows in itertools.groupby(s for _t, s in sqlite_statements)]
    assert statements == [
        "BEGIN IMMEDIATE",
        "SELECT 1 FROM",  # the work table
        "INSERT INTO events",
        "INSERT INTO event_tags",
        "INSERT INTO tag_counts",
        "INSERT INTO event_counts",
        "COMMIT",
    ]
    assert hook.calls == []  # its work table had no rows of the account
    # Committed: another connection sees the events.
    assert await stored_count(engine) == 3


async def test_a_batch_with_retries_writes_tags_and_counts_of_its_new_events_only(
    engine: AsyncEngine, sqlite_statements: list[tuple[str, str]]
) -> None:
    """Each statement writes all its rows at once; when the insert's row count says
    that some events were already stored, the table tells which were new."""
    batch = delivered_events(4, tags=("t",), numbered_tag=True)
    writer = IngestWriter(engine, IdGenerator(1))
    try:
        first = await writer.write(ACCOUNT, None, batch[:2])
        second = await writer.write(ACCOUNT, None, batch)
    finally:
        await writer.stop()
    assert (first.stored, second.stored, second.duplicates) == (2, 2, 2)
    inserts = [words for _thread, words in sqlite_statements if words.startswith("INSERT")]
    assert inserts == 2 * [
        "INSERT INTO events",
        "INSERT INTO event_tags",
        "INSERT INTO tag_counts",
        "INSERT INTO event_counts",
    ]
    async with engine.connect() as connection:
        tags = await connection.execute(text("SELECT tag, count FROM tag_counts ORDER BY tag"))
        numbered = sorted(tag for event in batch for tag in event.tags if tag != "t")
        assert tags.all() == [*((tag, 1) for tag in numbered), ("t", 4)]
        tagged = await connection.execute(
            text("SELECT event_id FROM event_tags WHERE tag LIKE 'n%' ORDER BY event_id")
        )
        assert sorted(tagged.scalars()) == sorted([*first.ids, *second.ids])
        rollup = await connection.execute(
            text(
                "SELECT sum(count) FROM event_counts"
                " WHERE dimension = 'provider' AND span = 1 AND account_id = :a"
            ),
            {"a": ACCOUNT},
        )
        assert rollup.scalar_one() == 4


async def test_no_statement_of_a_batch_runs_on_the_event_loops_thread(
    engine: AsyncEngine, sqlite_statements: list[tuple[str, str]]
) -> None:
    writer, _hook = recording_writer(engine)
    try:
        for _ in range(3):
            await writer.write(ACCOUNT, None, events(2))
    finally:
        await writer.stop()
    threads = {thread for thread, _words in sqlite_statements}
    assert len(threads) == 1
    assert threads.pop().startswith("sqlite-writer")


async def test_hooks_run_in_the_transaction_when_their_work_table_has_rows(
    engine: AsyncEngine, trips: list[str]
) -> None:
    writer, hook = recording_writer(engine)
    try:
        first = await writer.write(BUSY, None, events(2))
        # The one trip found work and wrote nothing; the transaction wrote it all.
        assert trips == ["write_alone"]
        second = await writer.write(BUSY, None, events(2))
        # The account is known to have work: straight to a transaction.
        assert trips == ["write_alone"]
    finally:
        await writer.stop()
    assert hook.calls == [list(first.ids), list(second.ids)]
    assert await stored_count(engine) == 4


async def test_a_hook_without_a_work_table_always_runs(engine: AsyncEngine) -> None:
    writer, _with_work_table = recording_writer(engine)
    hook = RecordingHook()
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
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await failing.write(ACCOUNT, None, events(4))
        # Its connection, kept for the next batch, holds no transaction: another
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


async def test_a_batch_waits_for_another_process_lock_off_the_loop(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    """Another process (here: another connection) holds the write lock: the batch
    waits for it in the writer's thread, and the event loop keeps running meanwhile."""
    other = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writer, _hook = recording_writer(engine)
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
        assert (await writer.write(ACCOUNT, None, events(1))).stored == 1
        assert trips == ["write_alone", "write_alone"]
    finally:
        other.close()
        await writer.stop()
    # The loop was never held up while the batch waited (a blocked loop: 0.3 s at once).
    assert max(later - earlier for earlier, later in itertools.pairwise(ticks)) < 0.1
    assert await stored_count(engine) == 3


async def test_the_writers_thread_and_the_engines_writers_take_turns(
    engine: AsyncEngine,
) -> None:
    """One-trip batches, batches with hooks and other transactions of the same process,
    all at once: each waits for its turn, none for a lock held by one waiting for it."""
    writer, hook = recording_writer(engine)

    async def other_writer(n: int) -> None:
        async with begin_write(engine) as connection:
            await connection.execute(
                text("UPDATE accounts SET name = :name WHERE id = :id"),
                {"name": f"renamed-{n}", "id": ACCOUNT},
            )

    try:
        busy = [writer.write(BUSY, None, events(2)) for _ in range(20)]
        work = [writer.write(ACCOUNT, None, events(2)) for _ in range(20)]
        work += [other_writer(n) for n in range(20)]
        results = await asyncio.wait_for(asyncio.gather(*busy, *work), 30)
    finally:
        await writer.stop()
    assert await stored_count(engine) == 80
    # Every event of the account with work went through the hook.
    busy_ids = {event_id for result in results[:20] for event_id in result.ids}
    assert busy_ids <= {event_id for call in hook.calls for event_id in call}


async def test_work_left_in_a_transaction_on_the_thread_is_rolled_back(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Work always ends what it begins; should a transaction still be open after it
    (here: begun and left), it is rolled back there and then: it would hold the write
    lock for good."""
    thread = SqliteThread.for_engine(engine)
    assert thread is not None
    try:
        await thread.run(lambda sqlite: sqlite.execute("BEGIN IMMEDIATE"))
        assert_write_lock_free(tmp_path / "gateway.db")
        assert await thread.run(lambda sqlite: sqlite.in_transaction) is False
    finally:
        await thread.close()

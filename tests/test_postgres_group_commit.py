"""PostgreSQL group commits: a batch whose accounts have no rows in any work table (no
web hooks) is one statement that commits by itself, with no BEGIN and no COMMIT; a
batch that finds work writes nothing in that statement and goes through a transaction
with its hooks instead, and its accounts skip the one-statement attempt for a while.
(The race with a web hook created meanwhile: test_webhook_ingest_race.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.events import NormalizedEvent
from gateway.domain.query import StoredEvent
from gateway.ids import IdGenerator
from gateway.services import ingest
from gateway.services.ingest import IngestWriter
from gateway.settings import async_database_url
from gateway.storage.db import begin_write, make_engine, migrate
from gateway.storage.events import NewEvent, insert_alone, prepare_events
from tests.support import delivered_events

# A work table the tests fill per account: rows of an account mean "the hook has work".
WORK = "api_keys"
_ids = IdGenerator(7)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(async_database_url(postgres_url))
    await migrate(engine)
    yield engine
    await engine.dispose()


async def new_account(engine: AsyncEngine, *, with_work: bool) -> int:
    account_id = _ids.next_id()
    now = datetime.now(UTC)
    async with begin_write(engine) as connection:
        await connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES (:id, :name, :at)"),
            {"id": account_id, "name": f"pg-{uuid.uuid4().hex[:12]}", "at": now},
        )
        if with_work:
            await connection.execute(
                text(
                    "INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at)"
                    " VALUES (:id, :account, :hash, 'k', :at)"
                ),
                {"id": _ids.next_id(), "account": account_id, "hash": uuid.uuid4().hex, "at": now},
            )
    return account_id


def events(count: int) -> list[NormalizedEvent]:
    return delivered_events(count, numbered_tag=True)


class RecordingHook:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def __call__(self, connection: AsyncConnection, stored: Sequence[StoredEvent]) -> None:
        # Inside the batch's transaction: its events are there, uncommitted.
        ids = [event.id for event in stored]
        found = await connection.execute(
            text("SELECT count(*) FROM events WHERE id = ANY(:ids)"), {"ids": ids}
        )
        assert found.scalar_one() == len(ids)
        self.calls.append(ids)


def recording_writer(engine: AsyncEngine) -> tuple[IngestWriter, RecordingHook]:
    """A writer whose one in-transaction hook records its calls and has WORK."""
    hook = RecordingHook()
    writer = IngestWriter(engine, IdGenerator(8))
    writer.add_hooks(in_transaction=hook, work_in=WORK)
    return writer, hook


@pytest.fixture
def sent(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What the engine's connections send: each statement's first words, and BEGIN for
    every transaction asyncpg actually starts (a spy: everything still goes through).
    SQLAlchemy begins lazily, as the first statement of a transaction goes out: BEGIN
    comes right after that statement's entry."""
    seen: list[str] = []

    def statement(*args: Any) -> None:
        seen.append(" ".join(args[2].split()[:2]))

    original_start = asyncpg.transaction.Transaction.start

    async def start(self: Any) -> None:
        seen.append("BEGIN")
        await original_start(self)

    monkeypatch.setattr(asyncpg.transaction.Transaction, "start", start)
    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", statement)


async def count(engine: AsyncEngine, table: str, account_id: int) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {table} WHERE account_id = :a"),
            {"a": account_id},
        )
        return int(result.scalar_one())


async def test_a_batch_without_work_is_one_statement_with_no_transaction(
    engine: AsyncEngine, sent: list[str]
) -> None:
    account = await new_account(engine, with_work=False)
    writer, hook = recording_writer(engine)
    batch = events(3)
    try:
        sent.clear()
        first = await writer.write(account, None, batch)
        assert sent == ["WITH guard"]
        again = await writer.write(account, None, batch)  # a provider's retry
    finally:
        await writer.stop()
    assert (first.stored, again.stored, again.duplicates) == (3, 0, 3)
    assert hook.calls == []
    # Committed, with the tags and their counts of the events stored once.
    assert await count(engine, "events", account) == 3
    assert await count(engine, "event_tags", account) == 6
    async with engine.connect() as connection:
        counts = await connection.execute(
            text("SELECT count FROM tag_counts WHERE account_id = :a AND tag = 't'"),
            {"a": account},
        )
        assert counts.scalar_one() == 3


async def test_a_batch_with_work_is_written_once_in_a_transaction_with_its_hooks(
    engine: AsyncEngine, sent: list[str]
) -> None:
    busy = await new_account(engine, with_work=True)
    writer, hook = recording_writer(engine)
    try:
        sent.clear()
        first = await writer.write(busy, None, events(2))
        # The one statement found work and wrote nothing; the transaction wrote it all.
        assert sent[:3] == ["WITH guard", "WITH guard", "BEGIN"]
        assert sent[-1] == "SELECT count(*)"  # the hook, before the commit
        sent.clear()
        second = await writer.write(busy, None, events(2))
        # The account is known to have work: straight to a transaction.
        assert sent[:2] == ["WITH guard", "BEGIN"]
    finally:
        await writer.stop()
    assert (first.stored, second.stored) == (2, 2)
    assert hook.calls == [list(first.ids), list(second.ids)]
    assert await count(engine, "events", busy) == 4
    assert await count(engine, "event_tags", busy) == 8


async def test_an_account_tries_the_one_statement_again_once_its_refusal_lapses(
    engine: AsyncEngine, sent: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "_REFUSED_FOR_S", 0.0)
    account = await new_account(engine, with_work=True)
    writer, _hook = recording_writer(engine)
    try:
        await writer.write(account, None, events(1))
        async with begin_write(engine) as connection:  # its work is gone
            await connection.execute(
                text("DELETE FROM api_keys WHERE account_id = :a"), {"a": account}
            )
        sent.clear()
        await writer.write(account, None, events(1))
    finally:
        await writer.stop()
    assert sent == ["WITH guard"]
    assert await count(engine, "events", account) == 2


async def test_a_hook_without_a_work_table_keeps_every_batch_in_a_transaction(
    engine: AsyncEngine, sent: list[str]
) -> None:
    account = await new_account(engine, with_work=False)
    writer, _with_work_table = recording_writer(engine)
    hook = RecordingHook()
    writer.add_hooks(in_transaction=hook)
    try:
        sent.clear()
        result = await writer.write(account, None, events(2))
    finally:
        await writer.stop()
    assert sent[:2] == ["WITH guard", "BEGIN"]
    assert hook.calls == [list(result.ids)]


async def test_a_connection_that_ran_one_statement_goes_back_to_the_pool_transactional(
    postgres_url: str,
) -> None:
    """The one statement runs in autocommit on a pooled connection: the next checkout
    of that same connection must get real transactions again (a rollback undoes)."""
    engine = make_engine(async_database_url(postgres_url), pool_size=1)
    await migrate(engine)
    used: list[int] = []

    def statement(connection: Any, *_args: Any) -> None:
        used.append(id(connection.connection.dbapi_connection))

    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    account = await new_account(engine, with_work=False)
    writer, _hook = recording_writer(engine)
    try:
        assert (await writer.write(account, None, events(1))).stored == 1
        one_statement = used[-1]
        with pytest.raises(RuntimeError):
            async with begin_write(engine) as connection:
                assert id((await connection.get_raw_connection()).dbapi_connection) == (
                    one_statement
                )
                await connection.execute(
                    text("DELETE FROM events WHERE account_id = :a"), {"a": account}
                )
                raise RuntimeError("roll back")
    finally:
        await writer.stop()
        event.remove(engine.sync_engine, "before_cursor_execute", statement)
    try:
        assert await count(engine, "events", account) == 1
    finally:
        await engine.dispose()


async def test_the_guard_refuses_an_isolation_level_that_would_hide_new_web_hooks(
    engine: AsyncEngine,
) -> None:
    """Under REPEATABLE READ the guard's read would see the calling statement's
    snapshot, taken before the lock was granted: it refuses rather than miss a web hook
    created meanwhile."""
    account = await new_account(engine, with_work=False)
    new = [NewEvent(_ids.next_id(), account, None, event) for event in events(1)]
    connection = await engine.connect()
    try:
        await connection.exec_driver_sql(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ"
        )
        await connection.commit()
        with pytest.raises(DBAPIError, match="needs READ COMMITTED, not repeatable read"):
            await insert_alone(
                connection,
                prepare_events(connection.dialect, new, datetime.now(UTC)),
                unless_work_in=[WORK],
            )
    finally:
        await connection.invalidate()  # its session setting must not reach the pool
        await connection.close()
    assert await count(engine, "events", account) == 0


def test_postgresql_is_reached_through_asyncpg_only() -> None:
    with pytest.raises(ValueError, match="through asyncpg"):
        make_engine("postgresql+psycopg://postgres@127.0.0.1/test")

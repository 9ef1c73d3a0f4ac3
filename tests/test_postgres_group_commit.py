"""PostgreSQL group commits: a batch is one ordinary transaction: BEGIN, its accounts'
rows locked FOR SHARE, one statement for events, tags and counts that also says
whether the hooks have work, the hooks only if they do, COMMIT.
(The race with a web hook created meanwhile: test_webhook_ingest_race.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.events import NormalizedEvent
from gateway.domain.query import StoredEvent
from gateway.ids import IdGenerator
from gateway.services.ingest import IngestWriter
from gateway.settings import async_database_url
from gateway.storage.db import make_engine, migrate
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
    async with engine.begin() as connection:
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
def sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """What the engine's connections do: BEGIN, each statement's first two words,
    COMMIT (SQLAlchemy's events: a spy, everything still goes through)."""
    seen: list[str] = []

    def statement(*args: Any) -> None:
        seen.append(" ".join(args[2].split()[:2]))

    def begin(_connection: Any) -> None:
        seen.append("BEGIN")

    def commit(_connection: Any) -> None:
        seen.append("COMMIT")

    listeners = [("before_cursor_execute", statement), ("begin", begin), ("commit", commit)]
    for name, listener in listeners:
        event.listen(engine.sync_engine, name, listener)
    yield seen
    for name, listener in listeners:
        event.remove(engine.sync_engine, name, listener)


async def count(engine: AsyncEngine, table: str, account_id: int) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {table} WHERE account_id = :a"),
            {"a": account_id},
        )
        return int(result.scalar_one())


async def test_a_batch_is_one_transaction_that_locks_its_accounts_first(
    engine: AsyncEngine, sent: list[str]
) -> None:
    account = await new_account(engine, with_work=False)
    writer, hook = recording_writer(engine)
    batch = events(3)
    try:
        sent.clear()
        first = await writer.write(account, None, batch)
        assert sent == ["BEGIN", "SELECT id", "WITH batch", "COMMIT"]
        again = await writer.write(account, None, batch)  # a provider's retry
    finally:
        await writer.stop()
    assert (first.stored, again.stored, again.duplicates) == (3, 0, 3)
    assert hook.calls == []  # the account has no rows in the work table
    # Committed, with the tags and their counts of the events stored once.
    assert await count(engine, "events", account) == 3
    assert await count(engine, "event_tags", account) == 6
    async with engine.connect() as connection:
        counts = await connection.execute(
            text("SELECT count FROM tag_counts WHERE account_id = :a AND tag = 't'"),
            {"a": account},
        )
        assert counts.scalar_one() == 3


async def test_hooks_run_in_the_transaction_when_their_work_table_has_rows(
    engine: AsyncEngine, sent: list[str]
) -> None:
    busy = await new_account(engine, with_work=True)
    writer, hook = recording_writer(engine)
    try:
        sent.clear()
        result = await writer.write(busy, None, events(2))
    finally:
        await writer.stop()
    # The hook's own statement, inside the transaction.
    assert sent == ["BEGIN", "SELECT id", "WITH batch", "SELECT count(*)", "COMMIT"]
    assert hook.calls == [list(result.ids)]
    assert await count(engine, "events", busy) == 2


async def test_a_hook_without_a_work_table_always_runs(engine: AsyncEngine) -> None:
    account = await new_account(engine, with_work=False)
    writer, _with_work_table = recording_writer(engine)
    hook = RecordingHook()
    writer.add_hooks(in_transaction=hook)
    try:
        result = await writer.write(account, None, events(2))
    finally:
        await writer.stop()
    assert hook.calls == [list(result.ids)]


async def test_the_guard_function_is_gone(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        found = await connection.execute(text("SELECT to_regproc('gateway_ingest_guard')"))
        assert found.scalar_one() is None


def test_postgresql_is_reached_through_asyncpg_only() -> None:
    with pytest.raises(ValueError, match="through asyncpg"):
        make_engine("postgresql+psycopg://postgres@127.0.0.1/test")

"""Ingest: storing normalized events with group commit, then telling whoever listens.

A database commits ~600 single-row transactions a second here, so concurrent ingest
requests are grouped: one writer task takes everything waiting, writes it in one
transaction, and answers each request. Under load batches grow by themselves; alone, an
event waits for nobody.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.batching import Batcher
from gateway.domain.events import NormalizedEvent, Provider
from gateway.domain.query import StoredEvent
from gateway.ids import IdGenerator
from gateway.metrics import Metrics
from gateway.providers.base import IngestRequest, ParsedRequest, SourceConfig
from gateway.providers.registry import ADAPTERS
from gateway.storage import events as event_store
from gateway.storage.accounts import SourceRecord
from gateway.storage.db import SqliteThread, begin_write, write_lock
from gateway.storage.events import Inserted, NewEvent, PreparedEvent, Unstorable

log = logging.getLogger(__name__)

# SQLite: how long an account whose batch found work for the in-transaction hooks (it
# has web hooks) skips the one-trip insert: each refusal costs that trip.
_REFUSED_FOR_S = 60.0
_REFUSED_KEPT = 10_000  # then the lapsed entries are dropped

# Called inside the transaction with the events just stored (the outbox: deliveries are
# written with their events or not at all); what it returns is run after commit
# (enqueueing what it wrote). After-commit hooks get the stored events (live bus).
AfterCommitAction = Callable[[], Awaitable[None]]
InTransaction = Callable[
    [AsyncConnection, Sequence[StoredEvent]], Awaitable[AfterCommitAction | None]
]
AfterCommit = Callable[[Sequence[StoredEvent]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one caller's events: ``stored`` new ones (their ``ids``),
    ``duplicates`` already stored, and those that cannot be stored (``failed``: each
    one's index in the caller's list and the reason, its field first where known)."""

    stored: int
    duplicates: int
    ids: tuple[int, ...]
    failed: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Pending:
    """One caller's events, numbered and prepared for the insert as they arrived."""

    events: list[PreparedEvent]
    received_at: datetime
    order: tuple[int, ...]  # the id of each of the caller's events, in its order
    failed: dict[int, str]  # by id: why it cannot be stored


@dataclass(slots=True)
class _Written:
    """What writing (part of) a batch did."""

    stored: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    actions: list[AfterCommitAction] = field(default_factory=list)

    def add(self, other: _Written) -> _Written:
        self.stored |= other.stored
        self.failed |= other.failed
        self.actions += other.actions
        return self


class IngestWriter:
    """Stores events for many concurrent callers in shared transactions.

    A database error caused by one event (a value it refuses) does not fail the others:
    the batch is written again in halves, down to that event, which alone is reported
    as failed to its caller.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        *,
        batch_max: int = 2000,
        concurrency: int = 1,
        after_commit: Sequence[AfterCommit] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._metrics = metrics or Metrics()
        self._in_transaction: list[InTransaction] = []
        # Each in-transaction hook's work table; None once a hook without one is added.
        self._work_tables: list[str] | None = []
        # SQLite: accounts of batches whose one-trip insert found work for the hooks,
        # by when to try again; until then their batches go straight to a transaction.
        self._refused: dict[int, float] = {}
        self._after_commit = list(after_commit)
        # SQLite: a connection of the writer's own on a thread of its own, for batches
        # with no work for the hooks: the whole batch in one hand-off (write_alone).
        self._sqlite_thread = SqliteThread.for_engine(engine)
        self._batcher: Batcher[_Pending, IngestResult] = Batcher(
            self._write_batch,
            name="ingest-writer",
            max_batch=batch_max,
            weight=lambda pending: len(pending.events),
            then=self._run_after_commit,
            concurrency=concurrency,
        )
        # What each batch owes once its callers are answered, by batch.
        self._after: dict[int, list[AfterCommitAction]] = {}

    def add_hooks(
        self,
        *,
        in_transaction: InTransaction | None = None,
        work_in: str | None = None,
        after_commit: AfterCommit | None = None,
    ) -> None:
        """``work_in``, if given, names the table whose rows of an account mean that
        ``in_transaction`` has something to do for that account's events (the outbox:
        ``webhooks``). The hooks are called for a batch only when one of its accounts
        has rows there; on SQLite, a batch with none is written in one trip."""
        if in_transaction is not None:
            self._in_transaction.append(in_transaction)
            if work_in is None:
                self._work_tables = None
            elif self._work_tables is not None:
                self._work_tables.append(work_in)
        if after_commit is not None:
            self._after_commit.append(after_commit)

    async def stop(self) -> None:
        try:
            await self._batcher.close()
        finally:
            if self._sqlite_thread is not None:
                await self._sqlite_thread.close()

    async def write(
        self, account_id: int, source_id: int | None, events: Sequence[NormalizedEvent]
    ) -> IngestResult:
        """Store ``events`` for one account; returns once they are committed."""
        if not events:
            return IngestResult(0, 0, ())
        now = datetime.now(UTC)
        new = [NewEvent(self._ids.next_id(), account_id, source_id, event) for event in events]
        prepared: list[PreparedEvent] = []
        failed: dict[int, str] = {}
        for item in event_store.prepare_events(self._engine.dialect, new, now):
            if isinstance(item, Unstorable):
                failed[item.new.id] = item.reason
            else:
                prepared.append(item)
        pending = _Pending(prepared, now, tuple(event.id for event in new), failed)
        if not prepared:
            return self._result(pending, _Written())
        return await self._batcher.submit(pending)

    async def _write_batch(self, batch: list[_Pending]) -> list[IngestResult]:
        events = [prepared for pending in batch for prepared in pending.events]
        received = {
            prepared.new.id: pending.received_at for pending in batch for prepared in pending.events
        }
        written = await self._store(events, received)
        self._metrics.ingest_batch(
            (prepared.new.event, prepared.new.id in written.stored)
            for prepared in events
            if prepared.new.id not in written.failed
        )
        if written.stored:
            stored = self._stored_events(events, written.stored, received)
            written.actions += [functools.partial(hook, stored) for hook in self._after_commit]
        self._after[id(batch)] = written.actions
        return [self._result(pending, written) for pending in batch]

    async def _run_after_commit(self, batch: list[_Pending]) -> None:
        for action in self._after.pop(id(batch), []):
            try:
                await action()
            except Exception:
                # The events are committed; a failed notification must not undo
                # that answer. The outbox sweeper picks up undelivered work.
                log.exception("after-commit action %r failed", action)

    @staticmethod
    def _result(pending: _Pending, written: _Written) -> IngestResult:
        ids = tuple(event_id for event_id in pending.order if event_id in written.stored)
        failed = tuple(
            (index, reason)
            for index, event_id in enumerate(pending.order)
            if (reason := pending.failed.get(event_id) or written.failed.get(event_id))
        )
        return IngestResult(len(ids), len(pending.order) - len(ids) - len(failed), ids, failed)

    async def _store(
        self, events: Sequence[PreparedEvent], received: dict[int, datetime]
    ) -> _Written:
        """Write ``events``; should the database refuse a value, write them again in
        halves, each half in a transaction of its own, down to the event at fault."""
        try:
            return await self._write(events, received)
        except Exception as error:
            reason = event_store.refused_by_database(error)
            if reason is None:
                raise
            if len(events) == 1:
                log.warning("event %d not stored: %s", events[0].new.id, reason)
                return _Written(failed={events[0].new.id: reason})
        half = len(events) // 2
        first = await self._store(events[:half], received)
        return first.add(await self._store(events[half:], received))

    async def _write(
        self, events: Sequence[PreparedEvent], received: dict[int, datetime]
    ) -> _Written:
        """One transaction: on SQLite in one trip to the writer's thread unless the
        hooks have work; else through SQLAlchemy, with the hooks."""
        alone = await self._write_alone(events)
        if alone is not None:
            return _Written(alone.stored)
        written = _Written()
        async with begin_write(self._engine) as connection:
            inserted = await event_store.insert_prepared(
                connection, events, work_in=self._work_tables or ()
            )
            written.stored = inserted.stored
            if self._in_transaction and (inserted.has_work or self._work_tables is None):
                stored = self._stored_events(events, inserted.stored, received)
                for hook in self._in_transaction:
                    if (action := await hook(connection, stored)) is not None:
                        written.actions.append(action)
        return written

    async def _write_alone(self, events: Sequence[PreparedEvent]) -> Inserted | None:
        """SQLite: the batch written and committed in one trip to the writer's thread,
        unless one of its accounts has work for the hooks (then None, nothing written).
        Other writers of this process wait meanwhile (db.write_lock), so none holds
        SQLite's lock while waiting for that one; another process's writer is waited
        for in the thread."""
        if self._sqlite_thread is None or self._work_tables is None:
            return None
        accounts = {prepared.new.account_id for prepared in events}
        now = time.monotonic()
        for account in accounts & self._refused.keys():
            if self._refused[account] > now:
                return None
            del self._refused[account]
        # Built here: the writer's thread only runs the statements (write_alone).
        batch = event_store.SqliteBatch.of(events, unless_work_in=self._work_tables)
        write = functools.partial(event_store.write_alone, batch=batch)
        async with write_lock(self._engine):
            inserted = await self._sqlite_thread.run(write)
        if isinstance(inserted, Inserted):
            return inserted
        if len(self._refused) > _REFUSED_KEPT:
            self._refused = {a: t for a, t in self._refused.items() if t > now}
        for account in accounts:
            self._refused[account] = now + _REFUSED_FOR_S
        return None

    @staticmethod
    def _stored_events(
        events: Sequence[PreparedEvent], stored: set[int], received: dict[int, datetime]
    ) -> list[StoredEvent]:
        return [
            StoredEvent(new.id, new.account_id, received[new.id], new.event)
            for new in (prepared.new for prepared in events)
            if new.id in stored
        ]


def parse_request(
    provider: Provider, request: IngestRequest, source: SourceRecord
) -> ParsedRequest:
    """``request``'s events, read one by one by ``provider``'s adapter with ``source``'s
    settings (each normalized or refused); PayloadError when it cannot be read at all."""
    config = SourceConfig(timezone=source.timezone, parameters=source.parameters)
    return ADAPTERS[provider].parse(request, config)

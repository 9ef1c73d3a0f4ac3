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
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.batching import Batcher
from gateway.domain.events import NormalizedEvent, Provider
from gateway.domain.query import StoredEvent
from gateway.ids import IdGenerator
from gateway.providers.base import IngestRequest, ParsedRequest, PayloadError, SourceConfig
from gateway.providers.registry import ADAPTERS
from gateway.storage import accounts as account_store
from gateway.storage import events as event_store
from gateway.storage.accounts import SourceRecord
from gateway.storage.db import WalCheckpoints, begin_write, is_sqlite, open_connection, write_lock
from gateway.storage.events import Inserted, NewEvent, NotAlone, PreparedEvent
from gateway.storage.sqlite_driver import OneTripConnection

log = logging.getLogger(__name__)

# How long an account whose batch found work for the in-transaction hooks (it has web
# hooks) skips the one-statement insert: each refusal costs that statement's round trip.
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
    stored: int
    duplicates: int
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Pending:
    """One caller's events, numbered and prepared for the insert as they arrived."""

    events: list[PreparedEvent]
    received_at: datetime


class IngestWriter:
    """Stores events for many concurrent callers in shared transactions."""

    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        *,
        batch_max: int = 2000,
        concurrency: int = 1,
        after_commit: Sequence[AfterCommit] = (),
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._in_transaction: list[InTransaction] = []
        # Each in-transaction hook's work table; None once a hook without one is added.
        self._work_tables: list[str] | None = []
        # Accounts of batches whose first try (_insert_alone) found work for the hooks,
        # by when to try again; until then their batches go straight to a transaction.
        self._refused: dict[int, float] = {}
        self._after_commit = list(after_commit)
        self._checkpoints = WalCheckpoints(engine) if is_sqlite(engine) else None
        # SQLite: a connection of the writer's own for batches written on the event
        # loop, opened with the first; its page cache stays warm (a pooled connection
        # drops its cache whenever another one has written since it last ran), and no
        # checkout, BEGIN or close goes through SQLAlchemy (~0.2 ms a batch).
        self._own: AsyncConnection | None = None
        self._own_driver: OneTripConnection | None = None
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
        ``webhooks``). A batch none of whose accounts has rows in any work table is
        committed with its insert, in the same trip, and the hooks are not called."""
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
            if self._checkpoints is not None:
                await self._checkpoints.close()
        finally:
            if self._own is not None and self._own_driver is not None:
                own, driver = self._own, self._own_driver
                self._own = self._own_driver = None
                # Its work always ends its transaction; a pooled connection must not go
                # back holding the write lock even if something did not. (SQLAlchemy
                # does not know of that transaction: the driver's own rollback, which
                # makes no trip when none is open.)
                await driver.rollback()
                await own.close()

    async def write(
        self, account_id: int, source_id: int | None, events: Sequence[NormalizedEvent]
    ) -> IngestResult:
        """Store ``events`` for one account; returns once they are committed."""
        if not events:
            return IngestResult(0, 0, ())
        now = datetime.now(UTC)
        new = [NewEvent(self._ids.next_id(), account_id, source_id, event) for event in events]
        prepared = event_store.prepare_events(self._engine.dialect, new, now)
        return await self._batcher.submit(_Pending(prepared, now))

    async def _write_batch(self, batch: list[_Pending]) -> list[IngestResult]:
        results, stored, actions = await self._commit(batch)
        if stored:
            actions += [functools.partial(hook, stored) for hook in self._after_commit]
        self._after[id(batch)] = actions
        return results

    async def _run_after_commit(self, batch: list[_Pending]) -> None:
        for action in self._after.pop(id(batch), []):
            try:
                await action()
            except Exception:
                # The events are committed; a failed notification must not undo
                # that answer. The outbox sweeper picks up undelivered work.
                log.exception("after-commit action %r failed", action)

    async def _commit(
        self, batch: Sequence[_Pending]
    ) -> tuple[list[IngestResult], list[StoredEvent], list[AfterCommitAction]]:
        events = [prepared for pending in batch for prepared in pending.events]
        actions: list[AfterCommitAction] = []
        alone = await self._insert_alone(events)
        if isinstance(alone, Inserted):
            inserted = alone
            stored_events = self._stored_events(batch, inserted.stored)
        else:
            async with begin_write(self._engine) as connection:
                inserted = await event_store.insert_prepared(
                    connection, events, commit_unless=self._work_tables
                )
                stored_events = self._stored_events(batch, inserted.stored)
                if not inserted.committed:
                    for hook in self._in_transaction:
                        if (action := await hook(connection, stored_events)) is not None:
                            actions.append(action)
        stored = inserted.stored
        if inserted.checkpoint_owed and self._checkpoints is not None:
            self._checkpoints.owed(len(stored))
        results = []
        for pending in batch:
            ids = tuple(prepared.new.id for prepared in pending.events if prepared.new.id in stored)
            results.append(IngestResult(len(ids), len(pending.events) - len(ids), ids))
        return results, stored_events, actions

    async def _insert_alone(self, events: Sequence[PreparedEvent]) -> Inserted | NotAlone:
        """The batch written and committed by itself, with no transaction of
        SQLAlchemy's, unless one of its accounts has work for the hooks, or (SQLite)
        it cannot be written on the event loop at once: then nothing is written.
        PostgreSQL: one statement. SQLite: on the event loop's thread, on the
        writer's own connection."""
        if self._work_tables is None:
            return NotAlone.WORK
        accounts = {prepared.new.account_id for prepared in events}
        now = time.monotonic()
        for account in accounts & self._refused.keys():
            if self._refused[account] > now:
                return NotAlone.WORK
            del self._refused[account]
        if is_sqlite(self._engine):
            inserted = await self._insert_inline(events)
        else:
            async with open_connection(self._engine) as connection:
                inserted = await event_store.insert_alone(
                    connection, events, unless_work_in=self._work_tables
                )
        if inserted is NotAlone.WORK:
            if len(self._refused) > _REFUSED_KEPT:
                self._refused = {a: t for a, t in self._refused.items() if t > now}
            for account in accounts:
                self._refused[account] = now + _REFUSED_FOR_S
        return inserted

    async def _insert_inline(self, events: Sequence[PreparedEvent]) -> Inserted | NotAlone:
        assert self._work_tables is not None
        if self._own_driver is None:
            own = await self._engine.connect()
            try:
                raw = await own.get_raw_connection()
            except BaseException:
                await own.close()
                raise
            self._own, self._own_driver = own, cast(OneTripConnection, raw.driver_connection)
        # Nothing is awaited from here on: no other writer of this process can start
        # between this check and the commit.
        if write_lock(self._engine).locked():
            return NotAlone.BUSY
        return event_store.insert_inline(
            self._own_driver, self._engine.dialect, events, unless_work_in=self._work_tables
        )

    @staticmethod
    def _stored_events(batch: Sequence[_Pending], stored: set[int]) -> list[StoredEvent]:
        return [
            StoredEvent(new.id, new.account_id, pending.received_at, new.event)
            for pending in batch
            for new in (prepared.new for prepared in pending.events)
            if new.id in stored
        ]


def parse_request(
    provider: Provider, request: IngestRequest, source: SourceRecord
) -> ParsedRequest:
    """``request``'s events, read one by one by ``provider``'s adapter with ``source``'s
    settings (each normalized or refused); PayloadError when it cannot be read at all."""
    config = SourceConfig(timezone=source.timezone, parameters=source.parameters)
    return ADAPTERS[provider].parse(request, config)


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replaying one kept request did: its events stored (or found already
    stored), or why it still cannot be read."""

    payload: dict[str, object]
    result: IngestResult | None
    error: str | None = None


class RejectedPayloads:
    """Keeps every refused ingest request whole, with the reason, for replay.

    A replay reads the kept request again with its source's settings as they are now
    (a JangoMail parameter renamed, a time zone fixed, an adapter that learned a new
    quirk) and stores what it carries; dedupe keys make a second replay a no-op.
    """

    def __init__(self, engine: AsyncEngine, ids: IdGenerator, writer: IngestWriter) -> None:
        self._engine = engine
        self._ids = ids
        self._writer = writer

    async def keep(
        self,
        *,
        account_id: int | None,
        source_id: int | None,
        provider: str,
        method: str,
        path: str,
        query: str,
        content_type: str,
        body: bytes,
        status: int,
        reason: str,
    ) -> None:
        async with begin_write(self._engine) as connection:
            await account_store.save_rejected(
                connection,
                id=self._ids.next_id(),
                account_id=account_id,
                source_id=source_id,
                provider=provider,
                method=method,
                path=path,
                query=query,
                content_type=content_type,
                body=body,
                status=status,
                reason=reason,
                received_at=datetime.now(UTC),
            )

    async def recent(
        self, account_id: int, *, limit: int, before_id: int | None = None
    ) -> list[dict[str, object]]:
        async with self._engine.connect() as connection:
            return await account_store.list_rejected(
                connection, account_id=account_id, limit=limit, before_id=before_id
            )

    async def replay(self, account_id: int, rejected_id: int) -> ReplayOutcome | None:
        """Read a kept request again and store its events; None if the account has no
        such request."""
        async with self._engine.connect() as connection:
            kept = await account_store.get_rejected(
                connection, account_id=account_id, rejected_id=rejected_id
            )
            source = (
                None
                if kept is None or kept["source_id"] is None
                else await account_store.get_source(
                    connection, account_id=account_id, source_id=int(kept["source_id"])
                )
            )
        if kept is None:
            return None
        if source is None:
            return ReplayOutcome(kept, None, "its ingest source has been deleted")
        provider = Provider(source.provider)
        path = str(kept["path"]).rstrip("/").split("/")
        request = IngestRequest(
            method=str(kept["method"]),
            body=bytes(cast(bytes, kept["body"])),
            content_type=str(kept["content_type"]),
            query=urllib.parse.parse_qsl(str(kept["query"]), keep_blank_values=True),
            # /ingest/jangomail/{token}/{event}
            route_event=path[4] if provider is Provider.JANGOMAIL and len(path) > 4 else None,
            received_at=cast(datetime, kept["received_at"]),
        )
        try:
            parsed = parse_request(provider, request, source)
        except PayloadError as problem:
            return ReplayOutcome(kept, None, problem.message)
        if parsed.refused:
            return ReplayOutcome(kept, None, parsed.refused[0].reason)
        result = await self._writer.write(account_id, source.id, parsed.events)
        now = datetime.now(UTC)
        async with begin_write(self._engine) as connection:
            await account_store.mark_replayed(connection, rejected_id=rejected_id, at=now)
        return ReplayOutcome({**kept, "replayed_at": now}, result)

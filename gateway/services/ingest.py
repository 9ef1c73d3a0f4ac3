"""Ingest: storing normalized events with group commit, then telling whoever listens.

A database commits ~600 single-row transactions a second here, so concurrent ingest
requests are grouped: one writer task takes everything waiting, writes it in one
transaction, and answers each request. Under load batches grow by themselves; alone, an
event waits for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.events import NormalizedEvent
from gateway.domain.query import StoredEvent
from gateway.ids import IdGenerator
from gateway.storage import accounts as account_store
from gateway.storage import events as event_store
from gateway.storage.db import begin_write
from gateway.storage.events import NewEvent

log = logging.getLogger(__name__)

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


@dataclass(slots=True)
class _Pending:
    account_id: int
    source_id: int | None
    events: Sequence[NormalizedEvent]
    done: asyncio.Future[IngestResult]


class IngestWriter:
    """Stores events for many concurrent callers in shared transactions."""

    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        *,
        batch_max: int = 2000,
        in_transaction: Sequence[InTransaction] = (),
        after_commit: Sequence[AfterCommit] = (),
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._batch_max = batch_max
        self._in_transaction = list(in_transaction)
        self._after_commit = list(after_commit)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def add_hooks(
        self,
        *,
        in_transaction: InTransaction | None = None,
        after_commit: AfterCommit | None = None,
    ) -> None:
        if in_transaction is not None:
            self._in_transaction.append(in_transaction)
        if after_commit is not None:
            self._after_commit.append(after_commit)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def write(
        self, account_id: int, source_id: int | None, events: Sequence[NormalizedEvent]
    ) -> IngestResult:
        """Store ``events`` for one account; returns once they are committed."""
        if not events:
            return IngestResult(0, 0, ())
        if self._task is None:
            raise RuntimeError("IngestWriter.start() was not called")
        done: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(account_id, source_id, events, done))
        return await done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            rows = len(batch[0].events)
            while rows < self._batch_max and not self._queue.empty():
                pending = self._queue.get_nowait()
                batch.append(pending)
                rows += len(pending.events)
            try:
                results, stored, actions = await self._commit(batch)
            except Exception as exc:
                log.exception("ingest transaction failed for %d requests", len(batch))
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                continue
            for pending, result in zip(batch, results, strict=True):
                if not pending.done.done():
                    pending.done.set_result(result)
            if stored:
                for hook in self._after_commit:
                    actions.append(functools.partial(hook, stored))
            for action in actions:
                try:
                    await action()
                except Exception:
                    # The events are committed; a failed notification must not undo
                    # that answer. The outbox sweeper picks up undelivered work.
                    log.exception("after-commit action %r failed", action)

    async def _commit(
        self, batch: Sequence[_Pending]
    ) -> tuple[list[IngestResult], list[StoredEvent], list[AfterCommitAction]]:
        now = datetime.now(UTC)
        numbered = [
            [
                NewEvent(self._ids.next_id(), pending.account_id, pending.source_id, event)
                for event in pending.events
            ]
            for pending in batch
        ]
        async with begin_write(self._engine) as connection:
            stored = await event_store.insert_events(
                connection, events=[new for group in numbered for new in group], now=now
            )
            stored_events = [
                StoredEvent(new.id, new.account_id, now, new.event)
                for group in numbered
                for new in group
                if new.id in stored
            ]
            actions = [
                action
                for hook in self._in_transaction
                if (action := await hook(connection, stored_events)) is not None
            ]
        results = []
        for group in numbered:
            ids = tuple(new.id for new in group if new.id in stored)
            results.append(IngestResult(len(ids), len(group) - len(ids), ids))
        return results, stored_events, actions


class RejectedPayloads:
    """Keeps every refused ingest request whole, with the reason, for replay."""

    def __init__(self, engine: AsyncEngine, ids: IdGenerator) -> None:
        self._engine = engine
        self._ids = ids

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

    async def recent(self, account_id: int, *, limit: int) -> list[dict[str, object]]:
        async with self._engine.connect() as connection:
            return await account_store.list_rejected(connection, account_id=account_id, limit=limit)

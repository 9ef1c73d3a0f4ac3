"""The transactional outbox and the queue that wakes workers for it.

Deliveries are written in the transaction that stores their events (an event is never
stored without what it owes). After commit, a job ``deliver_webhook(webhook_id)`` is
queued for each web hook that got due deliveries; the job sends whatever the database
says is due for that web hook (``services.dispatch``), so a job carries no state that
can go stale.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.query import EventFilter, StoredEvent
from gateway.domain.webhooks import DeliveryStatus, WebhookConfig, backfill_start
from gateway.ids import IdGenerator
from gateway.storage import events as event_store
from gateway.storage import outbox as store
from gateway.storage import webhooks as webhook_store
from gateway.storage.db import begin_write

DELIVER_JOB = "deliver_webhook"
BACKFILL_JOB = "backfill"
BACKFILL_PAGE = 500
# A job not started this long after it was due is dropped by arq; the sweeper finds
# what it was for in the database.
JOB_EXPIRES = timedelta(hours=1)
# Deferred jobs of one web hook due within this step of each other are one job.
DEFER_STEP_MS = 100


class DeliveryQueue:
    """Jobs on arq's queue, through its public ``enqueue_job``.

    A job id names a web hook and why it is queued. Ids for "now" carry a number new
    to that request (the first of its new deliveries' ids, a fresh id), so that a job
    already queued or running for the same web hook never swallows new work; ids for
    "later" carry the time, so that many retries due together are one job.
    """

    def __init__(self, pool: ArqRedis) -> None:
        self._pool = pool

    async def deliver_now(self, work: Mapping[int, int | str]) -> None:
        """A job for each web hook id, named by its token."""
        await asyncio.gather(
            *(
                self._pool.enqueue_job(
                    DELIVER_JOB,
                    webhook_id,
                    _job_id=f"deliver:{webhook_id}:{token}",
                    _expires=JOB_EXPIRES,
                )
                for webhook_id, token in work.items()
            )
        )

    async def deliver_at(self, webhook_id: int, when: datetime) -> None:
        """A job for the web hook once ``when`` has come (rounded up to a step)."""
        step_ms = math.ceil(when.timestamp() * 1000 / DEFER_STEP_MS) * DEFER_STEP_MS
        due = datetime.fromtimestamp(step_ms / 1000, UTC)
        await self._pool.enqueue_job(
            DELIVER_JOB,
            webhook_id,
            _job_id=f"deliver:{webhook_id}:at:{step_ms}",
            _defer_until=due,
            _expires=max(due - datetime.now(UTC), timedelta(0)) + JOB_EXPIRES,
        )

    async def enqueue_backfill(self, webhook_id: int) -> None:
        await self._pool.enqueue_job(BACKFILL_JOB, webhook_id, _job_id=f"backfill:{webhook_id}")


def delivery_row(
    webhook: WebhookConfig, event_id: int | None, now: datetime, delivery_id: int
) -> dict[str, Any]:
    """An outbox row: due now, or held while its web hook is disabled."""
    return {
        "id": delivery_id,
        "account_id": webhook.account_id,
        "webhook_id": webhook.id,
        "event_id": event_id,
        "status": (DeliveryStatus.PENDING if webhook.enabled else DeliveryStatus.HELD).value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def first_of_each_webhook(rows: Sequence[Mapping[str, Any]], ids: Sequence[int]) -> dict[int, int]:
    """Web hook id -> the smallest of ``ids`` among its pending ``rows``: the token
    of its "deliver now" job."""
    inserted = set(ids)
    first: dict[int, int] = {}
    for row in rows:
        delivery_id, webhook_id = row["id"], row["webhook_id"]
        if delivery_id in inserted and row["status"] == DeliveryStatus.PENDING.value:
            first[webhook_id] = min(first.get(webhook_id, delivery_id), delivery_id)
    return first


class Outbox:
    """Writes deliveries: with their events at ingest, and a new web hook's backfill."""

    # write_outbox's work table (IngestWriter.add_hooks): it has work for the events
    # of accounts with a web hook, enabled or not.
    work_table = webhook_store.webhooks_table.name

    def __init__(self, engine: AsyncEngine, ids: IdGenerator, queue: DeliveryQueue) -> None:
        self._engine = engine
        self._ids = ids
        self._queue = queue

    async def write_outbox(
        self, connection: AsyncConnection, stored: Sequence[StoredEvent]
    ) -> Callable[[], Awaitable[None]] | None:
        """In the ingest transaction: one delivery per (matching web hook, event).
        Returns what to do after commit (queue a job for each web hook)."""
        accounts = sorted({event.account_id for event in stored})
        webhooks = await webhook_store.list_webhooks(connection, account_ids=accounts)
        if not webhooks:
            return None
        rows = self._rows(webhooks, stored)
        ids = await store.insert_deliveries(connection, rows=rows)
        work = first_of_each_webhook(rows, ids)

        async def enqueue() -> None:
            await self._queue.deliver_now(work)

        return enqueue if work else None

    def _rows(
        self, webhooks: Sequence[WebhookConfig], stored: Sequence[StoredEvent]
    ) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [
            delivery_row(webhook, stored_event.id, now, self._ids.next_id())
            for stored_event in stored
            for webhook in webhooks
            if webhook.account_id == stored_event.account_id and webhook.wants(stored_event.event)
        ]

    async def backfill(self, webhook_id: int) -> int:
        """Deliveries for the matching events of the web hook's last ``backfillDays``,
        oldest first; safe to run again (one delivery per web hook and event)."""
        async with self._engine.connect() as connection:
            webhook = await webhook_store.get_webhook(connection, webhook_id=webhook_id)
        if webhook is None or webhook.backfill_days <= 0:
            return 0
        where = EventFilter(
            tags=webhook.tags,
            types=webhook.events,
            start=backfill_start(webhook.created_at, webhook.backfill_days),
        )
        after_id = 0
        created = 0
        while True:
            async with begin_write(self._engine) as connection:
                page = await event_store.find_events(
                    connection,
                    account_id=webhook.account_id,
                    where=where,
                    limit=BACKFILL_PAGE,
                    after_id=after_id,
                    oldest_first=True,
                )
                if not page:
                    return created
                after_id = page[-1].id
                rows = self._rows([webhook], page)
                ids = await store.insert_deliveries(connection, rows=rows)
            created += len(ids)
            await self._queue.deliver_now(first_of_each_webhook(rows, ids))

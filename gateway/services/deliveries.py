"""Deliveries as callers see them: the log of every call, redelivery (one, or a time
window's), test events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.query import StoredEvent
from gateway.domain.webhooks import AttemptRecord, DeliveryRecord, DeliveryStatus, sample_event
from gateway.ids import IdGenerator
from gateway.services.accounts import InputError
from gateway.services.outbox import DeliveryQueue, delivery_row
from gateway.services.reads import bounded
from gateway.storage import deliveries as store
from gateway.storage import events as event_store
from gateway.storage import outbox
from gateway.storage import webhooks as webhook_store
from gateway.storage.db import begin_write

# Deliveries a recoverDeliveries call re-sends at most; a second call takes the rest
# (what the first re-sent is no longer in the status asked for). Bounds the write
# transaction and the burst one call puts on a receiver.
RECOVER_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A delivery with its attempts and the event it carries."""

    record: DeliveryRecord
    attempts: list[AttemptRecord]
    event: StoredEvent


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: list[DeliveryView]
    has_next_page: bool


class DeliveryService:
    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        queue: DeliveryQueue,
        *,
        read_timeout: float = 10.0,
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._queue = queue
        self._read_timeout = read_timeout  # of callers' reads (reads.bounded)

    async def deliveries(
        self,
        account_id: int,
        webhook_id: int,
        *,
        status: DeliveryStatus | None,
        first: int,
        before_id: int | None,
    ) -> DeliveryPage:
        async with bounded(self._engine, self._read_timeout) as connection:
            found = await store.list_deliveries(
                connection,
                account_id=account_id,
                webhook_id=webhook_id,
                status=status,
                limit=first + 1,
                before_id=before_id,
            )
            views = await self._views(connection, account_id, found[:first])
        return DeliveryPage(views, len(found) > first)

    async def delivery(self, account_id: int, delivery_id: int) -> DeliveryView | None:
        async with bounded(self._engine, self._read_timeout) as connection:
            record = await store.get_delivery(
                connection, delivery_id=delivery_id, account_id=account_id
            )
            if record is None:
                return None
            [view] = await self._views(connection, account_id, [record])
        return view

    async def _views(
        self, connection: AsyncConnection, account_id: int, records: Sequence[DeliveryRecord]
    ) -> list[DeliveryView]:
        """Attempts and events for a page of deliveries: two queries, not 2 per row."""
        attempts = await store.attempts_for(connection, delivery_ids=[r.id for r in records])
        events = {
            stored.id: stored
            for stored in await event_store.get_events(
                connection,
                account_id=account_id,
                ids=[r.event_id for r in records if r.event_id is not None],
            )
        }
        views = []
        for record in records:
            stored = events.get(record.event_id) if record.event_id is not None else None
            if stored is None:
                # A test delivery carries the fixed sample event.
                stored = StoredEvent(
                    0, account_id, record.created_at, sample_event(record.created_at)
                )
            views.append(DeliveryView(record, attempts[record.id], stored))
        return views

    async def redeliver(self, account_id: int, delivery_id: int) -> DeliveryView | None:
        """Send a delivery again now, whatever became of it (a final one gets new
        attempts; a retrying one does not wait for its retry)."""
        now = datetime.now(UTC)
        async with begin_write(self._engine) as connection:
            record = await store.get_delivery(
                connection, delivery_id=delivery_id, account_id=account_id
            )
            if record is None:
                return None
            await store.set_delivery_status(
                connection,
                delivery_id=delivery_id,
                status=DeliveryStatus.PENDING,
                now=now,
                next_attempt_at=now,
            )
        await self._queue.deliver_now({record.webhook_id: self._ids.next_id()})
        return await self.delivery(account_id, delivery_id)

    async def recover(
        self,
        account_id: int,
        webhook_id: int,
        *,
        since: datetime,
        until: datetime | None,
        status: DeliveryStatus,
        limit: int = RECOVER_LIMIT,
    ) -> int | None:
        """Send again, now, the web hook's deliveries in ``status`` created in [since,
        until): at most ``limit``, oldest first. Returns how many (None: no such
        web hook). Each keeps its attempt count, as ``redeliver`` does: it gets one
        more attempt, and is FAILED again if that fails after its schedule was spent."""
        if until is not None and until <= since:
            raise InputError("until", "must be after since")
        now = datetime.now(UTC)
        async with begin_write(self._engine) as connection:
            webhook = await webhook_store.get_webhook(
                connection, webhook_id=webhook_id, account_id=account_id
            )
            if webhook is None:
                return None
            count = await store.recover_deliveries(
                connection,
                webhook_id=webhook_id,
                status=status,
                since=since,
                until=until,
                now=now,
                limit=limit,
            )
        if count:
            await self._queue.deliver_now({webhook_id: self._ids.next_id()})
        return count

    async def send_test(self, account_id: int, webhook_id: int) -> DeliveryView | None:
        """A delivery of a fixed sample event (not stored as traffic)."""
        async with begin_write(self._engine) as connection:
            webhook = await webhook_store.get_webhook(
                connection, webhook_id=webhook_id, account_id=account_id
            )
            if webhook is None:
                return None
            # Like any delivery, held while the web hook is disabled.
            delivery_id = self._ids.next_id()
            row = delivery_row(webhook, None, datetime.now(UTC), delivery_id)
            await outbox.insert_deliveries(connection, rows=[row])
        await self._queue.deliver_now({webhook_id: delivery_id})
        return await self.delivery(account_id, delivery_id)

"""Web hooks: configuration, the transactional outbox, backfill, redelivery.

Deliveries are written in the transaction that stores their events (so an event is
never stored without what it owes), then enqueued after commit with the delivery id as
the arq job id (so enqueuing twice runs once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from arq.connections import ArqRedis
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.delivery import render, signing
from gateway.delivery.safety import UnsafeTarget, check_target
from gateway.domain.events import EventType
from gateway.domain.query import EventFilter, StoredEvent
from gateway.domain.webhooks import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryStatus,
    HttpMethod,
    WebhookConfig,
    WebhookFormat,
    backfill_start,
    sample_event,
)
from gateway.ids import IdGenerator
from gateway.services.accounts import InputError
from gateway.settings import Settings
from gateway.storage import events as event_store
from gateway.storage import webhooks as store
from gateway.storage.db import begin_write

log = logging.getLogger(__name__)

DELIVER_JOB = "deliver"
BACKFILL_JOB = "backfill"
BACKFILL_PAGE = 500
MAX_BACKFILL_DAYS = 30

Enqueue = Callable[[Sequence[int]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """What createWebhook / updateWebhook were given; None = not given."""

    url: str | None = None
    method: HttpMethod | None = None
    events: Sequence[EventType] | None = None
    format: WebhookFormat | None = None
    parameters: dict[str, str] | None = None
    tags: Sequence[str] | None = None
    templates: Sequence[str] | None = None
    secret: str | None = None
    backfill_days: int | None = None


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


# arq's enqueue_job, for many jobs in one round trip: a job whose id is queued, running
# or kept is not enqueued again (arq checks the same two keys, one job at a time with
# WATCH/MULTI: ~1.4 ms a job here, paid by the ingest writer).
_ENQUEUE_MANY = """
local queued = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i], KEYS[i + 1]) == 0 then
    redis.call('PSETEX', KEYS[i], ARGV[1], ARGV[(i + 1) / 2 + 4])
    redis.call('ZADD', ARGV[2], ARGV[3], string.sub(KEYS[i], ARGV[4] + 1))
    queued = queued + 1
  end
end
return queued
"""


class DeliveryQueue:
    """The arq queue of deliveries: job id = delivery id."""

    def __init__(self, pool: ArqRedis) -> None:
        self._pool = pool
        self._enqueue_many = pool.register_script(_ENQUEUE_MANY)

    async def enqueue(self, delivery_ids: Sequence[int]) -> None:
        """Queue ``deliver(id)`` for each id, in chunks of one Redis call each."""
        for start in range(0, len(delivery_ids), 500):
            chunk = delivery_ids[start : start + 500]
            now_ms = int(time.time() * 1000)
            keys: list[str] = []
            jobs: list[bytes] = []
            for delivery_id in chunk:
                keys += [job_key_prefix + str(delivery_id), result_key_prefix + str(delivery_id)]
                jobs.append(serialize_job(DELIVER_JOB, (delivery_id,), {}, None, now_ms))
            await self._enqueue_many(
                keys=keys,
                args=[expires_extra_ms, default_queue_name, now_ms, len(job_key_prefix), *jobs],
            )

    async def enqueue_backfill(self, webhook_id: int) -> None:
        await self._pool.enqueue_job(BACKFILL_JOB, webhook_id, _job_id=f"backfill:{webhook_id}")


class WebhookService:
    def __init__(
        self, engine: AsyncEngine, ids: IdGenerator, queue: DeliveryQueue, settings: Settings
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._queue = queue
        self._settings = settings

    # -- configuration -------------------------------------------------------------

    async def create(self, account_id: int, changes: WebhookChanges) -> tuple[WebhookConfig, str]:
        """A new web hook and its signing secret (shown once); its backfill is enqueued."""
        if changes.url is None:
            raise InputError("url", "is required")
        if not changes.events:
            raise InputError("events", "name at least one event type")
        now = datetime.now(UTC)
        secret = changes.secret or signing.new_secret()
        config = await self._checked(
            WebhookConfig(
                id=self._ids.next_id(),
                account_id=account_id,
                url=changes.url,
                method=changes.method or HttpMethod.POST,
                events=frozenset(changes.events),
                format=changes.format or WebhookFormat.GATEWAY,
                parameters=changes.parameters,
                tags=tuple(changes.tags or ()),
                templates=tuple(changes.templates or ()),
                secret=secret,
                enabled=True,
                disabled_reason=None,
                consecutive_failures=0,
                backfill_days=7 if changes.backfill_days is None else changes.backfill_days,
                created_at=now,
                updated_at=now,
            )
        )
        async with begin_write(self._engine) as connection:
            await store.lock_account_webhooks(connection, account_id)
            await store.add_webhook(connection, config)
        if config.backfill_days > 0:
            await self._queue.enqueue_backfill(config.id)
        return config, secret

    async def update(
        self, account_id: int, webhook_id: int, changes: WebhookChanges
    ) -> WebhookConfig | None:
        """Apply the given fields. A new URL or parameters re-enable a disabled web hook
        and send what it held (JangoMail's rule)."""
        async with self._engine.connect() as connection:
            current = await store.get_webhook(
                connection, webhook_id=webhook_id, account_id=account_id
            )
        if current is None:
            return None
        if changes.events is not None and not changes.events:
            raise InputError("events", "name at least one event type")
        updated = await self._checked(
            replace(
                current,
                url=current.url if changes.url is None else changes.url,
                method=changes.method or current.method,
                events=current.events if changes.events is None else frozenset(changes.events),
                format=changes.format or current.format,
                parameters=current.parameters if changes.parameters is None else changes.parameters,
                tags=current.tags if changes.tags is None else tuple(changes.tags),
                templates=current.templates
                if changes.templates is None
                else tuple(changes.templates),
                secret=changes.secret or current.secret,
                backfill_days=current.backfill_days
                if changes.backfill_days is None
                else changes.backfill_days,
                updated_at=datetime.now(UTC),
            )
        )
        target_changed = (updated.url, updated.parameters) != (current.url, current.parameters)
        if target_changed and not updated.enabled:
            return await self._enable(updated)
        async with begin_write(self._engine) as connection:
            await store.save_webhook(connection, updated)
        return updated

    async def enable(self, account_id: int, webhook_id: int) -> WebhookConfig | None:
        async with self._engine.connect() as connection:
            current = await store.get_webhook(
                connection, webhook_id=webhook_id, account_id=account_id
            )
        return None if current is None else await self._enable(current)

    async def _enable(self, config: WebhookConfig) -> WebhookConfig:
        now = datetime.now(UTC)
        enabled = replace(
            config, enabled=True, disabled_reason=None, consecutive_failures=0, updated_at=now
        )
        async with begin_write(self._engine) as connection:
            await store.lock_account_webhooks(connection, config.account_id)
            await store.save_webhook(connection, enabled)
            released = await store.release_held(connection, webhook_id=config.id, now=now)
        await self._queue.enqueue(released)
        return enabled

    async def delete(self, account_id: int, webhook_id: int) -> bool:
        async with begin_write(self._engine) as connection:
            # An in-flight ingest may be writing deliveries for it: let it finish, or
            # its whole batch fails on the foreign key.
            await store.lock_account_webhooks(connection, account_id)
            return await store.delete_webhook(
                connection, account_id=account_id, webhook_id=webhook_id
            )

    async def all(self, account_id: int) -> list[WebhookConfig]:
        async with self._engine.connect() as connection:
            return await store.list_webhooks(connection, account_ids=[account_id])

    async def get(self, account_id: int, webhook_id: int) -> WebhookConfig | None:
        async with self._engine.connect() as connection:
            return await store.get_webhook(connection, webhook_id=webhook_id, account_id=account_id)

    async def _checked(self, config: WebhookConfig) -> WebhookConfig:
        """The configuration, or InputError naming the first field that is wrong."""
        try:
            await check_target(config.url, allow_private=self._settings.allow_private_webhooks)
        except UnsafeTarget as problem:
            raise InputError("url", str(problem)) from None
        if config.method is HttpMethod.GET and config.format in {
            WebhookFormat.BREVO,
            WebhookFormat.SMTPETER,
        }:
            raise InputError("method", f"the {config.format.value} format is POSTed as JSON")
        if config.parameters is not None:
            if config.format in {WebhookFormat.BREVO, WebhookFormat.SMTPETER}:
                raise InputError(
                    "parameters",
                    f"the {config.format.value} format has that provider's own field names; "
                    "parameters apply to the JANGOMAIL and GATEWAY formats",
                )
            resolved: dict[str, str] = {}
            for field, name in config.parameters.items():
                known = render.resolve_field(config.format, field)
                if known is None:
                    raise InputError("parameters", f"unknown field {field!r}")
                resolved[known] = name.strip()
            config = replace(config, parameters=resolved)
        if not 0 <= config.backfill_days <= MAX_BACKFILL_DAYS:
            raise InputError("backfillDays", f"must be between 0 and {MAX_BACKFILL_DAYS}")
        try:
            signing.secret_key(config.secret)
        except ValueError:
            raise InputError(
                "secret", "must be 'whsec_' followed by at least 16 bytes in base64"
            ) from None
        return config

    # -- the outbox ----------------------------------------------------------------

    # write_outbox's work table (IngestWriter.add_hooks): it has work for the events
    # of accounts with a web hook, enabled or not.
    outbox_work_table = store.webhooks_table.name

    async def write_outbox(
        self, connection: AsyncConnection, stored: Sequence[StoredEvent]
    ) -> Callable[[], Awaitable[None]] | None:
        """In the ingest transaction: one delivery per (matching web hook, event).
        Returns what to do after commit (enqueue them)."""
        accounts = sorted({event.account_id for event in stored})
        webhooks = await store.list_webhooks(connection, account_ids=accounts)
        if not webhooks:
            return None
        rows = self._delivery_rows(webhooks, stored)
        ids = await store.insert_deliveries(connection, rows=rows)
        pending = {row["id"] for row in rows if row["status"] == DeliveryStatus.PENDING.value}
        due = [delivery_id for delivery_id in ids if delivery_id in pending]

        async def enqueue() -> None:
            await self._queue.enqueue(due)

        return enqueue if due else None

    def _delivery_rows(
        self, webhooks: Sequence[WebhookConfig], stored: Sequence[StoredEvent]
    ) -> list[dict[str, object]]:
        now = datetime.now(UTC)
        return [
            self._delivery_row(webhook, stored_event.id, now)
            for stored_event in stored
            for webhook in webhooks
            if webhook.account_id == stored_event.account_id and webhook.wants(stored_event.event)
        ]

    def _delivery_row(
        self, webhook: WebhookConfig, event_id: int | None, now: datetime
    ) -> dict[str, object]:
        """An outbox row: due now, or held while its web hook is disabled."""
        return {
            "id": self._ids.next_id(),
            "account_id": webhook.account_id,
            "webhook_id": webhook.id,
            "event_id": event_id,
            "status": (DeliveryStatus.PENDING if webhook.enabled else DeliveryStatus.HELD).value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }

    async def backfill(self, webhook_id: int) -> int:
        """Deliveries for the matching events of the web hook's last ``backfillDays``,
        oldest first; safe to run again (one delivery per web hook and event)."""
        async with self._engine.connect() as connection:
            webhook = await store.get_webhook(connection, webhook_id=webhook_id)
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
                rows = self._delivery_rows([webhook], page)
                ids = await store.insert_deliveries(connection, rows=rows)
            created += len(ids)
            if webhook.enabled:
                await self._queue.enqueue(ids)

    # -- deliveries ----------------------------------------------------------------

    async def deliveries(
        self,
        account_id: int,
        webhook_id: int,
        *,
        status: DeliveryStatus | None,
        first: int,
        before_id: int | None,
    ) -> DeliveryPage:
        async with self._engine.connect() as connection:
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
        async with self._engine.connect() as connection:
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
        """Send a delivery again, whatever became of it (a final one gets new attempts)."""
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
        await self._queue.enqueue([delivery_id])
        return await self.delivery(account_id, delivery_id)

    async def send_test(self, account_id: int, webhook_id: int) -> DeliveryView | None:
        """A delivery of a fixed sample event (not stored as traffic)."""
        async with begin_write(self._engine) as connection:
            webhook = await store.get_webhook(
                connection, webhook_id=webhook_id, account_id=account_id
            )
            if webhook is None:
                return None
            # Like any delivery, held while the web hook is disabled.
            row = self._delivery_row(webhook, None, datetime.now(UTC))
            await store.insert_deliveries(connection, rows=[row])
        delivery_id = int(str(row["id"]))
        await self._queue.enqueue([delivery_id])
        return await self.delivery(account_id, delivery_id)

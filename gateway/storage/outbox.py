"""The outbox: deliveries written with their events, and which of them are due.

A delivery is due when it is open (PENDING or RETRYING), its time has come, and no
worker holds a lease on it. This, not what the queue holds, decides what is sent.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.webhooks import DeliveryStatus
from gateway.storage.db import dialect_insert
from gateway.storage.deliveries import OPEN, deliveries_table
from gateway.storage.events import events_table
from gateway.storage.webhooks import webhooks_table

_HELD = DeliveryStatus.HELD.value


async def insert_deliveries(
    connection: AsyncConnection, *, rows: Sequence[dict[str, Any]]
) -> list[int]:
    """Outbox rows (id, account_id, webhook_id, event_id, status, next_attempt_at,
    created_at, updated_at); one per (web hook, event) ever. Returns the ids inserted."""
    if not rows:
        return []
    statement = (
        dialect_insert(connection, deliveries_table)
        .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"])
        .returning(deliveries_table.c.id)
    )
    result = await connection.execute(statement, list(rows))
    return sorted(row[0] for row in result.all())


async def release_held(connection: AsyncConnection, *, webhook_id: int, now: datetime) -> int:
    """The web hook's held deliveries become due now; returns how many."""
    result = await connection.execute(
        update(deliveries_table)
        .where(
            deliveries_table.c.webhook_id == webhook_id,
            deliveries_table.c.status == _HELD,
        )
        .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now, updated_at=now)
    )
    return int(result.rowcount or 0)


async def retry_now(connection: AsyncConnection, *, webhook_id: int, now: datetime) -> int:
    """The web hook's deliveries waiting for a retry become due now; returns how many."""
    result = await connection.execute(
        update(deliveries_table)
        .where(
            deliveries_table.c.webhook_id == webhook_id,
            deliveries_table.c.status == DeliveryStatus.RETRYING.value,
        )
        .values(next_attempt_at=now, updated_at=now)
    )
    return int(result.rowcount or 0)


def _due(now: datetime) -> list[Any]:
    return [
        deliveries_table.c.status.in_(OPEN),
        or_(
            deliveries_table.c.next_attempt_at.is_(None), deliveries_table.c.next_attempt_at <= now
        ),
        or_(deliveries_table.c.lease_until.is_(None), deliveries_table.c.lease_until < now),
    ]


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A due delivery, with what orders it among its message's others."""

    id: int
    # The event's message and recipient (one message may go to many); None: no
    # message id (or a test event), no order to keep.
    message_key: tuple[str, str] | None
    occurred_at: datetime | None


async def due_of_webhook(
    connection: AsyncConnection,
    *,
    webhook_id: int,
    now: datetime,
    limit: int,
    leave_out: Collection[int] = (),
) -> list[DueDelivery]:
    """The web hook's due deliveries, longest due first, except ``leave_out`` (those
    the caller already has in hand)."""
    d, e = deliveries_table.c, events_table.c
    query = (
        select(d.id, e.message_id, e.email, e.occurred_at)
        .select_from(deliveries_table.outerjoin(events_table, e.id == d.event_id))
        .where(d.webhook_id == webhook_id, *_due(now))
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
    )
    if leave_out:
        query = query.where(d.id.not_in(list(leave_out)))
    result = await connection.execute(query)
    return [
        DueDelivery(
            row.id, None if row.message_id is None else (row.message_id, row.email), row.occurred_at
        )
        for row in result
    ]


async def next_due(
    connection: AsyncConnection, *, webhook_id: int, now: datetime
) -> datetime | None:
    """When the web hook's next open delivery no worker holds falls due."""
    d = deliveries_table.c
    result = await connection.execute(
        select(func.min(d.next_attempt_at)).where(
            d.webhook_id == webhook_id,
            d.status.in_(OPEN),
            or_(d.lease_until.is_(None), d.lease_until < now),
        )
    )
    value: datetime | None = result.scalar_one_or_none()
    return value


async def webhooks_with_due(
    connection: AsyncConnection, *, due_before: datetime, now: datetime, limit: int
) -> list[int]:
    """Web hooks with deliveries due since before ``due_before`` that no worker holds:
    a job for them was lost (Redis flushed, a job expired). For the sweeper."""
    d = deliveries_table.c
    result = await connection.execute(
        select(d.webhook_id)
        .where(
            d.status.in_(OPEN),
            d.next_attempt_at <= due_before,
            or_(d.lease_until.is_(None), d.lease_until < now),
        )
        .group_by(d.webhook_id)
        .limit(limit)
    )
    return [row[0] for row in result]


async def release_held_of_enabled(connection: AsyncConnection, *, now: datetime) -> list[int]:
    """Held deliveries of web hooks that are enabled become due now (a hold written
    by a worker that saw the web hook disabled just before it was enabled); returns
    those web hooks. For the sweeper."""
    enabled = select(webhooks_table.c.id).where(webhooks_table.c.enabled.is_(True))
    found = await connection.execute(
        select(deliveries_table.c.webhook_id)
        .where(deliveries_table.c.status == _HELD, deliveries_table.c.webhook_id.in_(enabled))
        .group_by(deliveries_table.c.webhook_id)
    )
    webhook_ids = [row[0] for row in found]
    if webhook_ids:
        await connection.execute(
            update(deliveries_table)
            .where(
                deliveries_table.c.status == _HELD,
                deliveries_table.c.webhook_id.in_(
                    enabled.where(webhooks_table.c.id.in_(webhook_ids))
                ),
            )
            .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now, updated_at=now)
        )
    return webhook_ids

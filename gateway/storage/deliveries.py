"""Deliveries and their log of calls: status changes, recovery, and reading them back
(a delivery's claim and result: storage.delivery_runs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.webhooks import (
    OPEN_STATUSES,
    AttemptRecord,
    DeliveryRecord,
    DeliveryStatus,
)
from gateway.storage.models import Delivery, DeliveryAttemptRow
from gateway.storage.webhooks import webhooks_table

deliveries_table = Delivery.__table__  # type: ignore[attr-defined]
attempts_table = DeliveryAttemptRow.__table__  # type: ignore[attr-defined]

OPEN = tuple(sorted(status.value for status in OPEN_STATUSES))


def delivery_from_row(row: Mapping[Any, Any]) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        account_id=row["account_id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
    )


async def get_delivery(
    connection: AsyncConnection, *, delivery_id: int, account_id: int | None = None
) -> DeliveryRecord | None:
    query = select(deliveries_table).where(deliveries_table.c.id == delivery_id)
    if account_id is not None:
        query = query.where(deliveries_table.c.account_id == account_id)
    row = (await connection.execute(query)).mappings().one_or_none()
    return None if row is None else delivery_from_row(row)


async def set_delivery_status(
    connection: AsyncConnection,
    *,
    delivery_id: int,
    status: DeliveryStatus,
    now: datetime,
    next_attempt_at: datetime | None = None,
) -> None:
    """Move a delivery to ``status``, releasing its lease.

    HELD is written only while its web hook is still disabled, read with the web
    hook's row locked: a worker that saw it disabled a moment ago must not hold a
    delivery after ``enableWebhook`` released the held ones (it would be stranded);
    the delivery is then due at once instead.
    """
    if status is DeliveryStatus.HELD:
        enabled = (
            await connection.execute(
                select(webhooks_table.c.enabled)
                .where(
                    webhooks_table.c.id
                    == select(deliveries_table.c.webhook_id)
                    .where(deliveries_table.c.id == delivery_id)
                    .scalar_subquery()
                )
                .with_for_update(read=True)
            )
        ).scalar_one_or_none()
        if enabled:
            status, next_attempt_at = DeliveryStatus.PENDING, now
    await connection.execute(
        update(deliveries_table)
        .where(deliveries_table.c.id == delivery_id)
        .values(
            status=status.value, next_attempt_at=next_attempt_at, lease_until=None, updated_at=now
        )
    )


async def recover_deliveries(
    connection: AsyncConnection,
    *,
    webhook_id: int,
    status: DeliveryStatus,
    since: datetime,
    until: datetime | None,
    now: datetime,
    limit: int,
) -> int:
    """Up to ``limit`` of the web hook's deliveries in ``status`` created in [since,
    until) become due now (PENDING), oldest first; their attempt counts are kept.
    Those a worker holds a lease on (being sent) are left alone. Returns how many."""
    d = deliveries_table.c
    chosen = (
        select(d.id)
        .where(
            d.webhook_id == webhook_id,
            d.status == status.value,
            d.created_at >= since,
            or_(d.lease_until.is_(None), d.lease_until < now),
        )
        .order_by(d.id)
        .limit(limit)
    )
    if until is not None:
        chosen = chosen.where(d.created_at < until)
    result = await connection.execute(
        update(deliveries_table)
        # The status again: a row a worker moved on meanwhile is rechecked by this.
        .where(d.id.in_(chosen.scalar_subquery()), d.status == status.value)
        .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now, updated_at=now)
    )
    return int(result.rowcount or 0)


async def list_deliveries(
    connection: AsyncConnection,
    *,
    account_id: int,
    webhook_id: int,
    status: DeliveryStatus | None,
    limit: int,
    before_id: int | None,
) -> list[DeliveryRecord]:
    query = select(deliveries_table).where(
        deliveries_table.c.account_id == account_id, deliveries_table.c.webhook_id == webhook_id
    )
    if status is not None:
        query = query.where(deliveries_table.c.status == status.value)
    if before_id is not None:
        query = query.where(deliveries_table.c.id < before_id)
    result = await connection.execute(query.order_by(deliveries_table.c.id.desc()).limit(limit))
    return [delivery_from_row(row) for row in result.mappings()]


def _attempt(row: RowMapping) -> AttemptRecord:
    return AttemptRecord(
        id=row["id"],
        delivery_id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        account_id=row["account_id"],
        number=row["number"],
        at=row["at"],
        method=row["method"],
        url=row["url"],
        status_code=row["status_code"],
        duration_ms=row["duration_ms"],
        error=row["error"],
        response_excerpt=row["response_excerpt"],
        request_body=row["request_body"],
    )


async def attempts_for(
    connection: AsyncConnection, *, delivery_ids: Sequence[int]
) -> dict[int, list[AttemptRecord]]:
    found: dict[int, list[AttemptRecord]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return found
    result = await connection.execute(
        select(attempts_table)
        .where(attempts_table.c.delivery_id.in_(list(delivery_ids)))
        .order_by(attempts_table.c.delivery_id, attempts_table.c.number)
    )
    for row in result.mappings():
        found[row["delivery_id"]].append(_attempt(row))
    return found

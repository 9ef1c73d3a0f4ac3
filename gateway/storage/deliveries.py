"""A delivery's run: claiming it for an attempt, logging the call, counting it against
its web hook, and reading that log back.

Claims and results are written on SQLAlchemy's sync ``Connection``: the sender runs
them on SQLite's writer thread in one hand-off, or on PostgreSQL through ``run_sync``
(storage.db.WriteTransactions).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.webhooks import (
    OPEN_STATUSES,
    AttemptRecord,
    DeliveryRecord,
    DeliveryStatus,
    WebhookConfig,
)
from gateway.storage.db import unindexed
from gateway.storage.models import Delivery, DeliveryAttemptRow
from gateway.storage.webhooks import webhook_from_row, webhooks_table

deliveries_table = Delivery.__table__  # type: ignore[attr-defined]
attempts_table = DeliveryAttemptRow.__table__  # type: ignore[attr-defined]

OPEN = tuple(sorted(status.value for status in OPEN_STATUSES))


def delivery_from_row(row: RowMapping) -> DeliveryRecord:
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


# The statements of every claim and result, built once: building one costs more than
# SQLite takes to run it.
_d, _w = deliveries_table.c, webhooks_table.c
_CLAIM = (
    update(deliveries_table)
    .where(
        _d.id.in_(bindparam("ids", expanding=True)),
        # By id: the status index would read every open delivery.
        unindexed(_d.status).in_(OPEN),
        or_(_d.next_attempt_at.is_(None), _d.next_attempt_at <= bindparam("due_by")),
        or_(_d.lease_until.is_(None), _d.lease_until < bindparam("now")),
    )
    .values(lease_until=bindparam("lease_to"))
    .returning(*deliveries_table.c)
)
_WEBHOOKS = select(webhooks_table).where(_w.id.in_(bindparam("ids", expanding=True)))
_LIVING = select(_w.id).where(_w.id.in_(bindparam("ids", expanding=True)))
_LOG_ATTEMPT = insert(attempts_table)
_MOVE_ON = (
    update(deliveries_table)
    .where(_d.id == bindparam("delivery_id"))
    .values(
        status=bindparam("new_status"),
        attempts=bindparam("number"),
        next_attempt_at=bindparam("next_at"),
        lease_until=None,
        updated_at=bindparam("at"),
    )
)
# A run of failures since the last success in the batch, or more of the same; each
# says the web hook is still there (and locks its row until commit).
_FAILURES_SINCE_SUCCESS = (
    update(webhooks_table)
    .where(_w.id == bindparam("webhook_id"))
    .values(consecutive_failures=bindparam("failures"))
    .returning(_w.id)
)
_MORE_FAILURES = (
    update(webhooks_table)
    .where(_w.id == bindparam("webhook_id"))
    .values(consecutive_failures=_w.consecutive_failures + bindparam("failures"))
    .returning(_w.id)
)
_DISABLE = (
    update(webhooks_table)
    .where(
        _w.id.in_(bindparam("ids", expanding=True)),
        _w.enabled.is_(True),
        _w.consecutive_failures >= bindparam("limit"),
    )
    .values(enabled=False, disabled_reason=bindparam("reason"), updated_at=bindparam("at"))
    .returning(_w.id)
)


def claim_deliveries(
    connection: Connection,
    *,
    delivery_ids: Sequence[int],
    now: datetime,
    lease_seconds: float,
    grace_seconds: float = 1.0,
) -> list[DeliveryRecord]:
    """Take the open, due deliveries among ``delivery_ids`` for one attempt each; those
    not open, not yet due, or held by another worker are left out. The lease makes a
    second worker (or a duplicate job) a no-op. ``grace_seconds`` counts a delivery
    due that soon as due: a clock a little behind the one that scheduled it."""
    result = connection.execute(
        _CLAIM,
        {
            "ids": list(delivery_ids),
            "due_by": now + timedelta(seconds=grace_seconds),
            "now": now,
            "lease_to": now + timedelta(seconds=lease_seconds),
        },
    )
    return [delivery_from_row(row) for row in result.mappings()]


def get_webhooks(connection: Connection, *, webhook_ids: Sequence[int]) -> dict[int, WebhookConfig]:
    """The web hooks of claimed deliveries, by id."""
    result = connection.execute(_WEBHOOKS, {"ids": list(webhook_ids)})
    return {row["id"]: webhook_from_row(row) for row in result.mappings()}


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    attempt: AttemptRecord
    status: DeliveryStatus
    next_attempt_at: datetime | None


def finish_attempts(
    connection: Connection,
    *,
    finished: Sequence[FinishedAttempt],
    existing: Collection[int] = (),
) -> None:
    """Log the calls and move their deliveries on, releasing their leases.

    Calls for a web hook deleted meanwhile are dropped (its deliveries went with it):
    one such row must not fail the log of every other call in the batch. Web hooks in
    ``existing`` (count_calls found them, in this transaction) are not looked up again.
    """
    alive = set(existing)
    if unknown := sorted({item.attempt.webhook_id for item in finished} - alive):
        alive.update(row[0] for row in connection.execute(_LIVING, {"ids": unknown}))
    finished = [item for item in finished if item.attempt.webhook_id in alive]
    if not finished:
        return
    connection.execute(
        _LOG_ATTEMPT,
        [
            {
                "id": item.attempt.id,
                "account_id": item.attempt.account_id,
                "webhook_id": item.attempt.webhook_id,
                "delivery_id": item.attempt.delivery_id,
                "number": item.attempt.number,
                "at": item.attempt.at,
                "method": item.attempt.method,
                "url": item.attempt.url,
                "request_body": item.attempt.request_body,
                "status_code": item.attempt.status_code,
                "duration_ms": item.attempt.duration_ms,
                "error": item.attempt.error,
                "response_excerpt": item.attempt.response_excerpt,
            }
            for item in finished
        ],
    )
    connection.execute(
        _MOVE_ON,
        [
            {
                "delivery_id": item.attempt.delivery_id,
                "new_status": item.status.value,
                "number": item.attempt.number,
                "next_at": item.next_attempt_at,
                "at": item.attempt.at,
            }
            for item in finished
        ],
    )


@dataclass(frozen=True, slots=True)
class Counted:
    existing: set[int]  # the web hooks counted (the others were deleted)
    disabled: set[int]  # those this count disabled


def count_calls(
    connection: Connection,
    *,
    outcomes: dict[int, list[bool]],
    disable_after: int,
    now: datetime,
) -> Counted:
    """Count each web hook's calls (True = success, in order) into its run of
    consecutive failures, disabling those whose run reaches ``disable_after``.

    Updates are relative or absolute, never read-then-write, so workers in other
    processes counting at the same time lose nothing.
    """
    existing: set[int] = set()
    may_disable: list[int] = []
    for webhook_id, calls in outcomes.items():
        if True in calls:
            failures = calls[::-1].index(True)  # after the last success
            result = connection.execute(
                _FAILURES_SINCE_SUCCESS, {"webhook_id": webhook_id, "failures": failures}
            )
            if failures >= disable_after:
                may_disable.append(webhook_id)
        else:
            result = connection.execute(
                _MORE_FAILURES, {"webhook_id": webhook_id, "failures": len(calls)}
            )
            may_disable.append(webhook_id)
        existing.update(row[0] for row in result)
    disabled: set[int] = set()
    if may_disable:
        result = connection.execute(
            _DISABLE,
            {
                "ids": may_disable,
                "limit": disable_after,
                "reason": f"{disable_after} consecutive failed calls",
                "at": now,
            },
        )
        disabled.update(row[0] for row in result)
    return Counted(existing, disabled)


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

"""Web hooks, their deliveries (the outbox) and the log of every call made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, insert, or_, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.events import EventType
from gateway.domain.webhooks import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryStatus,
    HttpMethod,
    WebhookConfig,
    WebhookFormat,
)
from gateway.storage.db import dialect_insert
from gateway.storage.models import Delivery, DeliveryAttemptRow, Webhook

webhooks_table = Webhook.__table__  # type: ignore[attr-defined]
deliveries_table = Delivery.__table__  # type: ignore[attr-defined]
attempts_table = DeliveryAttemptRow.__table__  # type: ignore[attr-defined]

_OPEN = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)


def _webhook(row: RowMapping) -> WebhookConfig:
    parameters = None if row["parameters"] is None else orjson.loads(row["parameters"])
    return WebhookConfig(
        id=row["id"],
        account_id=row["account_id"],
        url=row["url"],
        method=HttpMethod(row["method"]),
        events=frozenset(EventType(name) for name in orjson.loads(row["events"])),
        format=WebhookFormat(row["format"]),
        parameters=parameters,
        tags=tuple(orjson.loads(row["tags"])),
        templates=tuple(orjson.loads(row["templates"])),
        secret=row["secret"],
        enabled=bool(row["enabled"]),
        disabled_reason=row["disabled_reason"],
        consecutive_failures=row["consecutive_failures"],
        backfill_days=row["backfill_days"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def webhook_values(config: WebhookConfig) -> dict[str, Any]:
    return {
        "id": config.id,
        "account_id": config.account_id,
        "url": config.url,
        "method": config.method.value,
        "events": orjson.dumps(sorted(t.value for t in config.events)).decode(),
        "format": config.format.value,
        "parameters": None
        if config.parameters is None
        else orjson.dumps(dict(config.parameters)).decode(),
        "tags": orjson.dumps(list(config.tags)).decode(),
        "templates": orjson.dumps(list(config.templates)).decode(),
        "secret": config.secret,
        "enabled": config.enabled,
        "disabled_reason": config.disabled_reason,
        "consecutive_failures": config.consecutive_failures,
        "backfill_days": config.backfill_days,
        "created_at": config.created_at,
        "updated_at": config.updated_at,
    }


async def add_webhook(connection: AsyncConnection, config: WebhookConfig) -> None:
    await connection.execute(insert(webhooks_table).values(**webhook_values(config)))


async def save_webhook(connection: AsyncConnection, config: WebhookConfig) -> None:
    values = webhook_values(config)
    del values["id"], values["account_id"], values["created_at"]
    await connection.execute(
        update(webhooks_table)
        .where(webhooks_table.c.id == config.id, webhooks_table.c.account_id == config.account_id)
        .values(**values)
    )


async def get_webhook(
    connection: AsyncConnection, *, webhook_id: int, account_id: int | None = None
) -> WebhookConfig | None:
    """A web hook by id; confined to ``account_id`` when given (callers' reads)."""
    query = select(webhooks_table).where(webhooks_table.c.id == webhook_id)
    if account_id is not None:
        query = query.where(webhooks_table.c.account_id == account_id)
    row = (await connection.execute(query)).mappings().one_or_none()
    return None if row is None else _webhook(row)


# Built once: every group commit asks, and building the clause (column comparison,
# cache key) cost more than running it.
_WEBHOOKS_OF_ACCOUNT = (
    select(webhooks_table)
    .where(webhooks_table.c.account_id == bindparam("account_id"))
    .order_by(webhooks_table.c.id)
)
_WEBHOOKS_OF_ACCOUNTS = (
    select(webhooks_table)
    .where(webhooks_table.c.account_id.in_(bindparam("account_ids", expanding=True)))
    .order_by(webhooks_table.c.id)
)


async def list_webhooks(
    connection: AsyncConnection, *, account_ids: Sequence[int]
) -> list[WebhookConfig]:
    accounts = list(account_ids)
    # One account is the common case: a plain comparison spares expanding an IN list.
    if len(accounts) == 1:
        result = await connection.execute(_WEBHOOKS_OF_ACCOUNT, {"account_id": accounts[0]})
    else:
        result = await connection.execute(_WEBHOOKS_OF_ACCOUNTS, {"account_ids": accounts})
    return [_webhook(row) for row in result.mappings()]


async def delete_webhook(connection: AsyncConnection, *, account_id: int, webhook_id: int) -> bool:
    condition = (webhooks_table.c.id == webhook_id) & (webhooks_table.c.account_id == account_id)
    if (await connection.execute(select(webhooks_table.c.id).where(condition))).first() is None:
        return False
    # Children first: SQLite enforces ON DELETE CASCADE only where foreign keys are on.
    await connection.execute(
        delete(attempts_table).where(attempts_table.c.webhook_id == webhook_id)
    )
    await connection.execute(
        delete(deliveries_table).where(deliveries_table.c.webhook_id == webhook_id)
    )
    await connection.execute(delete(webhooks_table).where(condition))
    return True


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


def _delivery(row: RowMapping) -> DeliveryRecord:
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
    return None if row is None else _delivery(row)


async def claim_deliveries(
    connection: AsyncConnection,
    *,
    delivery_ids: Sequence[int],
    now: datetime,
    lease_seconds: float,
    grace_seconds: float = 1.0,
) -> list[DeliveryRecord]:
    """Take the open, due deliveries among ``delivery_ids`` for one attempt each; those
    not open, not yet due, or held by another worker are left out. The lease makes a
    second worker (or a duplicate job) a no-op. A deferred job may wake a little early:
    ``grace_seconds`` counts that as due."""
    result = await connection.execute(
        update(deliveries_table)
        .where(
            deliveries_table.c.id.in_(list(delivery_ids)),
            deliveries_table.c.status.in_(_OPEN),
            or_(
                deliveries_table.c.next_attempt_at.is_(None),
                deliveries_table.c.next_attempt_at <= now + timedelta(seconds=grace_seconds),
            ),
            or_(deliveries_table.c.lease_until.is_(None), deliveries_table.c.lease_until < now),
        )
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .returning(*deliveries_table.c)
    )
    return [_delivery(row) for row in result.mappings()]


async def get_webhooks(
    connection: AsyncConnection, *, webhook_ids: Sequence[int]
) -> dict[int, WebhookConfig]:
    result = await connection.execute(
        select(webhooks_table).where(webhooks_table.c.id.in_(list(webhook_ids)))
    )
    return {row["id"]: _webhook(row) for row in result.mappings()}


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    attempt: AttemptRecord
    status: DeliveryStatus
    next_attempt_at: datetime | None


async def finish_attempts(
    connection: AsyncConnection, *, finished: Sequence[FinishedAttempt]
) -> None:
    """Log the calls and move their deliveries on, releasing their leases.

    Calls for a web hook deleted meanwhile are dropped (its deliveries went with it):
    one such row must not fail the log of every other call in the batch.
    """
    existing = await connection.execute(
        select(webhooks_table.c.id).where(
            webhooks_table.c.id.in_({item.attempt.webhook_id for item in finished})
        )
    )
    alive = {row[0] for row in existing}
    finished = [item for item in finished if item.attempt.webhook_id in alive]
    if not finished:
        return
    await connection.execute(
        insert(attempts_table),
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
    await connection.execute(
        update(deliveries_table)
        .where(deliveries_table.c.id == bindparam("delivery_id"))
        .values(
            status=bindparam("new_status"),
            attempts=bindparam("number"),
            next_attempt_at=bindparam("next_at"),
            lease_until=None,
            updated_at=bindparam("at"),
        ),
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


async def count_calls(
    connection: AsyncConnection,
    *,
    outcomes: dict[int, list[bool]],
    disable_after: int,
    now: datetime,
) -> set[int]:
    """Count each web hook's calls (True = success, in order) into its run of
    consecutive failures; returns the web hooks that this disabled.

    Updates are relative or absolute, never read-then-write, so workers in other
    processes counting at the same time lose nothing.
    """
    for webhook_id, calls in outcomes.items():
        if True in calls:
            last_success = len(calls) - 1 - calls[::-1].index(True)
            value: Any = len(calls) - 1 - last_success
        else:
            value = webhooks_table.c.consecutive_failures + len(calls)
        await connection.execute(
            update(webhooks_table)
            .where(webhooks_table.c.id == webhook_id)
            .values(consecutive_failures=value)
        )
    result = await connection.execute(
        update(webhooks_table)
        .where(
            webhooks_table.c.id.in_(list(outcomes)),
            webhooks_table.c.enabled.is_(True),
            webhooks_table.c.consecutive_failures >= disable_after,
        )
        .values(
            enabled=False,
            disabled_reason=f"{disable_after} consecutive failed calls",
            updated_at=now,
        )
        .returning(webhooks_table.c.id)
    )
    return {row[0] for row in result}


async def set_delivery_status(
    connection: AsyncConnection,
    *,
    delivery_id: int,
    status: DeliveryStatus,
    now: datetime,
    next_attempt_at: datetime | None = None,
) -> None:
    await connection.execute(
        update(deliveries_table)
        .where(deliveries_table.c.id == delivery_id)
        .values(
            status=status.value, next_attempt_at=next_attempt_at, lease_until=None, updated_at=now
        )
    )


async def release_held(connection: AsyncConnection, *, webhook_id: int, now: datetime) -> list[int]:
    """Held deliveries become due now; returns their ids, oldest first."""
    ids = [
        row[0]
        for row in await connection.execute(
            select(deliveries_table.c.id)
            .where(
                deliveries_table.c.webhook_id == webhook_id,
                deliveries_table.c.status == DeliveryStatus.HELD.value,
            )
            .order_by(deliveries_table.c.id)
        )
    ]
    if ids:
        await connection.execute(
            update(deliveries_table)
            .where(
                deliveries_table.c.webhook_id == webhook_id,
                deliveries_table.c.status == DeliveryStatus.HELD.value,
            )
            .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now, updated_at=now)
        )
    return ids


async def due_deliveries(connection: AsyncConnection, *, now: datetime, limit: int) -> list[int]:
    """Open deliveries whose time has come and that no worker holds (for the sweeper)."""
    result = await connection.execute(
        select(deliveries_table.c.id)
        .where(
            deliveries_table.c.status.in_(_OPEN),
            or_(
                deliveries_table.c.next_attempt_at.is_(None),
                deliveries_table.c.next_attempt_at <= now,
            ),
            or_(deliveries_table.c.lease_until.is_(None), deliveries_table.c.lease_until < now),
        )
        .order_by(deliveries_table.c.next_attempt_at, deliveries_table.c.id)
        .limit(limit)
    )
    return [row[0] for row in result]


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
    return [_delivery(row) for row in result.mappings()]


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


async def lock_account_webhooks(connection: AsyncConnection, account_id: int) -> None:
    """Wait for the account's in-flight group commits, and hold new ones back, until
    this transaction ends (PostgreSQL; SQLite's single writer does it already).

    A group commit takes the account's row lock, shared, before it reads whether the
    account has web hooks (storage.events.insert_prepared); this takes it exclusively.
    A web hook created, enabled or deleted under this lock is either seen by a group
    commit, or committed after it: then its backfill (run after commit) finds those
    events, ``enableWebhook`` finds the deliveries they held, and a deletion removes
    the deliveries they wrote instead of failing them.
    Without it, an ingest that read the web hooks just before a new one committed and
    committed its events just after that web hook's backfill read lost its delivery.
    FOR NO KEY UPDATE: it conflicts with FOR SHARE, not with the key-share locks of
    foreign keys (inserting the account's other rows goes on).
    """
    if connection.dialect.name != "postgresql":
        return
    await connection.execute(
        text("SELECT id FROM accounts WHERE id = :account FOR NO KEY UPDATE"),
        {"account": account_id},
    )

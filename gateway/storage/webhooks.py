"""Web hooks: their configuration rows, and the locks that keep changes to them in line.

Deliveries (the outbox) are in ``storage.outbox``; a delivery's run and the log of
every call made in ``storage.deliveries``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.events import EventType
from gateway.domain.webhooks import (
    HttpMethod,
    WebhookConfig,
    WebhookFormat,
)
from gateway.storage.models import Delivery, DeliveryAttemptRow, Webhook

webhooks_table = Webhook.__table__  # type: ignore[attr-defined]


def webhook_from_row(row: Mapping[Any, Any]) -> WebhookConfig:
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
        headers=tuple((name, value) for name, value in orjson.loads(row["headers"])),
        previous_secret=row["previous_secret"],
        previous_secret_until=row["previous_secret_until"],
    )


def webhook_values(config: WebhookConfig) -> dict[str, Any]:
    """The configuration as column values."""
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
        "headers": orjson.dumps([list(pair) for pair in config.headers]).decode(),
        "previous_secret": config.previous_secret,
        "previous_secret_until": config.previous_secret_until,
    }


async def add_webhook(connection: AsyncConnection, config: WebhookConfig) -> None:
    await connection.execute(insert(webhooks_table).values(**webhook_values(config)))


async def get_webhook(
    connection: AsyncConnection, *, webhook_id: int, account_id: int | None = None
) -> WebhookConfig | None:
    """A web hook by id; confined to ``account_id`` when given (callers' reads)."""
    query = select(webhooks_table).where(webhooks_table.c.id == webhook_id)
    if account_id is not None:
        query = query.where(webhooks_table.c.account_id == account_id)
    row = (await connection.execute(query)).mappings().one_or_none()
    return None if row is None else webhook_from_row(row)


async def lock_webhook(
    connection: AsyncConnection, *, webhook_id: int, account_id: int
) -> WebhookConfig | None:
    """The web hook, its row locked until this transaction ends (PostgreSQL's SELECT
    ... FOR UPDATE; on SQLite the transaction's write lock does it): a worker counting
    failures against it waits, so a change and a disable never interleave."""
    row = (
        (
            await connection.execute(
                select(webhooks_table)
                .where(webhooks_table.c.id == webhook_id, webhooks_table.c.account_id == account_id)
                .with_for_update()
            )
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else webhook_from_row(row)


async def update_webhook(
    connection: AsyncConnection, *, webhook_id: int, values: dict[str, Any]
) -> None:
    """Write these columns (and only these) of one web hook."""
    await connection.execute(
        update(webhooks_table).where(webhooks_table.c.id == webhook_id).values(**values)
    )


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
    return [webhook_from_row(row) for row in result.mappings()]


async def delete_webhook(connection: AsyncConnection, *, account_id: int, webhook_id: int) -> bool:
    condition = (webhooks_table.c.id == webhook_id) & (webhooks_table.c.account_id == account_id)
    if (await connection.execute(select(webhooks_table.c.id).where(condition))).first() is None:
        return False
    # Children first: SQLite enforces ON DELETE CASCADE only where foreign keys are on.
    attempts = DeliveryAttemptRow.__table__  # type: ignore[attr-defined]
    deliveries = Delivery.__table__  # type: ignore[attr-defined]
    await connection.execute(delete(attempts).where(attempts.c.webhook_id == webhook_id))
    await connection.execute(delete(deliveries).where(deliveries.c.webhook_id == webhook_id))
    await connection.execute(delete(webhooks_table).where(condition))
    return True


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

"""A delivery's run: its claim before the call, and the call's result after (the log,
the web hook's count of failures, the delivery's next state).

Written on SQLAlchemy's sync ``Connection``: the sender runs them on SQLite's writer
thread in one hand-off, or on PostgreSQL through ``run_sync`` (storage.db.
WriteTransactions). On the writer thread the hot statements go to sqlite3 as they
are, with the values SQLAlchemy's own types make (see ``_plain``): its work per
statement was a third of the thread's time, and the thread holds the GIL for it.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection, Dialect

from gateway.domain.webhooks import AttemptRecord, DeliveryRecord, DeliveryStatus, WebhookConfig
from gateway.storage.db import marks, plain_rows, plain_sqlite, unindexed
from gateway.storage.deliveries import (
    OPEN,
    attempts_table,
    deliveries_table,
    delivery_from_row,
)
from gateway.storage.webhooks import webhook_from_row, webhooks_table

# The statements of every claim and result, built once (PostgreSQL; SQLite in memory).
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
    due_by = now + timedelta(seconds=grace_seconds)
    lease_to = now + timedelta(seconds=lease_seconds)
    if (sqlite := plain_sqlite(connection)) is not None:
        return _sqlite_claim(sqlite, connection.dialect, delivery_ids, now, due_by, lease_to)
    result = connection.execute(
        _CLAIM, {"ids": list(delivery_ids), "due_by": due_by, "now": now, "lease_to": lease_to}
    )
    return [delivery_from_row(row) for row in result.mappings()]


def get_webhooks(connection: Connection, *, webhook_ids: Sequence[int]) -> dict[int, WebhookConfig]:
    """The web hooks of claimed deliveries, by id."""
    if (sqlite := plain_sqlite(connection)) is not None:
        return _sqlite_webhooks(sqlite, connection.dialect, webhook_ids)
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
    if (sqlite := plain_sqlite(connection)) is not None:
        _sqlite_finish(sqlite, connection.dialect, finished)
        return
    connection.execute(_LOG_ATTEMPT, [attempt_values(item.attempt) for item in finished])
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
    sqlite = plain_sqlite(connection)
    for webhook_id, calls in outcomes.items():
        since_success = True in calls
        failures = calls[::-1].index(True) if since_success else len(calls)
        if not since_success or failures >= disable_after:
            may_disable.append(webhook_id)
        if sqlite is not None:
            existing |= _sqlite_count(sqlite, webhook_id, failures, since_success=since_success)
            continue
        statement = _FAILURES_SINCE_SUCCESS if since_success else _MORE_FAILURES
        result = connection.execute(statement, {"webhook_id": webhook_id, "failures": failures})
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


# -- SQLite's writer thread: the same statements, straight to sqlite3 ----------------

_SQLITE_MOVE_ON = (
    "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, lease_until = NULL,"
    " updated_at = ? WHERE id = ?"
)
_SQLITE_FAILURES_SINCE_SUCCESS = (
    "UPDATE webhooks SET consecutive_failures = ? WHERE id = ? RETURNING id"
)
_SQLITE_MORE_FAILURES = (
    "UPDATE webhooks SET consecutive_failures = consecutive_failures + ? WHERE id = ? RETURNING id"
)


def _sqlite_claim(
    sqlite: sqlite3.Connection,
    dialect: Dialect,
    delivery_ids: Sequence[int],
    now: datetime,
    due_by: datetime,
    lease_to: datetime,
) -> list[DeliveryRecord]:
    rows = plain_rows(deliveries_table, dialect)
    time = functools.partial(rows.bind, "lease_until")
    # Unary + on the status: by id, not by the status index (storage.db.unindexed).
    statement = (
        f"UPDATE deliveries SET lease_until = ? WHERE id IN ({marks(len(delivery_ids))})"  # noqa: S608
        f" AND +status IN ({marks(len(OPEN))})"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
        f" AND (lease_until IS NULL OR lease_until < ?) RETURNING {rows.column_list}"
    )
    found = sqlite.execute(
        statement, (time(lease_to), *delivery_ids, *OPEN, time(due_by), time(now))
    )
    return [delivery_from_row(row) for row in rows.read(found)]


def _sqlite_webhooks(
    sqlite: sqlite3.Connection, dialect: Dialect, webhook_ids: Sequence[int]
) -> dict[int, WebhookConfig]:
    rows = plain_rows(webhooks_table, dialect)
    statement = f"SELECT {rows.column_list} FROM webhooks WHERE id IN ({marks(len(webhook_ids))})"  # noqa: S608
    return {
        row["id"]: webhook_from_row(row)
        for row in rows.read(sqlite.execute(statement, tuple(webhook_ids)))
    }


def _sqlite_count(
    sqlite: sqlite3.Connection, webhook_id: int, failures: int, *, since_success: bool
) -> set[int]:
    statement = _SQLITE_FAILURES_SINCE_SUCCESS if since_success else _SQLITE_MORE_FAILURES
    return {row[0] for row in sqlite.execute(statement, (failures, webhook_id))}


def _sqlite_finish(
    sqlite: sqlite3.Connection, dialect: Dialect, finished: Sequence[FinishedAttempt]
) -> None:
    attempts = plain_rows(attempts_table, dialect)
    deliveries = plain_rows(deliveries_table, dialect)
    sqlite.executemany(
        f"INSERT INTO delivery_attempts ({attempts.column_list})"  # noqa: S608
        f" VALUES ({marks(len(attempts.columns))})",
        [
            tuple(attempts.bind(name, values[name]) for name in attempts.columns)
            for values in (attempt_values(item.attempt) for item in finished)
        ],
    )
    sqlite.executemany(
        _SQLITE_MOVE_ON,
        [
            (
                item.status.value,
                item.attempt.number,
                deliveries.bind("next_attempt_at", item.next_attempt_at),
                deliveries.bind("updated_at", item.attempt.at),
                item.attempt.delivery_id,
            )
            for item in finished
        ],
    )


def attempt_values(attempt: AttemptRecord) -> dict[str, Any]:
    """An attempt's column values."""
    return {
        "id": attempt.id,
        "account_id": attempt.account_id,
        "webhook_id": attempt.webhook_id,
        "delivery_id": attempt.delivery_id,
        "number": attempt.number,
        "at": attempt.at,
        "method": attempt.method,
        "url": attempt.url,
        "request_body": attempt.request_body,
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
    }

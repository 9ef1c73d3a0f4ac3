"""Reading events back: the queries of events(where:) and events by id."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, bindparam, exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.events import EventType, NormalizedEvent, Provider, RejectReason, Severity
from gateway.domain.jsontext import json_value
from gateway.domain.query import EventFilter, StoredEvent, bare_message_id, email_key
from gateway.storage.db import marks, plain_rows, plain_sqlite
from gateway.storage.events.rows import counts_table, events_table, tags_table

_DETAIL_ENUMS: dict[str, type[enum.Enum]] = {
    "severity": Severity,
    "reject_reason": RejectReason,
}


def _stored_event(row: Mapping[Any, Any]) -> StoredEvent:
    details: dict[str, Any] = json_value(row["details"])
    for name, kind in _DETAIL_ENUMS.items():
        if name in details:
            details[name] = kind(details[name])
    event = NormalizedEvent(
        type=EventType(row["type"]),
        provider=Provider(row["provider"]),
        provider_event=row["provider_event"],
        email=row["email"],
        occurred_at=row["occurred_at"],
        raw=json_value(row["raw"]),
        message_id=row["message_id"],
        sent_at=row["sent_at"],
        subject=row["subject"],
        template=row["template"],
        tags=tuple(json_value(row["tags"])),
        custom_id=row["custom_id"],
        **details,
    )
    return StoredEvent(
        id=row["id"], account_id=row["account_id"], received_at=row["received_at"], event=event
    )


async def _rarest_first(
    connection: AsyncConnection, account_id: int, tags: Sequence[str]
) -> list[str] | None:
    """The tags ordered by how few events carry them; None if one is on no event."""
    result = await connection.execute(
        select(counts_table.c.tag, counts_table.c.count).where(
            counts_table.c.account_id == account_id, counts_table.c.tag.in_(set(tags))
        )
    )
    counts: dict[str, int] = {tag: int(count) for tag, count in result}
    if len(counts) < len(set(tags)) or not all(counts.values()):
        return None
    return sorted(set(tags), key=lambda tag: counts[tag])


def _column_filters(where: EventFilter) -> list[Any]:
    c = events_table.c
    conditions: list[Any] = []
    if where.message_id is not None:
        conditions.append(c.message_id == bare_message_id(where.message_id))
    if where.email is not None:
        conditions.append(c.email_key == email_key(where.email))
    if where.template is not None:
        conditions.append(c.template == where.template)
    if where.types:
        conditions.append(c.type.in_(sorted(t.value for t in where.types)))
    if where.providers:
        conditions.append(c.provider.in_(sorted(p.value for p in where.providers)))
    if where.start is not None:
        conditions.append(c.occurred_at >= where.start)
    if where.end is not None:
        conditions.append(c.occurred_at < where.end)
    return conditions


def _has_tag(account_id: int, tag: str, event_id: Any) -> Any:
    """EXISTS: the event whose id is ``event_id`` (a column) carries ``tag``. OFFSET 0
    keeps PostgreSQL from making it a join: one index probe per row, not (without
    statistics) nested loops that took 9 s for 20 tags on 2,000 events."""
    return exists(
        select(tags_table.c.event_id)
        .where(
            tags_table.c.account_id == account_id,
            tags_table.c.tag == tag,
            tags_table.c.event_id == event_id,
        )
        .offset(0)
    )


async def find_events(
    connection: AsyncConnection,
    *,
    account_id: int,
    where: EventFilter,
    limit: int,
    before_id: int | None = None,
    after_id: int | None = None,
    oldest_first: bool = False,
) -> list[StoredEvent]:
    """Events of one account matching ``where``, newest first (by id) unless asked.

    ``before_id``/``after_id`` are keyset bounds (exclusive). All-of-tags queries are
    driven by the rarest tag's index entries, checking the others per row: that keeps
    common+common, common+rare and rare+rare pairs all to a short index walk. With an
    address or a message id as well, that one's few events drive instead.
    """
    c = events_table.c
    conditions = _column_filters(where)
    key = c.id
    query: Select[Any]
    if where.tags:
        ordered = await _rarest_first(connection, account_id, where.tags)
        if ordered is None:
            return []
        if where.message_id is not None or where.email is not None:
            # A message or an address has a handful of events: walk those (by their
            # index) and check every tag per row, however common the tags are.
            conditions.append(c.account_id == account_id)
            query = select(events_table).where(
                *(_has_tag(account_id, tag, c.id) for tag in ordered)
            )
        else:
            driver = tags_table.alias("driver")
            key = driver.c.event_id
            if connection.dialect.name == "sqlite":
                # SQLite has no statistics here (nothing runs ANALYZE), and without them
                # it drives this join from the account's events, through any index that
                # starts with account_id, and sorts them all: seconds at 1M events.
                # "account_id + 0" can use no index, which leaves the rarest tag's index
                # entries to drive the join, as meant.
                conditions.append(c.account_id + 0 == account_id)
            else:
                conditions.append(c.account_id == account_id)
            query = (
                select(events_table)
                .select_from(driver.join(events_table, c.id == driver.c.event_id))
                .where(
                    driver.c.account_id == account_id,
                    driver.c.tag == ordered[0],
                    *(_has_tag(account_id, tag, driver.c.event_id) for tag in ordered[1:]),
                )
            )
    else:
        conditions.append(c.account_id == account_id)
        query = select(events_table)
    if before_id is not None:
        conditions.append(key < before_id)
    if after_id is not None:
        conditions.append(key > after_id)
    query = query.where(*conditions)
    query = query.order_by(key.asc() if oldest_first else key.desc()).limit(limit)
    result = await connection.execute(query)
    return [_stored_event(row) for row in result.mappings()]


_BY_ID = select(events_table).where(
    events_table.c.account_id == bindparam("account_id"),
    events_table.c.id.in_(bindparam("ids", expanding=True)),
)


async def get_events(
    connection: AsyncConnection, *, account_id: int, ids: Sequence[int]
) -> list[StoredEvent]:
    """The given events of one account, by id (others' ids are simply not found)."""
    if not ids:
        return []
    result = await connection.execute(_BY_ID, {"account_id": account_id, "ids": list(ids)})
    return [_stored_event(row) for row in result.mappings()]


def get_events_sync(
    connection: Connection, *, account_id: int, ids: Sequence[int]
) -> list[StoredEvent]:
    """``get_events`` on SQLAlchemy's sync connection (a delivery's claim); on SQLite's
    writer thread, straight to sqlite3 (storage.db.plain_sqlite)."""
    if not ids:
        return []
    if (sqlite := plain_sqlite(connection)) is not None:
        rows = plain_rows(events_table, connection.dialect)
        statement = (
            f"SELECT {rows.column_list} FROM events"  # noqa: S608
            f" WHERE account_id = ? AND id IN ({marks(len(ids))})"
        )
        return [
            _stored_event(row) for row in rows.read(sqlite.execute(statement, (account_id, *ids)))
        ]
    result = connection.execute(_BY_ID, {"account_id": account_id, "ids": list(ids)})
    return [_stored_event(row) for row in result.mappings()]

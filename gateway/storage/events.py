"""Writing and reading events. The only module that knows how events are laid out in SQL."""

from __future__ import annotations

import enum
import functools
import logging
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Select, exists, select
from sqlalchemy.engine import Dialect, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.events import (
    DETAIL_FIELDS,
    EventType,
    NormalizedEvent,
    Provider,
    RejectReason,
    Severity,
    dedupe_key,
)
from gateway.domain.query import EventFilter, StoredEvent, bare_message_id, email_key
from gateway.domain.stats import rollup_increments
from gateway.storage.db import SQLITE_BUSY_TIMEOUT_MS
from gateway.storage.event_counts import POSTGRESQL_EVENT_COUNTS_CTES, SQLITE_EVENT_COUNTS
from gateway.storage.models import EventRow, EventTag, TagCount
from gateway.storage.sqlite_driver import OneTripConnection

log = logging.getLogger(__name__)

events_table = EventRow.__table__  # type: ignore[attr-defined]
tags_table = EventTag.__table__  # type: ignore[attr-defined]
counts_table = TagCount.__table__  # type: ignore[attr-defined]

_DETAIL_ENUMS: dict[str, type[enum.Enum]] = {
    "severity": Severity,
    "reject_reason": RejectReason,
}
_TIMES = ("occurred_at", "sent_at", "received_at")


def _row_values(
    event_id: int, account_id: int, source_id: int | None, event: NormalizedEvent, now: datetime
) -> dict[str, Any]:
    details = {
        name: value.value if isinstance(value, enum.Enum) else value
        for name in DETAIL_FIELDS
        if (value := getattr(event, name)) is not None
    }
    return {
        "id": event_id,
        "account_id": account_id,
        "source_id": source_id,
        "type": event.type.value,
        "provider": event.provider.value,
        "provider_event": event.provider_event[:64],
        "message_id": bare_message_id(event.message_id) if event.message_id else None,
        "email": event.email,
        "email_key": email_key(event.email),
        "occurred_at": event.occurred_at,
        "sent_at": event.sent_at,
        "subject": event.subject,
        "template": event.template,
        "tags": orjson.dumps(list(event.tags)).decode(),
        "custom_id": event.custom_id,
        "details": orjson.dumps(details).decode(),
        "raw": orjson.dumps(event.raw).decode(),
        "dedupe_key": dedupe_key(event),
        "received_at": now,
    }


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to insert, with the id and owner the writer gave it."""

    id: int
    account_id: int
    source_id: int | None
    event: NormalizedEvent


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event with its row already in the form the dialect's insert takes.

    Preparing costs ~20 µs an event in Python; done as each request arrives, it is off
    the group commit's path, where the database would wait for it.
    """

    new: NewEvent
    # SQLite: the bound parameters in column order. PostgreSQL: the row as JSON.
    values: tuple[Any, ...] | bytes


def prepare_events(
    dialect: Dialect, events: Sequence[NewEvent], now: datetime
) -> list[PreparedEvent]:
    """``events`` made ready for :func:`insert_prepared` on ``dialect``."""
    rows = [_row_values(new.id, new.account_id, new.source_id, new.event, now) for new in events]
    if dialect.name == "postgresql":
        for row in rows:
            for name in _TIMES:
                # As UTCDateTime would: a naive time is a bug upstream, not UTC by guess.
                if row[name] is not None and row[name].utcoffset() is None:
                    raise ValueError(f"{name} must be an aware datetime")
        return [
            PreparedEvent(new, orjson.dumps(row)) for new, row in zip(events, rows, strict=True)
        ]
    names, processors = _sqlite_binding(dialect)
    prepared = []
    for new, row in zip(events, rows, strict=True):
        values = [row[name] for name in names]
        for index, process in processors:
            values[index] = process(values[index])
        prepared.append(PreparedEvent(new, tuple(values)))
    return prepared


_Binding = tuple[list[str], list[tuple[int, Callable[[Any], Any]]]]
_bindings: weakref.WeakKeyDictionary[Dialect, _Binding] = weakref.WeakKeyDictionary()


def _sqlite_binding(dialect: Dialect) -> _Binding:
    """The events table's columns in order, and SQLAlchemy's bind processor of each
    column that has one (the times): values are stored as SQLAlchemy would."""
    binding = _bindings.get(dialect)
    if binding is None:
        columns = list(events_table.c)
        binding = _bindings[dialect] = (
            [column.name for column in columns],
            [
                (index, process)
                for index, column in enumerate(columns)
                if (process := column.type.dialect_impl(dialect).bind_processor(dialect))
            ],
        )
    return binding


class NotAlone(enum.Enum):
    """Why :func:`insert_alone` or :func:`insert_inline` wrote nothing."""

    WORK = "work"  # a work table has rows of the batch's accounts: write it with them
    BUSY = "busy"  # SQLite: not at once (over _SQLITE_INLINE_MAX events, or locked)


@dataclass(frozen=True, slots=True)
class Inserted:
    """What :func:`insert_prepared` did."""

    stored: set[int]  # ids of the events inserted (not the duplicates)
    # The insert committed its transaction itself (no work table had rows of the
    # batch's accounts).
    committed: bool = False
    # That commit skipped SQLite's automatic checkpoint (see db.WalCheckpoints).
    checkpoint_owed: bool = False


async def insert_events(
    connection: AsyncConnection, *, events: Sequence[NewEvent], now: datetime
) -> set[int]:
    """Insert events (of any accounts) with their tags; returns the ids stored.

    An event whose dedupe key its account already has (a provider's retry) is skipped:
    its id is not in the result. Runs inside the caller's transaction.
    """
    prepared = prepare_events(connection.dialect, events, now)
    return (await insert_prepared(connection, prepared)).stored


async def insert_prepared(
    connection: AsyncConnection,
    events: Sequence[PreparedEvent],
    *,
    commit_unless: Sequence[str] | None = None,
) -> Inserted:
    """:func:`insert_events` for events already prepared for this connection's dialect.

    On SQLite, ``commit_unless`` (work tables: see :func:`insert_alone`) lets the insert
    commit the caller's transaction in the same trip when none of those tables has a
    row of the batch's accounts (nothing else is to be written with these events); the
    caller's own commit then has nothing left to do.
    """
    if not events:
        return Inserted(set())
    if connection.dialect.name == "postgresql":
        return Inserted(await _insert_postgresql(connection, events))
    return await _insert_sqlite(connection, events, commit_unless)


async def insert_alone(
    connection: AsyncConnection, events: Sequence[PreparedEvent], *, unless_work_in: Sequence[str]
) -> Inserted | NotAlone:
    """PostgreSQL: insert and commit ``events`` in one statement of its own, outside any
    transaction (one round trip, where BEGIN, insert, web hook read and COMMIT took
    four), unless one of the ``unless_work_in`` tables has a row of the batch's
    accounts: then it writes nothing and returns NotAlone.WORK, and the caller writes
    the batch in a transaction of its own with whatever that work is.

    A work table is one whose rows of an account mean that something is to be written
    with its events (``webhooks``: the outbox); the question is asked after the
    accounts' web hook locks are held (the guard function, migration 0005), so a web
    hook committed meanwhile is seen. ``connection`` must have no transaction open.
    """
    if connection.dialect.name != "postgresql":
        raise ValueError("insert_alone is for PostgreSQL; SQLite's is insert_inline")
    if not events:
        return Inserted(set())
    alone = await connection.execution_options(isolation_level="AUTOCOMMIT")
    row = (
        await alone.exec_driver_sql(
            _POSTGRESQL_INSERT, _postgresql_parameters(events, unless_work_in)
        )
    ).one()
    # Anything but a plain "no work" (a NULL would also have inserted nothing) is work.
    return Inserted(set(row.ids), committed=True) if row.has_work is False else NotAlone.WORK


# SQLite through the driver itself: every trip to the connection's thread waits for a
# turn of the event loop, which under load runs other requests first; a group commit
# of events, tags and counts in one trip took half the wall time of one per statement.
# A group commit of up to _SQLITE_INLINE_MAX events skips the trip altogether: it runs
# on the event loop's thread (~1 ms for 16 events, less than the trip's own wait).
_SQLITE_INLINE_MAX = 64
_SQLITE_AUTOCHECKPOINT = 1000  # SQLite's default, which every connection keeps
_SQLITE_ROWS_PER_STATEMENT = 1000  # 19 parameters a row; SQLite allows 32766
_SQLITE_TAGS = (
    "INSERT INTO event_tags (account_id, tag, event_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)
_SQLITE_COUNTS = (
    "INSERT INTO tag_counts (account_id, tag, count) VALUES (?, ?, ?)"
    " ON CONFLICT (account_id, tag) DO UPDATE SET count = tag_counts.count + excluded.count"
)


def _sqlite_events_statement(rows: int) -> str:
    names = [column.name for column in events_table.c]
    values = "(" + ", ".join("?" * len(names)) + ")"
    # Only the table's own column names and placeholders go into the text.
    return (
        f"INSERT INTO events ({', '.join(names)}) VALUES {', '.join([values] * rows)}"  # noqa: S608
        " ON CONFLICT (account_id, dedupe_key) DO NOTHING RETURNING id"
    )


_SqliteWrite = Callable[..., Inserted | None]  # (sqlite3.Connection, *, on_loop=False)


def _sqlite_write(
    dialect: Dialect, events: Sequence[PreparedEvent], commit_unless: Sequence[str] | None
) -> _SqliteWrite:
    """The work of inserting ``events`` on a sqlite3 connection, as one function."""
    quote = dialect.identifier_preparer.quote
    chunks = [
        (
            _sqlite_events_statement(len(chunk)),
            [value for prepared in chunk for value in cast(tuple[Any, ...], prepared.values)],
        )
        for start in range(0, len(events), _SQLITE_ROWS_PER_STATEMENT)
        if (chunk := events[start : start + _SQLITE_ROWS_PER_STATEMENT])
    ]
    tags_by_event = {
        prepared.new.id: (prepared.new.account_id, prepared.new.event.tags) for prepared in events
    }
    new_by_id = {prepared.new.id: prepared.new for prepared in events}
    accounts = sorted({prepared.new.account_id for prepared in events})
    marks = ", ".join("?" * len(accounts))
    probes = [
        # Only quoted table names and placeholders go into the text.
        f"SELECT 1 FROM {quote(table)} WHERE account_id IN ({marks}) LIMIT 1"  # noqa: S608
        for table in commit_unless or ()
    ]

    def write(sqlite: sqlite3.Connection, *, on_loop: bool = False) -> Inserted | None:
        """Events, then tags and counts for those stored, then the commit if nothing
        else is to join the transaction: one trip to the thread, or none (``on_loop``).

        On the loop, nothing may wait: None, without writing anything, when the write
        lock is not to be had at once (another process holds it) or the caller's
        transaction is already open (it may not hold the lock yet).
        """
        if on_loop and (sqlite.in_transaction or not _begin_at_once(sqlite)):
            return None
        stored: set[int] = set()
        for statement, parameters in chunks:
            stored.update(row[0] for row in sqlite.execute(statement, parameters).fetchall())
        tag_rows = [
            (account_id, tag, event_id)
            for event_id, (account_id, tags) in tags_by_event.items()
            if event_id in stored
            for tag in tags
        ]
        if tag_rows:
            sqlite.executemany(_SQLITE_TAGS, tag_rows)
            counts: dict[tuple[int, str], int] = {}
            for account_id, tag, _event_id in tag_rows:
                counts[account_id, tag] = counts.get((account_id, tag), 0) + 1
            sqlite.executemany(
                _SQLITE_COUNTS,
                [(account_id, tag, n) for (account_id, tag), n in sorted(counts.items())],
            )
        if stored:
            sqlite.executemany(
                SQLITE_EVENT_COUNTS,
                rollup_increments(
                    (new.account_id, new.event) for id_, new in new_by_id.items() if id_ in stored
                ),
            )
        if commit_unless is None or (
            stored and any(sqlite.execute(probe, accounts).fetchone() for probe in probes)
        ):
            return Inserted(stored)
        if not on_loop:
            sqlite.commit()
            return Inserted(stored, committed=True)
        # Not on the event loop: see db.WalCheckpoints.
        sqlite.execute("PRAGMA wal_autocheckpoint=0")
        try:
            sqlite.commit()
        finally:
            sqlite.execute(f"PRAGMA wal_autocheckpoint={_SQLITE_AUTOCHECKPOINT}")
        return Inserted(stored, committed=True, checkpoint_owed=True)

    return write


async def _insert_sqlite(
    connection: AsyncConnection,
    events: Sequence[PreparedEvent],
    commit_unless: Sequence[str] | None,
) -> Inserted:
    write = _sqlite_write(connection.dialect, events, commit_unless)
    # The driver connection under this transaction: its statements join it.
    driver = cast(OneTripConnection, (await connection.get_raw_connection()).driver_connection)
    if len(events) <= _SQLITE_INLINE_MAX:
        done = driver.run_inline(functools.partial(write, on_loop=True))
        if done is not None:
            return done
    inserted = await driver.run(write)
    assert inserted is not None  # only work on the loop gives up
    return inserted


def insert_inline(
    driver: OneTripConnection,
    dialect: Dialect,
    events: Sequence[PreparedEvent],
    *,
    unless_work_in: Sequence[str],
) -> Inserted | NotAlone:
    """SQLite: insert and commit ``events`` here, on the event loop's thread, with no
    trip to the driver's thread and nothing awaited. Or write nothing and say why:
    BUSY when it cannot be done at once (over _SQLITE_INLINE_MAX events, or another
    process holds the write lock), WORK when one of the ``unless_work_in`` tables has
    a row of the batch's accounts (see :func:`insert_alone`). The caller then writes
    the batch in a transaction, with its hooks.

    ``driver`` is a connection the caller keeps for this (its page cache stays warm),
    with no transaction open; no other writer of this process may be in a
    transaction (db.write_lock is free).
    """
    if not events:
        return Inserted(set())
    if len(events) > _SQLITE_INLINE_MAX:
        return NotAlone.BUSY
    write = _sqlite_write(dialect, events, unless_work_in)

    def alone(sqlite: sqlite3.Connection) -> Inserted | NotAlone:
        if sqlite.in_transaction:  # never left so here; if it were, it would hold the lock
            log.warning("the ingest writer's SQLite connection was left in a transaction")
            sqlite.rollback()
        try:
            done = write(sqlite, on_loop=True)
        except BaseException:
            if sqlite.in_transaction:
                sqlite.rollback()
            raise
        if done is None:
            return NotAlone.BUSY
        if not done.committed:  # there is work
            sqlite.rollback()
            return NotAlone.WORK
        return done

    return driver.run_inline(alone)


def _begin_at_once(sqlite: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE (take the write lock) without waiting; False if another process
    holds the lock."""
    sqlite.execute("PRAGMA busy_timeout=0")
    try:
        sqlite.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as problem:
        # The primary code: SQLITE_BUSY_RECOVERY and _SNAPSHOT are busy too.
        if problem.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            raise
        return False
    finally:
        sqlite.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return True


WEBHOOKS_LOCK_PREFIX = "gateway:webhooks:"  # advisory lock key of an account's web hooks

# Events, their tag rows, tag counts and event counts (the eventStats rollup) in one
# PostgreSQL statement. The rows arrive as one JSON document that PostgreSQL turns into
# records of the table's own row type: one round trip and one prepared statement for a
# batch of any size, and next to no per-value work in Python (twice the rows per second
# of multi-row VALUES and two more statements). Tags and counts are written only for
# the events actually inserted (not the duplicates). Events go in (account, dedupe key)
# order and counts in key order, so that concurrent writers (batches in flight at once,
# other replicas) take those locks in one order and never deadlock over a retried event.
# The guard (migration 0005) runs first: it takes each account's web hook lock, shared
# (storage.webhooks.lock_account_webhooks), and says whether a work table ($3) has rows
# of the accounts; if so, nothing is inserted (insert_alone). Its answer gates the
# insert's rows, so it is known before the first one.
_POSTGRESQL_INSERT = """
    WITH guard AS MATERIALIZED (
        SELECT gateway_ingest_guard($1::bigint[], $2::text, $3::text[]) AS has_work
    ), inserted AS (
        INSERT INTO events
        SELECT * FROM json_populate_recordset(NULL::events, $4::json)
        WHERE (SELECT has_work FROM guard) IS FALSE
        ORDER BY account_id, dedupe_key
        ON CONFLICT (account_id, dedupe_key) DO NOTHING
        RETURNING id, account_id, type, provider, template, occurred_at
    ), new_tags AS (
        SELECT tag.account_id, tag.tag, tag.event_id
        FROM json_to_recordset($5::json) AS tag(account_id bigint, tag text, event_id bigint)
        JOIN inserted ON inserted.id = tag.event_id
    ), tag_rows AS (
        INSERT INTO event_tags (account_id, tag, event_id)
        SELECT account_id, tag, event_id FROM new_tags
        ON CONFLICT DO NOTHING
    ), counts AS (
        INSERT INTO tag_counts (account_id, tag, count)
        SELECT account_id, tag, count(*) FROM new_tags
        GROUP BY account_id, tag ORDER BY account_id, tag
        ON CONFLICT (account_id, tag) DO UPDATE SET count = tag_counts.count + excluded.count
    ),{event_counts}
    SELECT (SELECT has_work FROM guard) AS has_work, ARRAY(SELECT id FROM inserted) AS ids
""".replace("{event_counts}", POSTGRESQL_EVENT_COUNTS_CTES)


def _postgresql_parameters(
    events: Sequence[PreparedEvent], work_tables: Sequence[str]
) -> tuple[Any, ...]:
    tags = [
        {"account_id": prepared.new.account_id, "tag": tag, "event_id": prepared.new.id}
        for prepared in events
        for tag in prepared.new.event.tags
    ]
    rows = b",".join(cast(bytes, prepared.values) for prepared in events)
    return (
        sorted({prepared.new.account_id for prepared in events}),
        WEBHOOKS_LOCK_PREFIX,
        list(work_tables),
        f"[{rows.decode()}]",
        orjson.dumps(tags).decode(),
    )


async def _insert_postgresql(
    connection: AsyncConnection, events: Sequence[PreparedEvent]
) -> set[int]:
    """In the caller's transaction (its hooks read the web hooks after this)."""
    row = (
        await connection.exec_driver_sql(_POSTGRESQL_INSERT, _postgresql_parameters(events, ()))
    ).one()
    if row.has_work is not False:  # with no work tables: only a broken guard
        raise RuntimeError(f"gateway_ingest_guard answered {row.has_work!r} with no work tables")
    return set(row.ids)


def _stored_event(row: RowMapping) -> StoredEvent:
    details: dict[str, Any] = orjson.loads(row["details"])
    for name, kind in _DETAIL_ENUMS.items():
        if name in details:
            details[name] = kind(details[name])
    event = NormalizedEvent(
        type=EventType(row["type"]),
        provider=Provider(row["provider"]),
        provider_event=row["provider_event"],
        email=row["email"],
        occurred_at=row["occurred_at"],
        raw=orjson.loads(row["raw"]),
        message_id=row["message_id"],
        sent_at=row["sent_at"],
        subject=row["subject"],
        template=row["template"],
        tags=tuple(orjson.loads(row["tags"])),
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
    """EXISTS: the event whose id is ``event_id`` (a column) carries ``tag``."""
    return exists().where(
        tags_table.c.account_id == account_id,
        tags_table.c.tag == tag,
        tags_table.c.event_id == event_id,
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


async def get_events(
    connection: AsyncConnection, *, account_id: int, ids: Sequence[int]
) -> list[StoredEvent]:
    """The given events of one account, by id (others' ids are simply not found)."""
    if not ids:
        return []
    result = await connection.execute(
        select(events_table).where(
            events_table.c.account_id == account_id, events_table.c.id.in_(list(ids))
        )
    )
    return [_stored_event(row) for row in result.mappings()]

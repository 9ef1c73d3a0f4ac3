"""Writing events: a group commit's inserts, on SQLite and on PostgreSQL."""

from __future__ import annotations

import enum
import functools
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.stats import rollup_rows
from gateway.storage.event_counts import POSTGRESQL_EVENT_COUNTS_CTES, SQLITE_EVENT_COUNTS
from gateway.storage.events.rows import (
    NewEvent,
    PreparedEvent,
    Unstorable,
    events_table,
    prepare_events,
    stored_text,
)


@dataclass(frozen=True, slots=True)
class Inserted:
    """What an insert did."""

    stored: set[int]  # ids of the events inserted (not the duplicates)
    # A work table (see insert_prepared) has rows of the batch's accounts.
    has_work: bool = False


class NotAlone(enum.Enum):
    """Why :func:`write_alone` wrote nothing."""

    WORK = "work"  # a work table has rows of the batch's accounts: write it with them


async def insert_events(
    connection: AsyncConnection, *, events: Sequence[NewEvent], now: datetime
) -> set[int]:
    """Insert events (of any accounts) with their tags; returns the ids stored.

    An event whose dedupe key its account already has (a provider's retry) is skipped:
    its id is not in the result. Runs inside the caller's transaction. ValueError, and
    nothing written, if an event cannot be stored (see rows.prepare_events).
    """
    prepared = []
    for item in prepare_events(connection.dialect, events, now):
        if isinstance(item, Unstorable):
            raise ValueError(f"event {item.new.id}: {item.reason}")
        prepared.append(item)
    return (await insert_prepared(connection, prepared)).stored


async def insert_prepared(
    connection: AsyncConnection, events: Sequence[PreparedEvent], *, work_in: Sequence[str] = ()
) -> Inserted:
    """:func:`insert_events` for events already prepared for this connection's dialect,
    and whether one of the ``work_in`` tables has rows of the batch's accounts.

    A work table is one whose rows of an account mean that something is to be written
    with its events (``webhooks``: the outbox). On PostgreSQL the insert first takes
    each account's row lock, shared: a web hook change takes it exclusively
    (storage.webhooks.lock_account_webhooks), so it either committed before this
    transaction's next statement, which then sees it, or waits for this commit (and
    its backfill then finds these events). SQLite has one writer at a time already.
    """
    if not events:
        return Inserted(set())
    if connection.dialect.name == "postgresql":
        return await _insert_postgresql(connection, events, tuple(work_in))
    return await _insert_sqlite(connection, events, tuple(work_in))


def refused_by_database(error: BaseException) -> str | None:
    """The database's reason when ``error`` is its refusal of a value (a constraint, a
    value it cannot hold): writing the batch again without the event that carries it
    succeeds. None for anything else (a lost connection, a lock timeout, a bug)."""
    original: Any = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", 0) & 0xFF
        if isinstance(original, sqlite3.IntegrityError | sqlite3.DataError) or code in {
            sqlite3.SQLITE_TOOBIG,
            sqlite3.SQLITE_MISMATCH,
            sqlite3.SQLITE_RANGE,
        }:
            return f"the database refused it: {original}"
        return None
    # PostgreSQL: data exceptions, integrity constraints, program limits (an index
    # entry too large).
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in {"22", "23", "54"}:
        message = str(getattr(original, "__cause__", None) or original).splitlines()[0]
        return f"the database refused it: {message}"
    return None


# -- SQLite --------------------------------------------------------------------------

# Every statement writes all its rows at once (multi-row VALUES, no RETURNING): one
# sqlite3_step, so the writer's thread takes the GIL back once per statement, not once
# per row. Each time it does, it may wait up to the switch interval (5 ms) for the event
# loop's thread, which is busy reading requests; executemany and a RETURNING row apiece
# made that a few hundred waits a batch, and halved single-event ingest.
_SQLITE_MAX_PARAMETERS = 32766  # SQLite's limit on ? in a statement
_SQLITE_MAX_ROWS = 1000  # rows per statement: the statement cache keeps ~one per size
_SQLITE_TAGS = ("INSERT INTO event_tags (account_id, tag, event_id)", 3, " ON CONFLICT DO NOTHING")
_SQLITE_COUNTS = (
    "INSERT INTO tag_counts (account_id, tag, count)",
    3,
    " ON CONFLICT (account_id, tag) DO UPDATE SET count = tag_counts.count + excluded.count",
)
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@functools.cache
def _sqlite_rows_statement(head: str, columns: int, rows: int, tail: str) -> str:
    values = "(" + ", ".join("?" * columns) + ")"
    # Only our own statements' heads and tails and placeholders go into the text.
    return f"{head} VALUES {', '.join([values] * rows)}{tail}"


def _sqlite_statements(
    statement: tuple[str, int, str], rows: Sequence[tuple[Any, ...]]
) -> list[tuple[str, tuple[Any, ...]]]:
    """``rows`` written by ``statement`` (head, columns, tail) in as few multi-row
    statements as SQLite's limits allow."""
    head, columns, tail = statement
    per = min(_SQLITE_MAX_ROWS, _SQLITE_MAX_PARAMETERS // columns)
    return [
        (
            _sqlite_rows_statement(head, columns, len(chunk), tail),
            tuple(value for row in chunk for value in row),
        )
        for start in range(0, len(rows), per)
        for chunk in [rows[start : start + per]]
    ]


@functools.cache
def _sqlite_events_head() -> tuple[str, int, str]:
    names = [column.name for column in events_table.c]
    # Only the table's own column names go into the text.
    return (
        f"INSERT INTO events ({', '.join(names)})",
        len(names),
        " ON CONFLICT (account_id, dedupe_key) DO NOTHING",
    )


# The ids of a batch that are in the table (one row: a JSON array).
_SQLITE_STORED_OF = (
    "SELECT json_group_array(id) FROM events WHERE id IN (SELECT value FROM json_each(?))"
)


@functools.cache
def _sqlite_probe(table: str, accounts: int) -> str:
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(f"not a table name: {table!r}")
    marks = ", ".join("?" * accounts)
    # Only a checked table name and placeholders go into the text.
    return f'SELECT 1 FROM "{table}" WHERE account_id IN ({marks}) LIMIT 1'  # noqa: S608


@dataclass(frozen=True, slots=True)
class SqliteBatch:
    """A batch's statements and parameters, the same for sqlite3 and SQLAlchemy, built
    before the trip to the writer's thread (:func:`write_alone`): there, only the
    statements run, and the thread needs the GIL as little as possible."""

    chunks: list[tuple[str, tuple[Any, ...], tuple[int, ...]]]  # statement, values, ids
    tags: dict[int, tuple[int, tuple[str, ...]]]  # event id: (account, tags)
    accounts: tuple[int, ...]
    news: tuple[NewEvent, ...]
    probes: tuple[str, ...]  # is there work for these accounts? (see write_alone)
    # The follow-ups when every event is stored (no duplicates): the usual case.
    all_stored: list[tuple[str, tuple[Any, ...]]]

    @staticmethod
    def of(events: Sequence[PreparedEvent], *, unless_work_in: Sequence[str] = ()) -> SqliteBatch:
        head = _sqlite_events_head()
        per = min(_SQLITE_MAX_ROWS, _SQLITE_MAX_PARAMETERS // head[1])
        statements = _sqlite_statements(
            head, [cast(tuple[Any, ...], prepared.values) for prepared in events]
        )
        chunks = [
            (statement, values, tuple(prepared.new.id for prepared in events[start : start + per]))
            for (statement, values), start in zip(
                statements, range(0, len(events), per), strict=True
            )
        ]
        accounts = tuple(sorted({prepared.new.account_id for prepared in events}))
        tags = {prepared.new.id: (prepared.new.account_id, prepared.tags) for prepared in events}
        news = tuple(prepared.new for prepared in events)
        probes = tuple(_sqlite_probe(table, len(accounts)) for table in unless_work_in)
        follow_ups = _follow_ups(news, tags, {new.id for new in news})
        return SqliteBatch(chunks, tags, accounts, news, probes, follow_ups)

    @staticmethod
    def stored_ids(ids: tuple[int, ...], inserted: int) -> set[int] | None:
        """The ids a chunk stored when its insert's row count tells (all or none);
        None when some were duplicates: then ask the table (:data:`_SQLITE_STORED_OF`)."""
        if inserted == len(ids):
            return set(ids)
        if inserted == 0:
            return set()
        return None

    def follow_ups(self, stored: set[int]) -> list[tuple[str, tuple[Any, ...]]]:
        """The tags, tag counts and eventStats rollup of the events stored."""
        if len(stored) == len(self.news):
            return self.all_stored
        return _follow_ups(self.news, self.tags, stored)


def _follow_ups(
    news: Sequence[NewEvent], tags: dict[int, tuple[int, tuple[str, ...]]], stored: set[int]
) -> list[tuple[str, tuple[Any, ...]]]:
    tag_rows = [
        (account_id, tag, event_id)
        for event_id, (account_id, event_tags) in tags.items()
        if event_id in stored
        for tag in event_tags
    ]
    counts: dict[tuple[int, str], int] = {}
    for account_id, tag, _event_id in tag_rows:
        counts[account_id, tag] = counts.get((account_id, tag), 0) + 1
    count_rows = [(account_id, tag, n) for (account_id, tag), n in sorted(counts.items())]
    # The eventStats rollup's increments (storage.event_counts), keyed by the template
    # and tags as stored.
    rollup = rollup_rows(
        (
            new.account_id,
            event.occurred_at,
            event.type.value,
            event.provider.value,
            None if event.template is None else stored_text(event.template),
            tags[new.id][1],
        )
        for new in news
        if new.id in stored
        for event in [new.event]
    )
    return [
        *_sqlite_statements(_SQLITE_TAGS, tag_rows),
        *_sqlite_statements(_SQLITE_COUNTS, count_rows),
        *_sqlite_statements(SQLITE_EVENT_COUNTS, rollup),
    ]


def write_alone(sqlite: sqlite3.Connection, batch: SqliteBatch) -> Inserted | NotAlone:
    """SQLite, on a plain connection in autocommit mode (storage.db.SqliteThread): the
    batch's events, tags and counts inserted and committed in one call, unless one of
    its probes finds a row of the batch's accounts in a work table: then nothing is
    written, and the caller writes the batch in a transaction with whatever that work
    is. BEGIN IMMEDIATE takes the write lock first (waiting for another process's
    writer up to the busy timeout), so the answer holds until the commit.
    """
    if not batch.news:
        return Inserted(set())
    sqlite.execute("BEGIN IMMEDIATE")
    try:
        for probe in batch.probes:
            if sqlite.execute(probe, batch.accounts).fetchone() is not None:
                sqlite.execute("ROLLBACK")
                return NotAlone.WORK
        stored: set[int] = set()
        for statement, parameters, ids in batch.chunks:
            inserted = sqlite.execute(statement, parameters).rowcount
            known = batch.stored_ids(ids, inserted)
            if known is None:
                (found,) = sqlite.execute(_SQLITE_STORED_OF, (orjson.dumps(ids),)).fetchone()
                known = set(orjson.loads(found))
            stored |= known
        if stored:
            for statement, parameters in batch.follow_ups(stored):
                sqlite.execute(statement, parameters)
        sqlite.execute("COMMIT")
    except BaseException:
        if sqlite.in_transaction:
            sqlite.execute("ROLLBACK")
        raise
    return Inserted(stored)


async def _insert_sqlite(
    connection: AsyncConnection, events: Sequence[PreparedEvent], work_in: tuple[str, ...]
) -> Inserted:
    batch = SqliteBatch.of(events, unless_work_in=work_in)
    stored: set[int] = set()
    for statement, parameters, ids in batch.chunks:
        inserted = (await connection.exec_driver_sql(statement, parameters)).rowcount
        known = batch.stored_ids(ids, inserted)
        if known is None:
            result = await connection.exec_driver_sql(_SQLITE_STORED_OF, (orjson.dumps(ids),))
            known = set(orjson.loads(result.scalar_one()))
        stored |= known
    if stored:
        for statement, parameters in batch.follow_ups(stored):
            await connection.exec_driver_sql(statement, parameters)
    for probe in batch.probes:
        if (await connection.exec_driver_sql(probe, batch.accounts)).first() is not None:
            return Inserted(stored, has_work=True)
    return Inserted(stored)


# -- PostgreSQL ----------------------------------------------------------------------

# Each account's row, shared, in id order (web hook changes take it exclusively, one
# account at a time). A statement of its own: the next one's snapshot is taken after
# the locks are granted, so it sees a web hook committed while this one waited.
_POSTGRESQL_LOCK = "SELECT id FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE"

# Events, their dedupe keys, tag rows, tag counts and the eventStats rollup
# (storage.event_counts) in one PostgreSQL statement. The rows arrive as one JSON
# document that PostgreSQL turns into records of the table's own row type: one round
# trip and one prepared statement for a batch of any size, and next to no per-value
# work in Python (twice the rows per second of multi-row VALUES and two more
# statements). ``events`` is partitioned (storage.partitions), so an event's dedupe key
# is claimed in ``event_dedupe`` first and only the events whose key was claimed are
# inserted: a provider's retry is stored once whenever it comes, and a concurrent
# writer of the same key waits for this one's commit, then skips it. Tags and counts
# are written only for the events actually inserted (not the duplicates). Keys go in
# (account, dedupe key) order and counts in (account, tag) order, so that concurrent
# writers (batches in flight at once, other replicas) take those locks in one order
# and never deadlock over a retried event. The last column says whether a work table
# has rows of the batch's accounts ($3, given only with work tables).
_POSTGRESQL_INSERT = """
    WITH batch AS (
        SELECT * FROM json_populate_recordset(NULL::events, $1::json)
    ), claimed AS (
        INSERT INTO event_dedupe (account_id, dedupe_key, event_id)
        SELECT account_id, dedupe_key, id FROM batch
        ORDER BY account_id, dedupe_key
        ON CONFLICT (account_id, dedupe_key) DO NOTHING
        RETURNING event_id
    ), inserted AS (
        INSERT INTO events
        SELECT batch.* FROM batch JOIN claimed ON claimed.event_id = batch.id
        RETURNING id, account_id, type, provider, template, occurred_at
    ), new_tags AS (
        SELECT tag.account_id, tag.tag, tag.event_id
        FROM json_to_recordset($2::json) AS tag(account_id bigint, tag text, event_id bigint)
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
    SELECT ARRAY(SELECT id FROM inserted) AS ids, {work} AS has_work
"""


@functools.cache
def _postgresql_insert(work_in: tuple[str, ...]) -> str:
    for table in work_in:
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(f"not a table name: {table!r}")
    work = " OR ".join(
        # Only checked table names go into the text.
        f'EXISTS (SELECT 1 FROM "{table}" WHERE account_id = ANY($3::bigint[]))'  # noqa: S608
        for table in work_in
    )
    return _POSTGRESQL_INSERT.format(
        work=work or "false", event_counts=POSTGRESQL_EVENT_COUNTS_CTES
    )


async def _insert_postgresql(
    connection: AsyncConnection, events: Sequence[PreparedEvent], work_in: tuple[str, ...]
) -> Inserted:
    accounts = sorted({prepared.new.account_id for prepared in events})
    tags = [
        {"account_id": prepared.new.account_id, "tag": tag, "event_id": prepared.new.id}
        for prepared in events
        for tag in prepared.tags
    ]
    rows = b",".join(cast(bytes, prepared.values) for prepared in events)
    await connection.exec_driver_sql(_POSTGRESQL_LOCK, (accounts,))
    parameters: tuple[Any, ...] = (f"[{rows.decode()}]", orjson.dumps(tags).decode())
    if work_in:
        parameters += (accounts,)
    row = (await connection.exec_driver_sql(_postgresql_insert(work_in), parameters)).one()
    return Inserted(set(row.ids), has_work=bool(row.has_work))

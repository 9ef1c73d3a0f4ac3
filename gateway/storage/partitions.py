"""PostgreSQL: events, their tag rows and delivery attempts in partitions by week.

``events`` and ``delivery_attempts`` are partitioned by range of ``id``, and
``event_tags`` by range of ``event_id``: ids begin with the millisecond they were
minted (gateway.ids), so a range of ids is a span of time of receipt. A partition
covers whole UTC days, ``PERIOD_DAYS`` of them (a week, Monday to Sunday), and is
named after its first day (``events_p20261130``). Keyed by id, the primary keys stay
what they were, "newest first" reads the partitions in order and a cursor
(``id < after``) prunes the newer ones. A week, not a day: a query that no id bounds
is planned over every partition (1.5 ms more for an all-of-tags query over 15 daily
partitions than over one table), and 90 days of retention are 13 weeks, not 90 days.

There is no DEFAULT partition: every day from the oldest row's to ``AHEAD_DAYS``
ahead has its partition, made by the migration, by ``gateway migrate``, when a
gateway or worker starts and on every retention run (services.retention). Without a
default, "newest first" reads partitions one after another (PostgreSQL's ordered
Append) instead of merging all of them, and a partition is detached without scanning
one.

A unique index of a partitioned table must include the partition key, so the rule
"an account stores a dedupe key once" cannot be ``events``' own any more: it is
``event_dedupe`` (account, dedupe key) -> event id, a plain table written by the same
statement as the events (storage.events.write) and purged with them
(storage.retention). SQLite keeps one ``events`` table with its unique constraint.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import BigInteger, Column, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.ids import id_floor_for_ms, ms_of_id

# The partitioned tables, each with its partition key.
PARTITIONED: dict[str, str] = {"events": "id", "event_tags": "event_id", "delivery_attempts": "id"}
PartitionedTable = Literal["events", "event_tags", "delivery_attempts"]
# Days each new partition covers (the last one before a partition that exists may be
# shorter), from a Monday.
PERIOD_DAYS = 7
# Days covered ahead of today: ingest never waits for a partition, even if no retention
# run happens for that long (its workers all stopped).
AHEAD_DAYS = 14
# How long a partition's creation, detach or drop waits for the table's lock before
# giving up until the next run (ingest queues behind a waiting ALTER TABLE).
LOCK_TIMEOUT_MS = 1000

# PostgreSQL only (not in the models' metadata: SQLite has no such table). The dedupe
# keys of the stored events: its primary key is the rule the events' unique constraint
# was.
dedupe_table = Table(
    "event_dedupe",
    MetaData(),
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("dedupe_key", String(40), primary_key=True),
    Column("event_id", BigInteger, nullable=False),
)

# pg_advisory_xact_lock's key for making partitions (the bytes of "partitio").
_ENSURE_LOCK = int.from_bytes(b"partitio", "big") >> 1
_PARTITION = re.compile(r"(events|event_tags|delivery_attempts)_p[0-9]{8}")
_BOUNDS = re.compile(r"FROM \('?([0-9]+)'?\) TO \('?([0-9]+)'?\)")


def declared_by_models(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object`` for a PostgreSQL database: leaves out what the
    models do not declare there (the partitions, ``event_dedupe``) and the
    events' unique dedupe constraint, which only SQLite has."""
    if type_ == "table" and name is not None:
        return name != dedupe_table.name and _PARTITION.fullmatch(name) is None
    return not (type_ == "unique_constraint" and name == "uq_events_account_dedupe")


def day_of_id(id_: int) -> date:
    """The UTC day ``id_`` was minted in."""
    return datetime.fromtimestamp(ms_of_id(id_) / 1000, UTC).date()


def day_start(day: date) -> int:
    """The first id of ``day`` (UTC)."""
    return id_floor_for_ms(
        int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    )


def day_bounds(day: date) -> tuple[int, int]:
    """The ids of ``day``: from the first, up to (not including) the next day's first."""
    return day_start(day), day_start(day + timedelta(days=1))


def partition_name(table: str, day: date) -> str:
    """The name of ``table``'s partition that begins with ``day``."""
    return f"{table}_p{day:%Y%m%d}"


def period_start(day: date, period_days: int) -> date:
    """The first day of the period ``day`` is in: periods of ``period_days`` follow each
    other from Monday 1969-12-29 (weeks begin on Mondays)."""
    offset = (day - _FIRST_MONDAY).days
    return _FIRST_MONDAY + timedelta(days=offset // period_days * period_days)


_FIRST_MONDAY = date(1969, 12, 29)


def partition_statements(table: str, first: date, until: date) -> list[str]:
    """Make the partition of ``table`` for the days from ``first`` up to (not
    including) ``until``. A table like it, then attached: attaching takes a lock that
    lets ingest and reads go on (CREATE TABLE … PARTITION OF would stop them); the
    empty table's indexes and constraints are made as it is attached."""
    if table not in PARTITIONED:
        raise ValueError(f"not a partitioned table: {table!r}")
    name = partition_name(table, first)
    # Only a known table name, a name made of it and a date, and integers go in.
    return [
        f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS)',
        f'ALTER TABLE "{table}" ATTACH PARTITION "{name}"'
        f" FOR VALUES FROM ({day_start(first)}) TO ({day_start(until)})",
    ]


def missing_ranges(
    existing: list[tuple[date, date]], first: date, until: date, period_days: int
) -> list[tuple[date, date]]:
    """The partitions (first day, day after the last) to make so that every day from
    ``first`` up to ``until`` has one, beside the ``existing`` ones: a period each, cut
    short where an existing partition begins."""
    made: list[tuple[date, date]] = []
    day = first
    covered = sorted(existing)
    while day < until:
        inside = next((end for start, end in covered if start <= day < end), None)
        if inside is not None:
            day = inside
            continue
        end = period_start(day, period_days) + timedelta(days=period_days)
        end = min([end, *(start for start, _end in covered if start > day)])
        made.append((day, end))
        day = end
    return made


_PARTITIONS = (
    "SELECT c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_class c"
    " WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid)"
    " AND c.relname ~ '^(events|event_tags|delivery_attempts)_p[0-9]{8}$'"
)


async def is_partitioned(connection: AsyncConnection) -> bool:
    """Whether this database's events are partitioned (PostgreSQL, from 0013 on)."""
    if connection.dialect.name != "postgresql":
        return False
    result = await connection.exec_driver_sql(
        "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('events')"
    )
    return bool(result.scalar_one_or_none())


async def existing_partitions(
    connection: AsyncConnection,
) -> dict[str, dict[date, tuple[int, int] | None]]:
    """The partitions of each partitioned table, by their first day, with their ids
    (from, up to); None for one detached (retention has yet to finish dropping it)."""
    found: dict[str, dict[date, tuple[int, int] | None]] = {table: {} for table in PARTITIONED}
    for row in await connection.exec_driver_sql(_PARTITIONS):
        table, _, stamp = str(row.partition).rpartition("_p")
        day = datetime.strptime(stamp, "%Y%m%d").replace(tzinfo=UTC).date()
        bounds = None if row.bound is None else _BOUNDS.search(row.bound)
        found[table][day] = None if bounds is None else (int(bounds[1]), int(bounds[2]))
    return found


async def ensure_partitions(
    connection: AsyncConnection,
    *,
    today: date,
    first: date | None = None,
    period_days: int = PERIOD_DAYS,
) -> list[str]:
    """Make the partitions missing for the days from ``first`` (default: ``today``)
    to ``AHEAD_DAYS`` after ``today``, in the caller's transaction; returns their
    names. Nothing on SQLite or an unpartitioned schema (before 0013)."""
    if not await is_partitioned(connection):
        return []
    # Gateways and workers starting at once: one makes what is missing, the others then
    # find it made (the catalog is read after the lock is granted).
    await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ENSURE_LOCK})")
    found = await existing_partitions(connection)
    until = today + timedelta(days=AHEAD_DAYS + 1)
    made: list[str] = []
    for table in PARTITIONED:
        existing = [
            (day_of_id(bounds[0]), day_of_id(bounds[1]))
            for bounds in found[table].values()
            if bounds is not None
        ]
        for start, end in missing_ranges(existing, first or today, until, period_days):
            if not made:
                await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            for statement in partition_statements(table, start, end):
                await connection.exec_driver_sql(statement)
            made.append(partition_name(table, start))
    return made

"""Retention: each account's days, and purging one batch of its oldest rows.

"Older than" is an id range: ids begin with the millisecond they were minted
(gateway.ids), so ``id < below_id`` (see ids.id_floor_for_ms) is what was received,
created or attempted before a moment, read from the primary key or an index that ends
in id. Each purge function deletes at most ``limit`` rows inside the caller's
transaction. On PostgreSQL, whole partitions go at once as well: see the functions
at the end (storage.partitions, services.retention).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.stats import rollup_decrements_of_kinds, rollup_rows
from gateway.storage.accounts import accounts_table
from gateway.storage.deliveries import attempts_table, deliveries_table
from gateway.storage.event_counts import event_counts_table
from gateway.storage.events.rows import counts_table, events_table, tags_table
from gateway.storage.partitions import LOCK_TIMEOUT_MS, dedupe_table, partition_name
from gateway.storage.rejections import rejected_table
from gateway.storage.webhooks import webhooks_table


async def account_retentions(connection: AsyncConnection) -> list[tuple[int, int | None]]:
    """Every account with its own retention days (None: the setting's)."""
    c = accounts_table.c
    result = await connection.execute(select(c.id, c.retention_days).order_by(c.id))
    return [(int(account_id), days) for account_id, days in result]


async def retention_days(connection: AsyncConnection, *, account_id: int) -> int | None:
    c = accounts_table.c
    result = await connection.execute(select(c.retention_days).where(c.id == account_id))
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


async def set_retention_days(
    connection: AsyncConnection, *, account_id: int, days: int | None
) -> None:
    await connection.execute(
        update(accounts_table).where(accounts_table.c.id == account_id).values(retention_days=days)
    )


async def webhook_ids(connection: AsyncConnection, *, account_id: int) -> list[int]:
    c = webhooks_table.c
    result = await connection.execute(select(c.id).where(c.account_id == account_id))
    return [int(webhook_id) for webhook_id in result.scalars()]


def _oldest(table: Any, owner: Any, below_id: int, limit: int) -> Any:
    """The ids of ``owner``'s oldest rows of ``table`` below ``below_id``, at most
    ``limit`` (ids are time-ordered: an index range, oldest first)."""
    return (
        select(table.c.id)
        .where(owner, table.c.id < below_id)
        .order_by(table.c.id)
        .limit(limit)
        .scalar_subquery()
    )


async def purge_events(
    connection: AsyncConnection, *, account_id: int, below_id: int, limit: int
) -> int:
    """Delete up to ``limit`` of the account's events with ids below ``below_id``, their
    tag rows, and their share of tag_counts and of the eventStats rollup (rows that
    count nothing any more go too). Returns how many events went.

    The counts are taken off by what the DELETE returned, so two purges of the same
    rows (on PostgreSQL the second waits, then finds them gone) take them off once.
    Counts are updated in primary-key order, as ingest adds to them: no deadlock.
    """
    c = events_table.c
    oldest = _oldest(events_table, c.account_id == account_id, below_id, limit)
    result = await connection.execute(
        delete(events_table)
        .where(c.account_id == account_id, c.id.in_(oldest))
        .returning(c.id, c.type, c.provider, c.template, c.occurred_at, c.tags, c.dedupe_key)
    )
    rows = result.all()
    gone = [
        (int(row.id), row.type, row.provider, row.template, row.occurred_at, orjson.loads(row.tags))
        for row in rows
    ]
    if not gone:
        return 0
    if connection.dialect.name == "postgresql":
        # Their dedupe keys (storage.partitions): a retry that comes now is stored again,
        # as it was when the events' own unique constraint went with the row.
        d = dedupe_table.c
        await connection.execute(
            delete(dedupe_table).where(
                d.account_id == account_id,
                d.dedupe_key == bindparam("k"),
                d.event_id == bindparam("e"),
            ),
            [{"k": row.dedupe_key, "e": int(row.id)} for row in rows],
        )
    tag_rows = [
        {"a": account_id, "t": tag, "e": event_id}
        for event_id, *_rest, tags in gone
        for tag in dict.fromkeys(tags)
    ]
    if tag_rows:
        await _purge_tags(connection, tag_rows)
    decrements = rollup_rows(
        (account_id, occurred_at, kind, provider, template, tags)
        for _id, kind, provider, template, occurred_at, tags in gone
    )
    await _take_off_rollup(connection, decrements)
    return len(gone)


async def _purge_tags(connection: AsyncConnection, tag_rows: list[dict[str, object]]) -> None:
    t = tags_table.c
    await connection.execute(
        delete(tags_table).where(
            t.account_id == bindparam("a"), t.tag == bindparam("t"), t.event_id == bindparam("e")
        ),
        tag_rows,
    )
    per_tag: dict[tuple[Any, Any], int] = {}
    for row in tag_rows:
        per_tag[row["a"], row["t"]] = per_tag.get((row["a"], row["t"]), 0) + 1
    await _take_off_tag_counts(connection, per_tag)


async def _take_off_tag_counts(
    connection: AsyncConnection, per_tag: dict[tuple[Any, Any], int]
) -> None:
    """tag_counts less ``per_tag`` ((account, tag): how many), in primary-key order."""
    counts = [{"a": a, "t": t, "n": n} for (a, t), n in sorted(per_tag.items())]
    k = counts_table.c
    match = (k.account_id == bindparam("a"), k.tag == bindparam("t"))
    await connection.execute(
        update(counts_table).where(*match).values(count=k.count - bindparam("n")), counts
    )
    await connection.execute(delete(counts_table).where(*match, k.count <= 0), counts)


async def _take_off_rollup(
    connection: AsyncConnection, decrements: Sequence[tuple[int, str, int, int, str, str, int]]
) -> None:
    rows = [
        {"a": a, "d": dimension, "s": span, "h": hour, "k": key, "y": kind, "n": n}
        for a, dimension, span, hour, key, kind, n in decrements
    ]
    r = event_counts_table.c
    match = (
        r.account_id == bindparam("a"),
        r.dimension == bindparam("d"),
        r.span == bindparam("s"),
        r.hour == bindparam("h"),
        r.key == bindparam("k"),
        r.type == bindparam("y"),
    )
    await connection.execute(
        update(event_counts_table).where(*match).values(count=r.count - bindparam("n")), rows
    )
    await connection.execute(delete(event_counts_table).where(*match, r.count <= 0), rows)


async def purge_deliveries(
    connection: AsyncConnection, *, webhook_id: int, below_id: int, limit: int, now: datetime
) -> int:
    """Delete up to ``limit`` of the web hook's deliveries with ids below ``below_id``
    (their attempts go with them: ON DELETE CASCADE), except one a worker holds right
    now: its result is about to be written against it."""
    c = deliveries_table.c
    oldest = _oldest(deliveries_table, c.webhook_id == webhook_id, below_id, limit)
    result = await connection.execute(
        delete(deliveries_table).where(
            c.webhook_id == webhook_id,
            c.id.in_(oldest),
            or_(c.lease_until.is_(None), c.lease_until < now),
        )
    )
    return int(result.rowcount)


async def purge_attempts(
    connection: AsyncConnection, *, webhook_id: int, below_id: int, limit: int
) -> int:
    """Delete up to ``limit`` of the web hook's attempts made before ``below_id``."""
    c = attempts_table.c
    oldest = _oldest(attempts_table, c.webhook_id == webhook_id, below_id, limit)
    result = await connection.execute(
        delete(attempts_table).where(c.webhook_id == webhook_id, c.id.in_(oldest))
    )
    return int(result.rowcount)


async def purge_rejected(
    connection: AsyncConnection, *, account_id: int | None, below_id: int, limit: int
) -> int:
    """Delete up to ``limit`` of the account's rejected payloads (None: those of no
    account, refused before their token was known) received before ``below_id``."""
    c = rejected_table.c
    owner = c.account_id.is_(None) if account_id is None else c.account_id == account_id
    oldest = _oldest(rejected_table, owner, below_id, limit)
    result = await connection.execute(delete(rejected_table).where(owner, c.id.in_(oldest)))
    return int(result.rowcount)


# -- PostgreSQL: whole partitions at once (storage.partitions) -----------------------------


# What an event's share of the eventStats rollup depends on (domain.stats), its hour
# as rollup_rows computes it.
_KIND = (
    "account_id, floor(extract(epoch FROM occurred_at) / 3600)::bigint AS hour,"
    " type, provider, template, tags"
)


async def has_rows_of(
    connection: AsyncConnection, *, table: str, day: date, accounts: Sequence[int]
) -> bool:
    """Whether ``day``'s partition of ``table`` (events or delivery_attempts) holds a
    row of one of ``accounts``: an index probe per account."""
    name = partition_name(table, day)
    if table == "events":
        owned = "account_id = ANY($1::bigint[])"
    elif table == "delivery_attempts":
        owned = "webhook_id IN (SELECT id FROM webhooks WHERE account_id = ANY($1::bigint[]))"
    else:
        raise ValueError(f"not a table with an owner: {table!r}")
    # Only a partition's name (a known table and a date) goes into the text.
    statement = f'SELECT EXISTS (SELECT 1 FROM "{name}" WHERE {owned})'  # noqa: S608
    result = await connection.exec_driver_sql(statement, (list(accounts),))
    return bool(result.scalar_one())


async def detach_events_partition(connection: AsyncConnection, *, day: date) -> None:
    """Take the events and tag rows of the partition that begins with ``day`` out of
    ``events`` and ``event_tags``: reads no longer see them; then
    :func:`empty_detached_events` counts them off and :func:`drop_detached_events`
    drops them. Brief, and holds no row lock, so that no ingest can deadlock with it;
    gives up (LockNotAvailable) if the tables are not free within LOCK_TIMEOUT_MS."""
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    for table in ("events", "event_tags"):
        name = partition_name(table, day)
        attached = await connection.exec_driver_sql(
            "SELECT relispartition FROM pg_class WHERE oid = to_regclass($1)", (name,)
        )
        if attached.scalar_one_or_none():
            await connection.exec_driver_sql(f'ALTER TABLE "{table}" DETACH PARTITION "{name}"')


async def empty_detached_events(connection: AsyncConnection, *, day: date) -> dict[int, int]:
    """Empty the detached partitions of events and tag rows that begin with ``day``
    (TRUNCATE), taking them off tag_counts and the eventStats rollup and deleting their
    dedupe keys, in the caller's transaction (a partition emptied is one counted off,
    or neither; a second run finds nothing to count). Returns how many events each
    account had in it.

    Dropping the emptied tables is :func:`drop_detached_events`, a transaction of
    its own: a table's drop locks ``accounts`` (its foreign key) for a moment, and must
    not wait for it while holding the counts' rows, which ingest may be waiting for."""
    events, tags = partition_name("events", day), partition_name("event_tags", day)
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    per_account: dict[int, int] = {}
    if await _exists(connection, events):
        # Only partition names (a known table and a date) go into these texts.
        by_kind = f'SELECT {_KIND}, count(*) AS n FROM "{events}" GROUP BY 1, 2, 3, 4, 5, 6'  # noqa: S608
        kinds = await connection.exec_driver_sql(by_kind)
        counted: list[tuple[tuple[int, int, str, str, str | None, tuple[str, ...]], int]] = []
        for row in kinds:
            account_id, n = int(row.account_id), int(row.n)
            kind = (account_id, int(row.hour), row.type, row.provider, row.template)
            counted.append(((*kind, tuple(orjson.loads(row.tags))), n))
            per_account[account_id] = per_account.get(account_id, 0) + n
        if counted:
            await _take_off_rollup(connection, rollup_decrements_of_kinds(counted))
        await connection.exec_driver_sql(
            f'DELETE FROM event_dedupe d USING "{events}" e'  # noqa: S608
            " WHERE d.account_id = e.account_id AND d.dedupe_key = e.dedupe_key"
            " AND d.event_id = e.id"
        )
    if await _exists(connection, tags):
        per_tag = await connection.exec_driver_sql(
            f'SELECT account_id, tag, count(*) AS n FROM "{tags}" GROUP BY 1, 2'  # noqa: S608
        )
        if per_tag_count := {(row.account_id, row.tag): int(row.n) for row in per_tag}:
            await _take_off_tag_counts(connection, per_tag_count)
    for name in (tags, events):
        if await _exists(connection, name):
            await connection.exec_driver_sql(f'TRUNCATE "{name}"')
    return per_account


async def drop_detached_events(connection: AsyncConnection, *, day: date) -> None:
    """Drop ``day``'s emptied, detached events and tag rows (gives up like
    :func:`detach_events_partition`)."""
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    for table in ("event_tags", "events"):
        await connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{partition_name(table, day)}"')


async def drop_attempts_partition(connection: AsyncConnection, *, day: date) -> None:
    """Drop ``day``'s partition of delivery_attempts (gives up like
    :func:`detach_events_partition`)."""
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    await connection.exec_driver_sql(
        f'DROP TABLE IF EXISTS "{partition_name("delivery_attempts", day)}"'
    )


async def _exists(connection: AsyncConnection, name: str) -> bool:
    result = await connection.exec_driver_sql("SELECT to_regclass($1) IS NOT NULL", (name,))
    return bool(result.scalar_one())

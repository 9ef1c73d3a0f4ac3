"""The ``event_counts`` rollup: written with the events (storage.events), read by
``eventStats``. See gateway.domain.stats for what a row counts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.stats import RollupPlan
from gateway.storage.models import EventCount

event_counts_table = EventCount.__table__  # type: ignore[attr-defined]

# SQLite: (head, columns, tail) of a multi-row statement (storage.events.write) of the
# rows of domain.stats.rollup_rows for the events a batch inserted.
SQLITE_EVENT_COUNTS = (
    "INSERT INTO event_counts (account_id, dimension, span, hour, key, type, count)",
    7,
    " ON CONFLICT (account_id, dimension, span, hour, key, type)"
    " DO UPDATE SET count = event_counts.count + excluded.count",
)

# PostgreSQL: common table expressions to join storage.events' insert statement, after
# its ``inserted`` (RETURNING id, account_id, type, provider, template, occurred_at)
# and ``new_tags`` (account_id, tag, event_id of the inserted events). The same rows
# as rollup_rows, in primary-key order like tag_counts (no deadlocks between
# concurrent batches).
POSTGRESQL_EVENT_COUNTS_CTES = """
    stat_rows AS (
        SELECT account_id, 'provider' AS dimension, provider AS key, type, occurred_at
        FROM inserted
        UNION ALL
        SELECT account_id, 'template', template, type, occurred_at
        FROM inserted WHERE template IS NOT NULL
        UNION ALL
        SELECT tagged.account_id, 'tag', tagged.tag, inserted.type, inserted.occurred_at
        FROM (SELECT DISTINCT account_id, tag, event_id FROM new_tags) AS tagged
        JOIN inserted ON inserted.id = tagged.event_id
    ), stat_hours AS (
        SELECT account_id, dimension, key, type,
            floor(extract(epoch FROM occurred_at) / 3600)::bigint AS hour
        FROM stat_rows
    ), stats AS (
        INSERT INTO event_counts (account_id, dimension, span, hour, key, type, count)
        SELECT account_id, dimension, span, hour, key, type, count(*)
        FROM (
            SELECT account_id, dimension, 1 AS span, hour, key, type FROM stat_hours
            UNION ALL
            SELECT account_id, dimension, 24, hour / 24 * 24, key, type FROM stat_hours
        ) AS spans
        GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (account_id, dimension, span, hour, key, type)
        DO UPDATE SET count = event_counts.count + excluded.count
    )"""


async def read_rollup(
    connection: AsyncConnection,
    *,
    account_id: int,
    plan: RollupPlan,
    span: int,
    width_hours: int,
    first_hour: int | None,
    end_hour: int | None,
) -> list[tuple[int, str, int]]:
    """``(first hour of the bucket, key, count)`` for the plan's rows of ``span`` in
    hours ``[first_hour, end_hour)``, buckets ``width_hours`` wide (aligned on the
    epoch, so days are UTC days)."""
    c = event_counts_table.c
    group = c.type if plan.by_type else c.key
    bucket = (c.hour // width_hours) * width_hours if width_hours > span else c.hour
    conditions = [
        c.account_id == account_id,
        c.dimension == plan.dimension.value,
        c.span == span,
    ]
    if first_hour is not None:
        conditions.append(c.hour >= first_hour)
    if end_hour is not None:
        conditions.append(c.hour < end_hour)
    if plan.keys:
        conditions.append(c.key.in_(list(plan.keys)))
    if plan.types:
        conditions.append(c.type.in_(list(plan.types)))
    query = (
        select(bucket.label("bucket"), group.label("group_key"), func.sum(c.count))
        .where(*conditions)
        .group_by(bucket, group)
    )
    result = await connection.execute(query)
    return [(int(start), str(key), int(count)) for start, key, count in result]

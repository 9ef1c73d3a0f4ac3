"""event_counts: the rollup eventStats reads, backfilled from the events stored so far

Revision ID: 0009
Revises: 0005
Create Date: 2026-11-29 16:00:00

Run it with ingest stopped (as `gateway migrate` is run before serving): events stored
between the backfill's read and the first rollup write of the new code would be
counted by neither.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

# Hours since the Unix epoch, UTC, of events.occurred_at: on SQLite the time is UTC
# text, which strftime('%s') reads.
_HOUR = {
    "postgresql": "floor(extract(epoch FROM e.occurred_at) / 3600)::bigint",
    "sqlite": "CAST(strftime('%s', e.occurred_at) AS INTEGER) / 3600",
}

# The same rows gateway.domain.stats.rollup_rows adds for each new event: hour
# rows from the events, then day rows from the hour rows.
_BACKFILL_HOURS = """
INSERT INTO event_counts (account_id, dimension, span, hour, key, type, count)
SELECT account_id, dimension, 1, hour, key, type, count(*) FROM (
    SELECT e.account_id, 'provider' AS dimension, {hour} AS hour, e.provider AS key, e.type
    FROM events e
    UNION ALL
    SELECT e.account_id, 'template', {hour}, e.template, e.type
    FROM events e WHERE e.template IS NOT NULL
    UNION ALL
    SELECT e.account_id, 'tag', {hour}, t.tag, e.type
    FROM event_tags t JOIN events e ON e.id = t.event_id AND e.account_id = t.account_id
) AS counted
GROUP BY account_id, dimension, hour, key, type
"""
_BACKFILL_DAYS = """
INSERT INTO event_counts (account_id, dimension, span, hour, key, type, count)
SELECT account_id, dimension, 24, hour / 24 * 24, key, type, sum(count)
FROM event_counts WHERE span = 1
GROUP BY account_id, dimension, hour / 24 * 24, key, type
"""


def upgrade() -> None:
    op.create_table(
        "event_counts",
        sa.Column("account_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("dimension", sa.String(length=8), nullable=False),
        sa.Column("span", sa.Integer(), nullable=False),
        sa.Column("hour", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "dimension", "span", "hour", "key", "type"),
    )
    op.execute(_BACKFILL_HOURS.format(hour=_HOUR[op.get_bind().dialect.name]))
    op.execute(_BACKFILL_DAYS)


def downgrade() -> None:
    op.drop_table("event_counts")

"""partitions: events, event tags and delivery attempts in weekly partitions (PostgreSQL)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 18:40:00

PostgreSQL only (a no-op on SQLite, which keeps one table of each): ``events`` and
``delivery_attempts`` become partitioned by range of ``id``, ``event_tags`` by range of
``event_id`` (gateway.storage.partitions): the rows received before today in one
partition, then a partition a week (Monday to Sunday) from today to two weeks ahead.
Each table is renamed, a partitioned one takes its name, the rows are copied over, the
old table is dropped and the keys and indexes are made again under their own names.
The unique (account, dedupe key) rule moves to the new ``event_dedupe`` table, filled
from the events.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import op

from gateway.storage.partitions import (
    AHEAD_DAYS,
    PARTITIONED,
    PERIOD_DAYS,
    day_of_id,
    missing_ranges,
    partition_statements,
)

revision = "0013"
down_revision: str | None = "0012"
branch_labels = None
depends_on = None

# Each table's keys and indexes, as the models declare them (names included).
_KEYS = {
    "events": [
        "ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id)",
        "ALTER TABLE events ADD CONSTRAINT events_account_id_fkey"
        " FOREIGN KEY (account_id) REFERENCES accounts (id)",
        "CREATE INDEX ix_events_account_id ON events (account_id, id)",
        "CREATE INDEX ix_events_message ON events (account_id, message_id, id)",
        "CREATE INDEX ix_events_email ON events (account_id, email_key, id)",
        "CREATE INDEX ix_events_template ON events (account_id, template, id)",
        "CREATE INDEX ix_events_type ON events (account_id, type, id)",
        "CREATE INDEX ix_events_occurred ON events (account_id, occurred_at, id)",
    ],
    "event_tags": [
        "ALTER TABLE event_tags ADD CONSTRAINT event_tags_pkey"
        " PRIMARY KEY (account_id, tag, event_id)",
    ],
    "delivery_attempts": [
        "ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_pkey PRIMARY KEY (id)",
        "ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_delivery_id_fkey"
        " FOREIGN KEY (delivery_id) REFERENCES deliveries (id) ON DELETE CASCADE",
        "ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_webhook_id_fkey"
        " FOREIGN KEY (webhook_id) REFERENCES webhooks (id) ON DELETE CASCADE",
        "CREATE INDEX ix_attempts_delivery ON delivery_attempts (delivery_id, number)",
        "CREATE INDEX ix_attempts_webhook ON delivery_attempts (webhook_id, id)",
    ],
}
_UNIQUE_DEDUPE = (
    "ALTER TABLE events ADD CONSTRAINT uq_events_account_dedupe UNIQUE (account_id, dedupe_key)"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TABLE event_dedupe (account_id bigint NOT NULL,"
        " dedupe_key varchar(40) NOT NULL, event_id bigint NOT NULL,"
        " CONSTRAINT event_dedupe_pkey PRIMARY KEY (account_id, dedupe_key))"
    )
    op.execute(
        "INSERT INTO event_dedupe (account_id, dedupe_key, event_id)"
        " SELECT account_id, dedupe_key, id FROM events"
    )
    today = datetime.now(UTC).date()
    # Only the known tables' names go into the statements' texts.
    for table, key in PARTITIONED.items():
        old = f"{table}_unpartitioned"
        oldest = bind.exec_driver_sql(f'SELECT min("{key}") FROM "{table}"').scalar()  # noqa: S608
        first = today if oldest is None else min(day_of_id(int(oldest)), today)
        op.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        op.execute(
            f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS) PARTITION BY RANGE ("{key}")'
        )
        # The rows received before today in one partition (retention drops it once
        # all of them have expired; a partition a week of years would be hundreds of
        # tables made in one transaction), then a partition a week from today on.
        existing = [(first, today)] if first < today else []
        ranges = existing + missing_ranges(
            existing, today, today + timedelta(days=AHEAD_DAYS + 1), PERIOD_DAYS
        )
        for start, end in ranges:
            for statement in partition_statements(table, start, end):
                op.execute(statement)
        op.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')  # noqa: S608
        op.execute(f'DROP TABLE "{old}"')
        # After the rows: an index is built faster at once than row by row.
        for statement in _KEYS[table]:
            op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in PARTITIONED:
        old = f"{table}_partitioned"
        op.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        op.execute(f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS)')
        op.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')  # noqa: S608
        op.execute(f'DROP TABLE "{old}" CASCADE')  # its partitions with it
        for statement in _KEYS[table]:
            op.execute(statement)
    op.execute(_UNIQUE_DEDUPE)
    op.execute("DROP TABLE event_dedupe")

"""PostgreSQL: the ingest guard, so that a group commit can be one statement

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 04:30:00

A group commit takes each account's web hook lock, shared, and then needs to know
whether the accounts have web hooks (the outbox). Read in the insert statement itself,
that answer would come from the statement's snapshot, taken before the lock was
granted: a web hook committed while the statement waited for the lock would be missed
by the outbox and, its backfill having run before these events committed, by the
backfill too. A VOLATILE function takes a fresh snapshot for each query it runs, so
the answer it gives after the locks is current. SQLite needs none of this.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# gateway_ingest_guard(accounts, lock_prefix, work_tables): takes the advisory lock
# hashtextextended(lock_prefix || account, 0) of every account, shared, in account order
# (storage.webhooks.lock_account_webhooks takes it exclusively), then answers whether
# any of the tables named in work_tables has a row of one of the accounts. The fresh
# snapshot that answer needs is READ COMMITTED's: under a stricter isolation level the
# function's queries see the calling statement's snapshot, so it refuses to run.
_GUARD = """
CREATE OR REPLACE FUNCTION gateway_ingest_guard(
    accounts bigint[], lock_prefix text, work_tables text[]
) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    account bigint;
    work_table text;
    found_work boolean;
BEGIN
    IF accounts IS NULL OR lock_prefix IS NULL OR work_tables IS NULL THEN
        RAISE EXCEPTION 'gateway_ingest_guard: no argument may be null';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'gateway ingest needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    FOR account IN SELECT DISTINCT a FROM unnest(accounts) AS a ORDER BY a LOOP
        PERFORM pg_advisory_xact_lock_shared(hashtextextended(lock_prefix || account, 0));
    END LOOP;
    FOREACH work_table IN ARRAY work_tables LOOP
        EXECUTE format(
            'SELECT EXISTS (SELECT 1 FROM %I WHERE account_id = ANY ($1))', work_table
        ) INTO found_work USING accounts;
        IF found_work THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_GUARD)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS gateway_ingest_guard(bigint[], text, text[])")

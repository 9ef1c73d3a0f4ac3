"""PostgreSQL: drop the ingest guard function

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-29 16:00:00

A group commit is now an ordinary transaction: it takes its accounts' rows FOR SHARE
and then reads their web hooks in a statement of its own, whose snapshot follows the
locks (web hook changes take the account's row FOR NO KEY UPDATE). The guard function
of migration 0005, with its advisory locks, is no longer called.
"""

from __future__ import annotations

from alembic import context, op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS gateway_ingest_guard(bigint[], text, text[])")


def downgrade() -> None:
    # The function as migration 0005 makes it: code of that time calls it.
    context.script.get_revision("0005").module.upgrade()

"""ingest sources: optional HTTP Basic credentials (Brevo)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ingest_sources", sa.Column("basic_username", sa.String(length=200), nullable=True)
    )
    op.add_column("ingest_sources", sa.Column("basic_password_hash", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_sources") as batch:
        batch.drop_column("basic_password_hash")
        batch.drop_column("basic_username")

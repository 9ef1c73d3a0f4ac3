"""rejected payloads: when a replay stored them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 23:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "rejected_payloads", sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("rejected_payloads") as batch:
        batch.drop_column("replayed_at")

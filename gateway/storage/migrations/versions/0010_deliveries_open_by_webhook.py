"""deliveries: an index of each web hook's open deliveries by due time

Revision ID: 0010
Revises: 0005
Create Date: 2026-11-29 16:50:00

A job sends what is due for one web hook (services.dispatch). Without this index its
query walked every delivery the web hook ever had (the unique (webhook_id, event_id)
index) and sorted them; with it, it reads the due ones in order and stops.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_webhook_due", "deliveries", ["webhook_id", "status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_webhook_due", table_name="deliveries")

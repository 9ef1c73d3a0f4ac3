"""retention: an account's own retention days, and its rejected payloads by id

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-29 17:10:00

``accounts.retention_days`` overrides GATEWAY_RETENTION_DAYS for one account (null:
the setting). The purge walks an account's oldest rejected payloads as an id range,
which the index on account_id alone cannot give in order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))
    op.create_index("ix_rejected_account_id", "rejected_payloads", ["account_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_rejected_account_id", table_name="rejected_payloads")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("retention_days")

"""id nodes: node numbers leased in the database, not counted in Redis

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 15:50:00

Node numbers came from INCR in Redis: after a flush, or after 1,024 starts, two live
processes could hold the same one and mint the same ids. Every node number gets a row
here, free (expired at 0) until a process leases it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NODE_COUNT = 1024  # gateway.ids.NODE_COUNT when this was written; a migration is fixed


def upgrade() -> None:
    table = op.create_table(
        "id_nodes",
        sa.Column("node", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("floor_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node"),
    )
    op.bulk_insert(
        table,
        [
            {"node": node, "owner": None, "floor_ms": 0, "expires_at_ms": 0}
            for node in range(NODE_COUNT)
        ],
    )


def downgrade() -> None:
    op.drop_table("id_nodes")

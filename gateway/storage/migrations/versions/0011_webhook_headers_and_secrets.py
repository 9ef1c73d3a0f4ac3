"""webhooks: custom headers, and the previous secret that signs during a rotation

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 17:00:00

``headers`` is a JSON array of [name, value] sent on every call (``[]`` for the web
hooks that exist). ``previous_secret`` signs beside the current one until
``previous_secret_until`` (rotateWebhookSecret). All three have defaults or are
nullable, so a gateway of the previous release keeps working on the migrated schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("headers", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("previous_secret", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("previous_secret_until")
        batch_op.drop_column("previous_secret")
        batch_op.drop_column("headers")

"""rejected payloads: one row per refused event, the true size of a cut body, no tokens

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-29 16:00:00

Ingest now keeps each refused event of a request as its own row (``event_index``), and
of a body over the limit only a prefix (``size`` says how large it was). Paths were
stored with the clear ingest token in them: it is replaced by ``{token}`` here, as the
code now does before storing. Both new columns are nullable, so that a gateway of the
previous release keeps working on the migrated schema during a rolling upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None

_BATCH = 1000


def _redacted(path: str) -> str:
    """``/ingest/{provider}/{token}[/{event}]`` with the token replaced."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "ingest" and parts[3] != "{token}":
        parts[3] = "{token}"
    return "/".join(parts)


def upgrade() -> None:
    op.add_column("rejected_payloads", sa.Column("size", sa.BigInteger(), nullable=True))
    op.add_column("rejected_payloads", sa.Column("event_index", sa.Integer(), nullable=True))
    rejected = sa.table(
        "rejected_payloads",
        sa.column("id", sa.BigInteger()),
        sa.column("path", sa.Text()),
        sa.column("body", sa.LargeBinary()),
        sa.column("size", sa.BigInteger()),
    )
    connection = op.get_bind()
    connection.execute(sa.update(rejected).values(size=sa.func.length(rejected.c.body)))
    # In batches by id: the table may be large, and a token's position in the path is
    # easier to find in Python than in two SQL dialects.
    after = None
    while True:
        query = sa.select(rejected.c.id, rejected.c.path).order_by(rejected.c.id).limit(_BATCH)
        if after is not None:
            query = query.where(rejected.c.id > after)
        rows = connection.execute(query).all()
        if not rows:
            break
        changes = [
            {"row_id": row.id, "new_path": _redacted(row.path)}
            for row in rows
            if _redacted(row.path) != row.path
        ]
        if changes:
            connection.execute(
                sa.update(rejected)
                .where(rejected.c.id == sa.bindparam("row_id"))
                .values(path=sa.bindparam("new_path")),
                changes,
            )
        after = rows[-1].id


def downgrade() -> None:
    # The tokens are gone for good: a downgrade keeps the redacted paths.
    with op.batch_alter_table("rejected_payloads") as batch:
        batch.drop_column("event_index")
        batch.drop_column("size")

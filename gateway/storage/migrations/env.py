"""Alembic environment: run with the connection `gateway.storage.db.migrate` hands in."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import gateway.storage.models  # noqa: F401  (registers the tables)
from gateway.storage.partitions import declared_by_models

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `gateway migrate`")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    # PostgreSQL's partitions and dedupe table are made by migrations, not declared.
    include_object=declared_by_models if connection.dialect.name == "postgresql" else None,
)
with context.begin_transaction():
    context.run_migrations()

"""The Alembic migrations build exactly the schema the models declare, on both
databases: a column added to a model without a migration (or the reverse) fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import gateway.storage.models  # noqa: F401  (the tables)
from gateway.settings import async_database_url
from gateway.storage.db import make_engine, migrate


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrations_match_the_models(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url = async_database_url(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
    engine = make_engine(url)
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []

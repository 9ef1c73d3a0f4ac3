"""The Alembic migrations build exactly the schema the models declare, on both
databases: a column added to a model without a migration (or the reverse) fails here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlmodel import SQLModel

import gateway.storage.models  # noqa: F401  (the tables)
from gateway.settings import async_database_url
from gateway.storage.db import alembic_config, head_revision, make_engine, migrate, schema_state
from gateway.storage.partitions import declared_by_models
from tests.conftest import _admin, serve, settings_for


def command_upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


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
            # PostgreSQL's partitions and dedupe table are the migrations' own.
            opts = {"include_object": declared_by_models} if backend == "postgres" else {}
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts=opts), SQLModel.metadata
                )
            )
    finally:
        await engine.dispose()
    assert differences == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_readiness_names_a_schema_that_needs_migrating(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, redis_url: str
) -> None:
    """A database that `gateway migrate` has not brought up to date: /readyz answers
    503 and says so, until it is migrated."""
    if backend == "postgres":
        database_url: str | None = request.getfixturevalue("postgres_url").rsplit("/", 1)[0]
        database_url = f"{database_url}/gateway_unmigrated_{uuid.uuid4().hex[:8]}"
        _admin(f'CREATE DATABASE "{database_url.rsplit("/", 1)[1]}"')
    else:
        database_url = f"sqlite:///{tmp_path / 'unmigrated.db'}"
    engine = make_engine(async_database_url(database_url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda sync: command_upgrade(sync, "0004")  # one migration behind
            )
        settings = settings_for(tmp_path, redis_url, database_url)
        async with serve(settings, backend) as gateway, gateway.client() as client:
            behind = await client.get("/readyz")
            await migrate(engine)
            current = await client.get("/readyz")
    finally:
        await engine.dispose()
        if backend == "postgres":
            _admin(f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    assert behind.status_code == 503
    assert behind.json()["schema"] == (
        f"schema at revision 0004, needs {head_revision()}: run gateway migrate"
    )
    assert current.status_code == 200
    assert current.json()["schema"] == "ok"


async def test_a_schema_newer_than_the_code_is_ready(tmp_path: Path) -> None:
    """Migrated ahead of a rolling upgrade: the older gateways stay ready (migrations
    only add what older code does not use)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'newer.db'}")
    try:
        await migrate(engine)
        assert await schema_state(engine) == "ok"
        async with engine.begin() as connection:
            await connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        assert await schema_state(engine) == "ok"
        async with engine.begin() as connection:
            await connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0003'")
        assert await schema_state(engine) == (
            f"schema at revision 0003, needs {head_revision()}: run gateway migrate"
        )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0007_removes_kept_tokens_and_records_sizes(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Rows kept before 0007 held the clear ingest token in their path."""
    if backend == "postgres":
        database_url = request.getfixturevalue("postgres_url").rsplit("/", 1)[0]
        database_url = f"{database_url}/gateway_tokens_{uuid.uuid4().hex[:8]}"
        _admin(f'CREATE DATABASE "{database_url.rsplit("/", 1)[1]}"')
    else:
        database_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    engine = make_engine(async_database_url(database_url))
    paths = {
        1: "/ingest/brevo/src_secret1",
        2: "/ingest/jangomail/src_secret2/open",
        3: "/ingest/smtpeter/{token}",
    }
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command_upgrade(sync, "0005"))
            for row_id, path in paths.items():
                await connection.execute(
                    text(
                        "INSERT INTO rejected_payloads (id, provider, method, path, query, "
                        "content_type, body, status, reason, received_at) VALUES (:id, "
                        "'BREVO', 'POST', :path, '', '', :body, 400, 'r', :at)"
                    ),
                    {"id": row_id, "path": path, "body": b"x" * row_id, "at": datetime.now(UTC)},
                )
        await migrate(engine)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text("SELECT id, path, size FROM rejected_payloads ORDER BY id")
                )
            ).all()
    finally:
        await engine.dispose()
        if backend == "postgres":
            _admin(f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    assert [tuple(row) for row in rows] == [
        (1, "/ingest/brevo/{token}", 1),
        (2, "/ingest/jangomail/{token}/open", 2),
        (3, "/ingest/smtpeter/{token}", 3),
    ]

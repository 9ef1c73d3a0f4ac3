"""Helpers of the operations tests (doctor, outbox health): a database file at a
chosen schema revision and a Redis database no session gateway has workers on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio
from alembic import command
from sqlalchemy import Connection

from gateway.storage.db import alembic_config, make_engine, migrate
from tests.conftest import redis_database


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrated_to(path: Path, revision: str | None) -> str:
    """A new SQLite file at ``revision`` (None: the newest); its DATABASE_URL."""
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        if revision is None:
            await migrate(engine)
        else:
            async with engine.begin() as connection:
                await connection.run_sync(_upgrade_to, revision)
    finally:
        await engine.dispose()
    return f"sqlite:///{path}"


@contextlib.asynccontextmanager
async def quiet_redis(redis_url: str) -> AsyncIterator[str]:
    """The test Redis database the arq worker tests use (flushed before and after):
    the session's gateways run workers, with heartbeats, on theirs."""
    url = redis_database(redis_url, 3)
    client = redis.asyncio.Redis.from_url(url)
    await client.flushdb()
    try:
        yield url
    finally:
        await client.flushdb()
        await client.aclose()

"""Real parts, started once per session: a gateway served by uvicorn on 127.0.0.1 over
SQLite and over PostgreSQL, on the local Redis. Each test gets an account of its own,
which is how tests stay apart without truncating anything.

PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) missing: under CI=true that is a
failure, never a skip (run ../shared/services-up); elsewhere those tests skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import uvicorn

from gateway.app import create_app
from gateway.runtime import Services
from gateway.services.accounts import CreatedAccount
from gateway.settings import Settings
from gateway.storage import db
from tests.receiver import Receiver

POSTGRES_ADMIN_DSN = os.environ.get(
    "TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
# The first of four database numbers of the tests' own (9 to 12 unless told; see
# redis_database): some tests flush them.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(what: str, reason: str) -> None:
    """A missing service fails the run in CI and skips the test elsewhere."""
    message = f"{what} is not reachable ({reason}); run ../shared/services-up"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        need("Redis", str(exc))
    return REDIS_URL


def redis_database(redis_url: str, offset: int) -> str:
    """The URL of the Redis database ``offset`` after ``redis_url``'s. A test run uses
    four: the SQLite gateway's, the PostgreSQL gateway's, and two of worker tests."""
    base, number = redis_url.rsplit("/", 1)
    return f"{base}/{int(number) + offset}"


def _admin(statement: str) -> None:
    """Run one statement on the admin database, on a thread of its own: fixtures that
    need it are set up while the session's event loop is running."""

    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test session, dropped at the end."""
    name = f"gateway_test_{uuid.uuid4().hex[:10]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        need("PostgreSQL", str(exc))
    yield f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Gateway:
    """A running gateway: its URL and the services inside it."""

    backend: str
    base_url: str
    services: Services
    settings: Settings

    def client(self, api_key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30, **kwargs)

    async def new_account(self) -> CreatedAccount:
        return await self.services.accounts.create_account(f"test-{uuid.uuid4().hex[:12]}")


@contextlib.asynccontextmanager
async def serve(settings: Settings, backend: str, **app_options: Any) -> AsyncIterator[Gateway]:
    """Run the gateway app under uvicorn on a free 127.0.0.1 port."""
    app = create_app(settings, **app_options)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield Gateway(backend, f"http://127.0.0.1:{port}", app.state.services, settings)
    finally:
        server.should_exit = True
        await task


def settings_for(tmp: Path, redis_url: str, database_url: str | None, **overrides: Any) -> Settings:
    """Settings for a test gateway: web hooks may call 127.0.0.1 (the receivers), and
    retries and sweeps come quickly so that tests see them."""
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": database_url,
        "redis_url": redis_url,
        "source_cache_seconds": 0,
        "allow_private_webhooks": True,
        "retry_schedule": "0.2,0.4",
        "sweep_interval_seconds": 0.5,
        "delivery_timeout_seconds": 3,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[Gateway]:
    """The gateway over each database in turn."""
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(backend)
    database_url = None
    if backend == "postgres":
        database_url = request.getfixturevalue("postgres_url")
        from gateway.settings import async_database_url
        from gateway.storage.db import make_engine, migrate

        engine = make_engine(async_database_url(database_url))
        await migrate(engine)
        await engine.dispose()
    # A Redis database per backend: their workers must not take each other's jobs.
    # TEST_REDIS_URL's database for SQLite, the next one for PostgreSQL, so that test
    # runs side by side (say, in two work trees) can be given databases of their own.
    backend_redis = redis_database(redis_url, 0 if backend == "sqlite" else 1)
    async with serve(
        settings_for(tmp, backend_redis, database_url), backend, worker=True
    ) as running:
        yield running


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    """A web hook receiver served by uvicorn on 127.0.0.1."""
    receiving = Receiver()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(receiving.app, host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    receiving.base_url = f"http://127.0.0.1:{port}"
    yield receiving
    server.should_exit = True
    await task


@pytest.fixture
async def account(gateway: Gateway) -> CreatedAccount:
    return await gateway.new_account()


@pytest.fixture
async def api(gateway: Gateway, account: CreatedAccount) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client(account.api_key) as client:
        yield client


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every hand-off to a SqliteThread (the ingest writer's SQLite thread), by the
    function sent (a spy: the work still runs)."""
    seen: list[str] = []
    original = db.SqliteThread.run

    async def counted(self: db.SqliteThread, work: Any) -> Any:
        seen.append(getattr(getattr(work, "func", work), "__name__", repr(work)))
        return await original(self, work)

    monkeypatch.setattr(db.SqliteThread, "run", counted)
    return seen


@pytest.fixture
def sqlite_statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every statement run on a SqliteThread's connection: (the thread it ran on, the
    statement's first three words), through sqlite3's trace callback (a spy; an
    executemany is one entry a row)."""
    seen: list[tuple[str, str]] = []
    original = db.open_sqlite

    def traced(database: str) -> sqlite3.Connection:
        connection = original(database)
        connection.set_trace_callback(
            lambda sql: seen.append((threading.current_thread().name, " ".join(sql.split()[:3])))
        )
        return connection

    monkeypatch.setattr(db, "open_sqlite", traced)
    return seen

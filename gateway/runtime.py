"""Wiring: the objects one gateway process shares, opened once and closed once.

One engine, one Redis connection pool and the services built on them; the Starlette
lifespan, the worker and the CLI all start here, so there is one way to start up.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.embedded_redis import EmbeddedRedis
from gateway.ids import NODE_COUNT, IdGenerator
from gateway.metrics import Metrics
from gateway.services.accounts import AccountService
from gateway.services.events import EventQueries
from gateway.services.ingest import IngestWriter, RejectedPayloads
from gateway.settings import Settings
from gateway.storage.db import make_engine, migrate

NODE_SEQUENCE_KEY = "gateway:node-sequence"


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    redis_url: str
    ids: IdGenerator
    accounts: AccountService
    events: EventQueries
    writer: IngestWriter
    rejections: RejectedPayloads
    metrics: Metrics

    async def ready(self) -> dict[str, str]:
        """The state of each dependency: "ok" or what went wrong."""
        state: dict[str, str] = {}
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            state["database"] = "ok"
        except Exception as exc:
            state["database"] = f"unavailable: {type(exc).__name__}"
        try:
            await self.redis.ping()
            state["redis"] = "ok"
        except Exception as exc:
            state["redis"] = f"unavailable: {type(exc).__name__}"
        return state


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Start everything a gateway process needs; stop it on exit."""
    embedded: EmbeddedRedis | None = None
    if settings.embedded_database or settings.embedded_redis:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        redis_url = embedded.url
    redis: Redis = Redis.from_url(redis_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        # A node number per process keeps ids unique across replicas and workers.
        node = int(await redis.incr(NODE_SEQUENCE_KEY)) % NODE_COUNT
        ids = IdGenerator(node)
        if settings.embedded_database:
            await migrate(engine)
        writer = IngestWriter(engine, ids, batch_max=settings.ingest_batch_max)
        services = Services(
            settings=settings,
            engine=engine,
            redis=redis,
            redis_url=redis_url,
            ids=ids,
            accounts=AccountService(engine, ids, cache_seconds=settings.source_cache_seconds),
            events=EventQueries(engine, max_page_size=settings.max_page_size),
            writer=writer,
            rejections=RejectedPayloads(engine, ids),
            metrics=Metrics(),
        )
        await writer.start()
        try:
            yield services
        finally:
            await writer.stop()
    finally:
        await redis.aclose()
        await engine.dispose()
        if embedded is not None:
            embedded.close()

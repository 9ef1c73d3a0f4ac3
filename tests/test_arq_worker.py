"""The gateway's arq worker claims jobs a poll at a time in one script and clears
finished jobs in shared transactions: arq's rules must still hold on a real Redis
(every job once, never one another worker holds, never one before it is due, retries
run again)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import Retry, create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.worker import func

from gateway.worker import GatewayWorker
from tests.conftest import redis_database

QUEUE = "test:gateway-worker"


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    url = redis_database(redis_url, 3)
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=QUEUE)
    await pool.flushdb()
    yield pool
    await pool.flushdb()
    await pool.aclose()


@contextlib.asynccontextmanager
async def running(pool: ArqRedis, ran: Counter[str], **options: Any) -> AsyncIterator[None]:
    async def job(ctx: dict[str, Any], name: str) -> None:
        ran[name] += 1
        if name.startswith("retry") and ctx["job_try"] < 3:
            raise Retry(defer=0.01)

    settings: dict[str, Any] = {"max_jobs": 5, "poll_delay": 0.01, **options}
    worker = GatewayWorker(
        functions=[func(job, name="job", max_tries=5)],
        redis_pool=pool,
        queue_name=QUEUE,
        keep_result=0,
        handle_signals=False,
        **settings,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


async def until(predicate: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_every_job_runs_once_and_leaves_nothing_behind(pool: ArqRedis) -> None:
    ran: Counter[str] = Counter()
    names = [f"j{i}" for i in range(60)]
    for name in names:
        await pool.enqueue_job("job", name, _job_id=name)
    async with running(pool, ran):
        await until(lambda: sum(ran.values()) >= len(names))
        await asyncio.sleep(0.2)
        assert await pool.zcard(QUEUE) == 0
    assert ran == Counter(names)
    assert await pool.keys(job_key_prefix + "*") == []
    assert await pool.keys(in_progress_key_prefix + "*") == []


async def test_one_poll_runs_more_jobs_than_slots_as_slots_free_up(pool: ArqRedis) -> None:
    # As arq's own worker: a poll goes through all the ids it read, waiting for free
    # slots, instead of leaving what did not fit at once for the next poll.
    ran: Counter[str] = Counter()
    names = [f"p{i}" for i in range(12)]
    for name in names:
        await pool.enqueue_job("job", name, _job_id=name)
    # One poll in the test's time: the next would come 60 s later.
    async with running(pool, ran, poll_delay=60, queue_read_limit=20):
        await until(lambda: sum(ran.values()) >= len(names), limit=5.0)
    assert ran == Counter(names)


async def test_a_job_another_worker_holds_or_not_yet_due_waits(pool: ArqRedis) -> None:
    ran: Counter[str] = Counter()
    await pool.enqueue_job("job", "held", _job_id="held")
    await pool.enqueue_job("job", "later", _job_id="later", _defer_by=1.0)
    await pool.enqueue_job("job", "free", _job_id="free")
    await pool.psetex(in_progress_key_prefix + "held", 60_000, b"1")
    async with running(pool, ran):
        await until(lambda: ran["free"] == 1)
        await asyncio.sleep(0.3)
        assert ran["held"] == 0 and ran["later"] == 0
        await pool.delete(in_progress_key_prefix + "held")  # the other worker let go
        await until(lambda: ran["held"] == 1 and ran["later"] == 1)
    assert ran == Counter({"free": 1, "held": 1, "later": 1})


async def test_a_retried_job_runs_again_until_it_succeeds(pool: ArqRedis) -> None:
    ran: Counter[str] = Counter()
    await pool.enqueue_job("job", "retry-me", _job_id="retry-me")
    async with running(pool, ran):
        await until(lambda: ran["retry-me"] == 3)
        await asyncio.sleep(0.2)
        assert await pool.zcard(QUEUE) == 0
    assert ran["retry-me"] == 3

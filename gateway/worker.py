"""The arq worker that delivers web hooks: `gateway worker`, or inside `gateway serve`.

Jobs: ``deliver(delivery_id)`` (job id = delivery id) and ``backfill(webhook_id)``. A
failed attempt that is owed a retry raises arq's ``Retry`` with the schedule's delay, so
the same job runs again; everything else ends the job with the delivery in a final or
held state. A sweeper in every worker re-enqueues due deliveries whose job was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from arq import Retry
from arq.connections import RedisSettings
from arq.worker import Worker, func

from gateway.runtime import Services, open_services
from gateway.services.webhooks import BACKFILL_JOB, DELIVER_JOB
from gateway.settings import Settings

log = logging.getLogger(__name__)


async def deliver(ctx: dict[str, Any], delivery_id: int) -> str:
    services: Services = ctx["services"]
    outcome = await services.sender.attempt(delivery_id)
    if outcome.retry_in is not None:
        raise Retry(defer=outcome.retry_in)
    return outcome.status.value if outcome.status else "nothing to do"


async def backfill(ctx: dict[str, Any], webhook_id: int) -> int:
    services: Services = ctx["services"]
    return await services.webhooks.backfill(webhook_id)


async def _sweep_forever(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.sweep_interval_seconds)
        try:
            swept = await services.sender.sweep(services.queue.enqueue)
            if swept:
                log.info("sweeper re-enqueued %d due deliveries", swept)
        except Exception:
            log.exception("sweep failed; trying again next interval")


def make_worker(services: Services, *, handle_signals: bool = False) -> Worker:
    settings = services.settings
    return Worker(
        functions=[
            func(
                deliver, name=DELIVER_JOB, max_tries=10_000
            ),  # retries are counted in the database
            func(backfill, name=BACKFILL_JOB),
        ],
        redis_settings=RedisSettings.from_dsn(services.redis_url),
        ctx={"services": services},
        handle_signals=handle_signals,
        max_jobs=settings.delivery_concurrency,
        # Running jobs stay at the head of arq's queue until they finish; reading only
        # max_jobs ids a poll (the default) finds mostly those, and the worker idles
        # at a fraction of its concurrency while a backlog waits.
        queue_read_limit=settings.delivery_concurrency * 4,
        # A killed worker's job is run again once arq's in-progress key (job_timeout + 10 s)
        # expires; the delivery's lease (timeout + 5 s) has lapsed by then.
        job_timeout=settings.delivery_timeout_seconds + 5,
        # Nothing reads job results, and a kept result would refuse the same job id
        # (a redelivery) for an hour.
        keep_result=0,
        # arq's default 0.5 s poll caps a worker at ~200 jobs/s, and a new job waits
        # half a poll on average (25 ms at 0.05 s). Each poll re-checks the running jobs
        # at the head of the queue (three round trips each), so polling much faster
        # costs more than it saves.
        poll_delay=0.02,
        max_tries=10_000,
        log_results=False,
    )


@contextlib.asynccontextmanager
async def running_worker(services: Services) -> Any:
    """A worker (and its sweeper) inside this process, for as long as the block runs."""
    worker = make_worker(services)
    task = asyncio.create_task(worker.async_run(), name="arq-worker")
    sweeper = asyncio.create_task(_sweep_forever(services), name="delivery-sweeper")
    try:
        yield worker
    finally:
        sweeper.cancel()
        task.cancel()
        for stopped in (sweeper, task):
            with contextlib.suppress(asyncio.CancelledError):
                await stopped
        await worker.close()


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_services(settings) as services, running_worker(services):
        log.info("worker running (concurrency %d)", settings.delivery_concurrency)
        await stop.wait()


def run_worker(settings: Settings) -> None:
    """`gateway worker`: deliver until SIGINT/SIGTERM."""
    asyncio.run(_run(settings))

"""The arq worker that delivers web hooks: `gateway worker`, or inside `gateway serve`.

arq's own ``Worker``, with its documented settings. Jobs: ``deliver_webhook(webhook_id)``
sends what the database says is due for that web hook (``services.dispatch``), and
``backfill(webhook_id)``. A sweeper in every worker queues jobs for due deliveries whose
job was lost. arq's cron runs ``purge_expired`` (services.retention) on one worker every
GATEWAY_RETENTION_INTERVAL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from arq import Retry
from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Worker, func

from gateway.heartbeat import worker_heartbeat
from gateway.runtime import Services, open_services
from gateway.services.dispatch import DRAIN_SECONDS, Dispatcher
from gateway.services.outbox import BACKFILL_JOB, DELIVER_JOB
from gateway.services.retention import cron_schedule
from gateway.settings import Settings

log = logging.getLogger(__name__)

# A job that failed (the database unreachable, say) runs again after 2, 4, 8 … s;
# after the last try the sweeper takes over.
JOB_TRIES = 5


def _retry_later(ctx: dict[str, Any]) -> Retry:
    return Retry(defer=min(60, 2 ** int(ctx.get("job_try", 1))))


async def deliver_webhook(ctx: dict[str, Any], webhook_id: int) -> int:
    dispatcher: Dispatcher = ctx["dispatcher"]
    try:
        return await dispatcher.deliver(webhook_id)
    except Exception as exc:
        log.warning("deliveries of web hook %s: %r; trying again", webhook_id, exc)
        raise _retry_later(ctx) from exc


async def backfill(ctx: dict[str, Any], webhook_id: int) -> int:
    services: Services = ctx["services"]
    try:
        return await services.outbox.backfill(webhook_id)
    except Exception as exc:
        log.warning("backfill of web hook %s: %r; trying again", webhook_id, exc)
        raise _retry_later(ctx) from exc


async def purge_expired(ctx: dict[str, Any]) -> int:
    """arq cron: purge what is older than retention (services.retention). A failure
    waits for the next run: what was purged stays purged, the rest is there again."""
    services: Services = ctx["services"]
    return (await services.retention.purge()).total


async def _sweep_forever(services: Services, dispatcher: Dispatcher) -> None:
    while True:
        await asyncio.sleep(services.settings.sweep_interval_seconds)
        try:
            swept = await dispatcher.sweep()
            if swept:
                log.info("sweeper queued jobs for %d web hooks", swept)
        except Exception:
            log.exception("sweep failed; trying again next interval")


def make_dispatcher(services: Services) -> Dispatcher:
    settings = services.settings
    return Dispatcher(
        services.engine,
        services.ids,
        services.sender,
        services.queue,
        concurrency=settings.delivery_concurrency,
        sweep_interval_seconds=settings.sweep_interval_seconds,
    )


def make_worker(
    services: Services, dispatcher: Dispatcher, *, handle_signals: bool = False
) -> Worker:
    settings = services.settings
    hour, minute, second = cron_schedule(settings.retention_interval_seconds)
    return Worker(
        functions=[
            func(deliver_webhook, name=DELIVER_JOB, max_tries=JOB_TRIES),
            func(backfill, name=BACKFILL_JOB, max_tries=JOB_TRIES),
        ],
        # Each run has a job id of its own time (arq's unique cron jobs): with several
        # workers, one of them runs it. A run cut short leaves the rest to the next.
        cron_jobs=[
            cron(
                purge_expired,
                name="purge-expired",
                timeout=max(settings.retention_interval_seconds, 60),
                hour=hour,
                minute=minute,
                second=second,
            )
        ],
        redis_settings=RedisSettings.from_dsn(services.redis_url),
        ctx={"services": services, "dispatcher": dispatcher},
        handle_signals=handle_signals,
        # A job is a web hook's due deliveries; the calls in flight are capped apart
        # (GATEWAY_DELIVERY_CONCURRENCY, shared among the web hooks with work).
        max_jobs=settings.delivery_concurrency,
        # A job hands on to a new one after DRAIN_SECONDS, then waits for its calls.
        job_timeout=DRAIN_SECONDS + 2 * settings.delivery_timeout_seconds + 10,
        # Nothing reads job results, and a kept result would refuse the same job id.
        keep_result=0,
        # arq's default 0.5 s poll would add a quarter second to a new delivery.
        poll_delay=0.05,
        log_results=False,
    )


@contextlib.asynccontextmanager
async def running_worker(services: Services) -> AsyncIterator[Worker]:
    """A worker (and its sweeper) inside this process, for as long as the block runs."""
    dispatcher = make_dispatcher(services)
    worker = make_worker(services, dispatcher)
    task = asyncio.create_task(worker.async_run(), name="arq-worker")
    sweeper = asyncio.create_task(_sweep_forever(services, dispatcher), name="delivery-sweeper")
    try:
        async with worker_heartbeat(services.redis, worker=task):
            yield worker
    finally:
        sweeper.cancel()
        task.cancel()
        for stopped in (sweeper, task):
            with contextlib.suppress(asyncio.CancelledError):
                await stopped
        await worker.close()
        await dispatcher.close()


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_services(settings) as services, running_worker(services):
        services.metrics.serve(settings.worker_metrics_port, settings.worker_metrics_host)
        log.info("worker running (concurrency %d)", settings.delivery_concurrency)
        await stop.wait()


def run_worker(settings: Settings) -> None:
    """`gateway worker`: deliver until SIGINT/SIGTERM."""
    asyncio.run(_run(settings))

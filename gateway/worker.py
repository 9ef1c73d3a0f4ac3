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
from dataclasses import dataclass
from typing import Any

from arq import Retry
from arq.connections import RedisSettings
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms
from arq.worker import Worker, func

from gateway.batching import Batcher
from gateway.heartbeat import worker_heartbeat
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


# arq claims a job with WATCH, EXISTS, ZSCORE and MULTI/PSETEX/EXEC: four round trips,
# one job after another, in the loop that polls. This does the same check and set for as
# many ids as there are free slots, in one atomic call. KEYS: the queue; ARGV: now (ms),
# the in-progress timeout (ms), how many to claim at most, then the ids. Returns how
# many ids it looked at, then (id, score) of each job claimed.
_CLAIM_JOBS = f"""
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local claimed = {{0}}
for i = 4, #ARGV do
  if #claimed > 2 * limit then break end
  claimed[1] = i - 3
  local id = ARGV[i]
  local key = '{in_progress_key_prefix}' .. id
  if redis.call('EXISTS', key) == 0 then
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score and tonumber(score) > 0 and tonumber(score) <= now then
      redis.call('PSETEX', key, ARGV[2], '1')
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = score
    end
  end
end
return claimed
"""


@dataclass(frozen=True, slots=True)
class _Finish:
    job_id: str
    finish: bool
    result_data: bytes | None
    result_timeout_ms: int | None
    incr_score: int | None
    keep_in_progress_ms: int | None


class GatewayWorker(Worker):
    """arq's worker with its per-job Redis round trips batched: jobs are claimed a poll
    at a time in one atomic script, and finished jobs are cleared in shared MULTI/EXEC
    transactions. Same keys, same semantics (arq's own tests of two workers hold); at
    50 concurrent deliveries the four round trips a claim were a fifth of the worker's
    time here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claim_script: Any = None
        self._finishes: Batcher[_Finish, None] = Batcher(self._finish_batch, name="arq-finish")

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # Jobs running here stay at the head of the queue until they finish.
        candidates = [job_id for raw in job_ids if (job_id := raw.decode()) not in self.tasks]
        if self._claim_script is None:
            self._claim_script = self.pool.register_script(_CLAIM_JOBS)
        # As arq's own start_jobs, go through the whole poll's ids, waiting for free
        # slots as jobs finish: claiming only what was free when the poll began capped
        # a worker at max_jobs jobs a poll delay (~2,300 no-op jobs/s at 50 and 0.02 s,
        # below arq's own 3,000). arq's semaphore has one permit more than max_jobs:
        # held here, every further permit is a free slot.
        async with self.sem:
            while candidates:
                async with self.sem:  # wait for a free slot (taken for good below)
                    pass
                answer = await self._claim_script(
                    keys=[self.queue_name],
                    args=[
                        timestamp_ms(),
                        int(self.in_progress_timeout_s * 1000),
                        self.max_jobs - self.job_counter,
                        *candidates,
                    ],
                )
                candidates = candidates[int(answer[0]) :]
                for index in range(1, len(answer), 2):
                    job_id = answer[index].decode()
                    await self.sem.acquire()
                    self.job_counter += 1
                    task = self.loop.create_task(
                        self.run_job(job_id, int(float(answer[index + 1])))
                    )
                    task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
                    self.tasks[job_id] = task

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        await self._finishes.submit(
            _Finish(
                job_id=job_id,
                finish=finish,
                result_data=result_data,
                result_timeout_ms=None
                if keep_result_forever or result_timeout_s is None
                else int(result_timeout_s * 1000),
                incr_score=incr_score,
                keep_in_progress_ms=None
                if keep_in_progress is None
                else int(keep_in_progress * 1000),
            )
        )

    async def _finish_batch(self, batch: list[_Finish]) -> list[None]:
        """arq's finish_job for many jobs in one transaction."""
        async with self.pool.pipeline(transaction=True) as tr:
            for item in batch:
                in_progress_key = in_progress_key_prefix + item.job_id
                delete_keys = []
                if item.keep_in_progress_ms is None:
                    delete_keys.append(in_progress_key)
                else:
                    tr.pexpire(in_progress_key, item.keep_in_progress_ms)
                if item.finish:
                    if item.result_data:
                        tr.set(
                            result_key_prefix + item.job_id,
                            item.result_data,
                            px=item.result_timeout_ms,
                        )
                    delete_keys += [retry_key_prefix + item.job_id, job_key_prefix + item.job_id]
                    tr.zrem(abort_jobs_ss, item.job_id)
                    tr.zrem(self.queue_name, item.job_id)
                elif item.incr_score:
                    tr.zincrby(self.queue_name, item.incr_score, item.job_id)
                if delete_keys:
                    tr.delete(*delete_keys)
            await tr.execute()
        return [None] * len(batch)

    async def close(self) -> None:
        await super().close()  # waits for running jobs, whose finishes need the batcher
        await self._finishes.close()


def make_worker(services: Services, *, handle_signals: bool = False) -> Worker:
    settings = services.settings
    return GatewayWorker(
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
        async with worker_heartbeat(services.redis, worker=task):
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
        services.metrics.serve(settings.worker_metrics_port, settings.worker_metrics_host)
        log.info("worker running (concurrency %d)", settings.delivery_concurrency)
        await stop.wait()


def run_worker(settings: Settings) -> None:
    """`gateway worker`: deliver until SIGINT/SIGTERM."""
    asyncio.run(_run(settings))

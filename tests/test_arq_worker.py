"""Delivery jobs on arq's public API: jobs are arq's own (its serializer, its expiry),
and the database, not the queue, decides what is sent: a duplicated, stale or
needless job sends nothing twice, and a changed delivery never waits for an old job."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job, JobStatus
from starlette.responses import Response

from gateway.services.accounts import CreatedAccount
from gateway.services.outbox import DELIVER_JOB
from tests.conftest import Gateway
from tests.receiver import Receiver
from tests.support import brevo_event, gql, ingest_brevo
from tests.test_webhooks import create_webhook, settled

REDELIVER = "mutation($id: ID!) { redeliver(deliveryId: $id) { id status } }"


async def finished(gateway: Gateway, *job_ids: str, timeout: float = 15) -> None:
    """Wait until arq has run (and let go of) every one of these jobs."""
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        job = Job(job_id, gateway.services.redis)
        while await job.status() is not JobStatus.not_found:
            assert time.monotonic() < deadline, f"job {job_id} still {await job.status()}"
            await asyncio.sleep(0.05)


async def test_a_job_is_arqs_own_record_with_its_web_hook_as_argument(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    # A web hook with nothing due: its job runs and sends nothing.
    webhook, _ = await create_webhook(api, url="http://127.0.0.1:9/x", events=["DELIVERED"])
    later = datetime.now(UTC) + timedelta(hours=1)
    await gateway.services.queue.deliver_at(int(webhook["id"]), later)
    step_ms = -(-int(later.timestamp() * 1000) // 100) * 100
    job = Job(f"deliver:{webhook['id']}:at:{step_ms}", gateway.services.redis)
    assert await job.status() is JobStatus.deferred
    info = await job.info()
    assert info is not None
    assert (info.function, info.args) == (DELIVER_JOB, (int(webhook["id"]),))
    assert info.score == step_ms


async def test_a_retry_due_at_the_same_time_is_one_deferred_job(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    webhook, _ = await create_webhook(api, url="http://127.0.0.1:9/x", events=["DELIVERED"])
    when = datetime.now(UTC) + timedelta(hours=2)
    for _ in range(3):
        await gateway.services.queue.deliver_at(int(webhook["id"]), when)
    await gateway.services.queue.deliver_at(int(webhook["id"]), when + timedelta(seconds=1))
    pool = await create_pool(RedisSettings.from_dsn(gateway.services.redis_url))
    try:
        jobs = [job for job in await pool.queued_jobs() if job.args == (int(webhook["id"]),)]
    finally:
        await pool.aclose()
    assert len(jobs) == 2


async def test_duplicated_and_stale_jobs_send_nothing_twice(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event())
    [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    tokens = [f"again-{n}" for n in range(5)]
    await gateway.services.queue.deliver_now({int(webhook["id"]): token for token in tokens[:1]})
    for token in tokens[1:]:
        await gateway.services.queue.deliver_now({int(webhook["id"]): token})
    await finished(gateway, *(f"deliver:{webhook['id']}:{token}" for token in tokens))
    assert len(endpoint.calls) == 1
    [again] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert len(again["attempts"]) == 1 and again["id"] == delivery["id"]


async def test_redeliver_of_a_retrying_delivery_sends_at_once(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    answers = iter(
        [Response("later", status_code=503, headers={"retry-after": "3600"}), Response("ok")]
    )
    endpoint = receiver.endpoint(lambda _r: next(answers))
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event())
    [retrying] = await settled(api, webhook["id"], 1, {"RETRYING"})
    started = time.monotonic()
    again = await gql(api, REDELIVER, id=retrying["id"])
    assert again["redeliver"]["status"] == "PENDING"
    [done] = await settled(api, webhook["id"], 1, {"SUCCEEDED"}, timeout=10)
    assert time.monotonic() - started < 5
    assert [a["statusCode"] for a in done["attempts"]] == [503, 200]

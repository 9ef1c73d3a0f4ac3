"""Delivery jobs on arq's public API: jobs are arq's own (its serializer, its expiry),
and the database, not the queue, decides what is sent: a duplicated, stale or
needless job sends nothing twice, and a changed delivery never waits for an old job."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job, JobDef, JobStatus
from starlette.responses import Response

from gateway.services.accounts import CreatedAccount
from gateway.services.dispatch import EndpointLimit
from gateway.services.outbox import DELIVER_JOB
from gateway.storage import delivery_runs
from gateway.storage import webhooks as webhook_store
from gateway.storage.db import begin_write
from tests.conftest import Gateway
from tests.receiver import Received, Receiver
from tests.support import brevo_event, gql, ingest_brevo
from tests.test_webhooks import create_webhook, settled

REDELIVER = "mutation($id: ID!) { redeliver(deliveryId: $id) { id status } }"
STATE_AND_TAGS = "query($id: ID!) { webhook(id: $id) { enabled tags } }"


async def finished(gateway: Gateway, *job_ids: str, timeout: float = 15) -> None:
    """Wait until arq has run (and let go of) every one of these jobs."""
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        job = Job(job_id, gateway.services.redis)
        while await job.status() is not JobStatus.not_found:
            assert time.monotonic() < deadline, f"job {job_id} still {await job.status()}"
            await asyncio.sleep(0.05)


async def queued_for(gateway: Gateway, webhook_id: int) -> list[JobDef]:
    """The web hook's jobs on arq's queue, as arq reads them."""
    pool = await create_pool(RedisSettings.from_dsn(gateway.services.redis_url))
    try:
        return [job for job in await pool.queued_jobs() if job.args == (webhook_id,)]
    finally:
        await pool.aclose()


async def test_a_job_is_arqs_own_record_with_its_web_hook_as_argument(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    # A web hook with nothing due: its job would run and send nothing.
    webhook, _ = await create_webhook(api, url="http://127.0.0.1:9/x", events=["DELIVERED"])
    later = datetime.now(UTC) + timedelta(hours=1)
    await gateway.services.queue.deliver_at(int(webhook["id"]), later)
    [job] = await queued_for(gateway, int(webhook["id"]))
    assert job.function == DELIVER_JOB
    assert job.score is not None
    assert 0 <= job.score - later.timestamp() * 1000 < 100  # rounded up to a step
    assert job.job_id is not None
    assert await Job(job.job_id, gateway.services.redis).status() is JobStatus.deferred


async def test_a_retry_due_at_the_same_time_is_one_deferred_job(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    webhook, _ = await create_webhook(api, url="http://127.0.0.1:9/x", events=["DELIVERED"])
    when = datetime.now(UTC) + timedelta(hours=2)
    for _ in range(3):
        await gateway.services.queue.deliver_at(int(webhook["id"]), when)
    await gateway.services.queue.deliver_at(int(webhook["id"]), when + timedelta(seconds=1))
    jobs = await queued_for(gateway, int(webhook["id"]))
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


def message_event(event: str, at: int, message: str, **fields: Any) -> dict[str, Any]:
    return brevo_event(
        event=event, ts_event=at, ts_epoch=at * 1000, **{"message-id": message}, **fields
    )


async def test_one_messages_deliveries_arrive_in_the_order_their_events_occurred(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    await create_webhook(api, url=endpoint.url, events=["DELIVERED", "OPENED", "CLICKED"])
    at = int(time.time()) - 600
    message = f"<{uuid.uuid4().hex}@example.com>"
    # Posted newest first, as one batch: the outbox writes them in this order.
    await ingest_brevo(
        gateway,
        account,
        message_event("click", at + 30, message, link="https://example.com/"),
        message_event("opened", at + 20, message),
        message_event("delivered", at + 10, message),
    )
    calls = await endpoint.wait_for(3)
    assert [json.loads(call.body)["type"] for call in calls] == ["DELIVERED", "OPENED", "CLICKED"]


async def test_a_message_waiting_on_its_first_call_does_not_hold_back_other_messages(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    slow_message = f"<{uuid.uuid4().hex}@example.com>"
    other_message = f"<{uuid.uuid4().hex}@example.com>"
    release = asyncio.Event()

    async def answer(received: Received) -> Response:
        if json.loads(received.body)["messageId"] == slow_message.strip("<>"):
            await release.wait()
        return Response("ok")

    endpoint = receiver.endpoint(answer)
    await create_webhook(api, url=endpoint.url, events=["DELIVERED", "OPENED"])
    at = int(time.time()) - 600
    await ingest_brevo(
        gateway,
        account,
        message_event("delivered", at, slow_message),
        message_event("opened", at + 10, slow_message),
        message_event("delivered", at, other_message),
        message_event("opened", at + 10, other_message),
    )
    calls = await endpoint.wait_for(3)
    # The other message's two calls came while the slow one's first was unanswered.
    assert sorted(json.loads(c.body)["messageId"] for c in calls) == sorted(
        [slow_message.strip("<>"), other_message.strip("<>"), other_message.strip("<>")]
    )
    release.set()
    calls = await endpoint.wait_for(4)
    slow = [
        json.loads(c.body)["type"] for c in calls if slow_message.strip("<>") in c.body.decode()
    ]
    assert slow == ["DELIVERED", "OPENED"]


async def test_a_hanging_endpoint_holds_at_most_half_the_worker(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def hang(_r: Received) -> Response:
        await release.wait()
        return Response("ok")

    slow = receiver.endpoint(hang)
    fast = receiver.endpoint()
    await create_webhook(api, url=slow.url, events=["DELIVERED"])
    await create_webhook(api, url=fast.url, events=["OPENED"])
    try:
        await ingest_brevo(
            gateway, account, *(brevo_event(email=f"s{i}@example.com") for i in range(60))
        )
        half = gateway.settings.delivery_concurrency // 2
        await slow.wait_for(half)
        await ingest_brevo(
            gateway,
            account,
            *(brevo_event(event="opened", email=f"f{i}@example.com") for i in range(20)),
        )
        await fast.wait_for(20)
        assert len(slow.calls) == half  # the rest wait for the slow endpoint's answers
    finally:
        release.set()


async def test_an_update_of_other_fields_never_undoes_a_workers_disable(
    gateway: Gateway, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    webhook, _ = await create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
    webhook_id = int(webhook["id"])

    async def disable() -> None:
        async with begin_write(gateway.services.engine) as connection:
            await connection.run_sync(
                delivery_runs.count_calls,
                outcomes={webhook_id: [False]},
                disable_after=1,
                now=datetime.now(UTC),
            )

    for round_ in range(8):
        await asyncio.gather(
            disable(),
            gql(
                api,
                "mutation($id: ID!, $t: [String!]) { updateWebhook(id: $id, input: {tags: $t}) { id } }",
                id=webhook["id"],
                t=[f"t{round_}"],
            ),
        )
        state = (await gql(api, STATE_AND_TAGS, id=webhook["id"]))["webhook"]
        assert state["enabled"] is False, round_
        assert state["tags"] == [f"t{round_}"]
        await gql(api, "mutation($id: ID!) { enableWebhook(id: $id) { id } }", id=webhook["id"])


async def test_a_new_url_racing_a_workers_disable_strands_nothing(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    failing = receiver.endpoint(lambda _r: Response("no", status_code=500))
    healthy = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=failing.url, events=["DELIVERED"])
    webhook_id = int(webhook["id"])
    # A few failed calls short of the rule: the worker disables it while we update.
    async with begin_write(gateway.services.engine) as connection:
        await connection.run_sync(
            delivery_runs.count_calls,
            outcomes={webhook_id: [False] * (gateway.settings.disable_after - 3)},
            disable_after=gateway.settings.disable_after,
            now=datetime.now(UTC),
        )
    await ingest_brevo(
        gateway, account, *(brevo_event(email=f"race{i}@example.com") for i in range(30))
    )
    await failing.wait_for(1)
    await gql(
        api,
        "mutation($id: ID!, $u: String!) { updateWebhook(id: $id, input: {url: $u}) { id } }",
        id=webhook["id"],
        u=healthy.url,
    )
    # Defined end: the update enabled it (whichever came first) and nothing stays held.
    found = await settled(api, webhook["id"], 30, {"SUCCEEDED", "FAILED"}, timeout=30)
    assert (await gql(api, STATE_AND_TAGS, id=webhook["id"]))["webhook"]["enabled"] is True
    assert all(
        d["status"] == "SUCCEEDED" or [a["statusCode"] for a in d["attempts"]] == [500] * 3
        for d in found
    )
    assert len({json.loads(c.body)["email"] for c in healthy.calls}) == sum(
        d["status"] == "SUCCEEDED" for d in found
    )


def test_an_endpoint_limit_halves_to_one_on_failures_and_grows_back_on_success() -> None:
    limit = EndpointLimit(25)
    assert limit.has_room(share=50)
    for _ in range(10):
        limit.failed()
    assert limit.limit == 1
    limit.in_flight = 1
    assert not limit.has_room(share=50)
    for _ in range(30):
        limit.succeeded()
    assert limit.limit == 25
    limit.in_flight = 10
    assert not limit.has_room(share=10)  # its share of the worker caps it too


async def test_a_held_delivery_of_an_enabled_webhook_is_sent_by_the_sweeper(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    webhook_id = int(webhook["id"])
    async with begin_write(gateway.services.engine) as connection:
        await connection.run_sync(
            delivery_runs.count_calls,
            outcomes={webhook_id: [False]},
            disable_after=1,
            now=datetime.now(UTC),
        )
    await ingest_brevo(gateway, account, brevo_event())
    await settled(api, webhook["id"], 1, {"HELD"})
    # Enabled without releasing what it held: what a hold written by a worker that
    # saw the web hook disabled a moment before it was enabled would leave.
    async with begin_write(gateway.services.engine) as connection:
        await webhook_store.update_webhook(
            connection, webhook_id=webhook_id, values={"enabled": True}
        )
    await endpoint.wait_for(1)
    await settled(api, webhook["id"], 1, {"SUCCEEDED"})


async def test_a_new_url_sends_what_waits_for_a_retry_at_once(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    busy = receiver.endpoint(
        lambda _r: Response("later", status_code=503, headers={"retry-after": "3600"})
    )
    healthy = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=busy.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event())
    await settled(api, webhook["id"], 1, {"RETRYING"})
    await gql(
        api,
        "mutation($id: ID!, $u: String!) { updateWebhook(id: $id, input: {url: $u}) { id } }",
        id=webhook["id"],
        u=healthy.url,
    )
    [done] = await settled(api, webhook["id"], 1, {"SUCCEEDED"}, timeout=10)
    assert [a["statusCode"] for a in done["attempts"]] == [503, 200]

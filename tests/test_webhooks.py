"""Outbound web hooks end to end: GraphQL configuration, the outbox, a real arq worker
on a real Redis, real HTTP to a receiver on 127.0.0.1, over both databases."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.responses import Response

from gateway.domain.events import EventType
from gateway.domain.webhooks import next_retry_delay
from gateway.services.accounts import CreatedAccount, InputError
from gateway.services.webhooks import WebhookChanges, WebhookService
from gateway.settings import Settings
from gateway.storage import delivery_runs
from tests.conftest import Gateway
from tests.receiver import Received, Receiver
from tests.support import brevo_event, gql, gql_errors, ingest_brevo

CREATE = """
mutation($i: WebhookInput!) {
  createWebhook(input: $i) { secret webhook { id url method format enabled events
    parameters { field name } backfillDays } }
}
"""
DELIVERIES = """
query($id: ID!, $s: DeliveryStatus) { webhook(id: $id) { enabled disabledReason consecutiveFailures
  deliveries(first: 500, status: $s) { edges { node { id status nextAttemptAt event { id email }
    attempts { number statusCode error method url durationMs responseExcerpt } } } } } }
"""

STATE = "query($id: ID!) { webhook(id: $id) { enabled disabledReason consecutiveFailures } }"


async def create_webhook(api: httpx.AsyncClient, **fields: Any) -> tuple[dict[str, Any], str]:
    fields.setdefault("backfillDays", 0)
    data = await gql(api, CREATE, i=fields)
    return data["createWebhook"]["webhook"], data["createWebhook"]["secret"]


async def deliveries(
    api: httpx.AsyncClient, webhook_id: str, status: str | None = None
) -> list[dict[str, Any]]:
    data = await gql(api, DELIVERIES, id=webhook_id, s=status)
    return [edge["node"] for edge in data["webhook"]["deliveries"]["edges"]]


async def settled(
    api: httpx.AsyncClient, webhook_id: str, count: int, statuses: set[str], timeout: float = 20
) -> list[dict[str, Any]]:
    """Wait until ``count`` deliveries are in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        found = await deliveries(api, webhook_id)
        done = [d for d in found if d["status"] in statuses]
        if len(done) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(done)} of {count} settled: {[d['status'] for d in found]}")
        await asyncio.sleep(0.1)


def verify_signature(secret: str, received: Received) -> bool:
    """What a receiver does with Standard Webhooks headers."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = received.query.encode() if received.method == "GET" else received.body
    signed = (
        f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode()
        + content
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(part.removeprefix("v1,"), expected)
        for part in received.headers["webhook-signature"].split(" ")
    )


async def test_a_cookie_one_receiver_sets_is_never_sent_on_another_call(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    setter = receiver.endpoint(
        lambda _r: Response("ok", headers={"set-cookie": "session=secret; Path=/"})
    )
    # By name: a cookie jar keeps no cookie of a bare IP address.
    await create_webhook(
        api, url=setter.url.replace("127.0.0.1", "localhost"), events=["DELIVERED"]
    )
    await ingest_brevo(gateway, account, brevo_event(email="sets@example.com"))
    await setter.wait_for(1)
    # Another account's web hook on the same host: a client's cookie jar would send it.
    other_account = await gateway.new_account()
    other = receiver.endpoint()
    async with gateway.client(other_account.api_key) as other_api:
        await create_webhook(
            other_api, url=other.url.replace("127.0.0.1", "localhost"), events=["DELIVERED"]
        )
    await ingest_brevo(gateway, other_account, brevo_event(email="gets@example.com"))
    [call] = await other.wait_for(1)
    assert "cookie" not in call.headers


async def test_jangomail_get_hook_gets_chosen_names_url_encoded(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, secret = await create_webhook(
        api,
        url=endpoint.url + "?source=gw",
        method="GET",
        format="JANGOMAIL",
        events=["OPENED"],
        parameters=[
            {"field": "email", "name": "addr"},
            {"field": "messageId", "name": "mid"},
            {"field": "userAgent", "name": "ua"},
            {"field": "ip", "name": ""},
        ],
    )
    query = urlencode(
        {
            "EmailAddress": "jane+tag@example.com",
            "TransactionalEmailID": "1234567890",
            "OpenDateTime": "1/28/2015 9:55:00 AM",
            "IPAddress": "203.0.113.9",
            "Browser": "a&b=c ü 漢",
        }
    )
    async with gateway.client() as client:
        response = await client.get(
            f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/open?{query}"
        )
    assert response.status_code == 200
    [call] = await endpoint.wait_for(1)
    assert call.method == "GET"
    assert call.params == {
        "source": "gw",
        "addr": "jane+tag@example.com",
        "mid": "1234567890",
        "ua": "a&b=c ü 漢",
    }
    assert "ip" not in call.params and "IPAddress" not in call.params
    assert "jane%2Btag" in call.query  # a + in a value is encoded, not a space
    assert verify_signature(secret, call)
    [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert call.headers["webhook-id"] == delivery["id"]


async def test_jangomail_post_form_uses_jangomail_default_names(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    _, secret = await create_webhook(
        api, url=endpoint.url, method="POST", format="JANGOMAIL", events=["BOUNCED"]
    )
    await ingest_brevo(
        gateway, account, brevo_event(event="hard_bounce", reason="550 5.1.1 unknown user")
    )
    [call] = await endpoint.wait_for(1)
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    params = call.params
    assert params["EmailAddress"] == "jane@example.com"
    assert params["TransactionalEmailID"] == "201798300811.5787683@relay.example.com"
    assert params["Definitive"] == "1"
    assert "550 5.1.1" in params["DiagnosticCode"]
    assert params["BounceDateTime"] == "11/20/2025 9:00:00 AM"
    assert verify_signature(secret, call)


async def test_brevo_format_reproduces_brevo_json(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    _, secret = await create_webhook(api, url=endpoint.url, format="BREVO", events=["BOUNCED"])
    await ingest_brevo(gateway, account, brevo_event(event="soft_bounce", reason="mailbox full"))
    [call] = await endpoint.wait_for(1)
    document = json.loads(call.body)
    assert document["event"] == "soft_bounce"
    assert document["email"] == "jane@example.com"
    assert document["message-id"] == "<201798300811.5787683@relay.example.com>"
    assert document["ts_event"] == 1763629200
    assert document["reason"] == "mailbox full"
    assert document["tags"] == ["transac_messages"]
    assert verify_signature(secret, call)


async def test_smtpeter_format_reproduces_smtpeter_webhook(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    await create_webhook(api, url=endpoint.url, format="SMTPETER", events=["CLICKED"])
    await ingest_brevo(
        gateway, account, brevo_event(event="click", link="https://example.com/p?a=1&b=2")
    )
    [call] = await endpoint.wait_for(1)
    document = json.loads(call.body)
    assert document["type"] == "click"
    assert document["recipient"] == "jane@example.com"
    assert "https://example.com/p?a=1&b=2" in (document.get("original"), document.get("url"))


async def test_gateway_format_is_the_event_as_json(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    await create_webhook(api, url=endpoint.url, format="GATEWAY", events=["DELIVERED"])
    [event_id] = await ingest_brevo(gateway, account, brevo_event())
    [call] = await endpoint.wait_for(1)
    document = json.loads(call.body)
    assert document["id"] == event_id
    assert (document["type"], document["provider"], document["providerEvent"]) == (
        "DELIVERED",
        "BREVO",
        "delivered",
    )
    assert document["occurredAt"] == "2025-11-20T09:00:00+00:00"
    assert document["raw"]["X-Mailin-custom"] == "order-77"


async def test_only_wanted_types_tags_and_templates_are_delivered(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    await create_webhook(
        api, url=endpoint.url, events=["OPENED"], tags=["vip"], templates=["22", "23"]
    )
    await ingest_brevo(
        gateway,
        account,
        brevo_event(event="opened", tags=["vip", "x"], email="yes@example.com"),
        brevo_event(event="opened", tags=["x"], email="no-tag@example.com"),
        brevo_event(event="opened", tags=["vip"], template_id=99, email="no-template@example.com"),
        brevo_event(event="click", tags=["vip"], link="https://x", email="no-type@example.com"),
    )
    await endpoint.wait_for(1)
    await asyncio.sleep(0.5)
    assert [json.loads(c.body)["email"] for c in endpoint.calls] == ["yes@example.com"]


async def test_jangomail_201_is_a_failure_and_is_retried(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    answers = iter([201, 200])
    endpoint = receiver.endpoint(lambda _r: Response("x", status_code=next(answers)))
    webhook, _ = await create_webhook(
        api, url=endpoint.url, format="JANGOMAIL", events=["DELIVERED"]
    )
    await ingest_brevo(gateway, account, brevo_event())
    [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert [(a["number"], a["statusCode"]) for a in delivery["attempts"]] == [(1, 201), (2, 200)]
    assert "201" in delivery["attempts"][0]["error"]
    first, second = endpoint.calls
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["id"]


async def test_failing_receiver_is_retried_on_schedule_then_failed(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint(lambda _r: Response("down", status_code=500))
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event())
    [delivery] = await settled(api, webhook["id"], 1, {"FAILED"})
    attempts = delivery["attempts"]
    assert [a["statusCode"] for a in attempts] == [500, 500, 500]  # the first and two retries
    assert all(a["responseExcerpt"] == "down" for a in attempts)
    gaps = [b.at - a.at for a, b in zip(endpoint.calls, endpoint.calls[1:], strict=False)]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.35
    assert delivery["nextAttemptAt"] is None


async def test_retry_after_is_honoured(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    answers = iter(
        [Response("busy", status_code=503, headers={"retry-after": "2"}), Response("ok")]
    )
    endpoint = receiver.endpoint(lambda _r: next(answers))
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event())
    await settled(api, webhook["id"], 1, {"SUCCEEDED"}, timeout=10)
    first, second = endpoint.calls
    assert second.at - first.at >= 1.9


async def test_unreachable_receiver_is_logged_and_retried(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    webhook, _ = await create_webhook(
        api, url="http://127.0.0.1:9/nothing-listens", events=["DELIVERED"]
    )
    await ingest_brevo(gateway, account, brevo_event())
    [delivery] = await settled(api, webhook["id"], 1, {"FAILED"})
    assert len(delivery["attempts"]) == 3
    assert all(a["statusCode"] is None and a["error"] for a in delivery["attempts"])


async def test_a_thousand_consecutive_failures_disable_the_hook_and_hold_deliveries(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    failing = receiver.endpoint(lambda _r: Response("no", status_code=500))
    webhook, _ = await create_webhook(api, url=failing.url, events=["DELIVERED"])
    # Each delivery makes 3 calls (first + 2 retries): 334 deliveries pass 1,000 calls.
    for start in range(0, 340, 170):
        await ingest_brevo(
            gateway,
            account,
            *(brevo_event(email=f"r{i}@example.com") for i in range(start, start + 170)),
        )
    # Past the first window's failures, calls go one at a time: about 1,000 in a row.
    deadline = time.monotonic() + 120
    while True:
        state = (await gql(api, STATE, id=webhook["id"]))["webhook"]
        if not state["enabled"]:
            break
        assert time.monotonic() < deadline, f"still enabled after {len(failing.calls)} calls"
        await asyncio.sleep(0.2)
    assert state["disabledReason"] == "1000 consecutive failed calls"
    assert 1000 <= len(failing.calls) <= 1020, len(failing.calls)
    # An event that arrives while disabled is held, not sent or dropped.
    [late] = await ingest_brevo(gateway, account, brevo_event(email="late@example.com"))
    await asyncio.sleep(0.5)
    calls_when_disabled = len(failing.calls)
    held = await deliveries(api, webhook["id"], "HELD")
    assert late in [d["event"]["id"] for d in held]
    await asyncio.sleep(0.5)
    assert len(failing.calls) == calls_when_disabled

    # A new URL enables it again and sends everything held.
    healthy = receiver.endpoint()
    updated = await gql(
        api,
        "mutation($id: ID!, $u: String!) { updateWebhook(id: $id, input: {url: $u}) { enabled consecutiveFailures } }",
        id=webhook["id"],
        u=healthy.url,
    )
    assert updated["updateWebhook"] == {"enabled": True, "consecutiveFailures": 0}
    await healthy.wait_for(len(held), timeout=30)
    deadline = time.monotonic() + 30
    while "late@example.com" not in {json.loads(c.body)["email"] for c in healthy.calls}:
        assert time.monotonic() < deadline, "the held late event was not sent"
        await asyncio.sleep(0.05)


async def test_enable_webhook_sends_what_was_held(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    async with gateway.services.engine.begin() as connection:
        counted = await connection.run_sync(
            delivery_runs.count_calls,
            outcomes={int(webhook["id"]): [False]},
            disable_after=1,
            now=datetime.now(UTC),
        )
        assert counted.disabled == {int(webhook["id"])}
    await ingest_brevo(gateway, account, brevo_event())
    [held] = await settled(api, webhook["id"], 1, {"HELD"})
    assert endpoint.calls == []
    enabled = await gql(
        api, "mutation($id: ID!) { enableWebhook(id: $id) { enabled } }", id=webhook["id"]
    )
    assert enabled["enableWebhook"]["enabled"] is True
    await endpoint.wait_for(1)
    [done] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert done["id"] == held["id"]


async def test_backfill_sends_the_last_days_in_order(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    now = int(time.time())
    day = 86_400
    await ingest_brevo(
        gateway,
        account,
        brevo_event(email="too-old@example.com", ts_event=now - 8 * day),
        brevo_event(email="old@example.com", ts_event=now - 6 * day),
        brevo_event(email="new@example.com", ts_event=now - 60),
        brevo_event(email="other-type@example.com", event="opened", ts_event=now - 60),
    )
    endpoint = receiver.endpoint()
    await create_webhook(api, url=endpoint.url, events=["DELIVERED"], backfillDays=7)
    await endpoint.wait_for(2)
    await asyncio.sleep(0.5)
    assert sorted(json.loads(c.body)["email"] for c in endpoint.calls) == [
        "new@example.com",
        "old@example.com",
    ]


async def test_redeliver_sends_again_and_logs_it(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event())
    [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    again = await gql(
        api, "mutation($id: ID!) { redeliver(deliveryId: $id) { id status } }", id=delivery["id"]
    )
    assert again["redeliver"] == {"id": delivery["id"], "status": "PENDING"}
    await endpoint.wait_for(2)
    [done] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert [a["number"] for a in done["attempts"]] == [1, 2]


async def test_send_test_event(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, secret = await create_webhook(api, url=endpoint.url, events=["BOUNCED"])
    sent = await gql(
        api,
        "mutation($id: ID!) { sendTestEvent(webhookId: $id) { status event { email } } }",
        id=webhook["id"],
    )
    assert sent["sendTestEvent"]["event"]["email"] == "test@example.com"
    [call] = await endpoint.wait_for(1)
    assert json.loads(call.body)["email"] == "test@example.com"
    assert verify_signature(secret, call)


async def test_deleted_webhook_gets_nothing(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    assert (await gql(api, "mutation($id: ID!) { deleteWebhook(id: $id) }", id=webhook["id"]))[
        "deleteWebhook"
    ]
    await ingest_brevo(gateway, account, brevo_event())
    await asyncio.sleep(0.5)
    assert endpoint.calls == []
    assert (await gql(api, "query($id: ID!) { webhook(id: $id) { id } }", id=webhook["id"]))[
        "webhook"
    ] is None


async def test_another_account_cannot_see_or_change_a_webhook(
    gateway: Gateway, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    webhook, _ = await create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
    other = await gateway.new_account()
    async with gateway.client(other.api_key) as client:
        assert (await gql(client, "{ webhooks { id } }"))["webhooks"] == []
        assert (await gql(client, "query($id: ID!) { webhook(id: $id) { id } }", id=webhook["id"]))[
            "webhook"
        ] is None
        assert (
            await gql(client, "mutation($id: ID!) { deleteWebhook(id: $id) }", id=webhook["id"])
        )["deleteWebhook"] is False


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["SENT"]}, "input.url"),
        ({"url": "http://example.com", "events": []}, "input.events"),
        ({"events": ["SENT"]}, "input.url"),
        (
            {
                "url": "http://127.0.0.1:1/x",
                "events": ["SENT"],
                "parameters": [{"field": "shoeSize", "name": "s"}],
            },
            "input.parameters",
        ),
        (
            {"url": "http://127.0.0.1:1/x", "events": ["SENT"], "format": "BREVO", "method": "GET"},
            "input.method",
        ),
        (
            {
                "url": "http://127.0.0.1:1/x",
                "events": ["SENT"],
                "format": "BREVO",
                "parameters": [{"field": "email", "name": "e"}],
            },
            "input.parameters",
        ),
        ({"url": "http://127.0.0.1:1/x", "events": ["SENT"], "secret": "hunter2"}, "input.secret"),
        (
            {"url": "http://127.0.0.1:1/x", "events": ["SENT"], "backfillDays": 400},
            "input.backfillDays",
        ),
    ],
)
async def test_invalid_webhook_input_names_the_field(
    api: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    [error] = await gql_errors(api, CREATE, i=fields)
    assert error["extensions"]["field"] == field, error


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
async def test_private_targets_are_refused_unless_allowed(
    gateway: Gateway, account: CreatedAccount, url: str
) -> None:
    strict = WebhookService(
        gateway.services.engine,
        gateway.services.ids,
        gateway.services.queue,
        Settings(_env_file=None, allow_private_webhooks=False),  # type: ignore[call-arg]
    )
    with pytest.raises(InputError) as refused:
        await strict.create(account.account_id, WebhookChanges(url=url, events=[EventType.SENT]))
    assert refused.value.field == "url"
    assert "GATEWAY_ALLOW_PRIVATE_WEBHOOKS" in refused.value.message


async def test_redis_flushed_mid_run_loses_no_delivery(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    up = asyncio.Event()

    def answer(_r: Received) -> Response:
        return (
            Response("ok")
            if up.is_set()
            else Response("down", status_code=503, headers={"retry-after": "3"})
        )

    endpoint = receiver.endpoint(answer)
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    await ingest_brevo(
        gateway, account, *(brevo_event(email=f"f{i}@example.com") for i in range(20))
    )
    await endpoint.wait_for(20)
    # Every delivery is now waiting for its retry in arq's queue: lose the queue.
    await gateway.services.redis.flushdb()
    up.set()
    await settled(api, webhook["id"], 20, {"SUCCEEDED"}, timeout=30)
    delivered = {json.loads(c.body)["email"] for c in endpoint.calls if c.at and json.loads(c.body)}
    assert {f"f{i}@example.com" for i in range(20)} <= delivered


async def test_a_webhook_deleted_mid_call_does_not_lose_other_results(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def slow(_r: Received) -> Response:
        await release.wait()
        return Response("ok")

    doomed_endpoint = receiver.endpoint(slow)
    doomed, _ = await create_webhook(api, url=doomed_endpoint.url, events=["DELIVERED"])
    kept_endpoint = receiver.endpoint(slow)
    kept, _ = await create_webhook(api, url=kept_endpoint.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event())
    await doomed_endpoint.wait_for(1)
    await kept_endpoint.wait_for(1)
    assert (await gql(api, "mutation($id: ID!) { deleteWebhook(id: $id) }", id=doomed["id"]))[
        "deleteWebhook"
    ]
    release.set()
    [delivery] = await settled(api, kept["id"], 1, {"SUCCEEDED"})
    assert len(delivery["attempts"]) == 1
    assert len(kept_endpoint.calls) == 1  # its result was logged, not lost and sent again


def test_retry_waits_are_never_shorter_than_the_schedule_and_up_to_a_tenth_longer() -> None:
    schedule = (5.0, 300.0)
    assert next_retry_delay(1, schedule, None, spread=lambda: 0.0) == 5.0
    assert next_retry_delay(2, schedule, None, spread=lambda: 1.0) == pytest.approx(330.0)
    assert next_retry_delay(1, schedule, 60.0, spread=lambda: 0.5) == pytest.approx(63.0)
    assert next_retry_delay(3, schedule, None) is None
    waits = {next_retry_delay(1, schedule, None) for _ in range(20)}
    assert len(waits) > 1 and all(5.0 <= wait <= 5.5 for wait in waits if wait is not None)

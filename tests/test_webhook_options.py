"""What web hook users ask for (Svix, Outpost, Convoy): headers of their own on every
call, a secret rotated with a grace period in which both secrets sign, and a time
window's failed deliveries sent again. Real gateway, real receiver, both databases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.responses import Response

from gateway.domain.events import EventType
from gateway.domain.webhooks import (
    DeliveryStatus,
    HttpMethod,
    WebhookConfig,
    WebhookFormat,
)
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.receiver import Received, Receiver
from tests.support import brevo_event, gql, gql_errors, ingest_brevo
from tests.test_delivery_signing import settled as settled_one
from tests.test_delivery_signing import verifying
from tests.test_webhooks import create_webhook, deliveries, settled

WEBHOOK = WebhookConfig(
    id=1,
    account_id=1,
    url="https://example.com/hook",
    method=HttpMethod.POST,
    events=frozenset({EventType.DELIVERED}),
    format=WebhookFormat.GATEWAY,
    parameters=None,
    tags=(),
    templates=(),
    secret="whsec_new",
    enabled=True,
    disabled_reason=None,
    consecutive_failures=0,
    backfill_days=0,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 1, tzinfo=UTC),
)
UPDATE = """
mutation($id: ID!, $i: WebhookInput!) { updateWebhook(id: $id, input: $i) { headerNames } }
"""
HEADER_NAMES = "query($id: ID!) { webhook(id: $id) { headerNames } }"
ROTATE = """
mutation($id: ID!, $g: Float) { rotateWebhookSecret(id: $id, graceHours: $g) {
  secret previousValidUntil } }
"""
ROTATE_DEFAULT = """
mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret previousValidUntil } }
"""
SEND_TEST = "mutation($id: ID!) { sendTestEvent(webhookId: $id) { id } }"
RECOVER = """
mutation($id: ID!, $since: DateTime!, $until: DateTime) {
  recoverDeliveries(webhookId: $id, since: $since, until: $until) }
"""
HEADERS = [{"name": "Authorization", "value": "Bearer s3cret"}, {"name": "X-Tenant", "value": "7"}]


# -- custom headers ------------------------------------------------------------------


async def test_custom_headers_arrive_on_every_call_and_only_their_names_are_shown(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    answers = iter([Response("busy", status_code=503), Response("ok")])
    endpoint = receiver.endpoint(lambda _r: next(answers))
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"], headers=HEADERS)
    await ingest_brevo(gateway, account, brevo_event())
    await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    first, retry = endpoint.calls
    for call in (first, retry):
        assert (call.headers["authorization"], call.headers["x-tenant"]) == ("Bearer s3cret", "7")
    shown = await gql(api, HEADER_NAMES, id=webhook["id"])
    assert shown["webhook"]["headerNames"] == ["Authorization", "X-Tenant"]


async def test_update_without_headers_keeps_them(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"], headers=HEADERS)
    updated = await gql(api, UPDATE, id=webhook["id"], i={"tags": ["t"]})
    assert updated["updateWebhook"]["headerNames"] == ["Authorization", "X-Tenant"]
    await gql(api, SEND_TEST, id=webhook["id"])
    [call] = await endpoint.wait_for(1)
    assert call.headers["authorization"] == "Bearer s3cret"


async def test_update_with_headers_replaces_them_all(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"], headers=HEADERS)
    new = [{"name": "X-Api-Key", "value": "k2"}]
    updated = await gql(api, UPDATE, id=webhook["id"], i={"headers": new})
    assert updated["updateWebhook"]["headerNames"] == ["X-Api-Key"]
    await gql(api, SEND_TEST, id=webhook["id"])
    [call] = await endpoint.wait_for(1)
    assert call.headers["x-api-key"] == "k2"
    assert "authorization" not in call.headers and "x-tenant" not in call.headers


@pytest.mark.parametrize(
    "header",
    [
        {"name": "X Bad", "value": "v"},
        {"name": "", "value": "v"},
        {"name": "X-Ok:", "value": "v"},
        {"name": "Content-Type", "value": "text/plain"},
        {"name": "Host", "value": "example.com"},
        {"name": "Webhook-Signature", "value": "v1,forged"},
        {"name": "webhook-id", "value": "1"},
        {"name": "webhook-timestamp", "value": "1"},
        {"name": "Transfer-Encoding", "value": "chunked"},
        {"name": "Connection", "value": "close"},
        {"name": "Content-Length", "value": "1"},
        {"name": "X-Split", "value": "a\r\nX-Injected: 1"},
        {"name": "X-Newline", "value": "a\nb"},
        {"name": "X-Nul", "value": "a\x00b"},
        {"name": "X-Long", "value": "v" * 3000},
    ],
    ids=lambda header: repr(header["name"])[:20],
)
async def test_invalid_headers_are_refused_naming_input_headers(
    api: httpx.AsyncClient, header: dict[str, str]
) -> None:
    fields = {"url": "http://127.0.0.1:9/hook", "events": ["DELIVERED"], "headers": [header]}
    [error] = await gql_errors(
        api, "mutation($i: WebhookInput!) { createWebhook(input: $i) { secret } }", i=fields
    )
    assert error["extensions"]["field"] == "input.headers", error


async def test_a_header_given_twice_is_refused_on_update(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    webhook, _ = await create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
    twice = [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]
    [error] = await gql_errors(api, UPDATE, id=webhook["id"], i={"headers": twice})
    assert error["extensions"]["field"] == "input.headers", error


# -- secret rotation -----------------------------------------------------------------


def verifying_all(*secrets: str) -> Any:
    """A receiver's answer: 200 only if the call verifies with every one of ``secrets``."""

    def answer(received: Received) -> Response:
        for secret in secrets:
            checked = verifying(secret)(received)
            if checked.status_code != 200:
                return checked
        return Response("verified")

    return answer


async def test_during_the_grace_period_a_call_verifies_with_the_old_and_the_new_secret(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, old = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    webhook_id = webhook["id"]
    rotated = (await gql(api, ROTATE_DEFAULT, id=webhook_id))["rotateWebhookSecret"]
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old
    until = datetime.fromisoformat(rotated["previousValidUntil"])
    assert abs(until - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    endpoint.answer = verifying_all(old, new)
    await gql(api, SEND_TEST, id=webhook_id)
    delivery = await settled_one(api, webhook_id)
    assert (delivery["status"], delivery["attempts"][0]["responseExcerpt"]) == (
        "SUCCEEDED",
        "verified",
    )
    [call] = endpoint.calls
    assert len(call.headers["webhook-signature"].split(" ")) == 2


async def test_without_grace_only_the_new_secret_verifies(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, old = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    webhook_id = webhook["id"]
    rotated = (await gql(api, ROTATE, id=webhook_id, g=0))["rotateWebhookSecret"]
    assert rotated["previousValidUntil"] is None
    endpoint.answer = verifying(rotated["secret"])
    await gql(api, SEND_TEST, id=webhook_id)
    delivery = await settled_one(api, webhook_id)
    assert delivery["status"] == "SUCCEEDED"
    [call] = endpoint.calls
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(call.body, call.headers)


def test_the_previous_secret_stops_signing_when_its_grace_period_ends() -> None:
    now = datetime.now(UTC)
    config = replace(
        WEBHOOK, secret="whsec_new", previous_secret="whsec_old", previous_secret_until=now
    )
    assert config.signing_secrets(now - timedelta(seconds=1)) == ("whsec_new", "whsec_old")
    assert config.signing_secrets(now) == ("whsec_new",)


@pytest.mark.parametrize("grace", [-1, 721])
async def test_a_grace_period_out_of_range_is_refused_naming_it(
    api: httpx.AsyncClient, receiver: Receiver, grace: float
) -> None:
    webhook, _ = await create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
    [error] = await gql_errors(api, ROTATE, id=webhook["id"], g=grace)
    assert error["extensions"]["field"] == "graceHours", error


# -- recovering a time window's deliveries -------------------------------------------


async def failed_delivery(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    webhook_id: str,
    email: str,
    count: int,
) -> str:
    """Ingest an event for ``email`` and wait until it is the web hook's ``count``-th
    delivery to fail for good; returns its id."""
    await ingest_brevo(gateway, account, brevo_event(email=email))
    found = await settled(api, webhook_id, count, {"FAILED"})
    [delivery] = [d for d in found if d["event"]["email"] == email]
    return str(delivery["id"])


async def test_recover_deliveries_resends_the_failed_ones_in_the_window_only(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    down = True
    endpoint = receiver.endpoint(
        lambda _r: Response("down", status_code=500) if down else Response("ok")
    )
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    before = await failed_delivery(gateway, account, api, webhook["id"], "before@example.com", 1)
    since = datetime.now(UTC)
    inside = await failed_delivery(gateway, account, api, webhook["id"], "inside@example.com", 2)
    until = datetime.now(UTC)
    after = await failed_delivery(gateway, account, api, webhook["id"], "after@example.com", 3)
    down = False

    recovered = await gql(
        api, RECOVER, id=webhook["id"], since=since.isoformat(), until=until.isoformat()
    )

    assert recovered["recoverDeliveries"] == 1
    await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    states = {
        d["id"]: (d["status"], len(d["attempts"])) for d in await deliveries(api, webhook["id"])
    }
    assert states == {before: ("FAILED", 3), inside: ("SUCCEEDED", 4), after: ("FAILED", 3)}


async def test_recover_deliveries_takes_at_most_its_limit_and_the_rest_on_the_next_call(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint(lambda _r: Response("down", status_code=500))
    webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
    since = datetime.now(UTC)
    for count, email in enumerate(["a@example.com", "b@example.com"], start=1):
        await failed_delivery(gateway, account, api, webhook["id"], email, count)
    endpoint.answer = lambda _r: Response("ok")

    async def recover() -> int | None:
        return await gateway.services.deliveries.recover(
            account.account_id,
            int(webhook["id"]),
            since=since,
            until=None,
            status=DeliveryStatus.FAILED,
            limit=1,
        )

    assert [await recover(), await recover(), await recover()] == [1, 1, 0]
    await settled(api, webhook["id"], 2, {"SUCCEEDED"})


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"id": "1", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"id": "404", "since": "2026-01-01T00:00:00Z"}, "webhookId"),
        ({"id": "x", "since": "2026-01-01T00:00:00Z"}, "webhookId"),
    ],
    ids=["until-before-since", "unknown-webhook", "not-an-id"],
)
async def test_recover_deliveries_refuses_bad_input_naming_the_field(
    api: httpx.AsyncClient, variables: dict[str, Any], field: str
) -> None:
    [error] = await gql_errors(api, RECOVER, **variables)
    assert error["extensions"]["field"] == field, error

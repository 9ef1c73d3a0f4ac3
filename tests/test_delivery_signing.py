"""Signatures as a receiver checks them: a real receiver on 127.0.0.1 verifies every
call with the ``standardwebhooks`` package and answers 401 to a bad one, so a delivery
succeeds only if its signature holds (for a GET, over the query string as sent)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.responses import Response

from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.receiver import Endpoint, Received, Receiver
from tests.support import brevo_event, gql, ingest_brevo

CREATE = """
mutation($i: WebhookInput!) { createWebhook(input: $i) { secret webhook { id } } }
"""
DELIVERIES = """
query($id: ID!) { webhook(id: $id) { deliveries(first: 10) { edges { node { id status
  attempts { statusCode responseExcerpt } } } } } }
"""


def verifying(secret: str, *, get: bool = False, json_body: bool = True) -> Any:
    """A receiver's answer: 200 if the call's signature verifies, else 401 saying why."""

    def answer(received: Received) -> Response:
        content = received.query if get else received.body
        try:
            Webhook(secret).verify(content, received.headers, json_parse=json_body)
        except WebhookVerificationError as problem:
            return Response(f"bad signature: {problem}", status_code=401)
        return Response("verified")

    return answer


async def signed_webhook(
    api: httpx.AsyncClient, receiver: Receiver, **fields: Any
) -> tuple[str, Endpoint]:
    endpoint = receiver.endpoint()
    fields = {"url": endpoint.url, "backfillDays": 0, **fields}
    data = (await gql(api, CREATE, i=fields))["createWebhook"]
    get = fields.get("method") == "GET"
    json_body = fields["format"] != "JANGOMAIL" and not get
    endpoint.answer = verifying(data["secret"], get=get, json_body=json_body)
    return str(data["webhook"]["id"]), endpoint


async def settled(
    api: httpx.AsyncClient,
    webhook_id: str,
    statuses: frozenset[str] = frozenset({"SUCCEEDED", "FAILED"}),
) -> dict[str, Any]:
    """The web hook's one delivery once its status is one of ``statuses``."""
    deadline = time.monotonic() + 20
    while True:
        edges = (await gql(api, DELIVERIES, id=webhook_id))["webhook"]["deliveries"]["edges"]
        if edges and edges[0]["node"]["status"] in statuses:
            node: dict[str, Any] = edges[0]["node"]
            return node
        assert time.monotonic() < deadline, edges
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "fields",
    [
        {"format": "GATEWAY", "method": "POST"},
        {"format": "BREVO", "method": "POST"},
        {"format": "SMTPETER", "method": "POST"},
        {"format": "JANGOMAIL", "method": "POST"},
        {"format": "JANGOMAIL", "method": "GET"},
        {"format": "GATEWAY", "method": "GET"},
    ],
    ids=[
        "gateway-post",
        "brevo-post",
        "smtpeter-post",
        "jangomail-form",
        "jangomail-get",
        "gateway-get",
    ],
)
async def test_a_receiver_verifies_the_signature_with_standardwebhooks(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    receiver: Receiver,
    fields: dict[str, Any],
) -> None:
    webhook_id, endpoint = await signed_webhook(api, receiver, events=["DELIVERED"], **fields)
    # Characters that need encoding, so that "as sent" matters.
    await ingest_brevo(
        gateway, account, brevo_event(email="jane+tag@example.com", subject="Grüße & 漢 =?")
    )
    delivery = await settled(api, webhook_id)
    [attempt] = delivery["attempts"]
    assert (delivery["status"], attempt["responseExcerpt"]) == ("SUCCEEDED", "verified")
    [call] = endpoint.calls
    assert call.headers["webhook-id"] == delivery["id"]


async def test_a_retry_is_signed_again_under_the_same_webhook_id(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    webhook_id, endpoint = await signed_webhook(
        api, receiver, events=["DELIVERED"], format="GATEWAY"
    )
    verify = endpoint.answer
    answers = iter([lambda _r: Response("busy", status_code=503), verify])
    endpoint.answer = lambda received: next(answers)(received)
    await ingest_brevo(gateway, account, brevo_event())
    delivery = await settled(api, webhook_id)
    first, second = endpoint.calls
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["id"]
    assert [a["statusCode"] for a in delivery["attempts"]] == [503, 200]

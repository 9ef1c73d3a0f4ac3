"""Ingest over HTTP: every provider's route, deduplication, refusals kept for replay."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.support import body, brevo_event, gql

EVENTS_QUERY = """
query($where: EventFilter) {
  events(where: $where, first: 100) {
    edges { node { id type provider providerEvent email messageId tags raw occurredAt
      ... on DeliveryProblemEvent { severity rejectReason reason smtpStatus }
      ... on OpenEvent { unique proxy }
      ... on ClickEvent { url } } }
  }
}
"""


async def nodes(gateway: Gateway, account: CreatedAccount, **where: object) -> list[dict]:
    async with gateway.client(account.api_key) as client:
        data = await gql(client, EVENTS_QUERY, where=where)
    return [edge["node"] for edge in data["events"]["edges"]]


async def test_brevo_event_is_stored_and_found(gateway: Gateway, account: CreatedAccount) -> None:
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body(brevo_event(event="hard_bounce", reason="550 5.1.1 no such user")),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    [node] = await nodes(gateway, account)
    assert node["type"] == "BOUNCED"
    assert node["severity"] == "PERMANENT"
    assert node["smtpStatus"] == "5.1.1"
    assert node["messageId"] == "201798300811.5787683@relay.example.com"
    assert node["raw"]["message-id"] == "<201798300811.5787683@relay.example.com>"


async def test_provider_retry_is_stored_once(gateway: Gateway, account: CreatedAccount) -> None:
    payload = body(brevo_event(event="opened"))
    url = f"/ingest/brevo/{account.ingest_tokens['brevo']}"
    async with gateway.client() as client:
        first = await client.post(
            url, content=payload, headers={"content-type": "application/json"}
        )
        again = await client.post(
            url, content=payload, headers={"content-type": "application/json"}
        )
    assert first.json()["stored"] == 1
    assert again.json() == {"stored": 0, "duplicates": 1, "ids": []}
    assert len(await nodes(gateway, account)) == 1


async def test_concurrent_retries_are_stored_once(
    gateway: Gateway, account: CreatedAccount
) -> None:
    payload = body(brevo_event(event="click", link="https://example.com/a"))
    url = f"/ingest/brevo/{account.ingest_tokens['brevo']}"
    async with gateway.client() as client:
        answers = await asyncio.gather(
            *(
                client.post(url, content=payload, headers={"content-type": "application/json"})
                for _ in range(10)
            )
        )
    assert sum(answer.json()["stored"] for answer in answers) == 1
    assert sum(answer.json()["duplicates"] for answer in answers) == 9


async def test_brevo_batch_of_500_is_stored_in_order(
    gateway: Gateway, account: CreatedAccount
) -> None:
    batch = [brevo_event(event="delivered", email=f"r{i}@example.com") for i in range(500)]
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body(batch),
            headers={"content-type": "application/json"},
        )
    assert response.json()["stored"] == 500
    ids = [int(event_id) for event_id in response.json()["ids"]]
    assert ids == sorted(ids)


async def test_jangomail_get_query_is_stored(gateway: Gateway, account: CreatedAccount) -> None:
    query = urlencode(
        {
            "TransactionalEmailID": "1234567890",
            "EmailAddress": "jane.dough@browniekitchen.com",
            "BounceDateTime": "1/28/2015 10:45:11 AM",
            "DiagnosticCode": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Definitive": "1",
        }
    )
    async with gateway.client() as client:
        response = await client.get(
            f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/bounce?{query}"
        )
    assert response.status_code == 200, response.text
    [node] = await nodes(gateway, account)
    assert (node["type"], node["severity"], node["messageId"]) == (
        "BOUNCED",
        "PERMANENT",
        "1234567890",
    )
    assert node["occurredAt"].startswith("2015-01-28T10:45:11")


async def test_jangomail_post_form_is_stored(gateway: Gateway, account: CreatedAccount) -> None:
    form = {
        "EmailAddress": "ü@example.com",
        "OpenDateTime": "1/28/2015 9:55:00 AM",
        "Browser": "a+b&c=d",
    }
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/open", data=form
        )
    assert response.status_code == 200, response.text
    [node] = await nodes(gateway, account)
    assert node["email"] == "ü@example.com"
    assert node["raw"]["Browser"] == "a+b&c=d"


async def test_smtpeter_records_and_webhooks_are_stored(
    gateway: Gateway, account: CreatedAccount
) -> None:
    payload = [
        {
            "event": "delivery",
            "data": {"id": "m1", "recipient": "a@example.com", "time": "2026-11-20 10:00:00"},
        },
        {"type": "open", "id": "m1", "recipient": "a@example.com", "time": 1763633000},
    ]
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/smtpeter/{account.ingest_tokens['smtpeter']}",
            content=body(payload),
            headers={"content-type": "application/json"},
        )
    assert response.json()["stored"] == 2
    types = sorted(node["type"] for node in await nodes(gateway, account, messageId="m1"))
    assert types == ["DELIVERED", "OPENED"]


async def test_malformed_json_is_400_and_kept(gateway: Gateway, account: CreatedAccount) -> None:
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=b'{"event": "delivered", ',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert kept["body"] == b'{"event": "delivered", '
    assert kept["status"] == 400


async def test_missing_field_is_422_naming_it(gateway: Gateway, account: CreatedAccount) -> None:
    event = {name: value for name, value in brevo_event().items() if not name.startswith("ts")}
    event.pop("date", None)
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body([brevo_event(), event]),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 422
    assert response.json()["error"].startswith("event[1]: missing time")
    assert await nodes(gateway, account) == []
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert json.loads(kept["body"])[1] == event


async def test_wrong_media_type_is_415(gateway: Gateway, account: CreatedAccount) -> None:
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}", data={"a": "b"}
        )
    assert response.status_code == 415


async def test_body_over_the_limit_is_413(gateway: Gateway, account: CreatedAccount) -> None:
    limit = gateway.settings.max_body_bytes
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=b"[" + b" " * limit + b"]",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


async def test_unknown_token_is_404(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.post("/ingest/brevo/src_nope", content=body(brevo_event()))
    assert response.status_code == 404


async def test_token_of_another_provider_is_404(gateway: Gateway, account: CreatedAccount) -> None:
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['smtpeter']}", content=body(brevo_event())
        )
    assert response.status_code == 404


async def test_another_account_sees_none_of_it(gateway: Gateway, account: CreatedAccount) -> None:
    other = await gateway.new_account()
    async with gateway.client() as client:
        await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body(brevo_event(tags=["secret"])),
            headers={"content-type": "application/json"},
        )
    assert len(await nodes(gateway, account, tags=["secret"])) == 1
    assert await nodes(gateway, other) == []
    assert await nodes(gateway, other, tags=["secret"]) == []
    assert await nodes(gateway, other, email="jane@example.com") == []


async def test_same_payload_in_two_accounts_is_stored_in_each(
    gateway: Gateway, account: CreatedAccount
) -> None:
    other = await gateway.new_account()
    payload = body(brevo_event())
    async with gateway.client() as client:
        for owner in (account, other):
            response = await client.post(
                f"/ingest/brevo/{owner.ingest_tokens['brevo']}",
                content=payload,
                headers={"content-type": "application/json"},
            )
            assert response.json()["stored"] == 1

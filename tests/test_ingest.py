"""Ingest over HTTP: every provider's route, deduplication, and refusals: a readable
body is stored event by event, each refused event kept alone; a body that cannot be read
is answered 4xx and kept whole (past the size limit, its start and its size)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from gateway.api.ingest import KEPT_PREFIX_BYTES
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.support import body, brevo_event, database_refuses_subject, gql

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
    assert again.json() == {"stored": 0, "duplicates": 1, "ids": [], "rejected": []}
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
    assert kept["event_index"] is None


async def test_a_bad_event_is_kept_alone_and_the_good_ones_are_stored(
    gateway: Gateway, account: CreatedAccount
) -> None:
    """Brevo discards a batch answered 4xx: one bad event must not cost the others."""
    bad = {name: value for name, value in brevo_event(event="opened").items() if "ts" not in name}
    del bad["date"]
    good = [brevo_event(event="delivered"), brevo_event(event="click", link="https://e.x/")]
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body([good[0], bad, good[1]]),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["stored"], answer["duplicates"], len(answer["ids"])) == (2, 0, 2)
    [rejected] = answer["rejected"]
    assert rejected["index"] == 1
    assert rejected["reason"].startswith("event[1]: missing time")
    assert sorted(node["type"] for node in await nodes(gateway, account)) == [
        "CLICKED",
        "DELIVERED",
    ]
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert json.loads(kept["body"]) == bad
    assert (kept["event_index"], kept["status"], kept["reason"]) == (1, 422, rejected["reason"])


async def test_smtpeter_bad_record_is_kept_alone(gateway: Gateway, account: CreatedAccount) -> None:
    payload = [
        {"event": "delivery", "data": {"id": "m2", "recipient": "a@example.com", "time": 1}},
        {"event": "delivery", "data": {"id": "m2"}},
    ]
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/smtpeter/{account.ingest_tokens['smtpeter']}",
            content=body(payload),
            headers={"content-type": "application/json"},
        )
    assert response.json()["stored"] == 1
    [refused] = response.json()["rejected"]
    assert refused["index"] == 1 and "recipient" in refused["reason"]
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert json.loads(kept["body"]) == payload[1]


async def test_wrong_media_type_is_415_and_kept(gateway: Gateway, account: CreatedAccount) -> None:
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}", data={"a": "b"}
        )
    assert response.status_code == 415
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert (kept["status"], kept["body"]) == (415, b"a=b")


async def test_body_over_the_limit_is_413_and_its_start_kept_with_its_size(
    gateway: Gateway, account: CreatedAccount
) -> None:
    limit = gateway.settings.max_body_bytes
    sent = b"[" + b" " * limit + b"]"
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=sent,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert f"over the limit of {limit}" in response.json()["error"]
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert kept["body"] == sent[:KEPT_PREFIX_BYTES]
    assert kept["size"] == len(sent)


async def test_streamed_body_over_the_limit_is_counted_to_its_end(
    gateway: Gateway, account: CreatedAccount
) -> None:
    """Without a Content-Length (chunked), the size is counted as the body streams in."""
    limit = gateway.settings.max_body_bytes
    chunk = b" " * 65_536
    chunks = limit // len(chunk) + 3

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield chunk

    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/smtpeter/{account.ingest_tokens['smtpeter']}",
            content=stream(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert (len(kept["body"]), kept["size"]) == (KEPT_PREFIX_BYTES, chunks * len(chunk))


async def test_unknown_jangomail_event_is_404_naming_the_seven_and_kept(
    gateway: Gateway, account: CreatedAccount
) -> None:
    query = urlencode({"EmailAddress": "a@example.com", "OpenDateTime": "1/28/2015 9:55:00 AM"})
    async with gateway.client() as client:
        response = await client.get(
            f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/opne?{query}"
        )
    assert response.status_code == 404
    assert response.json()["error"] == (
        "unknown JangoMail event 'opne': use one of "
        "sent, open, click, unsubscribe, bounce, complaint, block"
    )
    assert await nodes(gateway, account) == []
    [kept] = await gateway.services.rejections.recent(account.account_id, limit=5)
    assert (kept["status"], kept["reason"]) == (404, response.json()["error"])
    assert (kept["path"], kept["query"]) == ("/ingest/jangomail/{token}/opne", query)


async def test_no_ingest_token_is_kept_in_clear(gateway: Gateway, account: CreatedAccount) -> None:
    async with gateway.client() as client:
        for provider, route in (
            ("brevo", ""),
            ("smtpeter", ""),
            ("jangomail", "/open"),
            ("jangomail", "/nonesuch"),
        ):
            await client.post(
                f"/ingest/{provider}/{account.ingest_tokens[provider]}{route}",
                content=b"{not json",
                headers={"content-type": "application/json"},
            )
    kept = await gateway.services.rejections.recent(account.account_id, limit=10)
    assert sorted(row["path"] for row in kept) == [
        "/ingest/brevo/{token}",
        "/ingest/jangomail/{token}/nonesuch",
        "/ingest/jangomail/{token}/open",
        "/ingest/smtpeter/{token}",
    ]
    for row in kept:
        for token in account.ingest_tokens.values():
            assert token not in repr(row)


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


async def test_an_event_the_database_refuses_is_kept_alone_and_its_neighbours_stored(
    gateway: Gateway, account: CreatedAccount
) -> None:
    refused_subject = f"refused {uuid.uuid4().hex}"
    bad = brevo_event(event="opened", subject=refused_subject)
    good = [brevo_event(event="delivered"), brevo_event(event="click", link="https://e.x/")]
    timeless = {name: value for name, value in brevo_event().items() if "ts" not in name}
    del timeless["date"]
    async with (
        database_refuses_subject(gateway.services.engine, refused_subject),
        gateway.client() as client,
    ):
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body([good[0], timeless, bad, good[1]]),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["stored"], answer["duplicates"]) == (2, 0)
    assert [item["index"] for item in answer["rejected"]] == [1, 2]
    assert answer["rejected"][1]["reason"].startswith("event[2]: the database refused it")
    kept = await gateway.services.rejections.recent(account.account_id, limit=5)
    by_index = {item["event_index"]: item for item in kept}
    assert json.loads(by_index[2]["body"]) == bad

"""A refused ingest request is kept whole, a refused event of a batch alone; once the cause is fixed (here: a JangoMail
parameter the customer renamed on JangoMail's side), replaying it stores its events,
and replaying again stores nothing twice. Nothing crosses accounts."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx

from gateway.api.ingest import KEPT_PREFIX_BYTES
from gateway.domain.events import Provider
from gateway.services.accounts import CreatedAccount
from gateway.services.rejections import IngestCall, Refusal
from tests.conftest import Gateway
from tests.support import brevo_event, gql, gql_errors, ingest_brevo

PAYLOADS = (
    "{ rejectedPayloads { id provider sourceId method contentType status reason index body "
    "size truncated replayedAt } }"
)
REPLAY = (
    "mutation($id: ID!) { replayRejectedPayload(id: $id) { stored duplicates error "
    "payload { id replayedAt } } }"
)


async def refused_open(gateway: Gateway, account: CreatedAccount) -> httpx.Response:
    """A JangoMail open whose address comes as ``addr``: the source expects the default
    name until it is told otherwise."""
    query = urlencode(
        {
            "addr": "jane+x@example.com",
            "TransactionalEmailID": "77",
            "OpenDateTime": "1/28/2015 9:55:00 AM",
        }
    )
    async with gateway.client() as client:
        return await client.get(
            f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/open?{query}"
        )


async def test_a_fixed_source_replays_what_it_refused(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    refused = await refused_open(gateway, account)
    assert refused.status_code == 200, refused.text
    [answered] = refused.json()["rejected"]

    [kept] = (await gql(api, PAYLOADS))["rejectedPayloads"]
    assert (kept["provider"], kept["method"], kept["status"]) == ("JANGOMAIL", "GET", 422)
    assert (kept["index"], kept["reason"]) == (answered["index"], answered["reason"])
    assert kept["replayedAt"] is None

    # Still unreadable: the error says why and nothing is stored or marked.
    [still] = [(await gql(api, REPLAY, id=kept["id"]))["replayRejectedPayload"]]
    assert still["stored"] == 0 and still["error"] == kept["reason"]
    assert still["payload"]["replayedAt"] is None

    sources = (await gql(api, "{ ingestSources { id provider } }"))["ingestSources"]
    [jangomail] = [s["id"] for s in sources if s["provider"] == "JANGOMAIL"]
    await gql(
        api,
        "mutation($id: ID!) { updateIngestSource(id: $id, input: "
        '{parameters: [{field: "email", name: "addr"}]}) { id } }',
        id=jangomail,
    )
    replayed = (await gql(api, REPLAY, id=kept["id"]))["replayRejectedPayload"]
    assert (replayed["stored"], replayed["duplicates"], replayed["error"]) == (1, 0, None)
    assert replayed["payload"]["replayedAt"] is not None
    events = await gql(api, "{ events { edges { node { type email messageId occurredAt } } } }")
    [node] = [edge["node"] for edge in events["events"]["edges"]]
    assert (node["type"], node["email"], node["messageId"]) == (
        "OPENED",
        "jane+x@example.com",
        "77",
    )
    assert node["occurredAt"].startswith("2015-01-28T09:55:00")

    again = (await gql(api, REPLAY, id=kept["id"]))["replayRejectedPayload"]
    assert (again["stored"], again["duplicates"]) == (0, 1)


async def test_malformed_json_keeps_its_bytes_and_its_reason(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    async with gateway.client() as client:
        await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content='{"event": "delivered", "subject": "Grüße"'.encode(),
            headers={"content-type": "application/json"},
        )
    [kept] = (await gql(api, PAYLOADS))["rejectedPayloads"]
    assert kept["body"] == '{"event": "delivered", "subject": "Grüße"'
    assert kept["contentType"] == "application/json"
    assert (kept["index"], kept["size"], kept["truncated"]) == (None, 43, False)
    result = (await gql(api, REPLAY, id=kept["id"]))["replayRejectedPayload"]
    assert result["stored"] == 0 and "not valid JSON" in result["error"]


async def test_another_account_sees_and_replays_nothing(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    await refused_open(gateway, account)
    [kept] = (await gql(api, PAYLOADS))["rejectedPayloads"]
    other = await gateway.new_account()
    async with gateway.client(other.api_key) as stranger:
        assert (await gql(stranger, PAYLOADS))["rejectedPayloads"] == []
        assert (await gql(stranger, REPLAY, id=kept["id"]))["replayRejectedPayload"] is None


async def test_paging_and_bad_arguments_name_the_field(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await refused_open(gateway, account)
    newest_first = (await gql(api, "{ rejectedPayloads(first: 2) { id } }"))["rejectedPayloads"]
    assert len(newest_first) == 2 and int(newest_first[0]["id"]) > int(newest_first[1]["id"])
    rest = await gql(
        api, "query($b: ID) { rejectedPayloads(before: $b) { id } }", b=newest_first[1]["id"]
    )
    assert len(rest["rejectedPayloads"]) == 1
    [error] = await gql_errors(api, "{ rejectedPayloads(first: -1) { id } }")
    assert error["extensions"]["field"] == "first"
    [error] = await gql_errors(api, 'mutation { replayRejectedPayload(id: "x") { stored } }')
    assert error["extensions"]["field"] == "id"


async def test_a_refused_event_is_replayed_alone(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    """A batch's refused event is kept as its own item: its replay reads that event
    only, not the batch's good events again."""
    bad = brevo_event(event="opened", template_id=[22])
    await ingest_brevo(gateway, account, brevo_event(event="delivered"), bad)
    [kept] = (await gql(api, PAYLOADS))["rejectedPayloads"]
    assert (kept["index"], json.loads(kept["body"])) == (1, bad)
    result = (await gql(api, REPLAY, id=kept["id"]))["replayRejectedPayload"]
    assert (result["stored"], result["duplicates"]) == (0, 0)
    assert "template_id" in result["error"]
    assert result["payload"]["replayedAt"] is None


async def test_an_unknown_jangomail_event_is_not_stored_by_a_replay(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    query = urlencode({"EmailAddress": "a@example.com", "EventDateTime": "1/28/2015 9:55:00 AM"})
    async with gateway.client() as client:
        await client.get(f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/x?{query}")
    [kept] = (await gql(api, PAYLOADS))["rejectedPayloads"]
    result = (await gql(api, REPLAY, id=kept["id"]))["replayRejectedPayload"]
    assert result["stored"] == 0 and result["error"].startswith("unknown JangoMail event 'x'")


async def test_a_body_kept_in_part_is_not_replayed(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    sent = b"[" + b" " * gateway.settings.max_body_bytes + b"]"
    async with gateway.client() as client:
        await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=sent,
            headers={"content-type": "application/json"},
        )
    [kept] = (await gql(api, PAYLOADS))["rejectedPayloads"]
    assert (kept["status"], kept["size"], kept["truncated"]) == (413, len(sent), True)
    assert len(kept["body"]) == KEPT_PREFIX_BYTES
    result = (await gql(api, REPLAY, id=kept["id"]))["replayRejectedPayload"]
    assert (
        result["error"] == f"only the first {KEPT_PREFIX_BYTES} of its {len(sent)} bytes were kept"
    )


async def test_a_reason_quoting_a_nul_or_a_lone_surrogate_is_kept_escaped(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    """A reason may quote what was sent; neither database nor JSON holds these two."""
    sources = await gateway.services.accounts.list_sources(account.account_id)
    call = IngestCall(account.account_id, sources[0].id, Provider.BREVO, "POST", None, "", "")
    await gateway.services.rejections.keep(
        call, [Refusal(422, "event[0]: field 'a\x00\ud800' is not text", b"{}", 0)]
    )
    [kept] = (await gql(api, PAYLOADS))["rejectedPayloads"]
    assert kept["reason"] == "event[0]: field 'a\\x00\\ud800' is not text"

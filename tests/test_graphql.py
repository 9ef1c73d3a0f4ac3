"""GraphQL: every filter of events(where:), keyset pages, message timelines, sources,
authentication and limits — over both databases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.support import brevo_event, gql, gql_errors, ingest_brevo

ROOT = Path(__file__).resolve().parent.parent


async def found(
    api: httpx.AsyncClient, where: dict[str, Any], first: int = 100
) -> list[dict[str, Any]]:
    data = await gql(
        api,
        "query($w: EventFilter, $f: Int) { events(where: $w, first: $f) "
        "{ edges { node { email providerEvent tags template occurredAt } } } }",
        w=where,
        f=first,
    )
    return [edge["node"] for edge in data["events"]["edges"]]


@pytest.fixture
async def traffic(gateway: Gateway, account: CreatedAccount) -> None:
    await ingest_brevo(
        gateway,
        account,
        *[
            brevo_event(
                event="request",
                email="Ann@Example.com",
                **{"message-id": "<m1@x>"},
                tags=["a", "b"],
                ts_event=1763600000,
            ),
            brevo_event(
                event="delivered",
                email="ann@example.com",
                **{"message-id": "m1@x"},
                tags=["a"],
                ts_event=1763600100,
            ),
            brevo_event(
                event="opened",
                email="bob@example.com",
                **{"message-id": "<m2@x>"},
                tags=["b", "c"],
                template_id=7,
                ts_event=1763700000,
            ),
            brevo_event(
                event="click",
                email="bob@example.com",
                **{"message-id": "<m2@x>"},
                tags=["a", "b", "c"],
                template_id=7,
                link="https://x",
                ts_event=1763800000,
            ),
        ],
    )


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({}, ["click", "opened", "delivered", "request"]),
        ({"messageId": "m1@x"}, ["delivered", "request"]),
        ({"messageId": "<m1@x>"}, ["delivered", "request"]),
        ({"email": "ANN@example.com"}, ["delivered", "request"]),
        ({"template": "7"}, ["click", "opened"]),
        ({"tags": ["a"]}, ["click", "delivered", "request"]),
        ({"tags": ["a", "b"]}, ["click", "request"]),
        ({"tags": ["a", "c"]}, ["click"]),
        ({"tags": ["a", "nowhere"]}, []),
        ({"types": ["OPENED", "CLICKED"]}, ["click", "opened"]),
        ({"providers": ["JANGOMAIL"]}, []),
        ({"providers": ["BREVO"], "email": "bob@example.com"}, ["click", "opened"]),
        ({"start": "2025-11-21T01:00:00Z"}, ["click", "opened"]),
        (
            {"start": "2025-11-20T00:53:20Z", "end": "2025-11-21T04:40:00Z"},
            ["delivered", "request"],
        ),
        ({"end": "2025-11-20T00:53:20Z"}, []),
        ({"tags": ["b"], "email": "bob@example.com", "types": ["CLICKED"]}, ["click"]),
    ],
)
async def test_events_filter(
    api: httpx.AsyncClient, traffic: None, where: dict[str, Any], expected: list[str]
) -> None:
    assert [node["providerEvent"] for node in await found(api, where)] == expected


async def test_pages_follow_cursors_without_gaps_or_repeats(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    await ingest_brevo(
        gateway, account, *[brevo_event(email=f"p{i}@example.com") for i in range(25)]
    )
    seen: list[str] = []
    after = None
    while True:
        data = await gql(
            api,
            "query($a: String) { events(first: 10, after: $a) { edges { cursor node { email } } "
            "pageInfo { hasNextPage endCursor } } }",
            a=after,
        )
        seen += [edge["node"]["email"] for edge in data["events"]["edges"]]
        if not data["events"]["pageInfo"]["hasNextPage"]:
            break
        after = data["events"]["pageInfo"]["endCursor"]
    assert seen == [f"p{i}@example.com" for i in reversed(range(25))]


async def test_message_state_is_not_undone_by_a_late_request(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    await ingest_brevo(gateway, account, brevo_event(event="delivered", ts_event=1763600100))
    await ingest_brevo(gateway, account, brevo_event(event="request", ts_event=1763600000))
    data = await gql(
        api,
        'query { message(messageId: "<201798300811.5787683@relay.example.com>") '
        "{ messageId state events { type } } }",
    )
    assert data["message"]["state"] == "DELIVERED"
    assert [event["type"] for event in data["message"]["events"]] == ["QUEUED", "DELIVERED"]


async def test_unknown_message_is_null(api: httpx.AsyncClient) -> None:
    assert (await gql(api, 'query { message(messageId: "nope") { state } }'))["message"] is None


async def test_graphql_without_key_is_401(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.post("/graphql", json={"query": "{ events { edges { cursor } } }"})
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]


async def test_graphql_with_wrong_key_is_401(gateway: Gateway) -> None:
    async with gateway.client("egw_not-a-key") as client:
        response = await client.post("/graphql", json={"query": "{ events { edges { cursor } } }"})
    assert response.status_code == 401


async def test_graphiql_page_is_served(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_bad_cursor_error_names_the_field(api: httpx.AsyncClient) -> None:
    [error] = await gql_errors(api, 'query { events(after: "zzz") { edges { cursor } } }')
    assert error["message"].startswith("after:")
    assert error["extensions"]["field"] == "after"


async def test_page_size_over_the_limit_names_first(api: httpx.AsyncClient) -> None:
    [error] = await gql_errors(api, "query { events(first: 100000) { edges { cursor } } }")
    assert error["extensions"]["field"] == "first"


async def test_unknown_field_error_names_it(api: httpx.AsyncClient) -> None:
    [error] = await gql_errors(api, "query { events { edges { node { nonsense } } } }")
    assert "nonsense" in error["message"]


async def test_deep_query_is_refused(api: httpx.AsyncClient) -> None:
    deep = '{ message(messageId: "m") { events { id } ' + "".join(
        f'a{i}: message(messageId: "m") {{ ' for i in range(15)
    )
    errors = await gql_errors(api, "query " + deep + "state " + "} " * 16 + "}")
    assert any("depth" in error["message"] for error in errors)


async def test_too_many_aliases_are_refused(api: httpx.AsyncClient) -> None:
    aliases = " ".join(f'm{i}: message(messageId: "m") {{ state }}' for i in range(40))
    errors = await gql_errors(api, "query { " + aliases + " }")
    assert any("aliases" in error["message"].lower() for error in errors)


SOURCE_FIELDS = "id provider name timezone parameters { field name }"


async def test_ingest_source_lifecycle(gateway: Gateway, api: httpx.AsyncClient) -> None:
    created = await gql(
        api,
        "mutation($i: CreateIngestSourceInput!) { createIngestSource(input: $i) "
        f"{{ token source {{ {SOURCE_FIELDS} }} }} }}",
        i={
            "provider": "JANGOMAIL",
            "name": "shop",
            "timezone": "America/New_York",
            "parameters": [
                {"field": "email", "name": "addr"},
                {"field": "OpenDateTime", "name": "when"},
            ],
        },
    )
    token = created["createIngestSource"]["token"]
    source = created["createIngestSource"]["source"]
    assert {p["field"]: p["name"] for p in source["parameters"]} == {
        "email": "addr",
        "occurredAt": "when",
    }
    async with gateway.client() as client:
        response = await client.get(
            f"/ingest/jangomail/{token}/open?addr=x@example.com&when=1/28/2015+9:55:00+AM"
        )
    assert response.status_code == 200, response.text
    [node] = [
        e["node"]
        for e in (await gql(api, "{ events { edges { node { email occurredAt } } } }"))["events"][
            "edges"
        ]
    ]
    assert node == {"email": "x@example.com", "occurredAt": "2015-01-28T14:55:00+00:00"}

    updated = await gql(
        api,
        'mutation($id: ID!) { updateIngestSource(id: $id, input: {timezone: "UTC"}) { timezone } }',
        id=source["id"],
    )
    assert updated["updateIngestSource"]["timezone"] == "UTC"
    listed = await gql(api, "{ ingestSources { name } }")
    assert "shop" in [s["name"] for s in listed["ingestSources"]]
    assert (await gql(api, "mutation($id: ID!) { deleteIngestSource(id: $id) }", id=source["id"]))[
        "deleteIngestSource"
    ]
    async with gateway.client() as client:
        gone = await client.get(
            f"/ingest/jangomail/{token}/open?addr=x@example.com&when=1/28/2015+9:55:00+AM"
        )
    assert gone.status_code == 404


async def test_ingest_source_bad_timezone_names_the_field(api: httpx.AsyncClient) -> None:
    [error] = await gql_errors(
        api,
        'mutation { createIngestSource(input: {provider: JANGOMAIL, name: "x", timezone: "Mars/Base"}) { token } }',
    )
    assert error["extensions"]["field"] == "input.timezone"


async def test_ingest_source_unknown_parameter_names_the_field(api: httpx.AsyncClient) -> None:
    [error] = await gql_errors(
        api,
        'mutation { createIngestSource(input: {provider: JANGOMAIL, name: "x", '
        'parameters: [{field: "shoeSize", name: "s"}]}) { token } }',
    )
    assert error["extensions"]["field"] == "input.parameters"
    assert "shoeSize" in error["message"]


async def test_another_account_cannot_touch_a_source(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    mine = await gql(api, "{ ingestSources { id } }")
    other = await gateway.new_account()
    async with gateway.client(other.api_key) as client:
        result = await gql(
            client,
            "mutation($id: ID!) { deleteIngestSource(id: $id) }",
            id=mine["ingestSources"][0]["id"],
        )
    assert result["deleteIngestSource"] is False


def test_schema_file_equals_exported_schema() -> None:
    exported = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "export-schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert (ROOT / "schema.graphql").read_text() == exported, (
        "run: gateway export-schema > schema.graphql"
    )

"""A Brevo ingest source may require HTTP Basic credentials (Brevo sends them from the
user:password@ part of the web hook URL). Without them, or with wrong ones, a request
is 401 and nothing is stored; the password is kept only as a slow salted hash."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.api.responses import basic_credentials
from gateway.services.accounts import hash_password, password_matches
from tests.conftest import Gateway
from tests.support import body, brevo_event, gql, gql_errors

PASSWORD = "correct horse battery"
SOURCE = "source { id name basicAuthUsername }"


async def brevo_source(api: httpx.AsyncClient, **basic_auth: Any) -> tuple[str, dict[str, Any]]:
    created = await gql(
        api,
        "mutation($i: CreateIngestSourceInput!) { createIngestSource(input: $i) "
        f"{{ token {SOURCE} }} }}",
        i={"provider": "BREVO", "name": "brevo-auth", "basicAuth": basic_auth or None},
    )
    return created["createIngestSource"]["token"], created["createIngestSource"]["source"]


async def post(gateway: Gateway, token: str, auth: Any, **event: Any) -> httpx.Response:
    async with gateway.client() as client:
        return await client.post(
            f"/ingest/brevo/{token}",
            content=body(brevo_event(**event)),
            headers={"content-type": "application/json"},
            auth=auth,
        )


async def stored_emails(api: httpx.AsyncClient) -> list[str]:
    data = await gql(api, "{ events(first: 100) { edges { node { email } } } }")
    return sorted(edge["node"]["email"] for edge in data["events"]["edges"])


async def test_a_source_with_credentials_takes_only_requests_that_carry_them(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token, source = await brevo_source(api, username="brevo", password=PASSWORD)
    assert source["basicAuthUsername"] == "brevo"

    missing = await post(gateway, token, None, email="none@example.com")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic ")
    assert "Basic credentials" in missing.json()["error"]
    wrong = await post(gateway, token, ("brevo", "not the password"), email="wrong@example.com")
    assert wrong.status_code == 401
    other_user = await post(gateway, token, ("someone", PASSWORD), email="user@example.com")
    assert other_user.status_code == 401

    for _ in range(2):  # the second is answered from the verification cache
        right = await post(gateway, token, ("brevo", PASSWORD), email="right@example.com")
        assert right.status_code == 200, right.text
    assert await stored_emails(api) == ["right@example.com"]


async def test_credentials_can_be_replaced_and_removed(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token, source = await brevo_source(api, username="brevo", password=PASSWORD)
    update = (
        "mutation($id: ID!, $i: UpdateIngestSourceInput!) "
        "{ updateIngestSource(id: $id, input: $i) { basicAuthUsername } }"
    )
    replaced = await gql(
        api, update, id=source["id"], i={"basicAuth": {"username": "b2", "password": "x" * 12}}
    )
    assert replaced["updateIngestSource"]["basicAuthUsername"] == "b2"
    assert (
        await post(gateway, token, ("brevo", PASSWORD), email="a@example.com")
    ).status_code == 401
    assert (await post(gateway, token, ("b2", "x" * 12), email="b@example.com")).status_code == 200

    renamed = await gql(api, update, id=source["id"], i={"name": "renamed"})
    assert renamed["updateIngestSource"]["basicAuthUsername"] == "b2"  # kept

    removed = await gql(api, update, id=source["id"], i={"removeBasicAuth": True})
    assert removed["updateIngestSource"]["basicAuthUsername"] is None
    assert (await post(gateway, token, None, email="c@example.com")).status_code == 200
    assert await stored_emails(api) == ["b@example.com", "c@example.com"]


async def test_bad_credentials_input_names_the_field(api: httpx.AsyncClient) -> None:
    create = "mutation($i: CreateIngestSourceInput!) { createIngestSource(input: $i) { token } }"
    cases = [
        (
            {"provider": "JANGOMAIL", "name": "j"},
            {"username": "u", "password": PASSWORD},
            "input.basicAuth",
        ),
        (
            {"provider": "BREVO", "name": "b"},
            {"username": "u", "password": "short"},
            "input.basicAuth.password",
        ),
        (
            {"provider": "BREVO", "name": "b"},
            {"username": "a:b", "password": PASSWORD},
            "input.basicAuth.username",
        ),
    ]
    for source, credentials, field in cases:
        [error] = await gql_errors(api, create, i={**source, "basicAuth": credentials})
        assert error["extensions"]["field"] == field, error


async def test_a_source_without_credentials_ignores_an_authorization_header(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token, source = await brevo_source(api)
    assert source["basicAuthUsername"] is None
    answer = await post(gateway, token, ("any", "thing"), email="open@example.com")
    assert answer.status_code == 200


def test_password_hashes_are_salted_and_verified() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$")
    assert PASSWORD not in first
    assert password_matches(PASSWORD, first) and password_matches(PASSWORD, second)
    assert not password_matches(PASSWORD + "!", first)
    assert not password_matches(PASSWORD, "not-a-hash")


def test_basic_credentials_parsing() -> None:
    assert basic_credentials("Basic YnJldm86cDpx") == ("brevo", "p:q")
    assert basic_credentials("basic YnJldm86") == ("brevo", "")
    assert basic_credentials("Bearer YnJldm86cDpx") is None
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Basic YnJldm8=") is None  # no colon
    assert basic_credentials(None) is None

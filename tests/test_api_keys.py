"""API keys rotate: another key is created (shown once), the old one is revoked and
stops working; the last key stays; nothing crosses accounts."""

from __future__ import annotations

import httpx

from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.support import gql, gql_errors

KEYS = "{ apiKeys { id prefix createdAt } }"
CREATE = "mutation { createApiKey { key apiKey { id prefix } } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) }"


async def test_a_key_is_rotated(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    [first] = (await gql(api, KEYS))["apiKeys"]
    assert account.api_key.startswith(first["prefix"])
    created = (await gql(api, CREATE))["createApiKey"]
    assert created["key"].startswith(created["apiKey"]["prefix"])
    listed = (await gql(api, KEYS))["apiKeys"]
    assert [k["id"] for k in listed] == [first["id"], created["apiKey"]["id"]]
    assert created["key"] not in str(listed)  # never shown again

    async with gateway.client(created["key"]) as new:
        assert (await gql(new, REVOKE, id=first["id"]))["revokeApiKey"] is True
        assert [k["id"] for k in (await gql(new, KEYS))["apiKeys"]] == [created["apiKey"]["id"]]
        # The last key stays: without one the account could never be reached again.
        [error] = await gql_errors(new, REVOKE, id=created["apiKey"]["id"])
        assert error["extensions"]["field"] == "id"
    old = await api.post("/graphql", json={"query": KEYS})
    assert old.status_code == 401


async def test_another_account_cannot_see_or_revoke_keys(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    [mine] = (await gql(api, KEYS))["apiKeys"]
    await gql(api, CREATE)
    other = await gateway.new_account()
    async with gateway.client(other.api_key) as stranger:
        assert mine["id"] not in [k["id"] for k in (await gql(stranger, KEYS))["apiKeys"]]
        assert (await gql(stranger, REVOKE, id=mine["id"]))["revokeApiKey"] is False
    assert len((await gql(api, KEYS))["apiKeys"]) == 2

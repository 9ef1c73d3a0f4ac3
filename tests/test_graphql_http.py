"""/graphql over HTTP with hostile bodies: a clear 4xx, never a 5xx, and the kept-alive
connection stays usable."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.strategies import json_values
from tests.support import gql


async def post(
    api: httpx.AsyncClient, content: bytes, content_type: str = "application/json"
) -> httpx.Response:
    return await api.post("/graphql", content=content, headers={"content-type": content_type})


async def test_a_body_of_invalid_utf8_is_400(api: httpx.AsyncClient) -> None:
    response = await post(api, b'{"query": "{ __typename \xff }"}')
    assert response.status_code == 400
    assert "UTF-8" in response.text
    await gql(api, "{ __typename }")  # the same connection still answers


async def test_a_body_that_is_not_json_is_400(api: httpx.AsyncClient) -> None:
    for content in (b"{", b"nope", b"[1, 2]", b'"a string"', b"\xef\xbb\xbf{}", b""):
        response = await post(api, content)
        assert response.status_code == 400, (content, response.status_code, response.text)
    await gql(api, "{ __typename }")


async def test_a_body_over_the_limit_is_413(gateway: Gateway, api: httpx.AsyncClient) -> None:
    limit = gateway.settings.max_graphql_body_bytes
    padding = " " * limit
    response = await post(api, f'{{"query": "{{ __typename }}"{padding}}}'.encode())
    assert response.status_code == 413
    assert str(limit) in response.json()["error"]


async def test_a_streamed_body_over_the_limit_is_413(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """Without a Content-Length the body is counted as it streams in, never held whole."""
    chunk = b" " * 65_536

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"query": "{ __typename }"'
        for _ in range(gateway.settings.max_graphql_body_bytes // len(chunk) + 2):
            yield chunk
        yield b"}"

    response = await api.post(
        "/graphql", content=stream(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_a_body_within_the_limit_is_answered(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    padding = " " * (gateway.settings.max_graphql_body_bytes // 2)
    response = await post(api, f'{{"query": "{{ __typename }}"{padding}}}'.encode())
    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query"}


async def test_get_with_variables_that_are_not_an_object_is_400(api: httpx.AsyncClient) -> None:
    for variables in ("[", '"x"', "1e999", "[[[[" * 300 + "]]]]" * 300):
        response = await api.get(
            "/graphql", params={"query": "{ __typename }", "variables": variables}
        )
        assert response.status_code == 400, (variables[:10], response.text)
    response = await api.get("/graphql?query=%7B__typename%7D&variables=%FF%FE")
    assert response.status_code == 400


async def test_a_deeply_nested_body_is_400(api: httpx.AsyncClient) -> None:
    variables = "[" * 5000 + "]" * 5000
    response = await post(
        api, f'{{"query": "{{ __typename }}", "variables": {variables}}}'.encode()
    )
    assert response.status_code == 400


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    content=st.binary(max_size=200)
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.fixed_dictionaries({"query": st.text() | json_values, "variables": json_values}).map(
        lambda value: json.dumps(value).encode()
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data", ""]),
)
async def test_any_body_is_answered_below_500(
    api: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await post(api, content, content_type)
    assert response.status_code < 500, response.text

"""Clear answers to client mistakes on /graphql, and quiet logs about them: a subscription
over HTTP, malformed websocket frames, invalid documents."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import pytest
from graphql import GraphQLError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.api.graphql.errors import GatewaySchema
from gateway.api.graphql.schema import build_schema
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, connected, ws_url


async def logged(
    caplog: pytest.LogCaptureFixture, wanted: Callable[[logging.LogRecord], bool]
) -> logging.LogRecord:
    """The first captured record that is ``wanted``, waiting for it (a server logs
    after it has answered)."""
    deadline = time.monotonic() + 10
    while True:
        for record in caplog.records:
            if wanted(record):
                return record
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        await asyncio.sleep(0.01)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """The close code and reason, once the server has closed the connection."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code, ws.close_reason


async def test_a_subscription_over_http_is_answered_400_naming_the_websocket_protocol(
    gateway: Gateway, account: CreatedAccount, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway.client(account.api_key) as client:
        response = await client.post("/graphql", json={"query": "subscription { events { id } }"})

    assert response.status_code == 400
    assert "websocket" in response.text
    assert "graphql-transport-ws" in response.text
    no_tracebacks(caplog)


MALFORMED = {
    "an array": "[1]",
    "null": "null",
    "not JSON": "{not json",
    "a string": '"subscribe"',
    "a payload that is not an object": '{"type": "ping", "payload": 7}',
    "a subscribe payload that is not an object": '{"id": "1", "type": "subscribe", "payload": [1]}',
    "a query that is not a string": '{"id": "1", "type": "subscribe", "payload": {"query": 5}}',
    "an unknown type": '{"type": "bogus"}',
    "no type": '{"id": "1"}',
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_frame_closes_graphql_transport_ws_with_4400(
    gateway: Gateway, account: CreatedAccount, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    caplog.set_level(logging.INFO)
    async with connected(gateway, account.api_key, TRANSPORT_WS) as ws:
        await ws.send(frame)
        code, reason = await closed_with(ws)

    assert code == 4400
    assert reason
    await logged(caplog, lambda r: r.name == "gateway.api.graphql.frames")
    no_tracebacks(caplog)


async def test_a_malformed_frame_before_connection_init_closes_with_4400(
    gateway: Gateway,
) -> None:
    async with connect(ws_url(gateway), subprotocols=[TRANSPORT_WS]) as ws:
        await ws.send("null")
        code, _reason = await closed_with(ws)

    assert code == 4400


async def test_a_binary_frame_closes_graphql_transport_ws_with_4400(
    gateway: Gateway, account: CreatedAccount
) -> None:
    async with connected(gateway, account.api_key, TRANSPORT_WS) as ws:
        await ws.send(b'{"type": "ping"}')
        code, _reason = await closed_with(ws)

    assert code == 4400


async def test_a_malformed_frame_on_legacy_graphql_ws_is_explained_then_closed(
    gateway: Gateway, account: CreatedAccount, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected(gateway, account.api_key, LEGACY_WS) as ws:
        await ws.send('{"id": "1", "type": "start", "payload": 7}')
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] == "ka":
            pass
        code, _reason = await closed_with(ws)

    assert message["type"] == "connection_error"
    assert "payload" in message["payload"]["message"]
    assert code == 4400
    no_tracebacks(caplog)


async def test_a_well_formed_connection_still_works_after_the_checks(
    gateway: Gateway, account: CreatedAccount
) -> None:
    async with connected(gateway, account.api_key, TRANSPORT_WS) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))

    assert answer == {"type": "pong"}


async def test_an_invalid_document_is_logged_at_info_on_one_line(
    gateway: Gateway, account: CreatedAccount, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway.client(account.api_key) as client:
        await client.post("/graphql", json={"query": "{ noSuchField }"})

    record = await logged(caplog, lambda r: "noSuchField" in r.getMessage())
    assert record.levelno == logging.INFO
    assert "\n" not in record.getMessage()
    assert record.exc_info is None
    no_tracebacks(caplog)


async def test_refused_input_is_logged_at_info_naming_the_field(
    gateway: Gateway, account: CreatedAccount, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway.client(account.api_key) as client:
        await client.post(
            "/graphql", json={"query": "{ events(first: -1) { pageInfo { hasNextPage } } }"}
        )

    record = await logged(caplog, lambda r: "first:" in r.getMessage())
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    no_tracebacks(caplog)


def test_a_failure_of_our_own_code_is_logged_as_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = build_schema()
    assert isinstance(schema, GatewaySchema)
    try:
        raise RuntimeError("database went away")
    except RuntimeError as failure:
        error = GraphQLError("database went away", original_error=failure, path=["events"])

    schema.process_errors([error])

    (record,) = [r for r in caplog.records if r.name == "gateway.graphql"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None

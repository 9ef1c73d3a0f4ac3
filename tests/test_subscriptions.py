"""Live events over websocket: both protocols, authentication, tenant isolation, filters,
limits, keep-alive, back-pressure, resume, and two replicas on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio
from starlette.responses import Response
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from gateway.api.graphql import subscriptions
from gateway.domain.events import EventType, NormalizedEvent, Provider, RejectReason, Severity
from gateway.domain.query import StoredEvent
from gateway.live import GAP, Subscriber, SubscriberOverflow
from gateway.live.codec import decode_event, encode_event
from gateway.services.accounts import CreatedAccount
from gateway.settings import async_database_url
from gateway.storage.db import make_engine, migrate
from tests.conftest import Gateway, serve, settings_for
from tests.receiver import Receiver
from tests.support import brevo_event, ingest_brevo
from tests.test_webhooks import create_webhook

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
LEGACY_WS = Subprotocol("graphql-ws")

EVENTS = """
subscription($where: EventFilter, $after: ID) {
  events(where: $where, after: $after) {
    id type email providerEvent
    ... on DeliveryProblemEvent { severity }
  }
}
"""

_unique = itertools.count(1)


# Clients


def ws_url(gateway: Gateway) -> str:
    return gateway.base_url.replace("http://", "ws://") + "/graphql"


async def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next protocol message that is not a keep-alive."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] not in {"ka", "ping", "pong"}:
            return message


@contextlib.asynccontextmanager
async def connected(
    gateway: Gateway,
    api_key: str | None,
    protocol: Subprotocol = TRANSPORT_WS,
    *,
    key_name: str = "authorization",
) -> AsyncIterator[ClientConnection]:
    """A websocket on which connection_init (with ``api_key``) was acknowledged."""
    async with connect(ws_url(gateway), subprotocols=[protocol]) as ws:
        payload = {key_name: f"Bearer {api_key}"} if api_key else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert (await receive(ws))["type"] == "connection_ack"
        yield ws


async def start(
    ws: ClientConnection, operation_id: str, query: str = EVENTS, **variables: Any
) -> None:
    """Start an operation in the connection's protocol."""
    kind = "subscribe" if ws.subprotocol == TRANSPORT_WS else "start"
    payload = {"query": query, "variables": variables}
    await ws.send(json.dumps({"id": operation_id, "type": kind, "payload": payload}))


async def next_event(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The event of the next result; fails on anything else."""
    message = await receive(ws, timeout)
    assert message["type"] in {"next", "data"}, message
    assert not message["payload"].get("errors"), message
    event: dict[str, Any] = message["payload"]["data"]["events"]
    return event


async def quiet(ws: ClientConnection, seconds: float = 0.5) -> bool:
    """True if nothing but keep-alives arrives for ``seconds``."""
    try:
        message = await receive(ws, seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected message {message}")


async def subscribed(gateway: Gateway, account: CreatedAccount, count: int = 1) -> None:
    """Wait until ``count`` live subscriptions of the account are listening in
    ``gateway`` (a websocket subscription has no acknowledgement of its own)."""
    deadline = time.monotonic() + 10
    while gateway.services.live.subscriber_count(account.account_id) < count:
        assert time.monotonic() < deadline, "the subscription never started"
        await asyncio.sleep(0.01)


def brevo(event: str = "delivered", **fields: Any) -> dict[str, Any]:
    """A Brevo event unlike every other one (so never a duplicate)."""
    return brevo_event(event=event, id=next(_unique), **fields)


# Both protocols


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_subscriber_receives_each_event_stored_after_it_subscribed(
    gateway: Gateway, account: CreatedAccount, protocol: Subprotocol
) -> None:
    async with connected(gateway, account.api_key, protocol) as ws:
        await start(ws, "1")
        await subscribed(gateway, account)
        ids = await ingest_brevo(gateway, account, brevo("hard_bounce"), brevo("delivered"))
        first, second = await next_event(ws), await next_event(ws)
    assert [first["id"], second["id"]] == ids
    assert first["type"] == "BOUNCED" and first["severity"] == "PERMANENT"
    assert second["type"] == "DELIVERED" and "severity" not in second


async def test_completing_a_subscription_stops_it(
    gateway: Gateway, account: CreatedAccount
) -> None:
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1")
        await subscribed(gateway, account)
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
        deadline = time.monotonic() + 5
        while gateway.services.live.subscriber_count(account.account_id):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await ingest_brevo(gateway, account, brevo())
        assert await quiet(ws)


async def test_queries_also_run_over_the_websocket(
    gateway: Gateway, account: CreatedAccount
) -> None:
    [stored_id] = await ingest_brevo(gateway, account, brevo())
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "q", "{ events(first: 1) { edges { node { id } } } }")
        message = await receive(ws)
    assert message["payload"]["data"]["events"]["edges"] == [{"node": {"id": stored_id}}]


# Authentication


async def test_graphql_transport_ws_refuses_a_connection_without_a_key(
    gateway: Gateway,
) -> None:
    async with connect(ws_url(gateway), subprotocols=[TRANSPORT_WS]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with pytest.raises(ConnectionClosed):
            await receive(ws)
    assert ws.close_code == 4403


async def test_graphql_transport_ws_refuses_a_wrong_key(gateway: Gateway) -> None:
    async with connect(ws_url(gateway), subprotocols=[TRANSPORT_WS]) as ws:
        payload = {"authorization": "Bearer egw_not-a-key"}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed):
            await receive(ws)
    assert ws.close_code == 4403


async def test_graphql_transport_ws_refuses_subscribe_before_connection_init(
    gateway: Gateway,
) -> None:
    async with connect(ws_url(gateway), subprotocols=[TRANSPORT_WS]) as ws:
        await start(ws, "1")
        with pytest.raises(ConnectionClosed):
            await receive(ws)
    assert ws.close_code == 4401


async def test_legacy_graphql_ws_refuses_a_wrong_key_and_serves_nothing(
    gateway: Gateway, account: CreatedAccount
) -> None:
    async with connect(ws_url(gateway), subprotocols=[LEGACY_WS]) as ws:
        payload = {"authorization": "Bearer egw_not-a-key"}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        refused = await receive(ws)
        assert refused["type"] == "connection_error"
        assert "API key" in refused["payload"]["message"]
        # A client that ignores the refusal and subscribes anyway gets nothing.
        with contextlib.suppress(ConnectionClosed):
            await start(ws, "1")
        with pytest.raises(ConnectionClosed):
            await receive(ws)
    assert gateway.services.live.subscriber_count(account.account_id) == 0


async def test_legacy_graphql_ws_refuses_start_without_connection_init(
    gateway: Gateway, account: CreatedAccount
) -> None:
    """Strawberry once ran a graphql-ws `start` sent before `connection_init`."""
    async with connect(ws_url(gateway), subprotocols=[LEGACY_WS]) as ws:
        await start(ws, "1")
        with pytest.raises(ConnectionClosed):
            await receive(ws)
        await ingest_brevo(gateway, account, brevo())
    assert ws.close_code == 4401
    assert gateway.services.live.subscriber_count(account.account_id) == 0


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_capitalized_authorization_is_accepted_as_graphiql_sends_it(
    gateway: Gateway, account: CreatedAccount, protocol: Subprotocol
) -> None:
    async with connected(gateway, account.api_key, protocol, key_name="Authorization") as ws:
        await start(ws, "1")
        await subscribed(gateway, account)
        ids = await ingest_brevo(gateway, account, brevo())
        assert (await next_event(ws))["id"] == ids[0]


# What a subscriber sees


async def test_subscriber_sees_only_its_own_accounts_events(
    gateway: Gateway, account: CreatedAccount
) -> None:
    other = await gateway.new_account()
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1")
        await subscribed(gateway, account)
        await ingest_brevo(gateway, other, brevo())
        mine = await ingest_brevo(gateway, account, brevo())
        assert (await next_event(ws))["id"] == mine[0]
        assert await quiet(ws)


async def test_where_filters_live_events_as_it_filters_queries(
    gateway: Gateway, account: CreatedAccount
) -> None:
    where = {"types": ["BOUNCED"], "email": "ANN@example.com"}
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1", where=where)
        await subscribed(gateway, account)
        ids = await ingest_brevo(
            gateway,
            account,
            brevo("delivered", email="ann@example.com"),
            brevo("hard_bounce", email="bob@example.com"),
            brevo("hard_bounce", email="Ann@Example.com"),
        )
        assert (await next_event(ws))["id"] == ids[2]
        assert await quiet(ws)


async def test_a_deduplicated_retry_is_not_sent_again(
    gateway: Gateway, account: CreatedAccount
) -> None:
    event = brevo()
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1")
        await subscribed(gateway, account)
        first = await ingest_brevo(gateway, account, event)
        assert await ingest_brevo(gateway, account, event) == []
        assert (await next_event(ws))["id"] == first[0]
        assert await quiet(ws)


async def test_two_subscriptions_with_the_same_selection_both_receive_every_event(
    gateway: Gateway, account: CreatedAccount
) -> None:
    async with (
        connected(gateway, account.api_key) as one,
        connected(gateway, account.api_key, LEGACY_WS) as two,
    ):
        await start(one, "a")
        await start(two, "b")
        await start(two, "c", "subscription { events { id email } }")
        await subscribed(gateway, account, 3)
        ids = await ingest_brevo(gateway, account, brevo(), brevo())
        assert [(await next_event(one))["id"] for _ in ids] == ids
        received: dict[str, list[dict[str, Any]]] = {"b": [], "c": []}
        for _ in range(4):
            message = await receive(two)
            received[message["id"]].append(message["payload"]["data"]["events"])
    assert [event["id"] for event in received["b"]] == ids
    assert received["c"] == [{"id": stored_id, "email": "jane@example.com"} for stored_id in ids]


async def test_subscriptions_per_connection_are_limited(
    gateway: Gateway, account: CreatedAccount
) -> None:
    limit = gateway.settings.ws_max_subscriptions
    async with connected(gateway, account.api_key) as ws:
        for number in range(limit):
            await start(ws, str(number))
        await subscribed(gateway, account, limit)
        await start(ws, "one too many")
        refused = await receive(ws)
    assert refused["id"] == "one too many"
    assert refused["type"] == "error"
    assert refused["payload"][0]["message"] == "Subscription limit reached"


# Keep-alive, back-pressure, resume: gateways with settings of their own


@pytest.fixture
async def tuned(
    gateway: Gateway, tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Gateway]:
    """Another gateway, on the same kind of database, with the settings a test gives
    with ``@pytest.mark.parametrize("tuned", [{...}], indirect=True)``."""
    settings = settings_for(
        tmp_path,
        gateway.settings.redis_url or redis_url,
        gateway.settings.database_url,
        **getattr(request, "param", {}),
    )
    async with serve(settings, gateway.backend) as running:
        yield running


@pytest.mark.parametrize("tuned", [{"ws_keep_alive_seconds": 0.2}], indirect=True)
@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_quiet_connections_get_keep_alives(tuned: Gateway, protocol: Subprotocol) -> None:
    account = await tuned.new_account()
    expected = "ping" if protocol == TRANSPORT_WS else "ka"
    async with connected(tuned, account.api_key, protocol) as ws:
        seen = [json.loads(await asyncio.wait_for(ws.recv(), 2))["type"] for _ in range(2)]
    assert seen == [expected, expected]


@pytest.mark.parametrize("tuned", [{"live_queue_size": 5}], indirect=True)
async def test_a_subscriber_that_falls_behind_is_told_and_cut_off(tuned: Gateway) -> None:
    account = await tuned.new_account()
    async with connected(tuned, account.api_key) as ws:
        await start(ws, "1")
        await subscribed(tuned, account)
        # One batch of more events than the queue holds arrives at once.
        await ingest_brevo(tuned, account, *(brevo() for _ in range(6)))
        told = await receive(ws)
        assert told["type"] == "next"
        [error] = told["payload"]["errors"]
        assert error["extensions"]["code"] == "SUBSCRIBER_OVERFLOW"
        assert "subscribe again" not in error["message"]  # it had received nothing
        assert (await receive(ws))["type"] == "complete"
    assert tuned.services.live.subscriber_count(account.account_id) == 0
    assert tuned.services.metrics.value("gateway_live_subscribers_dropped_total") == 1


@pytest.mark.parametrize("tuned", [{"live_queue_size": 20}], indirect=True)
async def test_a_stuck_subscriber_neither_slows_ingest_nor_grows_memory(tuned: Gateway) -> None:
    account = await tuned.new_account()
    padding = {"padding": "x" * 100_000}  # fills socket buffers quickly (uncompressed)
    async with connect(
        ws_url(tuned), subprotocols=[TRANSPORT_WS], max_queue=1, compression=None
    ) as ws:
        auth = {"authorization": f"Bearer {account.api_key}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        assert (await receive(ws))["type"] == "connection_ack"
        await start(ws, "1", "subscription { events { id raw } }")
        await subscribed(tuned, account)
        # The client stops reading: its TCP window closes, the server's sends block,
        # the subscription's queue fills; the subscriber must be cut off.
        ws.transport.pause_reading()
        began = time.monotonic()
        for _ in range(300):
            await ingest_brevo(tuned, account, brevo(**padding))
            if not tuned.services.live.subscriber_count(account.account_id):
                break
        assert tuned.services.live.subscriber_count(account.account_id) == 0
        assert time.monotonic() - began < 30
        ws.transport.abort()  # it never reads again


async def test_resuming_with_after_sends_what_was_missed_then_live_events_once(
    gateway: Gateway, account: CreatedAccount
) -> None:
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1")
        await subscribed(gateway, account)
        [seen] = await ingest_brevo(gateway, account, brevo())
        assert (await next_event(ws))["id"] == seen
    missed = await ingest_brevo(gateway, account, brevo(), brevo("hard_bounce"))
    async with connected(gateway, account.api_key, LEGACY_WS) as ws:
        await start(ws, "1", after=seen)
        assert [(await next_event(ws))["id"] for _ in missed] == missed
        await subscribed(gateway, account)
        live = await ingest_brevo(gateway, account, brevo())
        assert (await next_event(ws))["id"] == live[0]
        assert await quiet(ws)


async def test_resume_catches_up_across_pages(gateway: Gateway, account: CreatedAccount) -> None:
    [first] = await ingest_brevo(gateway, account, brevo())
    page = gateway.settings.max_page_size
    missed = await ingest_brevo(gateway, account, *(brevo() for _ in range(page + 3)))
    async with connected(gateway, account.api_key) as ws:
        await start(
            ws, "1", "subscription($after: ID) { events(after: $after) { id } }", after=first
        )
        received = [(await next_event(ws))["id"] for _ in missed]
    assert received == missed


async def test_resume_honours_where(gateway: Gateway, account: CreatedAccount) -> None:
    [first] = await ingest_brevo(gateway, account, brevo())
    ids = await ingest_brevo(gateway, account, brevo("delivered"), brevo("hard_bounce"))
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1", after=first, where={"types": ["BOUNCED"]})
        assert (await next_event(ws))["id"] == ids[1]
        assert await quiet(ws)


async def test_events_lost_while_redis_was_away_are_read_from_the_store(
    gateway: Gateway, account: CreatedAccount, redis_url: str
) -> None:
    """Whether an event's message was published before or after the hub reconnected,
    it arrives exactly once."""
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1")
        await subscribed(gateway, account)
        [before] = await ingest_brevo(gateway, account, brevo())
        assert (await next_event(ws))["id"] == before
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.client_kill_filter(_type="pubsub")
        finally:
            await client.aclose()
        during = await ingest_brevo(gateway, account, brevo(), brevo())
        assert [(await next_event(ws))["id"] for _ in during] == during
        assert await quiet(ws)


async def test_an_unknown_after_id_is_refused(gateway: Gateway, account: CreatedAccount) -> None:
    async with connected(gateway, account.api_key) as ws:
        await start(ws, "1", after="not-an-id")
        message = await receive(ws)
    assert message["type"] == "next"
    assert message["payload"]["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# Two replicas


@pytest.fixture
async def replicas(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two gateway processes' worth of services on one PostgreSQL and one Redis."""
    engine = make_engine(async_database_url(postgres_url))
    await migrate(engine)
    await engine.dispose()
    async with (
        serve(settings_for(tmp_path / "a", redis_url, postgres_url), "postgres") as a,
        serve(settings_for(tmp_path / "b", redis_url, postgres_url), "postgres") as b,
    ):
        yield a, b


async def test_an_event_ingested_on_one_replica_reaches_subscribers_on_the_other(
    replicas: tuple[Gateway, Gateway],
) -> None:
    ingesting, serving = replicas
    account = await ingesting.new_account()
    async with (
        connected(serving, account.api_key) as there,
        connected(ingesting, account.api_key, LEGACY_WS) as here,
    ):
        await start(there, "1")
        await start(here, "1")
        await subscribed(serving, account)
        await subscribed(ingesting, account)
        ids = await ingest_brevo(ingesting, account, brevo(), brevo("hard_bounce"))
        assert [(await next_event(there))["id"] for _ in ids] == ids
        assert [(await next_event(here))["id"] for _ in ids] == ids


async def test_resume_on_another_replica(replicas: tuple[Gateway, Gateway]) -> None:
    first, second = replicas
    account = await first.new_account()
    async with connected(first, account.api_key) as ws:
        await start(ws, "1")
        await subscribed(first, account)
        [seen] = await ingest_brevo(first, account, brevo())
        assert (await next_event(ws))["id"] == seen
    missed = await ingest_brevo(first, account, brevo())
    async with connected(second, account.api_key) as ws:
        await start(ws, "1", after=seen)
        assert (await next_event(ws))["id"] == missed[0]
        await subscribed(second, account)
        live = await ingest_brevo(first, account, brevo())
        assert (await next_event(ws))["id"] == live[0]


async def test_subscribers_with_the_same_selection_share_one_execution_per_event(
    gateway: Gateway, account: CreatedAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[tuple[str, str]] = []
    execute = subscriptions.execute_selection

    async def counting(schema: Any, selection: Any, view: Any, context: Any) -> Any:
        executed.append((type(view).__name__, selection.query))
        return await execute(schema, selection, view, context)

    monkeypatch.setattr(subscriptions, "execute_selection", counting)  # a spy
    other_selection = "subscription { events { id } }"
    async with (
        connected(gateway, account.api_key) as one,
        connected(gateway, account.api_key, LEGACY_WS) as two,
        connected(gateway, account.api_key) as three,
    ):
        for ws in (one, two):
            await start(ws, "same")
        for ws in (two, three):
            await start(ws, "other", other_selection)
        await subscribed(gateway, account, 4)
        await ingest_brevo(gateway, account, brevo())
        await next_event(one)
        assert {(await receive(two))["id"] for _ in range(2)} == {"same", "other"}
        assert (await receive(three))["id"] == "other"
    assert sorted(executed) == sorted(
        [("SendingEvent", EVENTS), ("SendingEvent", other_selection)]
    )  # one per selection, for its two subscribers


# The hub's subscriber queue


async def test_a_subscriber_gets_what_it_accepts_in_order() -> None:
    subscriber: Subscriber[int] = Subscriber(
        (1, "n"), max_queue=10, accept=lambda n: n % 2 == 0, on_close=lambda _: None
    )
    subscriber.offer([1, 2, 3, 4])
    subscriber.signal_gap()
    assert [await subscriber.get() for _ in range(3)] == [2, 4, GAP]


async def test_a_subscriber_past_its_queue_is_cut_off_and_forgotten() -> None:
    forgotten: list[Subscriber[int]] = []
    subscriber: Subscriber[int] = Subscriber(
        (1, "n"), max_queue=3, accept=None, on_close=forgotten.append
    )
    subscriber.offer([1, 2])
    subscriber.offer([3, 4])
    assert len(subscriber) == 0  # dropped at once, not when the consumer wakes
    assert forgotten == [subscriber]
    with pytest.raises(SubscriberOverflow):
        await subscriber.get()
    subscriber.close()
    assert forgotten == [subscriber]  # forgotten once


# The live codec


def test_a_stored_event_round_trips_through_the_live_codec() -> None:
    at = datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)
    stored = StoredEvent(
        id=123456789,
        account_id=42,
        received_at=at,
        event=NormalizedEvent(
            type=EventType.BOUNCED,
            provider=Provider.BREVO,
            provider_event="hard_bounce",
            email="jane@example.com",
            occurred_at=at,
            raw={"event": "hard_bounce", "nested": {"list": [1, 2.5, None, True]}},
            message_id="m1@x",
            sent_at=at,
            subject="Hello",
            template="7",
            tags=("a", "b"),
            custom_id="c",
            severity=Severity.PERMANENT,
            reject_reason=RejectReason.INVALID,
            reason="550 5.1.1 no such user",
            smtp_status="5.1.1",
            position=3,
            unique=False,
            message_size=1024,
        ),
    )
    assert decode_event(orjson.loads(orjson.dumps(encode_event(stored)))) == stored


def test_the_live_codec_leaves_out_fields_that_are_not_set() -> None:
    at = datetime(2026, 11, 20, tzinfo=UTC)
    event = NormalizedEvent(
        type=EventType.OPENED,
        provider=Provider.SMTPETER,
        provider_event="open",
        email="a@b",
        occurred_at=at,
        raw={},
    )
    encoded = encode_event(StoredEvent(1, 2, at, event))
    assert set(encoded["e"]) == {
        "type",
        "provider",
        "provider_event",
        "email",
        "occurred_at",
        "raw",
    }


# Delivery attempts

DELIVERIES = (
    "subscription($w: ID) { deliveries(webhookId: $w) { webhookId number statusCode error } }"
)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_delivery_attempts_of_one_webhook_are_streamed_as_they_are_logged(
    gateway: Gateway, account: CreatedAccount, receiver: Receiver, protocol: Subprotocol
) -> None:
    failing = receiver.endpoint(lambda _r: Response("no", status_code=500))
    async with gateway.client(account.api_key) as api:
        webhook, _ = await create_webhook(api, url=failing.url, events=["DELIVERED"])
        await create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
    other = await gateway.new_account()
    async with (
        connected(gateway, account.api_key, protocol) as ws,
        connected(gateway, other.api_key, protocol) as stranger,
    ):
        await start(ws, "1", DELIVERIES, w=webhook["id"])
        await start(stranger, "1", DELIVERIES)
        await subscribed(gateway, account)
        await subscribed(gateway, other)
        await ingest_brevo(gateway, account, brevo())
        attempts = []
        for _ in range(3):  # the first call and two retries
            message = await receive(ws)
            assert message["type"] in {"next", "data"}, message
            attempts.append(message["payload"]["data"]["deliveries"])
        assert [a["number"] for a in attempts] == [1, 2, 3]
        assert {a["webhookId"] for a in attempts} == {webhook["id"]}
        assert all(a["statusCode"] == 500 and "500" in a["error"] for a in attempts)
        assert await quiet(ws)  # nothing of the other web hook
        assert await quiet(stranger)  # nothing of another account

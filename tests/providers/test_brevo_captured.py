"""Brevo payloads captured from real traffic in public projects, read and stored right.

``fixtures/brevo_captured.json`` names each payload's source (repository and path, or
URL): django-anymail's tests (live captures from 2018, where ``ts``/``ts_event`` follow
the account's time zone, 9 h off), a novu pull request (2020, ``ts_event`` a week off),
Symfony's Brevo bridge fixtures (2023 captures, ``date`` in Paris time agreeing with
``ts_epoch``) and Brevo's own unique_proxy_open example (2024, no recipient).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.domain.events import utc_from_epoch
from gateway.domain.query import message_sent_at
from gateway.providers.base import IngestRequest, SourceConfig
from gateway.providers.brevo import adapter
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.providers.storable import assert_sound
from tests.support import gql

CAPTURED: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "brevo_captured.json").read_text()
)
CASES = [
    pytest.param(case, id=f"{n}-{case['payload']['event']}") for n, case in enumerate(CAPTURED)
]


def parsed_one(payload: dict[str, Any]) -> Any:
    request = IngestRequest("POST", json.dumps(payload).encode(), "application/json")
    parsed = adapter.parse(request, SourceConfig())
    assert_sound(parsed)
    [event] = parsed.events
    return event


def test_every_captured_payload_names_its_source() -> None:
    assert len(CAPTURED) >= 10
    assert all(case["source"] for case in CAPTURED)


@pytest.mark.parametrize("case", CASES)
def test_captured_payload_is_read_with_its_own_time_and_type(case: dict[str, Any]) -> None:
    event = parsed_one(case["payload"])
    assert event.type.value == case["type"]
    assert event.occurred_at == datetime.fromisoformat(case["occurredAt"])


@pytest.mark.parametrize("case", CASES)
def test_only_the_send_event_of_a_capture_has_a_sent_time(case: dict[str, Any]) -> None:
    event = parsed_one(case["payload"])
    expected = event.occurred_at if case["payload"]["event"] == "request" else None
    assert event.sent_at == expected


def test_anymail_capture_is_read_from_ts_epoch_not_the_9_hour_off_ts() -> None:
    [request] = [case for case in CAPTURED if "test_sent_event" in case["source"]]
    event = parsed_one(request["payload"])
    assert event.occurred_at - utc_from_epoch(request["payload"]["ts"]) == timedelta(hours=9)


def test_send_event_stamped_after_the_first_event_gives_the_first_events_time() -> None:
    [request] = [case for case in CAPTURED if "test_sent_event" in case["source"]]
    # The request's clock runs 2 s behind the open's: sent no later than opened.
    opened = parsed_one({**request["payload"], "event": "opened", "ts_epoch": 1520363421000})
    sent = parsed_one(request["payload"])
    assert message_sent_at([opened, sent]) == opened.occurred_at
    assert message_sent_at([opened]) is None


@pytest.mark.parametrize("case", [case for case in CAPTURED if "symfony" in case["source"]])
def test_symfony_captures_agree_with_their_paris_date(case: dict[str, Any]) -> None:
    paris = datetime.fromisoformat(case["payload"]["date"]).replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert parsed_one(case["payload"]).occurred_at.replace(microsecond=0) == paris


def test_proxy_open_without_a_recipient_is_read_with_its_2024_fields() -> None:
    [proxy] = [case for case in CAPTURED if case["payload"]["event"] == "unique_proxy_open"]
    event = parsed_one(proxy["payload"])
    assert (event.email, event.unique, event.proxy) == ("", True, True)
    assert (event.device, event.user_agent, event.from_email) == (
        "DESKTOP",
        "Mozilla/5.0",
        "abc@sendinblue.com",
    )
    assert event.contact_id == "4816445214646337536"
    assert event.tags == ("this_tag", "tag_thos")


EVENTS = """
query { events(first: 100) { edges { node { type email messageId occurredAt sentAt } } } }
"""
MESSAGE = """
query($id: String!) { message(messageId: $id) { sentAt events { occurredAt sentAt } } }
"""


async def test_captured_batch_is_stored_with_its_times_and_no_late_sent_time(
    gateway: Gateway, account: CreatedAccount
) -> None:
    batch = [case["payload"] for case in CAPTURED]
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=json.dumps(batch).encode(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == len(CAPTURED)

    async with gateway.client(account.api_key) as api:
        edges = (await gql(api, EVENTS))["events"]["edges"]
        stored = sorted((edge["node"] for edge in edges), key=lambda node: node["occurredAt"])
        expected = sorted(
            (datetime.fromisoformat(case["occurredAt"]) for case in CAPTURED),
        )
        assert [datetime.fromisoformat(node["occurredAt"]) for node in stored] == expected
        assert "" in {node["email"] for node in stored}

        for message_id in {node["messageId"] for node in stored}:
            message = (await gql(api, MESSAGE, id=message_id))["message"]
            first = min(datetime.fromisoformat(event["occurredAt"]) for event in message["events"])
            if message["sentAt"] is not None:
                assert datetime.fromisoformat(message["sentAt"]) <= first
            # The message's sent time is carried on its whole timeline.
            assert {event["sentAt"] for event in message["events"]} == {message["sentAt"]}


async def test_message_sent_at_is_its_request_time(
    gateway: Gateway, account: CreatedAccount
) -> None:
    [request] = [case for case in CAPTURED if "test_sent_event" in case["source"]]
    opened = {**request["payload"], "event": "opened", "ts_epoch": 1520370000000}
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=json.dumps([opened, request["payload"]]).encode(),
            headers={"content-type": "application/json"},
        )
    assert response.json()["stored"] == 2
    async with gateway.client(account.api_key) as api:
        message = (await gql(api, MESSAGE, id="201803062010.27287306012@smtp-relay.mailin.fr"))[
            "message"
        ]
    assert datetime.fromisoformat(message["sentAt"]) == datetime.fromisoformat(
        request["occurredAt"]
    )

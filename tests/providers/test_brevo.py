"""Brevo transactional webhooks: parsing what Brevo posts and rendering it back.

The payloads are the examples of seeds/brevo-transactional-webhooks.txt, with the
placeholders (``xxxxx``, obfuscated addresses) replaced by real values.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.domain.events import (
    EventType,
    NormalizedEvent,
    Provider,
    RejectReason,
    Severity,
)
from gateway.providers.base import IngestRequest, PayloadError, SourceConfig
from gateway.providers.brevo import BrevoAdapter, adapter, render

TS_EVENT = 1604933654  # 2020-11-09 14:54:14 UTC
TS = 1604933619
SOURCE = SourceConfig()


def seed(event: str, /, **fields: Any) -> dict[str, Any]:
    """A Brevo event shaped like the seed document's examples."""
    payload: dict[str, Any] = {
        "event": event,
        "email": "example@domain.com",
        "id": 1234,
        "date": "2020-10-09 00:00:00",
        "ts": TS,
        "message-id": "<201798300811.5787683@relay.domain.com>",
        "ts_event": TS_EVENT,
        "subject": "My first Transactional",
        "X-Mailin-custom": "some_custom_header",
        "sending_ip": "185.41.28.109",
        "ts_epoch": 1604933654000,
        "template_id": 22,
        "tags": ["transac_messages"],
    }
    payload.update(fields)
    return {name: value for name, value in payload.items() if value is not None}


def request_for(payload: Any, content_type: str = "application/json") -> IngestRequest:
    return IngestRequest(
        method="POST", body=json.dumps(payload).encode(), content_type=content_type
    )


def parse(payload: Any) -> list[NormalizedEvent]:
    parsed = adapter.parse(request_for(payload), SOURCE)
    assert parsed.refused == []
    return parsed.events


def parse_one(payload: dict[str, Any]) -> NormalizedEvent:
    (event,) = parse(payload)
    return event


def refusal(payload: Any, content_type: str = "application/json") -> PayloadError:
    """The error of a body that cannot be read at all."""
    with pytest.raises(PayloadError) as caught:
        adapter.parse(request_for(payload, content_type), SOURCE)
    return caught.value


def refused(payload: dict[str, Any]) -> str:
    """The reason a single event is refused; it is kept as its own JSON text."""
    request = request_for(payload)
    parsed = adapter.parse(request, SOURCE)
    assert parsed.events == []
    [refused_event] = parsed.refused
    assert (refused_event.index, refused_event.body) == (0, request.body)
    return refused_event.reason


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# -- field mapping, one row per Brevo event ---------------------------------------------

T, P = Severity.TEMPORARY, Severity.PERMANENT
MAPPING = [
    # name, type, severity, reject_reason, unique, proxy
    ("request", EventType.QUEUED, None, None, None, None),
    ("delivered", EventType.DELIVERED, None, None, None, None),
    ("deferred", EventType.DEFERRED, T, None, None, None),
    ("soft_bounce", EventType.BOUNCED, T, RejectReason.BOUNCED, None, None),
    ("hard_bounce", EventType.BOUNCED, P, RejectReason.BOUNCED, None, None),
    ("blocked", EventType.REJECTED, None, RejectReason.BLOCKED, None, None),
    ("invalid_email", EventType.BOUNCED, P, RejectReason.INVALID, None, None),
    ("error", EventType.FAILED, None, None, None, None),
    ("opened", EventType.OPENED, None, None, False, False),
    ("unique_opened", EventType.OPENED, None, None, True, False),
    ("proxy_open", EventType.OPENED, None, None, False, True),
    ("unique_proxy_open", EventType.OPENED, None, None, True, True),
    ("click", EventType.CLICKED, None, None, None, None),
    ("complaint", EventType.COMPLAINED, None, None, None, None),
    ("spam", EventType.COMPLAINED, None, None, None, None),
    ("unsubscribed", EventType.UNSUBSCRIBED, None, None, None, None),
    ("unsubscribe", EventType.UNSUBSCRIBED, None, None, None, None),
]


@pytest.mark.parametrize(
    ("name", "type_", "severity", "reject_reason", "unique", "proxy"),
    MAPPING,
    ids=[row[0] for row in MAPPING],
)
def test_brevo_event_maps_to_normalized_type(
    name: str,
    type_: EventType,
    severity: Severity | None,
    reject_reason: RejectReason | None,
    unique: bool | None,
    proxy: bool | None,
) -> None:
    event = parse_one(seed(name))
    assert (event.type, event.severity, event.reject_reason, event.unique, event.proxy) == (
        type_,
        severity,
        reject_reason,
        unique,
        proxy,
    )
    assert event.provider is Provider.BREVO
    assert event.provider_event == name


def test_seed_request_fields_are_read() -> None:
    payload = seed("request")
    event = parse_one(payload)
    assert event.email == "example@domain.com"
    assert event.message_id == "201798300811.5787683@relay.domain.com"
    assert event.occurred_at == at(TS_EVENT)
    assert event.sent_at == at(TS_EVENT)
    assert event.subject == "My first Transactional"
    assert event.template == "22"
    assert event.tags == ("transac_messages",)
    assert event.custom_id == "some_custom_header"
    assert event.sending_ip == "185.41.28.109"
    assert event.raw == payload


def test_raw_is_the_element_exactly_as_received() -> None:
    payload = [seed("opened", extra={"nested": [1, 2]}), seed("click", link="https://x.test/")]
    assert [event.raw for event in parse(payload)] == payload


def test_click_link_becomes_url() -> None:
    event = parse_one(seed("click", link="https://domain.com/product"))
    assert event.url == "https://domain.com/product"


def test_reason_is_kept_with_its_smtp_status() -> None:
    event = parse_one(seed("soft_bounce", reason="452 4.2.2 Mailbox full"))
    assert event.reason == "452 4.2.2 Mailbox full"
    assert event.smtp_status == "4.2.2"


def test_deferred_with_5xx_reason_is_permanent() -> None:
    event = parse_one(seed("deferred", reason="550 5.1.1 user unknown"))
    assert (event.type, event.severity) == (EventType.DEFERRED, Severity.PERMANENT)


def test_deferred_with_4xx_reason_is_temporary() -> None:
    event = parse_one(seed("deferred", reason="421 4.7.0 try again later"))
    assert event.severity is Severity.TEMPORARY


def test_deferred_without_status_is_temporary() -> None:
    assert parse_one(seed("deferred", reason="spam")).severity is Severity.TEMPORARY


def test_error_severity_comes_from_smtp_status() -> None:
    event = parse_one(seed("error", reason="554 5.7.1 rejected"))
    assert (event.type, event.severity) == (EventType.FAILED, Severity.PERMANENT)


def test_soft_bounce_stays_temporary_whatever_its_reason() -> None:
    event = parse_one(seed("soft_bounce", reason="550 5.1.1 user unknown"))
    assert event.severity is Severity.TEMPORARY


def test_unknown_event_is_unknown_not_refused() -> None:
    event = parse_one(seed("loadedByProxy"))
    assert (event.type, event.provider_event) == (EventType.UNKNOWN, "loadedByProxy")


def test_event_without_a_name_is_unknown_not_refused() -> None:
    event = parse_one(seed("request", event=None))
    assert (event.type, event.provider_event) == (EventType.UNKNOWN, "")


# -- tags -------------------------------------------------------------------------------


def test_tag_as_json_text_of_an_array_becomes_tags() -> None:
    event = parse_one(seed("unsubscribed", tags=None, tag='["transactionalTag", "b"]'))
    assert event.tags == ("transactionalTag", "b")


def test_tag_as_plain_text_is_one_tag() -> None:
    assert parse_one(seed("opened", tags=None, tag="newsletter")).tags == ("newsletter",)


def test_tag_as_array_becomes_tags() -> None:
    assert parse_one(seed("opened", tags=None, tag=["a", "b"])).tags == ("a", "b")


def test_empty_tag_means_no_tags() -> None:
    assert parse_one(seed("opened", tags=None, tag="")).tags == ()


def test_tags_are_deduplicated_in_order_across_tags_and_tag() -> None:
    event = parse_one(seed("opened", tags=["b", "a", "b"], tag='["a", "c"]'))
    assert event.tags == ("b", "a", "c")


def test_non_string_tag_is_refused_naming_it() -> None:
    assert (
        refused(seed("opened", tags=["a", 7]))
        == "event[0]: 'tags[1]' must be a string, not a number"
    )


# -- times ------------------------------------------------------------------------------


def test_ts_epoch_is_preferred_over_other_times() -> None:
    event = parse_one(seed("opened", ts=1, ts_event=2, ts_epoch=1604933623456))
    assert event.occurred_at == datetime(2020, 11, 9, 14, 53, 43, 456000, tzinfo=UTC)


def test_ts_event_is_read_without_ts_epoch() -> None:
    assert parse_one(seed("opened", ts_epoch=None, ts=1)).occurred_at == at(TS_EVENT)


def test_ts_is_read_without_ts_epoch_and_ts_event() -> None:
    assert parse_one(seed("opened", ts_epoch=None, ts_event=None)).occurred_at == at(TS)


def test_ts_epoch_is_milliseconds() -> None:
    event = parse_one(seed("opened", ts_event=None, ts=None, ts_epoch=1604933623456))
    assert event.occurred_at == datetime(2020, 11, 9, 14, 53, 43, 456000, tzinfo=UTC)


def test_ts_epoch_below_1e11_is_seconds() -> None:
    event = parse_one(seed("hard_bounce", ts_event=None, ts=None, ts_epoch=1604933653))
    assert event.occurred_at == at(1604933653)


def test_s_epoch_typo_is_read() -> None:
    payload = seed("proxy_open", ts_event=None, ts=None, ts_epoch=None, s_epoch=1534486682000)
    assert parse_one(payload).occurred_at == at(1534486682)


def test_request_is_sent_when_it_happened() -> None:
    event = parse_one(seed("request", ts_epoch=1604933623000))
    assert event.sent_at == event.occurred_at == at(1604933623)


@pytest.mark.parametrize("name", ["delivered", "opened", "click", "proxy_open", "hard_bounce"])
def test_ts_epoch_of_other_events_is_not_a_sent_time(name: str) -> None:
    assert parse_one(seed(name, ts_epoch=1604933623000)).sent_at is None


def test_date_is_read_as_europe_paris_time() -> None:
    summer = seed("opened", ts_event=None, ts=None, ts_epoch=None, date="2020-10-09 00:00:00")
    winter = seed("opened", ts_event=None, ts=None, ts_epoch=None, date="2020-12-09 00:00:00")
    assert parse_one(summer).occurred_at == datetime(2020, 10, 8, 22, 0, tzinfo=UTC)
    assert parse_one(winter).occurred_at == datetime(2020, 12, 8, 23, 0, tzinfo=UTC)


def test_numeric_string_times_are_read() -> None:
    event = parse_one(seed("opened", ts_epoch=None, ts_event=str(TS_EVENT)))
    assert event.occurred_at == at(TS_EVENT)


def test_empty_time_fields_are_skipped() -> None:
    assert parse_one(seed("opened", ts_epoch="", ts_event="")).occurred_at == at(TS)


def test_event_without_any_time_is_refused_naming_the_time_fields() -> None:
    reason = refused(seed("opened", ts_event=None, ts=None, ts_epoch=None, date=None))
    assert reason.startswith("event[0]: missing time")
    for name in ("ts_event", "ts", "ts_epoch", "s_epoch", "date"):
        assert f"'{name}'" in reason


@pytest.mark.parametrize("value", ["soon", True, [1], "nan", {"a": 1}])
def test_time_that_is_not_a_number_is_refused(value: Any) -> None:
    reason = refused(seed("opened", ts_epoch=None, ts_event=value))
    assert reason == "event[0]: 'ts_event' must be a number"


def test_unreadable_date_is_refused() -> None:
    reason = refused(seed("opened", ts_event=None, ts=None, ts_epoch=None, date="yesterday"))
    assert reason.startswith("event[0]: 'date' must be")


# -- other fields -----------------------------------------------------------------------


def test_message_id_stored_without_angle_brackets() -> None:
    event = parse_one(seed("delivered", **{"message-id": " <abc@relay.test> "}))
    assert event.message_id == "abc@relay.test"


def test_message_id_without_brackets_is_kept() -> None:
    event = parse_one(seed("delivered", **{"message-id": "abc@relay.test"}))
    assert event.message_id == "abc@relay.test"


def test_email_is_kept_as_sent_without_surrounding_whitespace() -> None:
    assert parse_one(seed("delivered", email=" Someone@Domain.COM ")).email == "Someone@Domain.COM"


def test_template_id_is_stored_as_text() -> None:
    assert parse_one(seed("delivered", template_id="7")).template == "7"
    assert parse_one(seed("delivered", template_id=7)).template == "7"


def test_custom_header_text_is_kept_as_sent() -> None:
    text = '{"order": 12,  "b": 1}'
    assert parse_one(seed("delivered", **{"X-Mailin-custom": text})).custom_id == text


def test_custom_header_sent_as_json_object_is_canonical_json() -> None:
    event = parse_one(seed("delivered", **{"X-Mailin-custom": {"order": 12, "b": 1}}))
    assert event.custom_id == '{"b":1,"order":12}'


# -- the request as a whole -------------------------------------------------------------


def test_batched_array_gives_events_in_order() -> None:
    names = ["delivered", "request", "opened", "click"]
    events = parse([seed(name, email=f"{name}@domain.com") for name in names])
    assert [event.provider_event for event in events] == names
    assert [event.email for event in events] == [f"{name}@domain.com" for name in names]


def test_single_object_gives_one_event() -> None:
    assert len(parse(seed("delivered"))) == 1


def test_adapter_speaks_for_brevo() -> None:
    assert isinstance(adapter, BrevoAdapter)
    assert adapter.provider is Provider.BREVO


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.x+json",
        "text/plain",
        "",
    ],
)
def test_json_ish_media_types_are_accepted(content_type: str) -> None:
    request = request_for(seed("delivered"), content_type)
    assert len(adapter.parse(request, SOURCE).events) == 1


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_wrong_media_type_is_415(content_type: str) -> None:
    error = refusal(seed("delivered"), content_type)
    assert error.status == 415
    assert content_type.split(";")[0] in error.message


def test_unparseable_json_is_400_with_the_error_position() -> None:
    request = IngestRequest(method="POST", body=b'[{"event": }]', content_type="application/json")
    with pytest.raises(PayloadError) as caught:
        adapter.parse(request, SOURCE)
    assert caught.value.status == 400
    assert "line 1 column 12" in caught.value.message


def test_body_that_is_not_utf8_is_400() -> None:
    request = IngestRequest(
        method="POST", body=b'{"email": "\xff"}', content_type="application/json"
    )
    with pytest.raises(PayloadError) as caught:
        adapter.parse(request, SOURCE)
    assert caught.value.status == 400


@pytest.mark.parametrize("email", [None, "", "  "])
def test_event_without_a_recipient_is_stored_with_an_empty_email(email: str | None) -> None:
    assert parse_one(seed("unique_proxy_open", email=email)).email == ""


def test_email_that_is_not_a_string_is_refused() -> None:
    assert refused(seed("opened", email=42)) == "event[0]: 'email' must be a string, not a number"


def test_template_id_of_wrong_type_is_refused() -> None:
    reason = refused(seed("opened", template_id=[22]))
    assert reason == "event[0]: 'template_id' must be an integer or a string"


def test_empty_array_has_no_events_and_refuses_none() -> None:
    assert parse([]) == []


def test_bad_event_is_refused_alone_and_kept_as_its_own_json_text() -> None:
    body = b'[{"event":"opened","email":"a@x.test","ts":1},\n "opened" ,{"event":"x","ts":2}]'
    parsed = adapter.parse(IngestRequest("POST", body, "application/json"), SOURCE)
    assert [event.email for event in parsed.events] == ["a@x.test", ""]
    [refused_event] = parsed.refused
    assert (refused_event.index, refused_event.reason, refused_event.body) == (
        1,
        "event[1]: must be an object, not a string",
        b'"opened"',
    )


def test_body_that_is_neither_object_nor_array_is_400() -> None:
    assert refusal(42).status == 400


# -- render -----------------------------------------------------------------------------

ROUND_TRIP = [row[0] for row in MAPPING] + ["loadedByProxy"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_parsing_a_rendered_event_gives_it_back(name: str) -> None:
    original = parse_one(
        seed(name, tags=["a", "b"], link="https://x.test/p", reason="550 5.1.1 no such user")
    )
    again = parse_one(render(original))
    assert (again.type, again.email, again.message_id, again.occurred_at) == (
        original.type,
        original.email,
        original.message_id,
        original.occurred_at,
    )
    assert (again.tags, again.template, again.url) == (
        original.tags,
        original.template,
        original.url,
    )
    assert (again.severity, again.reject_reason, again.unique, again.proxy) == (
        original.severity,
        original.reject_reason,
        original.unique,
        original.proxy,
    )


def event_of(type_: EventType, **fields: Any) -> NormalizedEvent:
    values: dict[str, Any] = {
        "type": type_,
        "provider": Provider.SMTPETER,
        "provider_event": "whatever",
        "email": "to@domain.com",
        "occurred_at": datetime(2021, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "raw": {},
    }
    values.update(fields)
    return NormalizedEvent(**values)


def test_round_trip_keeps_time_to_the_millisecond() -> None:
    again = parse_one(render(event_of(EventType.DELIVERED)))
    assert again.occurred_at == datetime(2021, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_render_uses_brevo_field_names_and_shapes() -> None:
    event = event_of(
        EventType.CLICKED,
        message_id="m1@relay.test",
        sent_at=datetime(2021, 1, 2, 3, 0, 0, 250000, tzinfo=UTC),
        subject="Hi",
        template="22",
        tags=("a",),
        custom_id="c",
        sending_ip="10.0.0.1",
        url="https://x.test/",
    )
    assert render(event) == {
        "event": "click",
        "email": "to@domain.com",
        "date": "2021-01-02 04:04:05",
        "ts": 1609556645,
        "message-id": "<m1@relay.test>",
        "ts_event": 1609556645,
        "subject": "Hi",
        "X-Mailin-custom": "c",
        "sending_ip": "10.0.0.1",
        "ts_epoch": 1609556645678,
        "template_id": 22,
        "tags": ["a"],
        "link": "https://x.test/",
    }


def test_render_omits_fields_the_event_does_not_know() -> None:
    assert set(render(event_of(EventType.DELIVERED))) == {
        "event",
        "email",
        "date",
        "ts",
        "ts_event",
        "ts_epoch",
        "tags",
    }


def test_render_keeps_a_template_that_is_not_an_integer_as_text() -> None:
    assert render(event_of(EventType.DELIVERED, template="welcome"))["template_id"] == "welcome"
    assert render(event_of(EventType.DELIVERED, template="007"))["template_id"] == "007"


def test_render_sent_is_request() -> None:
    assert render(event_of(EventType.SENT))["event"] == "request"


@pytest.mark.parametrize(
    ("severity", "reject_reason", "name"),
    [
        (Severity.PERMANENT, RejectReason.BOUNCED, "hard_bounce"),
        (Severity.TEMPORARY, RejectReason.BOUNCED, "soft_bounce"),
        (Severity.PERMANENT, RejectReason.INVALID, "invalid_email"),
        (None, None, "soft_bounce"),
    ],
)
def test_render_bounce_name_follows_severity_and_reason(
    severity: Severity | None, reject_reason: RejectReason | None, name: str
) -> None:
    event = event_of(EventType.BOUNCED, severity=severity, reject_reason=reject_reason)
    assert render(event)["event"] == name


def test_render_unknown_brevo_event_keeps_its_name() -> None:
    event = event_of(EventType.UNKNOWN, provider=Provider.BREVO, provider_event="loadedByProxy")
    assert render(event)["event"] == "loadedByProxy"


@pytest.mark.parametrize("type_", [EventType.UNKNOWN, EventType.AUTORESPONDED])
def test_render_other_providers_unknown_and_autoresponse_are_unknown(type_: EventType) -> None:
    assert render(event_of(type_))["event"] == "unknown"


# -- fields Brevo added in 2024 (changelog 2024-08-30) -----------------------------------


def test_open_details_are_mapped_onto_the_open_event() -> None:
    event = parse_one(
        seed(
            "unique_opened",
            user_agent="Mozilla/5.0 (iPhone)",
            device_used="MOBILE",
            mirror_link="https://app-smtp.brevo.com/log/preview/1a2000f4",
            contact_id=8,
            sender_email="shop@example.com",
        )
    )
    assert (event.user_agent, event.device, event.preview_url, event.contact_id) == (
        "Mozilla/5.0 (iPhone)",
        "MOBILE",
        "https://app-smtp.brevo.com/log/preview/1a2000f4",
        "8",
    )
    assert event.from_email == "shop@example.com"


def test_contact_id_0_means_no_contact() -> None:
    assert parse_one(seed("click", contact_id=0)).contact_id is None


def test_contact_id_beyond_64_bits_is_kept_as_text() -> None:
    assert parse_one(seed("click", contact_id=2**70)).contact_id == str(2**70)


def test_detail_of_the_wrong_type_is_left_out_and_kept_raw() -> None:
    event = parse_one(seed("click", user_agent=["x"], link={"u": 1}, device_used=True))
    assert (event.user_agent, event.url, event.device) == (None, None, None)
    assert event.raw["user_agent"] == ["x"]


def test_empty_link_is_no_url() -> None:
    assert parse_one(seed("unique_proxy_open", link="")).url is None


def test_render_writes_the_2024_fields_back() -> None:
    event = parse_one(
        seed("click", user_agent="UA", device_used="DESKTOP", mirror_link="https://m", link="u")
    )
    rendered = render(event)
    assert (rendered["user_agent"], rendered["device_used"], rendered["mirror_link"]) == (
        "UA",
        "DESKTOP",
        "https://m",
    )

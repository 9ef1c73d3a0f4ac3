"""SMTPeter adapter: both wire shapes in, both shapes out."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.domain.events import (
    EventType,
    NormalizedEvent,
    Provider,
    RejectReason,
    Severity,
    dedupe_key,
)
from gateway.providers.base import IngestRequest, PayloadError, SourceConfig
from gateway.providers.smtpeter import adapter, render, render_webhook

WHEN = datetime(2024, 3, 5, 14, 15, 16, tzinfo=UTC)
WHEN_TEXT = "2024-03-05 14:15:16"
WHEN_UNIX = int(WHEN.timestamp())

Shape = Callable[[str, dict[str, Any]], dict[str, Any]]


def record(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The events-API shape."""
    return {"event": name, "data": data}


def webhook(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The web hook post shape."""
    return {"type": name, **data}


SHAPES = [pytest.param(record, id="events-api"), pytest.param(webhook, id="webhook")]


def fields(**extra: Any) -> dict[str, Any]:
    return {"id": "m-1", "time": WHEN_TEXT, "recipient": "ann@example.com", **extra}


def request(payload: Any, content_type: str = "application/json") -> IngestRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return IngestRequest(method="POST", body=body, content_type=content_type)


def parse(payload: Any) -> list[NormalizedEvent]:
    parsed = adapter.parse(request(payload), SourceConfig())
    assert parsed.refused == []
    return parsed.events


def parse_one(payload: Any) -> NormalizedEvent:
    [event] = parse(payload)
    return event


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("name", "event_type", "severity"),
    [
        ("attempt", EventType.SENT, None),
        ("delivery", EventType.DELIVERED, None),
        ("failure", EventType.BOUNCED, Severity.PERMANENT),
        ("bounce", EventType.BOUNCED, Severity.TEMPORARY),
        ("open", EventType.OPENED, None),
        ("click", EventType.CLICKED, None),
        ("response", EventType.AUTORESPONDED, None),
        ("abuse", EventType.COMPLAINED, None),
        ("dmarc", EventType.UNKNOWN, None),
    ],
)
def test_each_smtpeter_event_maps_to_its_type_and_default_severity(
    shape: Shape, name: str, event_type: EventType, severity: Severity | None
) -> None:
    event = parse_one(shape(name, fields()))
    assert event.type is event_type
    assert event.provider is Provider.SMTPETER
    assert event.provider_event == name
    assert event.severity is severity
    assert (event.email, event.message_id, event.occurred_at) == ("ann@example.com", "m-1", WHEN)


@pytest.mark.parametrize("name", ["failure", "bounce"])
def test_failures_and_bounces_are_rejections_of_type_bounced(name: str) -> None:
    assert parse_one(record(name, fields())).reject_reason is RejectReason.BOUNCED


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("name", "extra", "severity", "smtp_status"),
    [
        ("failure", {"code": 550}, Severity.PERMANENT, "550"),
        ("failure", {"code": "421"}, Severity.TEMPORARY, "421"),
        ("failure", {"code": 550, "status": "4.2.2"}, Severity.TEMPORARY, "4.2.2"),
        ("failure", {"extended": "5.7.1"}, Severity.PERMANENT, "5.7.1"),
        ("failure", {"description": "452 4.2.2 mailbox full"}, Severity.TEMPORARY, "4.2.2"),
        ("failure", {"description": "550 no such user"}, Severity.PERMANENT, None),
        ("bounce", {"code": 550, "status": "5.1.1"}, Severity.PERMANENT, "5.1.1"),
        ("bounce", {"mime": "Action: failed\nStatus: 5.1.1\n"}, Severity.PERMANENT, "5.1.1"),
        ("bounce", {"bouncetype": "hard"}, Severity.PERMANENT, None),
        ("bounce", {"dsn": "Status: 4.4.7"}, Severity.TEMPORARY, "4.4.7"),
    ],
)
def test_bounce_severity_comes_from_the_smtp_status_class(
    shape: Shape, name: str, extra: dict[str, Any], severity: Severity, smtp_status: str | None
) -> None:
    event = parse_one(shape(name, fields(**extra)))
    assert (event.severity, event.smtp_status) == (severity, smtp_status)


def test_failure_reason_is_the_smtp_description() -> None:
    event = parse_one(record("failure", fields(description="550 5.1.1 user unknown")))
    assert event.reason == "550 5.1.1 user unknown"


def test_bounce_reason_falls_back_to_the_dsn_diagnostic_code() -> None:
    mime = "Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    assert parse_one(record("bounce", fields(mime=mime))).reason == "smtp; 550 5.1.1 user unknown"


def test_smtp_state_is_the_protocol_phase_not_a_status() -> None:
    event = parse_one(record("failure", fields(state="RCPT TO")))
    assert event.smtp_status is None


def test_a_bounce_that_repeats_a_failure_of_the_same_message_is_one_event() -> None:
    failure, bounce = parse(
        [
            record("failure", fields(code=550)),
            webhook("bounce", fields(time=WHEN_UNIX + 60, mime="Status: 5.1.1")),
        ]
    )
    assert dedupe_key(failure) == dedupe_key(bounce)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(record("bounce", fields(id="m-2")), id="other message"),
        pytest.param(record("bounce", fields(recipient="bob@example.com")), id="other recipient"),
        pytest.param(record("open", fields()), id="open of the same message"),
    ],
)
def test_a_failure_is_not_merged_with_other_events(other: dict[str, Any]) -> None:
    failure, event = parse([record("failure", fields()), other])
    assert dedupe_key(failure) != dedupe_key(event)


def test_failures_without_a_message_id_are_deduplicated_by_payload() -> None:
    event = parse_one(record("failure", {"time": WHEN_TEXT, "recipient": "ann@example.com"}))
    assert event.dedupe_basis is None


def test_a_retry_of_the_same_open_is_one_event() -> None:
    first, second = parse([record("open", fields()), record("open", fields())])
    assert dedupe_key(first) == dedupe_key(second)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"time": WHEN_TEXT}, WHEN),
        ({"time": WHEN_UNIX}, WHEN),
        ({"time": str(WHEN_UNIX)}, WHEN),
        ({"time": float(WHEN_UNIX)}, WHEN),
        ({"time": "2024-03-05T15:15:16+01:00"}, WHEN),
        ({"time": None, "timestamp": WHEN_TEXT}, WHEN),
    ],
)
def test_times_are_utc_text_or_unix_seconds(extra: dict[str, Any], expected: datetime) -> None:
    assert parse_one(webhook("open", fields(**extra))).occurred_at == expected


def test_an_attempt_time_is_when_the_message_was_sent() -> None:
    assert parse_one(record("attempt", fields())).sent_at == WHEN


def test_other_events_do_not_know_when_the_message_was_sent() -> None:
    assert parse_one(record("delivery", fields())).sent_at is None


@pytest.mark.parametrize(
    "tags",
    [["news", "march"], "news;march", "news, march", "news;;march;", ["news", "march", "news"]],
)
def test_tags_are_an_array_or_a_separated_string(tags: Any) -> None:
    assert parse_one(record("open", fields(tags=tags))).tags == ("news", "march")


@pytest.mark.parametrize(
    ("extra", "template"),
    [({"templateid": 42}, "42"), ({"template": "welcome"}, "welcome"), ({"templateid": 0}, None)],
)
def test_template_zero_means_no_template(extra: dict[str, Any], template: str | None) -> None:
    assert parse_one(record("attempt", fields(**extra))).template == template


@pytest.mark.parametrize(
    "extra",
    [{"recipient": "ann@example.com"}, {"email": "ann@example.com"}, {"to": "ann@example.com"}],
)
def test_recipient_may_be_named_recipient_email_or_to(extra: dict[str, Any]) -> None:
    data = {"time": WHEN_TEXT, **extra}
    assert parse_one(record("delivery", data)).email == "ann@example.com"


def test_abuse_webhook_names_the_complainer_in_emailfrom() -> None:
    event = parse_one({"type": "abuse", "id": "m-1", "time": WHEN_UNIX, "emailfrom": "a@b.nl"})
    assert (event.type, event.email) == (EventType.COMPLAINED, "a@b.nl")


def test_from_and_to_ip_addresses_are_the_sending_ip_not_addresses() -> None:
    event = parse_one(record("delivery", fields(**{"from": "192.0.2.7", "to": "198.51.100.9"})))
    assert (event.sending_ip, event.from_email, event.email) == (
        "192.0.2.7",
        None,
        "ann@example.com",
    )


def test_envelope_is_the_sender_address() -> None:
    event = parse_one(record("attempt", fields(envelope="bounce-1@mail.example.com")))
    assert event.from_email == "bounce-1@mail.example.com"


def test_click_url_is_the_original_link_not_the_tracking_link() -> None:
    data = fields(url="https://smtpeter.com/t/abc", original="https://shop.example.com/")
    event = parse_one(webhook("click", {**data, "ip": "203.0.113.5", "useragent": "Mozilla/5"}))
    assert (event.url, event.ip, event.user_agent) == (
        "https://shop.example.com/",
        "203.0.113.5",
        "Mozilla/5",
    )


def test_open_user_agent_comes_from_the_logged_request_headers() -> None:
    headers = "Host: smtpeter.com\nUser-Agent: Mozilla/5.0 (iPhone)\nAccept: */*"
    event = parse_one(record("open", fields(headers=headers, ip="203.0.113.5")))
    assert (event.user_agent, event.ip, event.url) == ("Mozilla/5.0 (iPhone)", "203.0.113.5", None)


def test_raw_is_the_whole_record_or_the_whole_post_as_received() -> None:
    elements = [record("open", fields(extra={"x": 1})), webhook("click", fields(unusual=True))]
    assert [event.raw for event in parse(elements)] == elements


def test_arrays_may_mix_both_shapes_and_keep_their_order() -> None:
    events = parse(
        [record("attempt", fields()), webhook("delivery", fields()), record("x", fields())]
    )
    assert [event.type for event in events] == [
        EventType.SENT,
        EventType.DELIVERED,
        EventType.UNKNOWN,
    ]


def test_unknown_events_are_stored_as_unknown_with_their_name_and_payload() -> None:
    element = record("dmarc", fields(policy="reject"))
    event = parse_one(element)
    assert (event.type, event.provider_event, event.raw) == (EventType.UNKNOWN, "dmarc", element)


def test_older_events_api_records_name_the_event_type() -> None:
    assert parse_one({"type": "delivery", "data": fields()}).type is EventType.DELIVERED


@pytest.mark.parametrize(
    ("payload", "content_type", "status", "message"),
    [
        (b'{"event": ', "application/json", 400, "body is not valid JSON: Expecting value at"),
        (
            b"id=m-1&type=open",
            "application/x-www-form-urlencoded",
            415,
            "expected application/json",
        ),
        (b"--x\r\n", "multipart/form-data; boundary=x", 415, "expected application/json"),
        (b"42", "application/json", 400, "body must be a JSON object or an array"),
        (b'[{"event": "open", "size": NaN}]', "application/json", 400, "body is not readable"),
    ],
)
def test_unreadable_body_raises_with_a_status_and_a_message_naming_the_problem(
    payload: Any, content_type: str, status: int, message: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        adapter.parse(request(payload, content_type), SourceConfig())
    assert caught.value.status == status
    assert caught.value.message.startswith(message)


def test_empty_array_has_no_events_and_refuses_none() -> None:
    parsed = adapter.parse(request(b"[]"), SourceConfig())
    assert (parsed.events, parsed.refused) == ([], [])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("open", "event[1]: not a JSON object but a string"),
        ({"data": fields()}, "event[1]: missing field 'event' or 'type'"),
        ({"event": "open", "data": []}, "event[1]: field 'data' is not an object"),
        (record("open", {"time": 1}), "event[1]: missing field 'recipient'"),
        (record("open", {"recipient": "ann@example.com"}), "event[1]: missing field 'time'"),
        (webhook("open", fields(time="yesterday")), "event[1]: field 'time' is not a time"),
        (record("open", fields(tags={"a": 1})), "event[1]: field 'tags' is not a list or text"),
        (record("open", fields(id="m" * 256)), "event[1]: 'id' is longer than 255 characters"),
    ],
)
def test_bad_event_is_refused_alone_naming_the_field(bad: Any, message: str) -> None:
    good = record("open", fields())
    parsed = adapter.parse(request([good, bad, good]), SourceConfig())
    assert len(parsed.events) == 2
    [refused] = parsed.refused
    assert (refused.index, refused.reason[: len(message)]) == (1, message)
    assert json.loads(refused.body) == bad


def test_bad_json_message_gives_the_position() -> None:
    with pytest.raises(PayloadError, match=r"line 1 column 11 \(char 10\)"):
        parse(b'{"event": ')


def test_one_object_without_an_array_is_one_event() -> None:
    assert len(parse(record("open", fields()))) == 1


def test_json_with_a_charset_parameter_is_json() -> None:
    body = request(record("open", fields()), "application/json; charset=utf-8")
    assert len(adapter.parse(body, SourceConfig()).events) == 1


def gateway_event(event_type: EventType, **extra: Any) -> NormalizedEvent:
    values: dict[str, Any] = {
        "type": event_type,
        "provider": Provider.BREVO,
        "provider_event": "custom_event",
        "email": "ann@example.com",
        "occurred_at": WHEN,
        "raw": {},
        "message_id": "m-1",
        "template": "7",
        "tags": ("news", "march"),
        **extra,
    }
    return NormalizedEvent(**values)


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        (EventType.QUEUED, "attempt"),
        (EventType.SENT, "attempt"),
        (EventType.DELIVERED, "delivery"),
        (EventType.BOUNCED, "bounce"),
        (EventType.FAILED, "failure"),
        (EventType.REJECTED, "failure"),
        (EventType.DEFERRED, "failure"),
        (EventType.OPENED, "open"),
        (EventType.CLICKED, "click"),
        (EventType.AUTORESPONDED, "response"),
        (EventType.COMPLAINED, "abuse"),
        (EventType.UNKNOWN, "custom_event"),
    ],
)
def test_render_names_every_gateway_type_in_smtpeter_terms(
    event_type: EventType, name: str
) -> None:
    event = gateway_event(event_type)
    assert render(event)["event"] == name
    assert render_webhook(event)["type"] == name


def test_render_writes_smtpeter_field_names_and_omits_what_is_unknown() -> None:
    event = gateway_event(
        EventType.BOUNCED,
        smtp_status="5.1.1",
        reason="user unknown",
        severity=Severity.PERMANENT,
    )
    assert render(event) == {
        "event": "bounce",
        "data": {
            "id": "m-1",
            "time": WHEN_TEXT,
            "recipient": "ann@example.com",
            "templateid": "7",
            "tags": ["news", "march"],
            "status": "5.1.1",
            "description": "user unknown",
        },
    }


def test_render_webhook_puts_the_fields_at_the_top_with_unix_time() -> None:
    event = gateway_event(EventType.CLICKED, url="https://shop.example.com/", ip="203.0.113.5")
    assert render_webhook(event) == {
        "type": "click",
        "id": "m-1",
        "time": WHEN_UNIX,
        "timestamp": WHEN_TEXT,
        "recipient": "ann@example.com",
        "templateid": "7",
        "tags": ["news", "march"],
        "ip": "203.0.113.5",
        "url": "https://shop.example.com/",
        "original": "https://shop.example.com/",
    }


def test_render_gives_a_bare_reply_code_as_code() -> None:
    data = render(gateway_event(EventType.BOUNCED, smtp_status="550"))["data"]
    assert isinstance(data, dict)
    assert (data["code"], "status" in data) == ("550", False)


def test_smtpeter_failures_render_back_as_failures() -> None:
    failure = parse_one(record("failure", fields(code=550)))
    assert render(failure)["event"] == "failure"


@pytest.mark.parametrize("render_as", [render, render_webhook])
@pytest.mark.parametrize(
    "event_type",
    [
        EventType.SENT,
        EventType.DELIVERED,
        EventType.BOUNCED,
        EventType.OPENED,
        EventType.CLICKED,
        EventType.AUTORESPONDED,
        EventType.COMPLAINED,
        EventType.UNKNOWN,
    ],
)
def test_a_rendered_event_parses_back_to_the_same_event(
    render_as: Callable[[NormalizedEvent], dict[str, object]], event_type: EventType
) -> None:
    url = "https://shop.example.com/" if event_type is EventType.CLICKED else None
    original = gateway_event(event_type, url=url, smtp_status="5.1.1", ip="203.0.113.5")
    parsed = parse_one(render_as(original))
    assert (
        parsed.type,
        parsed.email,
        parsed.message_id,
        parsed.occurred_at,
        parsed.tags,
        parsed.template,
        parsed.url,
    ) == (event_type, "ann@example.com", "m-1", WHEN, ("news", "march"), "7", url)


def test_webhook_without_time_takes_the_time_it_was_received() -> None:
    received = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    request = IngestRequest(
        method="POST",
        body=json.dumps(
            {"type": "click", "recipient": "a@example.com", "url": "https://x"}
        ).encode(),
        content_type="application/json",
        received_at=received,
    )
    [event] = adapter.parse(request, SourceConfig()).events
    assert event.occurred_at == received

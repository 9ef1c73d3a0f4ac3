"""JangoMail adapter: the Event API's calls in (any naming, any time zone), ours out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.domain.events import EventType, NormalizedEvent, Provider, RejectReason, Severity
from gateway.providers.base import IngestRequest, PayloadError, RefusedEvent, SourceConfig
from gateway.providers.jangomail import (
    DEFAULT_PARAMETERS,
    EVENTS,
    adapter,
    default_parameters,
    jangomail_event_name,
    render,
    resolve_field,
)

FORM = "application/x-www-form-urlencoded"
EMAIL = "jane.dough@browniekitchen.com"
COMMON = {
    "UserID": "123456",
    "TransactionalEmailID": "1234567890",
    "TransactionalGroupID": "12345",
    "EmailAddress": EMAIL,
    "CustomID": "987987",
}
OPEN_AGENT = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
CLICK_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_1) AppleWebKit/600.2.5"
    " (KHTML, like Gecko) Version/8.0.2 Safari/600.2.5"
)
DIAGNOSTIC = "smtp;550 5.1.1 The email account that you tried to reach does not exist."

# The seed's sample of every event, under JangoMail's default names, and what it becomes.
SAMPLES: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "sent": (
        {
            **COMMON,
            "Subject": "Check out our sweet deals!",
            "SentDateTime": "1/28/2015 9:19:00 AM",
            "OpenTrackEnabled": "True",
            "ClickTrackEnabled": "True",
            "FromEmailAddress": "john.dough@browniekitchen.com",
            "MessageSize": "784",
            "RelayID": "RELAY-03",
            "RelayMsgID": "201501281650043324",
            "Delivered": "False",
        },
        {
            "type": EventType.SENT,
            "occurred_at": datetime(2015, 1, 28, 9, 19, tzinfo=UTC),
            "sent_at": datetime(2015, 1, 28, 9, 19, tzinfo=UTC),
            "subject": "Check out our sweet deals!",
            "from_email": "john.dough@browniekitchen.com",
            "message_size": 784,
            "relay_id": "RELAY-03",
            "relay_message_id": "201501281650043324",
        },
    ),
    "open": (
        {
            **COMMON,
            "OpenDateTime": "1/28/2015 9:55:00 AM",
            "IPAddress": "123.123.123.123",
            "Browser": OPEN_AGENT,
        },
        {
            "type": EventType.OPENED,
            "occurred_at": datetime(2015, 1, 28, 9, 55, tzinfo=UTC),
            "ip": "123.123.123.123",
            "user_agent": OPEN_AGENT,
        },
    ),
    "click": (
        {
            **COMMON,
            "URL": "http://www.browniekitchen.com",
            "Position": "1",
            "HTML": "True",
            "ClickDateTime": "1/28/2015 9:56:00 AM",
            "IPAddress": "123.123.123.123",
            "Browser": CLICK_AGENT,
        },
        {
            "type": EventType.CLICKED,
            "occurred_at": datetime(2015, 1, 28, 9, 56, tzinfo=UTC),
            "url": "http://www.browniekitchen.com",
            "position": 1,
            "ip": "123.123.123.123",
            "user_agent": CLICK_AGENT,
        },
    ),
    "unsubscribe": (
        {
            **COMMON,
            "UnsubscribeType": "u",
            "UnsubscribeDateTime": "1/28/2015 9:58:11 AM",
            "IPAddress": "123.123.123.123",
        },
        {
            "type": EventType.UNSUBSCRIBED,
            "occurred_at": datetime(2015, 1, 28, 9, 58, 11, tzinfo=UTC),
            "unsubscribe_type": "u",
            "ip": "123.123.123.123",
        },
    ),
    "bounce": (
        {
            **COMMON,
            "BounceDateTime": "1/28/2015 10:45:11 AM",
            "DiagnosticCode": DIAGNOSTIC,
            "Definitive": "1",
        },
        {
            "type": EventType.BOUNCED,
            "occurred_at": datetime(2015, 1, 28, 10, 45, 11, tzinfo=UTC),
            "reason": DIAGNOSTIC,
            "smtp_status": "5.1.1",
            "severity": Severity.PERMANENT,
            "reject_reason": RejectReason.BOUNCED,
        },
    ),
    "complaint": (
        {**COMMON, "ComplaintDateTime": "1/28/2015 10:13:11 AM", "AbuseID": "12345678"},
        {
            "type": EventType.COMPLAINED,
            "occurred_at": datetime(2015, 1, 28, 10, 13, 11, tzinfo=UTC),
            "abuse_id": "12345678",
        },
    ),
    "block": (
        {
            **COMMON,
            "BlockDateTime": "1/28/2015 10:45:11 AM",
            "DiagnosticCode": "smtp;554 5.7.1 Service unavailable; client host blocked",
        },
        {
            "type": EventType.REJECTED,
            "occurred_at": datetime(2015, 1, 28, 10, 45, 11, tzinfo=UTC),
            "reason": "smtp;554 5.7.1 Service unavailable; client host blocked",
            "smtp_status": "5.7.1",
            "reject_reason": RejectReason.BLOCKED,
        },
    ),
}
ALL_TIME_LABELS = {default_parameters(event)["occurredAt"] for event in SAMPLES}
EVENT_PARAMS = [pytest.param(event, id=event) for event in SAMPLES]


def get(event: str, params: dict[str, str] | list[tuple[str, str]]) -> IngestRequest:
    query = list(params.items()) if isinstance(params, dict) else params
    return IngestRequest(method="GET", body=b"", query=query, route_event=event)


def post(event: str, body: bytes, content_type: str = FORM) -> IngestRequest:
    return IngestRequest(method="POST", body=body, content_type=content_type, route_event=event)


def parse(request: IngestRequest, **source: Any) -> NormalizedEvent:
    parsed = adapter.parse(request, SourceConfig(**source))
    assert parsed.refused == []
    [event] = parsed.events
    return event


def parse_error(request: IngestRequest, **source: Any) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        adapter.parse(request, SourceConfig(**source))
    return caught.value


def refusal(request: IngestRequest, **source: Any) -> RefusedEvent:
    """The call's one event, refused: kept with the request body as is."""
    parsed = adapter.parse(request, SourceConfig(**source))
    assert parsed.events == []
    [refused] = parsed.refused
    assert (refused.index, refused.body) == (0, request.body)
    return refused


def open_params(**extra: str) -> dict[str, str]:
    return {"EmailAddress": "jane@x.com", "OpenDateTime": "1/28/2015 9:55:00 AM", **extra}


# --- every event and its labels -----------------------------------------------------


@pytest.mark.parametrize("event", EVENT_PARAMS)
def test_seed_sample_maps_every_label(event: str) -> None:
    params, expected = SAMPLES[event]
    parsed = parse(get(event, params))
    assert parsed.provider is Provider.JANGOMAIL
    assert parsed.provider_event == event
    assert parsed.email == EMAIL
    assert parsed.message_id == "1234567890"
    assert parsed.template == "12345"
    assert parsed.custom_id == "987987"
    assert parsed.raw == params
    for attribute, value in expected.items():
        assert getattr(parsed, attribute) == value, attribute


@pytest.mark.parametrize("event", EVENT_PARAMS)
def test_get_query_post_form_and_json_body_give_the_same_event(event: str) -> None:
    params, _ = SAMPLES[event]
    from_query = parse(get(event, params))
    from_form = parse(post(event, urlencode(params).encode()))
    from_json = parse(post(event, json.dumps(params).encode(), "application/json"))
    assert from_query == from_form == from_json


@pytest.mark.parametrize("event", EVENT_PARAMS)
def test_default_parameters_are_the_seeds_labels_without_spaces_and_slashes(event: str) -> None:
    params, _ = SAMPLES[event]
    # The samples are the seed's tables: every label, under its default name.
    assert set(default_parameters(event).values()) == set(params)


def test_events_are_jangomails_seven() -> None:
    assert EVENTS == ("sent", "open", "click", "unsubscribe", "bounce", "complaint", "block")


def test_sent_time_is_both_occurred_at_and_sent_at() -> None:
    names = default_parameters("sent")
    assert names["occurredAt"] == names["sentAt"] == "SentDateTime"


def test_block_has_bounce_labels_but_definitive() -> None:
    bounce = default_parameters("bounce")
    block = default_parameters("block")
    assert block["occurredAt"] == "BlockDateTime"
    assert set(bounce) - set(block) == {"definitive"}


# --- event names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "expected", "provider_event"),
    [
        ("open", EventType.OPENED, "open"),
        ("Opens", EventType.OPENED, "open"),
        ("OPENED", EventType.OPENED, "open"),
        ("clicks", EventType.CLICKED, "click"),
        ("unsubscribes", EventType.UNSUBSCRIBED, "unsubscribe"),
        ("complaints", EventType.COMPLAINED, "complaint"),
        ("bounces", EventType.BOUNCED, "bounce"),
        ("Blocks", EventType.REJECTED, "block"),
        ("blocked", EventType.REJECTED, "block"),
        ("send", EventType.SENT, "sent"),
        ("Sent", EventType.SENT, "sent"),
    ],
)
def test_route_event_is_case_insensitive_and_accepts_plurals(
    route: str, expected: EventType, provider_event: str
) -> None:
    # Every event's time label, so that whichever event it is finds its own.
    times = {name: "1/28/2015 9:55:00 AM" for name in ALL_TIME_LABELS}
    parsed = parse(get(route, {"EmailAddress": "j@x.com", **times}))
    assert (parsed.type, parsed.provider_event) == (expected, provider_event)


@pytest.mark.parametrize("route", ["deferral", "opne", "", "unknown"])
def test_unknown_route_event_is_404_naming_the_seven_events(route: str) -> None:
    error = parse_error(get(route, open_params()))
    assert error.status == 404
    for event in ("sent", "open", "click", "unsubscribe", "bounce", "complaint", "block"):
        assert event in error.message


# --- bounces and blocks ---------------------------------------------------------------


def bounce(**extra: str) -> IngestRequest:
    return get(
        "bounce", {"EmailAddress": "j@x.com", "BounceDateTime": "1/28/2015 10:45:11 AM", **extra}
    )


def test_bounce_definitive_1_is_permanent() -> None:
    assert parse(bounce(Definitive="1")).severity is Severity.PERMANENT


@pytest.mark.parametrize("definitive", ["0", "2", "", "yes"])
def test_bounce_definitive_other_than_1_is_temporary(definitive: str) -> None:
    assert parse(bounce(Definitive=definitive)).severity is Severity.TEMPORARY


def test_bounce_without_definitive_is_temporary() -> None:
    assert parse(bounce()).severity is Severity.TEMPORARY


def test_bounce_smtp_status_comes_from_the_diagnostic_code() -> None:
    parsed = parse(bounce(DiagnosticCode="smtp;452 4.2.2 Mailbox full"))
    assert (parsed.smtp_status, parsed.reason) == ("4.2.2", "smtp;452 4.2.2 Mailbox full")


def test_block_without_diagnostic_code_is_a_blocked_rejection() -> None:
    parsed = parse(get("block", {"EmailAddress": "j@x.com", "BlockDateTime": "1/28/2015 1:00 PM"}))
    assert (parsed.type, parsed.reject_reason, parsed.reason) == (
        EventType.REJECTED,
        RejectReason.BLOCKED,
        None,
    )


# --- how the request is read ----------------------------------------------------------


def test_body_wins_over_query() -> None:
    request = IngestRequest(
        method="POST",
        body=b"EmailAddress=body%40x.com",
        content_type=FORM,
        query=[("EmailAddress", "query@x.com"), ("OpenDateTime", "1/28/2015 9:55:00 AM")],
        route_event="open",
    )
    parsed = parse(request)
    assert parsed.email == "body@x.com"
    assert parsed.raw == {"EmailAddress": "body@x.com", "OpenDateTime": "1/28/2015 9:55:00 AM"}


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("jane+tag@x.com", "jane%2Btag%40x.com"),
        ("a&b=c", "a%26b%3Dc"),
        ("Grüße 漢字", "Gr%C3%BC%C3%9Fe+%E6%BC%A2%E5%AD%97"),
        ("a b", "a+b"),
    ],
)
def test_url_encoded_form_values_survive_decoding(value: str, encoded: str) -> None:
    body = f"EmailAddress=j%40x.com&OpenDateTime=1%2F28%2F2015+9%3A55%3A00+AM&Browser={encoded}"
    parsed = parse(post("open", body.encode()))
    assert parsed.user_agent == value
    assert parsed.raw["Browser"] == value


def test_blank_form_values_are_kept_raw_but_read_as_absent() -> None:
    body = b"EmailAddress=j%40x.com&OpenDateTime=1%2F28%2F2015+9%3A55+AM&IPAddress=&CustomID="
    parsed = parse(post("open", body))
    assert (parsed.ip, parsed.custom_id) == (None, None)
    assert parsed.raw["IPAddress"] == ""


def test_untyped_body_is_read_as_json_or_form() -> None:
    as_json = json.dumps(open_params()).encode()
    as_form = urlencode(open_params()).encode()
    assert parse(post("open", as_json, "")) == parse(post("open", as_form, ""))


def test_json_values_that_are_not_text_are_written_as_jangomail_would() -> None:
    params = {"EmailAddress": "j@x.com", "ClickDateTime": "1/28/2015 9:55:00 AM"}
    body = json.dumps({**params, "Position": 2, "HTML": True, "URL": "http://x"})
    parsed = parse(post("click", body.encode(), "application/json; charset=utf-8"))
    assert parsed.position == 2
    assert parsed.raw["HTML"] is True


# --- renamed parameters ----------------------------------------------------------------


def test_renamed_field_is_found_under_its_new_name() -> None:
    params = {"addr": "jane@x.com", "OpenDateTime": "1/28/2015 9:55:00 AM"}
    assert parse(get("open", params), parameters={"email": "addr"}).email == "jane@x.com"


def test_renamed_field_no_longer_answers_to_its_default_name() -> None:
    params = open_params(ip="1.2.3.4", IPAddress="9.9.9.9")
    assert parse(get("open", params), parameters={"ip": "ip"}).ip == "1.2.3.4"
    assert parse(get("open", open_params(IPAddress="9.9.9.9")), parameters={"ip": "ip"}).ip is None


def test_blank_name_means_the_field_is_not_read() -> None:
    parsed = parse(get("open", open_params(CustomID="987987")), parameters={"customId": ""})
    assert parsed.custom_id is None


def test_parameters_may_be_keyed_by_jangomail_label() -> None:
    params = {"addr": "jane@x.com", "when": "1/28/2015 9:55:00 AM"}
    parsed = parse(get("open", params), parameters={"EmailAddress": "addr", "OpenDateTime": "when"})
    assert (parsed.email, parsed.occurred_at.hour) == ("jane@x.com", 9)


def test_renaming_sent_at_renames_the_sent_events_time() -> None:
    params = {"EmailAddress": "j@x.com", "sent": "1/28/2015 9:19:00 AM"}
    parsed = parse(get("sent", params), parameters={"sentAt": "sent"})
    assert parsed.occurred_at == parsed.sent_at == datetime(2015, 1, 28, 9, 19, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("email", "email"),
        ("EmailAddress", "email"),
        ("Email Address", "email"),
        ("emailaddress", "email"),
        ("TransactionalEmailID", "messageId"),
        ("Transactional Group ID", "template"),
        ("Sent Date/Time", "sentAt"),
        ("OpenDateTime", "occurredAt"),
        ("BlockDateTime", "occurredAt"),
        ("occurredAt", "occurredAt"),
        ("Browser", "userAgent"),
        ("RelayMsgID", "relayMessageId"),
        ("DiagnosticCode", "reason"),
        ("shoeSize", None),
        ("", None),
    ],
)
def test_resolve_field_accepts_field_names_and_jangomail_labels(
    name: str, field: str | None
) -> None:
    assert resolve_field(name) == field


def test_every_default_name_resolves_to_its_field() -> None:
    for field, name in DEFAULT_PARAMETERS.items():
        assert resolve_field(name) == field
        assert resolve_field(field) == field


# --- times ----------------------------------------------------------------------------


def test_time_is_converted_from_the_sources_time_zone() -> None:
    parsed = parse(
        get("open", open_params(OpenDateTime="1/28/2015 9:19:00 AM")), timezone="America/New_York"
    )
    assert parsed.occurred_at == datetime(2015, 1, 28, 14, 19, tzinfo=UTC)


def test_summer_time_is_honoured() -> None:
    parsed = parse(
        get("open", open_params(OpenDateTime="7/4/2015 9:19:00 AM")), timezone="America/New_York"
    )
    assert parsed.occurred_at == datetime(2015, 7, 4, 13, 19, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "1/28/2015 2:19:00 PM",
        "01/28/2015 02:19:00 pm",
        "1/28/2015 2:19 PM",
        "1/28/2015 14:19:00",
        "1/28/2015 14:19",
        "  1/28/2015   2:19:00 PM ",
        "2015-01-28T14:19:00",
        "2015-01-28 14:19:00",
        "2015-01-28T09:19:00-05:00",
        "2015-01-28T14:19:00Z",
        "1/28/2015 2:19:00PM",
        "1/28/2015 2:19:00 p.m.",
    ],
)
def test_time_formats_are_accepted(text: str) -> None:
    parsed = parse(get("open", open_params(OpenDateTime=text)))
    assert parsed.occurred_at == datetime(2015, 1, 28, 14, 19, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["13/28/2015 2:19:00 PM", "2/30/2015 2:19:00 PM", "1/28/2015 13:19:00 PM", "1/28/15"]
)
def test_impossible_times_are_refused(text: str) -> None:
    refused = refusal(get("open", open_params(OpenDateTime=text)))
    assert "'OpenDateTime' (occurredAt)" in refused.reason


def test_twelve_am_is_midnight() -> None:
    parsed = parse(get("open", open_params(OpenDateTime="1/28/2015 12:05:00 AM")))
    assert parsed.occurred_at == datetime(2015, 1, 28, 0, 5, tzinfo=UTC)


# --- errors ----------------------------------------------------------------------------


def test_missing_email_names_the_default_parameter() -> None:
    refused = refusal(get("open", {"OpenDateTime": "1/28/2015 9:55:00 AM"}))
    assert refused.reason == "missing parameter 'EmailAddress' (email)"


def test_missing_email_names_the_parameter_as_the_source_names_it() -> None:
    refused = refusal(get("open", open_params()), parameters={"email": "addr"})
    assert refused.reason == "missing parameter 'addr' (email)"


def test_missing_email_with_a_blank_name_says_so() -> None:
    refused = refusal(get("open", open_params()), parameters={"email": ""})
    assert "blank" in refused.reason and "email" in refused.reason


def test_missing_time_names_the_events_time_parameter() -> None:
    refused = refusal(get("click", {"EmailAddress": "j@x.com"}))
    assert refused.reason == "missing parameter 'ClickDateTime' (occurredAt)"


def test_missing_renamed_time_names_its_new_name() -> None:
    refused = refusal(get("open", open_params()), parameters={"occurredAt": "when"})
    assert refused.reason == "missing parameter 'when' (occurredAt)"


def test_unreadable_time_names_the_parameter_and_the_format() -> None:
    reason = refusal(get("open", open_params(OpenDateTime="yesterday"))).reason
    assert "'OpenDateTime' (occurredAt)" in reason
    assert "'yesterday'" in reason and "M/D/YYYY h:mm:ss AM" in reason


@pytest.mark.parametrize(
    ("event", "params", "named"),
    [
        (
            "click",
            {"Position": "first", "ClickDateTime": "1/1/2020 1:00 AM"},
            "'Position' (position)",
        ),
        (
            "sent",
            {"MessageSize": "1.5k", "SentDateTime": "1/1/2020 1:00 AM"},
            "'MessageSize' (messageSize)",
        ),
    ],
)
def test_non_integer_numbers_name_the_parameter(
    event: str, params: dict[str, str], named: str
) -> None:
    assert named in refusal(get(event, {"EmailAddress": "j@x.com", **params})).reason


def test_invalid_json_body_is_400() -> None:
    assert parse_error(post("open", b'{"EmailAddress": ', "application/json")).status == 400


def test_json_body_that_is_not_an_object_is_400() -> None:
    assert parse_error(post("open", b"[1, 2]", "application/json")).status == 400


def test_json_value_that_is_not_text_names_the_parameter() -> None:
    body = json.dumps({**open_params(), "EmailAddress": ["a@x.com"]}).encode()
    refused = refusal(post("open", body, "application/json"))
    assert refused.reason == "parameter 'EmailAddress' (email) is not text"


def test_multipart_body_is_415() -> None:
    error = parse_error(post("open", b"--x\r\n", "multipart/form-data; boundary=x"))
    assert error.status == 415


def test_form_that_is_not_utf8_is_400() -> None:
    assert parse_error(post("open", b"EmailAddress=j%FF%40x.com")).status == 400


def test_unknown_time_zone_refuses_the_event_for_a_replay_once_fixed() -> None:
    assert "Mars/Base" in refusal(get("open", open_params()), timezone="Mars/Base").reason


# --- rendering --------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENT_PARAMS)
def test_parse_of_render_gives_the_event_back(event: str) -> None:
    params, expected = SAMPLES[event]
    original = parse(get(event, params))
    rendered = render(original)
    again = parse(get(jangomail_event_name(original), rendered))
    for attribute in ("type", "email", "message_id", "occurred_at", *expected):
        assert getattr(again, attribute) == getattr(original, attribute), attribute


@pytest.mark.parametrize("event", EVENT_PARAMS)
def test_render_of_a_parsed_sample_gives_the_samples_parameters_back(event: str) -> None:
    params, _ = SAMPLES[event]
    assert dict(render(parse(get(event, params)))) == params


def test_render_with_parameters_sends_only_named_fields_under_their_names() -> None:
    original = parse(bounce(Definitive="1", DiagnosticCode=DIAGNOSTIC, CustomID="c-1"))
    parameters = {"email": "to", "occurredAt": "when", "definitive": "hard", "customId": ""}
    assert render(original, parameters) == [
        ("to", "j@x.com"),
        ("when", "1/28/2015 10:45:11 AM"),
        ("hard", "1"),
    ]


def test_render_with_renamed_parameters_round_trips() -> None:
    original = parse(get("click", SAMPLES["click"][0]))
    parameters = {
        "email": "e",
        "occurredAt": "t",
        "url": "link",
        "position": "n",
        "messageId": "id",
    }
    again = parse(get("click", render(original, parameters)), parameters=parameters)
    assert (again.email, again.occurred_at, again.url, again.position, again.message_id) == (
        original.email,
        original.occurred_at,
        original.url,
        original.position,
        original.message_id,
    )


def test_render_writes_times_in_the_given_time_zone() -> None:
    original = parse(get("open", open_params(OpenDateTime="1/28/2015 2:19:00 PM")))
    rendered = dict(render(original, timezone="America/New_York"))
    assert rendered["OpenDateTime"] == "1/28/2015 9:19:00 AM"
    again = parse(get("open", list(rendered.items())), timezone="America/New_York")
    assert again.occurred_at == original.occurred_at


def test_render_writes_afternoon_and_midnight_in_twelve_hour_time() -> None:
    event = other_provider_event(
        EventType.OPENED, occurred_at=datetime(2024, 12, 3, 0, 7, 5, tzinfo=UTC)
    )
    assert dict(render(event))["OpenDateTime"] == "12/3/2024 12:07:05 AM"
    event.occurred_at = datetime(2024, 12, 3, 23, 7, 5, tzinfo=UTC)
    assert dict(render(event))["OpenDateTime"] == "12/3/2024 11:07:05 PM"


def test_render_does_not_url_encode() -> None:
    event = other_provider_event(EventType.CLICKED, url="http://x.com/?a=1&b=ü漢")
    assert dict(render(event))["URL"] == "http://x.com/?a=1&b=ü漢"


def test_render_sends_fields_without_a_value_blank() -> None:
    rendered = dict(render(other_provider_event(EventType.OPENED)))
    assert rendered["CustomID"] == rendered["UserID"] == rendered["Browser"] == ""


def test_render_writes_a_temporary_bounce_as_definitive_0() -> None:
    event = other_provider_event(EventType.BOUNCED, severity=Severity.TEMPORARY)
    assert dict(render(event))["Definitive"] == "0"


def test_render_of_a_delivered_event_is_a_sent_call_saying_delivered() -> None:
    rendered = dict(render(other_provider_event(EventType.DELIVERED, message_size=2048)))
    assert (rendered["Delivered"], rendered["MessageSize"]) == ("True", "2048")
    assert "SentDateTime" in rendered


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        (EventType.QUEUED, "sent"),
        (EventType.SENT, "sent"),
        (EventType.DELIVERED, "sent"),
        (EventType.OPENED, "open"),
        (EventType.CLICKED, "click"),
        (EventType.UNSUBSCRIBED, "unsubscribe"),
        (EventType.BOUNCED, "bounce"),
        (EventType.FAILED, "bounce"),
        (EventType.REJECTED, "block"),
        (EventType.COMPLAINED, "complaint"),
        (EventType.DEFERRED, "soft_thing"),
        (EventType.AUTORESPONDED, "soft_thing"),
        (EventType.UNKNOWN, "soft_thing"),
    ],
)
def test_jangomail_event_name_of_each_type(event_type: EventType, name: str) -> None:
    assert jangomail_event_name(other_provider_event(event_type)) == name


def test_render_of_a_type_jangomail_lacks_sends_every_field() -> None:
    event = other_provider_event(EventType.DEFERRED, reason="4.2.2 mailbox full")
    rendered = dict(render(event))
    assert set(rendered) == {*DEFAULT_PARAMETERS.values(), "EventDateTime"}
    assert rendered["DiagnosticCode"] == "4.2.2 mailbox full"


def other_provider_event(event_type: EventType, **fields: Any) -> NormalizedEvent:
    values: dict[str, Any] = {
        "type": event_type,
        "provider": Provider.BREVO,
        "provider_event": "soft_thing",
        "email": "ann@example.com",
        "occurred_at": datetime(2024, 3, 5, 14, 15, 16, tzinfo=UTC),
        "raw": {},
        "message_id": "m-1",
        **fields,
    }
    return NormalizedEvent(**values)

"""Hostile input at every provider's parser: each case is stored safely, refused per
event naming the field, or (only when the body cannot be read at all) a PayloadError.

Storage and the ingest route are tested elsewhere; here the parsers' side of the
promise: nothing but ParsedRequest or PayloadError, and only storable events.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.domain.events import MAX_TAGS
from gateway.providers import brevo, jangomail, smtpeter
from gateway.providers.base import IngestRequest, ParsedRequest, PayloadError, SourceConfig
from tests.providers.storable import assert_sound

BREVO_EVENT = b'"event":"opened","email":"a@x.test","message-id":"<m@x>","ts_epoch":1700000000000'


def brevo_body(extra: bytes) -> bytes:
    return b"{" + BREVO_EVENT + (b"," + extra if extra else b"") + b"}"


def parse_brevo(body: bytes) -> ParsedRequest:
    parsed = brevo.adapter.parse(IngestRequest("POST", body, "application/json"), SourceConfig())
    assert_sound(parsed)
    return parsed


def smtpeter_body(**data: Any) -> bytes:
    fields = {"id": "m-1", "time": "2024-03-05 14:15:16", "recipient": "a@x.test", **data}
    return json.dumps({"event": "delivery", "data": fields}).encode()


def parse_smtpeter(body: bytes) -> ParsedRequest:
    request = IngestRequest("POST", body, "application/json")
    parsed = smtpeter.adapter.parse(request, SourceConfig())
    assert_sound(parsed)
    return parsed


def parse_jangomail(
    event: str, query: dict[str, str], timezone: str = "UTC", body: bytes = b""
) -> ParsedRequest:
    request = IngestRequest(
        "GET", body, "application/json" if body else "", list(query.items()), route_event=event
    )
    parsed = jangomail.adapter.parse(request, SourceConfig(timezone=timezone))
    assert_sound(parsed, indexed=False)
    return parsed


def one_refusal(parsed: ParsedRequest) -> str:
    assert parsed.events == []
    [refused] = parsed.refused
    return refused.reason


# -- stored, with the unstorable cleaned out (raw keeps what was sent) -----------------


@pytest.mark.parametrize(
    "extra",
    [
        b'"id":99999999999999999999999999999',
        b'"contact_id":-99999999999999999999999999999',
        b'"size":1e400',
        b'"nested":{"a":[1,[2,[3,{"b":-1e-400}]]]}',
        b'"subject":"\\u0001\\u001f\\u007f bell \\u0007"',
        b'"X-Mailin-custom":{"n":123456789012345678901234567890}',
        b'"tag":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',
        b'"template_id":22.0',
    ],
    ids=[
        "big-int",
        "big-negative-int",
        "huge-float",
        "nested",
        "control-characters",
        "custom-json-big-int",
        "tag-of-brackets",
        "template-float",
    ],
)
def test_brevo_readable_oddities_are_stored(extra: bytes) -> None:
    [event] = parse_brevo(brevo_body(extra)).events
    assert event.email == "a@x.test"


def test_brevo_big_integer_stays_exact_in_raw() -> None:
    [event] = parse_brevo(brevo_body(b'"id":99999999999999999999999999999')).events
    assert event.raw["id"] == 99999999999999999999999999999


def test_brevo_lone_surrogate_is_replaced_in_the_email_and_kept_in_raw() -> None:
    body = b'{"event":"opened","email":"a\\ud800@x.test","ts":1700000000}'
    [event] = parse_brevo(body).events
    assert event.email == "a\ufffd@x.test"
    assert event.raw["email"] == "a\ud800@x.test"


def test_brevo_nul_is_removed_from_indexed_fields_and_kept_in_raw() -> None:
    body = b'{"event":"opened","email":"a@x.test","message-id":"m\\u0000@x","ts":1700000000,'
    body += b'"tags":["t\\u0000ag"]}'
    [event] = parse_brevo(body).events
    assert (event.message_id, event.tags) == ("m@x", ("tag",))
    assert event.raw["message-id"] == "m\x00@x"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"event":"opened","date":"0001-01-01 00:00:00"}', "'date' is out of range"),
        (b'{"event":"opened","date":"9999-12-31 23:59:59"}', "'date' is out of range"),
        (b'{"event":"opened","ts_epoch":-62135596800000}', "'ts_epoch' is out of range"),
        (b'{"event":"opened","ts_epoch":99999999999999999999999}', "'ts_epoch' is out of range"),
        (b'{"event":"opened","ts":' + b"9" * 400 + b"}", "'ts' is out of range"),
        (b'{"event":"opened","ts":1e400}', "'ts' must be a number"),
    ],
    ids=["year-1-paris", "year-9999", "negative-epoch", "big-epoch", "400-digit-ts", "inf-ts"],
)
def test_brevo_times_beyond_the_range_are_refused_naming_the_field(body: bytes, field: str) -> None:
    assert one_refusal(parse_brevo(body)).startswith(f"event[0]: {field}")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (b'"email":"' + b"a" * 321 + b'"', "'email' is longer than 320 characters"),
        (b'"message-id":"' + b"m" * 256 + b'"', "'message-id' is longer than 255 characters"),
        (b'"template_id":"' + b"t" * 256 + b'"', "'template_id' is longer than 255 characters"),
        (b'"event":"' + b"e" * 65 + b'"', "'event' is longer than 64 characters"),
        (b'"tags":["' + b"t" * 256 + b'"]', "'tags' has a tag longer than 255 characters"),
        (
            b'"tags":' + json.dumps([f"t{n}" for n in range(MAX_TAGS + 1)]).encode(),
            f"'tags' has more than {MAX_TAGS} tags",
        ),
        (b'"email":["a@x.test"]', "'email' must be a string, not an array"),
        (b'"message-id":{"id":1}', "'message-id' must be a string, not an object"),
        (b'"event":7', "'event' must be a string, not a number"),
        (b'"tag":"' + b"[" * 2000 + b'"', "'tags' has a tag longer than 255 characters"),
    ],
    ids=[
        "long-email",
        "long-message-id",
        "long-template",
        "long-event",
        "long-tag",
        "too-many-tags",
        "email-array",
        "message-id-object",
        "event-number",
        "tag-of-2000-brackets",
    ],
)
def test_brevo_fields_that_cannot_be_stored_refuse_the_event_naming_them(
    extra: bytes, reason: str
) -> None:
    # Later keys win in JSON objects: each case overrides the base event's field.
    assert one_refusal(parse_brevo(brevo_body(extra))) == f"event[0]: {reason}"


def test_brevo_event_nested_too_deep_is_refused_alone() -> None:
    deep = b'{"event":"x","ts":1,"n":' + b"[" * 100 + b"]" * 100 + b"}"
    parsed = parse_brevo(b"[" + brevo_body(b"") + b"," + deep + b"]")
    assert len(parsed.events) == 1
    [refused] = parsed.refused
    assert (refused.index, refused.reason) == (1, "event[1]: nested deeper than 64 levels")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000, "nested too deep"),
        (b'{"event":"opened","ts":NaN}', "NaN is not a JSON value"),
        (b'[{"event":"opened","size":-Infinity}]', "-Infinity is not a JSON value"),
        (b'{"id":' + b"1" * 4301 + b"}", "4300"),
        (b'{"email":"\xff"}', "not UTF-8"),
        (b"", "Expecting value"),
        (b'{"a":1} {"b":2}', "extra data"),
        (b'"just text"', "not a string"),
        (b"null", "not null"),
    ],
    ids=["deep", "nan", "infinity", "4301-digits", "utf8", "empty", "two-values", "text", "null"],
)
def test_unreadable_json_bodies_are_400(body: bytes, message: str) -> None:
    for adapter in (brevo.adapter, smtpeter.adapter):
        with pytest.raises(PayloadError) as caught:
            adapter.parse(IngestRequest("POST", body, "application/json"), SourceConfig())
        assert caught.value.status == 400
        assert message in caught.value.message


def test_refused_brevo_event_replays_alone_to_the_same_refusal() -> None:
    bad = b'{"event":"opened","email":["x"],"ts":1, "n":123456789012345678901234567890}'
    parsed = parse_brevo(b"[" + brevo_body(b"") + b",\n  " + bad + b"]")
    [refused] = parsed.refused
    assert refused.body == bad
    assert one_refusal(parse_brevo(refused.body)) == refused.reason.replace("[1]", "[0]")


# -- SMTPeter ---------------------------------------------------------------------------


def test_smtpeter_huge_float_size_is_stored_without_a_size() -> None:
    body = smtpeter_body().replace(b'"id"', b'"size": 1e400, "id"')
    [event] = parse_smtpeter(body).events
    assert event.message_size is None
    assert event.raw["data"]["size"] == float("inf")


def test_smtpeter_size_beyond_64_bits_is_dropped_from_the_details() -> None:
    [event] = parse_smtpeter(smtpeter_body(size=2**64)).events
    assert event.message_size is None
    assert event.raw["data"]["size"] == 2**64


@pytest.mark.parametrize(
    "time", [10**30, "0001-01-01 00:00:00+01:00", "9999-12-31 23:59:59", -1, "1e400"]
)
def test_smtpeter_time_out_of_range_is_refused_naming_it(time: Any) -> None:
    reason = one_refusal(parse_smtpeter(smtpeter_body(time=time)))
    assert reason.startswith("event[0]: field 'time' is not a time")


def test_smtpeter_unstorable_characters_are_cleaned() -> None:
    [event] = parse_smtpeter(smtpeter_body(recipient="a\x00\ud800@x.test", tags=["a\x00"])).events
    assert (event.email, event.tags) == ("a\ufffd@x.test", ("a",))


# -- JangoMail --------------------------------------------------------------------------

SENT = {"EmailAddress": "a@x.test", "SentDateTime": "1/28/2015 9:55:00 AM"}


def test_jangomail_message_size_beyond_64_bits_is_stored_without_it() -> None:
    [event] = parse_jangomail("sent", {**SENT, "MessageSize": "99999999999999999999"}).events
    assert event.message_size is None
    assert event.raw["MessageSize"] == "99999999999999999999"


def test_jangomail_message_size_of_5000_digits_is_stored_without_it() -> None:
    [event] = parse_jangomail("sent", {**SENT, "MessageSize": "9" * 5000}).events
    assert event.message_size is None


@pytest.mark.parametrize(
    ("time", "timezone"),
    [
        ("1/1/0001 12:00:00 AM", "Europe/Paris"),
        ("12/31/9999 11:59:59 PM", "America/New_York"),
        ("0001-01-01T00:00:00+05:00", "UTC"),
    ],
)
def test_jangomail_time_at_the_edge_of_the_range_is_refused(time: str, timezone: str) -> None:
    parsed = parse_jangomail("sent", {**SENT, "SentDateTime": time}, timezone)
    assert "'SentDateTime' (occurredAt) is not a time" in one_refusal(parsed)


def test_jangomail_nul_and_surrogates_are_cleaned_from_fields() -> None:
    query = {**SENT, "EmailAddress": "a\x00@x.test", "TransactionalEmailID": "m\ud800"}
    [event] = parse_jangomail("sent", query).events
    assert (event.email, event.message_id) == ("a@x.test", "m\ufffd")


def test_jangomail_json_body_with_nan_is_400() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_jangomail("sent", {}, body=b'{"EmailAddress": NaN}')
    assert caught.value.status == 400


def test_jangomail_json_values_of_any_type_never_raise() -> None:
    body = json.dumps(
        {**SENT, "Position": [1], "MessageSize": 1e300, "CustomID": {"a": None}, "URL": True}
    ).encode()
    parsed = parse_jangomail("click", {}, body=body.replace(b"SentDateTime", b"ClickDateTime"))
    assert len(parsed.events) + len(parsed.refused) == 1


def test_jangomail_unknown_event_is_404_naming_the_seven() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_jangomail("deferred", SENT)
    assert caught.value.status == 404
    assert caught.value.message == (
        "unknown JangoMail event 'deferred': the events are"
        " sent, open, click, unsubscribe, bounce, complaint, block"
    )


def test_jangomail_overlong_email_is_refused_naming_the_parameter() -> None:
    parsed = parse_jangomail("sent", {**SENT, "EmailAddress": "a" * 321})
    assert one_refusal(parsed) == "'EmailAddress' is longer than 320 characters"


def test_jangomail_json_body_nested_too_deep_is_refused() -> None:
    body = json.dumps({**SENT, "CustomID": json.loads("[" * 500 + "]" * 500)}).encode()
    assert one_refusal(parse_jangomail("sent", {}, body=body)) == "nested deeper than 64 levels"

"""Properties of every provider's parser over arbitrary input (Hypothesis).

Whatever arrives, ``parse`` answers a ParsedRequest or raises PayloadError, nothing
else; every event it produces can be stored; and every refused event, sent again alone,
is refused again for the same reason (it is what a replay will read).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.providers import brevo, jangomail, smtpeter
from gateway.providers.base import (
    IngestRequest,
    ParsedRequest,
    PayloadError,
    ProviderAdapter,
    SourceConfig,
)
from gateway.providers.json_body import read_document
from tests.providers.storable import assert_sound

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text with what hostile traffic carries: NUL and other controls, lone surrogates,
# astral characters, brackets that look like JSON.
hostile_text = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=20),
    st.sampled_from(["", " ", "\x00", "\ud800", "a\udfffb", '["t"]', "[1]", "<m@x>", "0"]),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 10**11, 1.7e12, -1, 2**63, 2**64, 1e300]),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | numbers | hostile_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)
times = st.one_of(
    numbers,
    st.datetimes().map(lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S")),
    st.datetimes().map(str),
    json_values,
)

BREVO_EVENTS = ["request", "delivered", "deferred", "soft_bounce", "opened", "click", "spam"]
brevo_events = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(BREVO_EVENTS) | json_values,
        "email": st.emails() | json_values,
        "message-id": hostile_text | json_values,
        "ts_epoch": times,
        "s_epoch": times,
        "ts_event": times,
        "ts": times,
        "date": times,
        "tags": st.lists(hostile_text, max_size=5) | json_values,
        "tag": hostile_text | json_values,
        "template_id": numbers | hostile_text | json_values,
        "X-Mailin-custom": json_values,
        "reason": hostile_text | json_values,
        "link": hostile_text | json_values,
        "user_agent": hostile_text | json_values,
        "device_used": hostile_text,
        "contact_id": numbers | json_values,
        "subject": hostile_text | json_values,
    },
)
SMTPETER_EVENTS = ["attempt", "delivery", "failure", "bounce", "open", "click", "abuse"]
smtpeter_data = st.fixed_dictionaries(
    {},
    optional={
        "id": hostile_text | numbers,
        "time": times,
        "timestamp": times,
        "recipient": st.emails() | hostile_text | json_values,
        "to": hostile_text,
        "from": hostile_text,
        "templateid": numbers | hostile_text,
        "tags": json_values,
        "size": numbers | json_values,
        "status": hostile_text,
        "code": hostile_text | numbers,
        "description": hostile_text | json_values,
        "mime": hostile_text,
        "headers": hostile_text,
    },
)
smtpeter_records = st.one_of(
    st.builds(
        lambda name, data: {"event": name, "data": data},
        st.sampled_from(SMTPETER_EVENTS) | json_values,
        smtpeter_data | json_values,
    ),
    st.builds(
        lambda name, data: {"type": name, **data},
        st.sampled_from(SMTPETER_EVENTS) | json_values,
        smtpeter_data,
    ),
)


def body_of(document: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the escape "\ud800", as a sender would.
    return json.dumps(document).encode()


def parse(adapter: ProviderAdapter, request: IngestRequest) -> ParsedRequest | PayloadError:
    try:
        parsed = adapter.parse(request, SourceConfig())
    except PayloadError as error:
        assert error.status in (400, 413, 415)
        return error
    assert_sound(parsed)
    return parsed


def assert_refusals_replay_alone(adapter: ProviderAdapter, parsed: ParsedRequest) -> None:
    for refused in parsed.refused:
        if not refused.body.startswith(b"{"):
            # An element that is no object is no event: alone it is another kind of
            # body (an array is a batch, a number unreadable), nothing to replay.
            continue
        again = parse(adapter, IngestRequest("POST", refused.body, "application/json"))
        assert isinstance(again, ParsedRequest)
        assert again.events == []
        [alone] = again.refused
        prefix = f"event[{refused.index}]: "
        assert alone.reason == "event[0]: " + refused.reason.removeprefix(prefix)


@BOUNDED
@given(st.lists(brevo_events | json_values, max_size=4) | brevo_events)
def test_brevo_parses_any_json_into_events_and_refusals(document: Any) -> None:
    parsed = parse(brevo.adapter, IngestRequest("POST", body_of(document), "application/json"))
    if isinstance(parsed, ParsedRequest):
        sent = document if isinstance(document, list) else [document]
        assert len(parsed.events) + len(parsed.refused) == len(sent)
        assert_refusals_replay_alone(brevo.adapter, parsed)


@BOUNDED
@given(st.lists(smtpeter_records | json_values, max_size=4) | smtpeter_records)
def test_smtpeter_parses_any_json_into_events_and_refusals(document: Any) -> None:
    request = IngestRequest("POST", body_of(document), "application/json")
    parsed = parse(smtpeter.adapter, request)
    if isinstance(parsed, ParsedRequest):
        assert_refusals_replay_alone(smtpeter.adapter, parsed)


@BOUNDED
@given(st.binary(max_size=200), st.sampled_from(["application/json", "", "text/plain"]))
def test_json_providers_take_any_bytes(body: bytes, content_type: str) -> None:
    for adapter in (brevo.adapter, smtpeter.adapter):
        parse(adapter, IngestRequest("POST", body, content_type))


def standard_reading(body: bytes) -> Any:
    """What Python's own json reads (the rule the fast reader must follow), or the
    PayloadError status it gives."""
    try:
        text = body.decode("utf-8-sig")
        return json.loads(text, parse_constant=lambda name: 1 / 0)
    except (UnicodeDecodeError, ValueError, RecursionError, ZeroDivisionError):
        return 400


@BOUNDED
@given(
    st.one_of(
        json_values.map(body_of),
        json_values.map(
            lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
        ),
        st.binary(max_size=60),
        st.sampled_from(
            [
                b"[1e400]",
                b"-9223372036854775809",
                b"99999999999999999999",
                b"NaN",
                b"-0.0",
                b"\xef\xbb\xbf{}",
                b'"\\ud800"',
                b"[" * 2000 + b"]" * 2000,
                b"1E5 ",
                b"{}x",
            ]
        ),
    )
)
def test_json_bodies_are_read_as_the_standard_library_reads_them(body: bytes) -> None:
    # orjson reads most bodies; the standard library is the rule: the same values (an
    # integer stays an integer of any size, -0.0 a float), the same bodies refused.
    try:
        read: Any = read_document(body)
    except PayloadError as error:
        read = error.status
    expected = standard_reading(body)
    assert repr(read) == repr(expected)


JANGOMAIL_LABELS = [
    "EmailAddress",
    "TransactionalEmailID",
    "SentDateTime",
    "OpenDateTime",
    "ClickDateTime",
    "BounceDateTime",
    "MessageSize",
    "Position",
    "Definitive",
    "DiagnosticCode",
    "URL",
    "CustomID",
]
jangomail_values = st.one_of(
    hostile_text,
    st.datetimes().map(lambda moment: moment.strftime("%m/%d/%Y %I:%M:%S %p")),
    st.integers().map(str),
    st.sampled_from(["99999999999999999999", "1/1/0001 12:00:00 AM", "12/31/9999 11:59 PM"]),
)
query_strings = st.lists(
    st.tuples(st.sampled_from(JANGOMAIL_LABELS) | hostile_text, jangomail_values), max_size=8
)


@BOUNDED
@given(
    query_strings,
    st.sampled_from([*jangomail.EVENTS, "opens", "deferral", ""]),
    st.sampled_from(["UTC", "Europe/Paris", "Pacific/Kiritimati", "Mars/Base"]),
)
def test_jangomail_parses_any_query_string(
    query: list[tuple[str, str]], event: str, timezone: str
) -> None:
    request = IngestRequest("GET", b"", query=query, route_event=event)
    try:
        parsed = jangomail.adapter.parse(request, SourceConfig(timezone=timezone))
    except PayloadError as error:
        assert error.status == 404 and event not in (*jangomail.EVENTS, "opens")
        return
    assert_sound(parsed, indexed=False)
    assert len(parsed.events) + len(parsed.refused) == 1


@BOUNDED
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(JANGOMAIL_LABELS), json_values).map(body_of),
    ),
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "", "text/xml"]),
)
def test_jangomail_parses_any_body(body: bytes, content_type: str) -> None:
    request = IngestRequest("POST", body, content_type, route_event="click")
    try:
        parsed = jangomail.adapter.parse(request, SourceConfig())
    except PayloadError as error:
        assert error.status in (400, 415)
        return
    assert_sound(parsed, indexed=False)

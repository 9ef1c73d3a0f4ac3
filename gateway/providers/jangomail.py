"""JangoMail's Transactional Event API, both ways: ingest its calls, render ours in its style.

JangoMail calls a customer URL per event (sent, open, click, unsubscribe, bounce,
complaint, block) by GET (query string) or POST (form), passing each label under the
name the customer typed into its box; a blank box is not sent. Our route is
``GET|POST /ingest/jangomail/{token}/{event}``: the event comes from the route, the
parameters from the query string and the body (a form or a JSON object; the body wins).

Names: every gateway field (``email``, ``occurredAt``) has a default parameter name,
JangoMail's label without spaces and slashes (``EmailAddress``, ``OpenDateTime``). An
ingest source's or web hook's ``parameters`` (field -> name) rename any of them; a blank
name means "not sent"; keys may be field names or labels. Every event's time label
(``OpenDateTime``, ``ClickDateTime``, ...) is the field ``occurredAt``, so one name serves
them all; for ``sent`` the event's time is the sent time (one label, two fields).

Times are ``M/D/YYYY h:mm:ss AM`` in the account's time zone (the source's ``timezone``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.domain.events import (
    EARLIEST,
    INT64_MAX,
    LATEST,
    EventType,
    NormalizedEvent,
    Provider,
    RejectReason,
    Severity,
    severity_from_smtp,
    smtp_status_in,
)
from gateway.providers.base import (
    EventRefused,
    IngestRequest,
    ParsedRequest,
    PayloadError,
    RequestBuilder,
    SourceConfig,
)
from gateway.providers.json_body import MAX_DEPTH, json_type, read_document, too_deep

# Field -> JangoMail's default parameter name. ``occurredAt`` is not here: its label
# depends on the event (see default_parameters).
DEFAULT_PARAMETERS: Mapping[str, str] = MappingProxyType({
    "messageId": "TransactionalEmailID", "userId": "UserID", "email": "EmailAddress",
    "subject": "Subject", "template": "TransactionalGroupID", "sentAt": "SentDateTime",
    "openTracking": "OpenTrackEnabled", "clickTracking": "ClickTrackEnabled",
    "fromEmail": "FromEmailAddress", "messageSize": "MessageSize", "customId": "CustomID",
    "relayId": "RelayID", "relayMessageId": "RelayMsgID", "delivered": "Delivered",
    "ip": "IPAddress", "userAgent": "Browser", "url": "URL", "position": "Position",
    "html": "HTML", "unsubscribeType": "UnsubscribeType", "reason": "DiagnosticCode",
    "definitive": "Definitive", "abuseId": "AbuseID",
})  # fmt: skip
# Each event's own time label; "sent" has none of its own: its time is ``sentAt``'s.
_TIME_LABELS: dict[str, str] = {
    "open": "OpenDateTime", "click": "ClickDateTime", "unsubscribe": "UnsubscribeDateTime",
    "bounce": "BounceDateTime", "complaint": "ComplaintDateTime", "block": "BlockDateTime",
}  # fmt: skip
# A gateway event JangoMail has no name for (DEFERRED, UNKNOWN) is rendered with every
# field, its time under this name. Ingest refuses a route event that is none of the seven.
_OTHER_TIME_LABEL = "EventDateTime"

# The labels of each event's settings tab (the seed's tables). JangoMail lists ``block``
# without tabulating it: it gets bounce's labels without ``Definitive``.
_SHARED_FIELDS = ("messageId", "userId", "email", "template", "customId", "occurredAt")
_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    # sentAt first: a DELIVERED event rendered as "sent" gives its sent time, not its own.
    "sent": ("sentAt", *_SHARED_FIELDS, "subject", "openTracking", "clickTracking",
             "fromEmail", "messageSize", "relayId", "relayMessageId", "delivered"),
    "open": (*_SHARED_FIELDS, "ip", "userAgent"),
    "click": (*_SHARED_FIELDS, "url", "position", "html", "ip", "userAgent"),
    "unsubscribe": (*_SHARED_FIELDS, "unsubscribeType", "ip"),
    "bounce": (*_SHARED_FIELDS, "reason", "definitive"),
    "complaint": (*_SHARED_FIELDS, "abuseId"),
    "block": (*_SHARED_FIELDS, "reason"),
}  # fmt: skip
EVENTS: tuple[str, ...] = tuple(_EVENT_FIELDS)
_ALL_FIELDS: tuple[str, ...] = (*DEFAULT_PARAMETERS, "occurredAt")

_TYPES: dict[str, EventType] = {
    "sent": EventType.SENT, "open": EventType.OPENED, "click": EventType.CLICKED,
    "unsubscribe": EventType.UNSUBSCRIBED, "bounce": EventType.BOUNCED,
    "complaint": EventType.COMPLAINED, "block": EventType.REJECTED,
}  # fmt: skip
# Customers name their routes as they like: accept plurals and past tenses too.
_ALIASES: dict[str, str] = {
    "send": "sent", "opens": "open", "opened": "open", "clicks": "click", "clicked": "click",
    "unsubscribes": "unsubscribe", "unsubscribed": "unsubscribe", "bounces": "bounce",
    "bounced": "bounce", "complaints": "complaint", "complained": "complaint",
    "blocks": "block", "blocked": "block",
}  # fmt: skip
_NAMES: dict[EventType, str] = {
    EventType.QUEUED: "sent", EventType.SENT: "sent", EventType.DELIVERED: "sent",
    EventType.OPENED: "open", EventType.CLICKED: "click", EventType.UNSUBSCRIBED: "unsubscribe",
    EventType.BOUNCED: "bounce", EventType.FAILED: "bounce", EventType.REJECTED: "block",
    EventType.COMPLAINED: "complaint",
}  # fmt: skip
# The fields that are NormalizedEvent attributes as they are, both ways; the rest (time,
# email, severity and the fields only JangoMail has) are handled by name.
_TEXT_ATTRIBUTES: dict[str, str] = {
    "messageId": "message_id", "subject": "subject", "template": "template",
    "customId": "custom_id", "fromEmail": "from_email", "relayId": "relay_id",
    "relayMessageId": "relay_message_id", "ip": "ip", "userAgent": "user_agent", "url": "url",
    "unsubscribeType": "unsubscribe_type", "reason": "reason", "abuseId": "abuse_id",
}  # fmt: skip
_INTEGER_ATTRIBUTES: dict[str, str] = {"position": "position", "messageSize": "message_size"}
# The indexed fields whose refusals (too long) name the parameter.
_NAMED = (("email", "email"), ("messageId", "message_id"), ("template", "template"))
# User ID, the tracking flags and HTML have no place in the normalized event: they are
# rendered from a JangoMail event's raw parameters (under the default names).
_RAW_ONLY_FIELDS = ("userId", "openTracking", "clickTracking", "html")

_SQUASH = str.maketrans("", "", " /_-")


def _squash(name: str) -> str:
    # "Transactional Email ID", "transactional_email_id" and "TransactionalEmailID" agree.
    return name.translate(_SQUASH).lower()


_FIELD_NAMES: dict[str, str] = {
    **{_squash(label): field for field, label in DEFAULT_PARAMETERS.items()},
    **{_squash(label): "occurredAt" for label in (*_TIME_LABELS.values(), _OTHER_TIME_LABEL)},
    **{_squash(field): field for field in _ALL_FIELDS},
}

_FORM = "application/x-www-form-urlencoded"
_TIME_FORMAT_TEXT = "M/D/YYYY h:mm:ss AM"
_WHOLE_NUMBER = re.compile(r"[+-]?\d+")
# More digits than 2^63 - 1 has is surely out of 64 bits (and int() of thousands of
# digits is refused); the domain drops the few of as many digits that are out of range.
_INT64_DIGITS = len(str(INT64_MAX))
# M/D/YYYY h:mm[:ss] [AM|PM], matched by hand: strptime's %p depends on the locale.
_JANGOMAIL_TIME = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2})(?::(\d{2}))?(?: ?([AP])\.?M\.?)?", re.I
)


def default_parameters(event: str) -> dict[str, str]:
    """Field -> JangoMail's default parameter name for the fields ``event`` sends (route
    spellings such as ``opens`` accepted); an event name that is none of JangoMail's gets
    every field, its time as ``EventDateTime``."""
    return _defaults(_canonical(event))


def resolve_field(name: str) -> str | None:
    """The gateway field a parameter setting names: a field name (``email``) or a
    JangoMail label (``EmailAddress``, ``Email Address``), any case; None if neither."""
    return _FIELD_NAMES.get(_squash(name))


def jangomail_event_name(event: NormalizedEvent) -> str:
    """The JangoMail event a gateway event is rendered as; the provider's own event name
    for types JangoMail has none for (DEFERRED, AUTORESPONDED, UNKNOWN)."""
    return _NAMES.get(event.type, event.provider_event)


class JangoMailAdapter:
    """Parses one JangoMail Event API call: the route's event, the source's names."""

    provider = Provider.JANGOMAIL

    def parse(self, request: IngestRequest, source: SourceConfig) -> ParsedRequest:
        """The call's one event, or its refusal (the request body kept as is). A route
        event that is none of JangoMail's seven is PayloadError 404."""
        given = (request.route_event or "").strip()
        event = _canonical(given)
        if event is None:
            raise PayloadError(
                f"unknown JangoMail event {given!r}: the events are {', '.join(EVENTS)}",
                status=404,
            )
        values = _request_parameters(request)
        builder = RequestBuilder(prefix_index=False)
        names = _source_names(event, source.parameters)
        # A refusal names the field as this source's JangoMail account sends it.
        described = {attribute: names[field] for field, attribute in _NAMED if field in names}
        normalize = functools.partial(_normalize, event, values, source)
        builder.add(0, request.body, normalize, names=described)
        return builder.result()


def _normalize(event: str, values: dict[str, Any], source: SourceConfig) -> NormalizedEvent:
    if too_deep(values, MAX_DEPTH - 1):
        raise EventRefused(f"nested deeper than {MAX_DEPTH} levels")
    params = _Parameters(values, _source_names(event, source.parameters))
    zone = _zone(source.timezone)
    email = params.required("email")
    occurred_at = params.time("occurredAt", zone)
    if occurred_at is None:
        # JangoMail sends every event's time; without it the event cannot be placed.
        raise params.missing("occurredAt")
    normalized = NormalizedEvent(
        type=_TYPES[event],
        provider=Provider.JANGOMAIL,
        provider_event=event,
        email=email,
        occurred_at=occurred_at,
        raw=values,
        sent_at=occurred_at if event == "sent" else params.time("sentAt", zone),
    )
    for field, attribute in _TEXT_ATTRIBUTES.items():
        setattr(normalized, attribute, params.text(field))
    for field, attribute in _INTEGER_ATTRIBUTES.items():
        setattr(normalized, attribute, params.integer(field))
    normalized.smtp_status = smtp_status_in(normalized.reason)
    if event == "bounce":
        # JangoMail: "1 if the bounce was definitive. Any other number is non-definitive."
        definitive = params.text("definitive") == "1"
        normalized.severity = Severity.PERMANENT if definitive else Severity.TEMPORARY
        normalized.reject_reason = RejectReason.BOUNCED
    elif event == "block":
        normalized.reject_reason = RejectReason.BLOCKED
        normalized.severity = severity_from_smtp(normalized.reason)
    return normalized


adapter = JangoMailAdapter()


def render(
    event: NormalizedEvent, parameters: Mapping[str, str] | None = None, *, timezone: str = "UTC"
) -> list[tuple[str, str]]:
    """``event`` as the (name, value) pairs JangoMail would call a web hook with.

    Without ``parameters`` every field of the event's JangoMail event, under JangoMail's
    default names; with them (field -> name) only the fields given a non-blank name. A
    field without a value is sent blank, as JangoMail passes every configured box. Times
    are ``M/D/YYYY h:mm:ss AM`` in ``timezone``. Values are not URL-encoded here.
    """
    names = _render_names(_canonical(jangomail_event_name(event)), parameters)
    values = _field_values(event, ZoneInfo(timezone))
    rendered: dict[str, str] = {}
    for field, name in names.items():
        # For "sent", sentAt and occurredAt are one label: it is sent once.
        rendered.setdefault(name, values.get(field) or "")
    return list(rendered.items())


def _canonical(name: str) -> str | None:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in _EVENT_FIELDS else None


def _fields(event: str | None) -> tuple[str, ...]:
    return _EVENT_FIELDS[event] if event is not None else _ALL_FIELDS


def _defaults(event: str | None) -> dict[str, str]:
    time_label = _TIME_LABELS.get(event or "", _OTHER_TIME_LABEL)
    if event == "sent":
        time_label = DEFAULT_PARAMETERS["sentAt"]
    return {
        field: time_label if field == "occurredAt" else DEFAULT_PARAMETERS[field]
        for field in _fields(event)
    }


def _configured(event: str | None, parameters: Mapping[str, str]) -> dict[str, str]:
    """Field -> name (blank kept: it means "not sent") that ``parameters`` set for the
    fields of ``event``."""
    names: dict[str, str] = {}
    for key, name in parameters.items():
        field = resolve_field(key)
        if field is not None:
            names[field] = name.strip()
    if event == "sent":
        # "Sent Date/Time" is both the event's time and the sent time: naming one names both.
        shared = names.get("occurredAt", names.get("sentAt"))
        if shared is not None:
            names.setdefault("occurredAt", shared)
            names.setdefault("sentAt", shared)
    applicable = _fields(event)
    return {field: name for field, name in names.items() if field in applicable}


def _source_names(event: str | None, parameters: Mapping[str, str]) -> dict[str, str]:
    # A renamed field no longer answers to its default name; a blank one is not read.
    names = {**_defaults(event), **_configured(event, parameters)}
    return {field: name for field, name in names.items() if name}


def _render_names(event: str | None, parameters: Mapping[str, str] | None) -> dict[str, str]:
    if parameters is None:
        return _defaults(event)
    configured = _configured(event, parameters)
    return {field: configured[field] for field in _fields(event) if configured.get(field)}


def _request_parameters(request: IngestRequest) -> dict[str, Any]:
    """The query string's and the body's parameters as one dict; the body wins, and of a
    name given twice the last value (as PHP and Starlette read it)."""
    merged: dict[str, Any] = dict(request.query)
    merged.update(_body_parameters(request))
    return merged


def _body_parameters(request: IngestRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    media_type = request.content_type.partition(";")[0].strip().lower()
    if not media_type:
        # Untyped: a JSON object starts with "{", a form never does.
        json_like = request.body.lstrip().startswith(b"{")
        media_type = "application/json" if json_like else _FORM
    if media_type == _FORM:
        return _form(request.body)
    if media_type in ("application/json", "text/json") or media_type.endswith("+json"):
        return _json_object(request.body)
    raise PayloadError(
        f"unsupported media type '{media_type}': JangoMail posts {_FORM}"
        " (a query string or a JSON object are accepted too)",
        status=415,
    )


def _form(body: bytes) -> dict[str, str]:
    # Forms are UTF-8 (WHATWG; .NET's UrlEncode, which JangoMail runs on, too).
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError as exc:
        raise PayloadError(f"form is not UTF-8 text: {exc.reason}", status=400) from exc


def _json_object(body: bytes) -> dict[str, Any]:
    document = read_document(body)
    if not isinstance(document, dict):
        raise PayloadError(
            f"a JSON body must be an object of parameters, not {json_type(document)}"
        )
    return document


@dataclass(frozen=True, slots=True)
class _Parameters:
    """The request's parameters, read by gateway field under this source's names."""

    values: Mapping[str, Any]
    names: Mapping[str, str]

    def describe(self, field: str) -> str:
        return f"'{self.names[field]}' ({field})"

    def missing(self, field: str) -> EventRefused:
        if field not in self.names:
            return EventRefused(
                f"missing parameter for {field}: this source's name for it is blank"
            )
        return EventRefused(f"missing parameter {self.describe(field)}")

    def text(self, field: str) -> str | None:
        """The field's value as stripped text; None when not sent or blank."""
        name = self.names.get(field)
        value = None if name is None else self.values.get(name)
        if value is not None and not isinstance(value, str | int | float):
            raise EventRefused(f"parameter {self.describe(field)} is not text")
        return (_as_text(value) or "").strip() or None

    def required(self, field: str) -> str:
        text = self.text(field)
        if text is None:
            raise self.missing(field)
        return text

    def integer(self, field: str) -> int | None:
        """A whole number; one too large to store (``MessageSize=99999999999999999999``)
        is left out, raw keeps it."""
        text = self.text(field)
        if text is None:
            return None
        if _WHOLE_NUMBER.fullmatch(text) is None:
            raise EventRefused(f"parameter {self.describe(field)} is not a whole number: {text!r}")
        digits = text.lstrip("+-").lstrip("0")
        return int(text) if len(digits) <= _INT64_DIGITS else None

    def time(self, field: str, zone: ZoneInfo) -> datetime | None:
        text = self.text(field)
        if text is None:
            return None
        parsed = _parse_time(text, zone)
        if parsed is None:
            raise EventRefused(
                f"parameter {self.describe(field)} is not a time: {_excerpt(text)};"
                f" expected {_TIME_FORMAT_TEXT} (or ISO 8601)"
                f" between {EARLIEST.year} and {LATEST.year}"
            )
        return parsed


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 60 else f"{text[:57]}...")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        # The request is fine, the source is not: the event is kept for a replay once
        # the source's time zone is fixed.
        raise EventRefused(f"this source's time zone {name!r} is not an IANA time zone") from exc


def _parse_time(text: str, zone: ZoneInfo) -> datetime | None:
    """JangoMail's ``M/D/YYYY h:mm:ss AM`` (seconds optional, or 24-hour) or ISO 8601,
    local to ``zone`` unless it states its offset; None if it is neither, or out of the
    range the gateway stores."""
    text = " ".join(text.split())
    match = _JANGOMAIL_TIME.fullmatch(text)
    try:
        if match is None:
            parsed = datetime.fromisoformat(text)
            parsed = parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed
        else:
            month, day, year, hour, minute, second, meridiem = match.groups()
            hours = int(hour)
            if meridiem is not None:
                if not 1 <= hours <= 12:
                    return None
                hours = hours % 12 + (12 if meridiem.upper() == "P" else 0)
            parsed = datetime(
                int(year), int(month), int(day), hours, int(minute), int(second or 0), tzinfo=zone
            )
        # Converted here: near year 1 or 9999 the conversion itself overflows.
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if EARLIEST <= parsed < LATEST else None


def _format_time(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    # Built by hand: strftime has no portable unpadded month, day and hour.
    hour = local.hour % 12 or 12
    meridiem = "AM" if local.hour < 12 else "PM"
    return (
        f"{local.month}/{local.day}/{local.year} {hour}:{local.minute:02d}:{local.second:02d}"
        f" {meridiem}"
    )


def _raw_value(event: NormalizedEvent, field: str) -> str | None:
    if event.provider is not Provider.JANGOMAIL:
        return None
    return _as_text(event.raw.get(DEFAULT_PARAMETERS[field]))


def _as_text(value: Any) -> str | None:
    # A JSON body's true/false are written as JangoMail writes its booleans.
    if isinstance(value, bool):
        return "True" if value else "False"
    return None if value is None else str(value)


def _field_values(event: NormalizedEvent, zone: ZoneInfo) -> dict[str, str | None]:
    attributes = {**_TEXT_ATTRIBUTES, **_INTEGER_ATTRIBUTES}
    values = {field: _as_text(getattr(event, name)) for field, name in attributes.items()}
    values.update({field: _raw_value(event, field) for field in _RAW_ONLY_FIELDS})
    return {
        **values,
        "email": event.email,
        "sentAt": _format_time(event.sent_at or event.occurred_at, zone),
        "occurredAt": _format_time(event.occurred_at, zone),
        # JangoMail always sends False ("currently unused"); a DELIVERED event says True.
        "delivered": str(event.type is EventType.DELIVERED),
        "definitive": "1" if event.severity is Severity.PERMANENT else "0",
    }

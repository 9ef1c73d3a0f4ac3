"""SMTPeter's wire format, both ways: ingest its events, render ours in its shape.

SMTPeter describes one event in two shapes, and ``POST /ingest/smtpeter/{token}`` takes
either, one object or an array of them (mixed):

- an events-API record, ``{"event": "failure", "data": {...}}`` (an older revision of
  SMTPeter's docs names the key ``type``; both are read);
- a web hook post, ``{"type": "failure", ...}`` with the data fields at the top level.

Data fields are SMTPeter's log-file and web hook names: ``id`` (message id), ``time``
(``YYYY-MM-DD hh:mm:ss`` UTC in log files, unix seconds in web hooks) or ``timestamp``,
``recipient``, ``envelope``, ``templateid`` (``0`` means none), ``tags`` (``;``-separated
or an array), ``ip``, ``useragent`` or request ``headers``, ``url`` and ``original`` /
``destination`` (clicks), ``code`` (SMTP reply code), ``status`` / ``extended`` (enhanced
status), ``description``, ``mime`` (bounces: the DSN itself). In failure and delivery logs
``from`` and ``to`` are IP addresses and ``state`` is the SMTP phase, not a status.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.domain.events import (
    EARLIEST,
    LATEST,
    EventType,
    NormalizedEvent,
    Provider,
    RejectReason,
    Severity,
    canonical_json,
    severity_from_smtp,
    smtp_status_in,
    utc_from_epoch,
)
from gateway.providers.base import (
    EventRefused,
    IngestRequest,
    ParsedRequest,
    PayloadError,
    RequestBuilder,
    SourceConfig,
)
from gateway.providers.json_body import MAX_DEPTH, JsonBody, json_type, read_elements

_TYPES: dict[str, EventType] = {
    "attempt": EventType.SENT,
    "delivery": EventType.DELIVERED,
    "failure": EventType.BOUNCED,
    "bounce": EventType.BOUNCED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "response": EventType.AUTORESPONDED,
    "abuse": EventType.COMPLAINED,
}
# Log files are named by the plural ("failures-2024-…"), and the failure web hook's
# ``action`` says "failed": all of them name the same event.
_ALIASES: dict[str, str] = {
    "attempts": "attempt",
    "deliveries": "delivery",
    "failures": "failure",
    "failed": "failure",
    "bounces": "bounce",
    "opens": "open",
    "clicks": "click",
    "responses": "response",
    "abuses": "abuse",
}
_NAMES: dict[EventType, str] = {
    EventType.QUEUED: "attempt",
    EventType.SENT: "attempt",
    EventType.DELIVERED: "delivery",
    EventType.BOUNCED: "bounce",
    EventType.FAILED: "failure",
    EventType.REJECTED: "failure",
    EventType.DEFERRED: "failure",
    EventType.OPENED: "open",
    EventType.CLICKED: "click",
    EventType.AUTORESPONDED: "response",
    EventType.COMPLAINED: "abuse",
}
# Without a status class to go by: SMTPeter logs a failure once it "figured the message
# never could be delivered" (it has given up), while the bounce hook gets everything
# mailed back to the envelope address, unrecognised bounces and vacation replies too,
# which must not get an address suppressed.
_DEFAULT_SEVERITY: dict[str, Severity] = {
    "failure": Severity.PERMANENT,
    "bounce": Severity.TEMPORARY,
}
_BOUNCE_TYPES: dict[str, Severity] = {
    "hard": Severity.PERMANENT,
    "permanent": Severity.PERMANENT,
    "soft": Severity.TEMPORARY,
    "temporary": Severity.TEMPORARY,
    "transient": Severity.TEMPORARY,
}
_JSON_MEDIA_TYPES = frozenset({"", "application/json", "text/json"})
_UNIX_SECONDS = re.compile(r"\d+(\.\d+)?")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Gateway field -> SMTPeter's name, for refusals that name the field as SMTPeter does.
_FIELD_NAMES = {
    "provider_event": "event",
    "email": "recipient",
    "message_id": "id",
    "template": "templateid",
    "tags": "tags",
}


class SMTPeterAdapter:
    """Parses SMTPeter events-API records and web hook posts."""

    provider = Provider.SMTPETER

    def parse(self, request: IngestRequest, source: SourceConfig) -> ParsedRequest:
        """Every event in the body, in order, each normalized or refused on its own."""
        _check_media_type(request.content_type)
        builder = RequestBuilder()
        elements = read_elements(request.body)
        for index in range(len(elements.values)):
            body = functools.partial(elements.body, index)
            normalize = functools.partial(_normalize, elements, index, request.received_at)
            builder.add(index, body, normalize, names=_FIELD_NAMES)
        return builder.result()


adapter = SMTPeterAdapter()


def render(event: NormalizedEvent) -> dict[str, object]:
    """Any gateway event as an SMTPeter events-API record ``{"event", "data"}``.

    Times are whole seconds, as SMTPeter sends them; types SMTPeter has no name for
    (UNSUBSCRIBED, UNKNOWN) keep the provider's event name.
    """
    data = _render_data(event, webhook=False)
    return {"event": _smtpeter_name(event), "data": data}


def render_webhook(event: NormalizedEvent) -> dict[str, object]:
    """Any gateway event as an SMTPeter web hook post: the data fields plus ``type``."""
    return {"type": _smtpeter_name(event), **_render_data(event, webhook=True)}


def _check_media_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in _JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        raise PayloadError(
            f"expected application/json (SMTPeter events are JSON), got {media_type!r}",
            status=415,
        )


def _normalize(elements: JsonBody, index: int, received_at: datetime | None) -> NormalizedEvent:
    record = elements.values[index]
    if not isinstance(record, dict):
        raise EventRefused(f"not a JSON object but {json_type(record)}")
    if elements.too_deep(index):
        raise EventRefused(f"nested deeper than {MAX_DEPTH} levels")
    name_key = "event" if "event" in record else "type"
    name = record.get(name_key)
    if name is None or name == "":
        raise EventRefused("missing field 'event' or 'type'")
    if not isinstance(name, str):
        raise EventRefused(f"field {name_key!r} is not text")
    data: Mapping[str, Any] = record
    if "data" in record:
        data = record["data"]
        if not isinstance(data, dict):
            raise EventRefused("field 'data' is not an object")

    canonical = _canonical(name)
    event_type = _TYPES.get(canonical, EventType.UNKNOWN)
    email = _text(data, "recipient", "email", "emailfrom") or _address(_text(data, "to"))
    if email is None:
        raise EventRefused("missing field 'recipient'")
    occurred_at = _occurred_at(data, received_at)
    message_id = _text(data, "id", "messageid")
    sender = _text(data, "from")
    headers = _text(data, "headers")
    event = NormalizedEvent(
        type=event_type,
        provider=Provider.SMTPETER,
        provider_event=name,
        email=email,
        occurred_at=occurred_at,
        raw=record,
        message_id=message_id,
        sent_at=occurred_at if event_type is EventType.SENT else None,
        template=_template(data),
        tags=_tags(data.get("tags")),
        ip=_text(data, "ip"),
        user_agent=_text(data, "useragent") or _header(headers, "user-agent"),
        from_email=_text(data, "envelope", "mailfrom") or _address(sender),
        sending_ip=sender if sender and _address(sender) is None else None,
        message_size=_size(data.get("size")),
    )
    if event_type is EventType.CLICKED:
        # ``url`` is SMTPeter's own tracking link; the customer's link is where it led.
        event.url = _text(data, "original", "destination", "url")
    if canonical in _DEFAULT_SEVERITY:
        _add_bounce_details(event, canonical, data)
    return event


def _add_bounce_details(event: NormalizedEvent, name: str, data: Mapping[str, Any]) -> None:
    mime = _text(data, "mime")
    code = _text(data, "code")
    event.reason = _text(data, "description", "diagnostic") or _header(mime, "diagnostic-code")
    # The enhanced status where SMTPeter gives one, else the one in the text or the DSN,
    # else the bare reply code: the most precise status there is.
    event.smtp_status = (
        smtp_status_in(_text(data, "status", "extended"))
        or smtp_status_in(_text(data, "dsn"))
        or smtp_status_in(event.reason)
        or smtp_status_in(_header(mime, "status"))
        or code
    )
    event.severity = (
        severity_from_smtp(event.smtp_status)
        or severity_from_smtp(event.reason)
        or _BOUNCE_TYPES.get((_text(data, "bouncetype") or "").lower())
        or _DEFAULT_SEVERITY[name]
    )
    event.reject_reason = RejectReason.BOUNCED
    if event.message_id is not None:
        # SMTPeter reports a DSN it recognises as a failure *and* passes it to the bounce
        # log: one basis for both (dedupe_key then leaves the event name out) stores it once.
        event.dedupe_basis = canonical_json(["bounce", event.message_id, event.email.lower()])


def _canonical(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def _text(data: Mapping[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` holding a non-blank scalar, as stripped text."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
    return None


def _address(value: str | None) -> str | None:
    # ``to`` and ``from`` are IP addresses in SMTPeter's logs, addresses elsewhere.
    return value if value is not None and "@" in value else None


def _header(text: str | None, name: str) -> str | None:
    """A ``Name: value`` line's value in newline-separated headers (or a DSN)."""
    for line in (text or "").splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == name:
            return value.strip() or None
    return None


def _occurred_at(data: Mapping[str, Any], received_at: datetime | None) -> datetime:
    for key in ("time", "timestamp"):
        value = data.get(key)
        if value is None or value == "":
            continue
        parsed = _parse_time(value)
        if parsed is None:
            raise EventRefused(
                f"field {key!r} is not a time between {EARLIEST.year} and {LATEST.year}:"
                f" {_excerpt(value)}"
            )
        return parsed
    # SMTPeter's click and abuse web hooks carry no time: they are posted as they
    # happen, so the time we received them is the best there is.
    if received_at is not None:
        return received_at
    raise EventRefused("missing field 'time'")


def _excerpt(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json_type(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _parse_time(value: Any) -> datetime | None:
    """``YYYY-MM-DD hh:mm:ss`` (UTC unless it says otherwise) or unix seconds, within
    the range the gateway stores; None otherwise."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            parsed = utc_from_epoch(value)
        elif not isinstance(value, str):
            return None
        elif _UNIX_SECONDS.fullmatch(text := value.strip()):
            parsed = utc_from_epoch(float(text))
        else:
            parsed = datetime.fromisoformat(text)
            parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if EARLIEST <= parsed < LATEST else None


def _template(data: Mapping[str, Any]) -> str | None:
    template = _text(data, "templateid", "template")
    # SMTPeter writes 0 when no template was used.
    return None if template == "0" else template


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        if not all(isinstance(item, str | int | float) for item in value):
            raise EventRefused("field 'tags' holds something that is not text")
        items = [str(item) for item in value]
    elif isinstance(value, str | int | float):
        items = re.split(r"[;,]", str(value))
    else:
        raise EventRefused("field 'tags' is not a list or text")
    return tuple(dict.fromkeys(tag for tag in (item.strip() for item in items) if tag))


def _size(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):  # text, 1e400: not a size
        return None


def _smtpeter_name(event: NormalizedEvent) -> str:
    if event.provider is Provider.SMTPETER:
        # SMTPeter's own failure stays a failure, not the bounce its type would say.
        name = _canonical(event.provider_event)
        if _TYPES.get(name) is event.type:
            return name
    return _NAMES.get(event.type, event.provider_event)


def _render_data(event: NormalizedEvent, *, webhook: bool) -> dict[str, object]:
    status = event.smtp_status
    text_time = event.occurred_at.strftime(_TIME_FORMAT)
    data: dict[str, object | None] = {
        "id": event.message_id,
        # Log files (the events API) write text; web hooks unix seconds plus the text.
        "time": int(event.occurred_at.timestamp()) if webhook else text_time,
        "timestamp": text_time if webhook else None,
        "recipient": event.email,
        "envelope": event.from_email,
        "from": event.sending_ip,
        "templateid": event.template,
        "tags": list(event.tags),
        "ip": event.ip,
        "useragent": event.user_agent,
        "url": event.url,
        ("original" if webhook else "destination"): event.url,
        "code": status if status and status.isdigit() else None,
        ("extended" if webhook else "status"): smtp_status_in(status),
        "description": event.reason,
        "size": event.message_size,
    }
    return {key: value for key, value in data.items() if value is not None}

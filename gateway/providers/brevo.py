"""Brevo (formerly Sendinblue) transactional webhooks, in both directions.

:meth:`BrevoAdapter.parse` reads what Brevo posts to ``/ingest/brevo/{token}``: one JSON
event object or an array of them (batched webhooks). :func:`render` writes a normalized
event back as a Brevo-style object, for web hooks configured in the BREVO format.

Brevo's quirks handled here (DESIGN.md, "Normalized events"): tags as ``tags`` (array) or
``tag`` (array, JSON text of an array, or plain text); ``ts_event``/``ts`` in seconds,
``ts_epoch`` in milliseconds except where it is seconds (below 10^11), misspelt
``s_epoch`` in some payloads; ``date`` in Europe/Paris time; ``message-id`` with or
without angle brackets (stored without); ``X-Mailin-custom`` that may or may not be JSON
(kept as sent); 5.x.x failures labelled ``deferred`` (the SMTP status in ``reason`` decides).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.domain.events import (
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
from gateway.providers.base import IngestRequest, PayloadError, SourceConfig

# Brevo documents ``date`` as CET/CEST whatever the account's own time zone is.
_PARIS = ZoneInfo("Europe/Paris")
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 10^11 seconds is the year 5138 and 10^11 milliseconds is March 1973, so the two
# readings of ``ts_epoch`` cannot be confused for any real event.
_MILLISECONDS_FROM = 10**11
_MILLISECOND_FIELDS = ("ts_epoch", "s_epoch")
# Where the event's time is read from, best first.
_OCCURRED_FIELDS = ("ts_event", "ts", "ts_epoch", "s_epoch", "date")


@dataclass(frozen=True, slots=True)
class _Kind:
    """What one Brevo event name means in the gateway's terms."""

    type: EventType
    severity: Severity | None = None
    reject_reason: RejectReason | None = None
    # True where the SMTP status class in ``reason`` overrides ``severity``.
    severity_from_reason: bool = False
    unique: bool | None = None
    proxy: bool | None = None


_UNKNOWN = _Kind(EventType.UNKNOWN)
_KINDS: dict[str, _Kind] = {
    "request": _Kind(EventType.QUEUED),
    "delivered": _Kind(EventType.DELIVERED),
    "deferred": _Kind(EventType.DEFERRED, Severity.TEMPORARY, severity_from_reason=True),
    "soft_bounce": _Kind(EventType.BOUNCED, Severity.TEMPORARY, RejectReason.BOUNCED),
    "hard_bounce": _Kind(EventType.BOUNCED, Severity.PERMANENT, RejectReason.BOUNCED),
    "blocked": _Kind(EventType.REJECTED, None, RejectReason.BLOCKED, severity_from_reason=True),
    "invalid_email": _Kind(EventType.BOUNCED, Severity.PERMANENT, RejectReason.INVALID),
    "error": _Kind(EventType.FAILED, severity_from_reason=True),
    "opened": _Kind(EventType.OPENED, unique=False, proxy=False),
    "unique_opened": _Kind(EventType.OPENED, unique=True, proxy=False),
    "proxy_open": _Kind(EventType.OPENED, unique=False, proxy=True),
    "unique_proxy_open": _Kind(EventType.OPENED, unique=True, proxy=True),
    "click": _Kind(EventType.CLICKED),
    # Brevo's documentation and its payloads disagree on these spellings: accept both.
    "complaint": _Kind(EventType.COMPLAINED),
    "spam": _Kind(EventType.COMPLAINED),
    "unsubscribed": _Kind(EventType.UNSUBSCRIBED),
    "unsubscribe": _Kind(EventType.UNSUBSCRIBED),
}


class BrevoAdapter:
    """Parses Brevo transactional webhook posts into normalized events."""

    provider = Provider.BREVO

    def parse(self, request: IngestRequest, source: SourceConfig) -> list[NormalizedEvent]:
        """The events of one Brevo post, in the order sent.

        Validation is all-or-nothing: one bad element refuses the whole request, with a
        :class:`PayloadError` naming it (``event[3]: missing field 'email'``). Brevo has
        no per-source settings that change parsing, so ``source`` is not read.
        """
        _check_media_type(request.content_type)
        elements = _elements(_decode(request.body))
        return [_parse_event(_Element(index, data)) for index, data in enumerate(elements)]


adapter = BrevoAdapter()


def _check_media_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    # Some senders and proxies post JSON as text/plain or without a type: tolerate them.
    if media_type in ("", "text/plain") or media_type.endswith(("/json", "+json")):
        return
    raise PayloadError(
        f"unsupported media type '{media_type}': Brevo webhooks post application/json",
        status=415,
    )


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            f" (char {exc.pos})",
            status=400,
        ) from exc
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 JSON: bad byte at {exc.start}", status=400) from exc


def _elements(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict):
        return [document]
    if not isinstance(document, list):
        raise PayloadError(
            f"body must be a JSON object or an array of objects, not {_json_type(document)}"
        )
    if not document:
        raise PayloadError("body is an empty array: expected at least one event")
    for index, element in enumerate(document):
        if not isinstance(element, dict):
            raise PayloadError(f"event[{index}]: must be an object, not {_json_type(element)}")
    return document


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


class _Element:
    """One event object of a post, read field by field with errors that name it."""

    def __init__(self, index: int, data: dict[str, Any]) -> None:
        self.index = index
        self.data = data

    def error(self, problem: str) -> PayloadError:
        return PayloadError(f"event[{self.index}]: {problem}")

    def text(self, name: str) -> str | None:
        """The field's string without surrounding whitespace; None when absent or blank."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(f"'{name}' must be a string, not {_json_type(value)}")
        return value.strip() or None

    def number(self, name: str) -> float | None:
        """The field as a finite number; Brevo sends some as numeric strings."""
        value = self.data.get(name)
        if value is None:
            return None
        try:
            # float() also reads numeric strings; JSON true is not a time, though.
            number = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise self.error(f"'{name}' must be a number")
        return number

    def time(self, name: str) -> datetime:
        """A present time field as an aware datetime, by that field's rules."""
        if name == "date":
            return self._paris_date()
        seconds = self.number(name)
        assert seconds is not None  # callers only ask for present fields
        if name in _MILLISECOND_FIELDS and seconds >= _MILLISECONDS_FROM:
            seconds /= 1000
        try:
            return utc_from_epoch(seconds)
        except (OverflowError, OSError, ValueError) as exc:
            raise self.error(f"'{name}' is out of range") from exc

    def _paris_date(self) -> datetime:
        text = self.text("date")
        try:
            moment = datetime.fromisoformat(text) if text else None
        except ValueError:
            moment = None
        if moment is None:
            raise self.error("'date' must be a text like '2020-10-09 00:00:00'")
        # An explicit offset wins; otherwise Paris time, and the first of the two
        # readings (fold=0) of the hour repeated when summer time ends.
        return moment if moment.tzinfo else moment.replace(tzinfo=_PARIS)


def _parse_event(element: _Element) -> NormalizedEvent:
    # An event without a name is still stored (as UNKNOWN): never refuse what a
    # provider adds, as long as we know who it was for and when.
    name = element.text("event") or ""
    kind = _KINDS.get(name.strip().lower(), _UNKNOWN)
    reason = element.text("reason")
    severity = kind.severity
    if kind.severity_from_reason:
        severity = severity_from_smtp(reason) or kind.severity
    return NormalizedEvent(
        type=kind.type,
        provider=Provider.BREVO,
        provider_event=name,
        email=_email(element),
        occurred_at=_occurred_at(element),
        sent_at=_sent_at(element),
        raw=element.data,
        message_id=_message_id(element),
        subject=element.text("subject"),
        template=_template(element),
        tags=_tags(element),
        custom_id=_custom_id(element),
        severity=severity,
        reject_reason=kind.reject_reason,
        reason=reason,
        smtp_status=smtp_status_in(reason),
        url=element.text("link"),
        unique=kind.unique,
        proxy=kind.proxy,
        sending_ip=element.text("sending_ip"),
    )


def _email(element: _Element) -> str:
    if element.data.get("email") is None:
        raise element.error("missing field 'email'")
    email = element.text("email")
    if email is None:
        raise element.error("'email' is empty")
    return email


def _occurred_at(element: _Element) -> datetime:
    for name in _OCCURRED_FIELDS:
        # Only the field used is validated: a stray bad ``date`` next to a good
        # ``ts_event`` should not refuse a whole batch.
        if element.data.get(name) is not None:
            return element.time(name)
    names = ", ".join(f"'{name}'" for name in _OCCURRED_FIELDS)
    raise element.error(f"missing time: none of {names}")


def _sent_at(element: _Element) -> datetime | None:
    # Brevo documents ts_epoch as the time the message was sent.
    for name in _MILLISECOND_FIELDS:
        if element.data.get(name) is not None:
            return element.time(name)
    return None


def _message_id(element: _Element) -> str | None:
    text = element.text("message-id")
    # Stored without brackets so that ids from every source compare equal.
    message_id = text.strip("<>").strip() if text else ""
    return message_id or None


def _template(element: _Element) -> str | None:
    value = element.data.get("template_id")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip() or None
    raise element.error("'template_id' must be an integer or a string")


def _tags(element: _Element) -> tuple[str, ...]:
    found = [*_tag_list(element, "tags"), *_tag_list(element, "tag")]
    # dict.fromkeys de-duplicates and keeps the first-seen order.
    return tuple(dict.fromkeys(tag for tag in found if tag))


def _tag_list(element: _Element, name: str) -> list[str]:
    value = element.data.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else None
        except ValueError:
            value = None  # not JSON after all: a plain tag that starts with a bracket
        if not isinstance(value, list):
            return [text]
    if not isinstance(value, list):
        raise element.error(f"'{name}' must be an array of strings or a string")
    tags: list[str] = []
    for position, tag in enumerate(value):
        if not isinstance(tag, str):
            raise element.error(f"'{name}[{position}]' must be a string, not {_json_type(tag)}")
        tags.append(tag.strip())
    return tags


def _custom_id(element: _Element) -> str | None:
    value = element.data.get("X-Mailin-custom")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        # Kept as sent, JSON or not: it is the customer's own header value.
        return value
    # Sent as JSON rather than as text: store one stable text for it.
    return canonical_json(value)


# Brevo has no "sent" event; SENT (accepted by the sending server, not yet by the
# recipient's) is closest to Brevo's "request", and "delivered" would claim more.
_RENDER_NAMES: dict[EventType, str] = {
    EventType.QUEUED: "request",
    EventType.SENT: "request",
    EventType.DELIVERED: "delivered",
    EventType.DEFERRED: "deferred",
    EventType.REJECTED: "blocked",
    EventType.FAILED: "error",
    EventType.CLICKED: "click",
    EventType.COMPLAINED: "complaint",
    EventType.UNSUBSCRIBED: "unsubscribed",
}


def render(event: NormalizedEvent) -> dict[str, object]:
    """The event as Brevo would post it, with Brevo's field names and shapes.

    Fields the event does not know are left out. ``ts_epoch`` carries ``sent_at`` (as
    Brevo documents it) and is left out where that is unknown. Parsing the result gives
    back the type, email, message id, time (to the second), tags, template and URL,
    except for SENT and AUTORESPONDED, which Brevo has no events for.
    """
    seconds = (event.occurred_at - _EPOCH) // timedelta(seconds=1)
    fields: dict[str, object | None] = {
        "event": _brevo_event_name(event),
        "email": event.email,
        "date": event.occurred_at.astimezone(_PARIS).strftime(_DATE_FORMAT),
        "ts": seconds,
        "message-id": f"<{event.message_id}>" if event.message_id else None,
        "ts_event": seconds,
        "subject": event.subject,
        "X-Mailin-custom": event.custom_id,
        "sending_ip": event.sending_ip,
        "ts_epoch": (
            (event.sent_at - _EPOCH) // timedelta(milliseconds=1) if event.sent_at else None
        ),
        "template_id": _rendered_template(event.template),
        "tags": list(event.tags),
        "reason": event.reason,
        "link": event.url,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _brevo_event_name(event: NormalizedEvent) -> str:
    if event.type is EventType.BOUNCED:
        if event.reject_reason is RejectReason.INVALID:
            return "invalid_email"
        # Receivers suppress addresses on hard bounces: claim one only when we know.
        return "hard_bounce" if event.severity is Severity.PERMANENT else "soft_bounce"
    if event.type is EventType.OPENED:
        name = "proxy_open" if event.proxy else "opened"
        return f"unique_{name}" if event.unique else name
    if event.type in _RENDER_NAMES:
        return _RENDER_NAMES[event.type]
    # AUTORESPONDED and UNKNOWN: Brevo's own name where it is one, so it passes through.
    if event.provider is Provider.BREVO and event.provider_event:
        return event.provider_event
    return "unknown"


def _rendered_template(template: str | None) -> int | str | None:
    # Brevo's template ids are integers; text that int() would change ("007") stays text.
    if template and template.isascii() and template.isdigit() and str(int(template)) == template:
        return int(template)
    return template

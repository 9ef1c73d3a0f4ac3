"""Brevo (formerly Sendinblue) transactional webhooks, in both directions.

:meth:`BrevoAdapter.parse` reads what Brevo posts to ``/ingest/brevo/{token}``: one JSON
event object or an array of them (batched webhooks), event by event. :func:`render`
writes a normalized event back as a Brevo-style object, for web hooks configured in the
BREVO format.

Brevo's quirks handled here (DESIGN.md, "Normalized events"): tags as ``tags`` (array) or
``tag`` (array, JSON text of an array, or plain text); times in this order of trust:
``ts_epoch`` (the event's own time, UTC, in milliseconds, or seconds below 10^11;
misspelt ``s_epoch`` in some payloads), ``ts_event``, ``ts`` (seconds; captured traffic
shows them in the account's time zone), ``date`` (Europe/Paris); ``sentAt`` only on the
message's own ``request`` event; ``message-id`` with or without angle brackets (stored
without); ``X-Mailin-custom`` that may or may not be JSON (kept as sent); 5.x.x failures
labelled ``deferred`` (the SMTP status in ``reason`` decides); events without a
recipient (a proxy open with ``"email": ""``) stored with an empty email.

A field the event cannot do without (``event``, ``email``, ``message-id``, the time,
``template_id``, ``tags``/``tag``) that has the wrong JSON type refuses that event,
naming it; a detail field of the wrong type (``user_agent`` as a number) is left out,
and ``raw`` keeps it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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

# Brevo documents ``date`` as CET/CEST whatever the account's own time zone is.
_PARIS = ZoneInfo("Europe/Paris")
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 10^11 seconds is the year 5138 and 10^11 milliseconds is March 1973, so the two
# readings of ``ts_epoch`` cannot be confused for any real event.
_MILLISECONDS_FROM = 10**11
_MILLISECOND_FIELDS = ("ts_epoch", "s_epoch")
# Where the event's time is read from, best first: ``ts_epoch`` is the event's own time
# in UTC in captured traffic, while ``ts``/``ts_event`` have been seen 9 hours off (the
# account's time zone) and ``date`` is local time with a gap and a fold every year.
_OCCURRED_FIELDS = ("ts_epoch", "s_epoch", "ts_event", "ts", "date")
# Gateway field -> Brevo's name, for refusals that name the field as Brevo sent it.
_FIELD_NAMES = {
    "provider_event": "event",
    "message_id": "message-id",
    "template": "template_id",
    "tags": "tags",
}


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
# The message's own send event: the only one whose time is the message's sent time.
_SEND_EVENT = "request"


class BrevoAdapter:
    """Parses Brevo transactional webhook posts into normalized events."""

    provider = Provider.BREVO

    def parse(self, request: IngestRequest, source: SourceConfig) -> ParsedRequest:
        """The events of one Brevo post, in the order sent, each normalized or refused
        on its own (``event[3]: 'ts_epoch' must be a number``). Brevo has no per-source
        settings that change parsing, so ``source`` is not read."""
        _check_media_type(request.content_type)
        builder = RequestBuilder()
        elements = read_elements(request.body)
        for index in range(len(elements.values)):
            body = functools.partial(elements.body, index)
            normalize = functools.partial(_normalize, elements, index)
            builder.add(index, body, normalize, names=_FIELD_NAMES)
        return builder.result()


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


def _normalize(elements: JsonBody, index: int) -> NormalizedEvent:
    value = elements.values[index]
    if not isinstance(value, dict):
        raise EventRefused(f"must be an object, not {json_type(value)}")
    if elements.too_deep(index):
        raise EventRefused(f"nested deeper than {MAX_DEPTH} levels")
    return _parse_event(_Element(value))


class _Element:
    """One event object of a post, read field by field with refusals that name it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def given(self, name: str) -> bool:
        """The field is present with a value: not absent, null or an empty string."""
        return self.data.get(name) not in (None, "")

    def text(self, name: str) -> str | None:
        """The field's string without surrounding whitespace; None when absent or blank.
        Any other JSON type refuses the event."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise EventRefused(f"'{name}' must be a string, not {json_type(value)}")
        return value.strip() or None

    def detail(self, name: str) -> str | None:
        """A detail field's text (numbers written out); anything else is left out."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value.strip() or None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return None

    def seconds(self, name: str) -> float:
        """A present time field as a number of seconds; Brevo sends some as numeric
        strings. Infinite for an integer beyond any float (out of range, not unreadable)."""
        value: Any = self.data.get(name)
        try:
            # float() also reads numeric strings; JSON true is not a time, though.
            number = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        except OverflowError:
            number = math.inf
        if math.isnan(number) or (math.isinf(number) and not isinstance(value, int)):
            raise EventRefused(f"'{name}' must be a number")
        if name in _MILLISECOND_FIELDS and number >= _MILLISECONDS_FROM:
            number /= 1000
        return number

    def time(self, name: str) -> datetime:
        """A present time field as an aware UTC datetime, by that field's rules."""
        moment: datetime | None
        if name == "date":
            try:
                # "0001-01-01 00:00:00" in Paris is before year 1 in UTC: no datetime.
                moment = self._paris_date().astimezone(UTC)
            except OverflowError:
                moment = None
        else:
            try:
                moment = datetime.fromtimestamp(self.seconds(name), UTC)
            except (OverflowError, OSError, ValueError):  # beyond what datetime holds
                moment = None
        if moment is None or not EARLIEST <= moment < LATEST:
            raise EventRefused(
                f"'{name}' is out of range: not a time between {EARLIEST.year} and {LATEST.year}"
            )
        return moment

    def _paris_date(self) -> datetime:
        text = self.text("date")
        try:
            moment = datetime.fromisoformat(text) if text else None
        except ValueError:
            moment = None
        if moment is None:
            raise EventRefused("'date' must be a text like '2020-10-09 00:00:00'")
        # An explicit offset wins; otherwise Paris time, and the first of the two
        # readings (fold=0) of the hour repeated when summer time ends.
        return moment if moment.tzinfo else moment.replace(tzinfo=_PARIS)


def _parse_event(element: _Element) -> NormalizedEvent:
    # An event without a name is still stored (as UNKNOWN): never refuse what a
    # provider adds, as long as we know when it happened.
    name = element.text("event") or ""
    kind = _KINDS.get(name.lower(), _UNKNOWN)
    reason = element.detail("reason")
    severity = kind.severity
    if kind.severity_from_reason:
        severity = severity_from_smtp(reason) or kind.severity
    occurred_at = _occurred_at(element)
    return NormalizedEvent(
        type=kind.type,
        provider=Provider.BREVO,
        provider_event=name,
        email=_email(element),
        occurred_at=occurred_at,
        # Every Brevo event carries ts_epoch, but as its own time: only the send event
        # tells when the message was sent (the timeline carries it to the others).
        sent_at=occurred_at if name.lower() == _SEND_EVENT else None,
        raw=element.data,
        message_id=_message_id(element),
        subject=element.detail("subject"),
        template=_template(element),
        tags=_tags(element),
        custom_id=_custom_id(element),
        severity=severity,
        reject_reason=kind.reject_reason,
        reason=reason,
        smtp_status=smtp_status_in(reason),
        url=element.detail("link"),
        user_agent=element.detail("user_agent"),
        unique=kind.unique,
        proxy=kind.proxy,
        sending_ip=element.detail("sending_ip"),
        from_email=element.detail("sender_email"),
        device=element.detail("device_used"),
        preview_url=element.detail("mirror_link"),
        contact_id=_contact_id(element),
    )


def _email(element: _Element) -> str:
    # Brevo posts some events without a recipient (a proxy open with "email": ""):
    # they are stored all the same, with an empty email.
    return element.text("email") or ""


def _occurred_at(element: _Element) -> datetime:
    for name in _OCCURRED_FIELDS:
        # Only the field used is validated: a stray bad ``date`` next to a good
        # ``ts_epoch`` should not refuse the event.
        if element.given(name):
            return element.time(name)
    names = ", ".join(f"'{name}'" for name in _OCCURRED_FIELDS)
    raise EventRefused(f"missing time: none of {names}")


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
    raise EventRefused("'template_id' must be an integer or a string")


def _contact_id(element: _Element) -> str | None:
    # Brevo documents 0 for "no such contact".
    contact = element.detail("contact_id")
    return None if contact in (None, "0") else contact


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
        except (ValueError, RecursionError):
            value = None  # not JSON after all: a plain tag that starts with a bracket
        if not isinstance(value, list):
            return [text]
    if not isinstance(value, list):
        raise EventRefused(f"'{name}' must be an array of strings or a string")
    tags: list[str] = []
    for position, tag in enumerate(value):
        if not isinstance(tag, str):
            raise EventRefused(f"'{name}[{position}]' must be a string, not {json_type(tag)}")
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

    Fields the event does not know are left out. ``ts_epoch`` is the event's own time
    in milliseconds, as Brevo sends it. Parsing the result gives back the type, email,
    message id, time (to the millisecond), tags, template and URL, except for SENT and
    AUTORESPONDED, which Brevo has no events for.
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
        "ts_epoch": (event.occurred_at - _EPOCH) // timedelta(milliseconds=1),
        "template_id": _rendered_template(event.template),
        "tags": list(event.tags),
        "reason": event.reason,
        "link": event.url,
        "user_agent": event.user_agent,
        "device_used": event.device,
        "mirror_link": event.preview_url,
        "sender_email": event.from_email,
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

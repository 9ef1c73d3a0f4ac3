"""The normalized email event: one shape for every provider.

Pure data and pure functions: nothing here does I/O or imports the rest of the gateway.
The type set follows django-anymail's, so no provider's distinction is lost.
"""

from __future__ import annotations

import enum
import hashlib
import json
import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class EventType(enum.Enum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    DEFERRED = "DEFERRED"
    BOUNCED = "BOUNCED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    COMPLAINED = "COMPLAINED"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    AUTORESPONDED = "AUTORESPONDED"
    UNKNOWN = "UNKNOWN"


class Provider(enum.Enum):
    JANGOMAIL = "JANGOMAIL"
    BREVO = "BREVO"
    SMTPETER = "SMTPETER"


class Severity(enum.Enum):
    PERMANENT = "PERMANENT"
    TEMPORARY = "TEMPORARY"


class RejectReason(enum.Enum):
    INVALID = "INVALID"
    BOUNCED = "BOUNCED"
    BLOCKED = "BLOCKED"
    SPAM = "SPAM"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    OTHER = "OTHER"


@dataclass(slots=True)
class NormalizedEvent:
    """One provider event in the gateway's shape.

    ``raw`` is the provider's payload for this one event exactly as received (for a
    batched post, the one element). Optional fields are ``None`` where the provider
    does not say. ``dedupe_basis`` lets an adapter say which events are "the same"
    when that is not simply "the same payload" (see :func:`dedupe_key`).
    """

    type: EventType
    provider: Provider
    provider_event: str
    email: str
    occurred_at: datetime
    raw: dict[str, Any]
    message_id: str | None = None
    sent_at: datetime | None = None
    subject: str | None = None
    template: str | None = None
    tags: tuple[str, ...] = ()
    custom_id: str | None = None
    # delivery problems (DEFERRED, BOUNCED, REJECTED, FAILED)
    severity: Severity | None = None
    reject_reason: RejectReason | None = None
    reason: str | None = None
    smtp_status: str | None = None
    # engagement (OPENED, CLICKED, UNSUBSCRIBED)
    url: str | None = None
    position: int | None = None
    ip: str | None = None
    user_agent: str | None = None
    unique: bool | None = None
    proxy: bool | None = None
    unsubscribe_type: str | None = None
    # complaints
    abuse_id: str | None = None
    # sending (QUEUED, SENT, DELIVERED)
    sending_ip: str | None = None
    message_size: int | None = None
    relay_id: str | None = None
    relay_message_id: str | None = None
    from_email: str | None = None
    # Brevo: the device class of an open or click ("DESKTOP", "MOBILE"), the link to
    # the event in Brevo's own log, and Brevo's id of the recipient as a contact.
    device: str | None = None
    preview_url: str | None = None
    contact_id: str | None = None
    dedupe_basis: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        self.occurred_at = self.occurred_at.astimezone(UTC)
        if self.sent_at is not None:
            if self.sent_at.tzinfo is None:
                raise ValueError("sent_at must be timezone-aware")
            self.sent_at = self.sent_at.astimezone(UTC)


# Names of the optional detail fields, in the order above: storage keeps them in one
# JSON column and GraphQL exposes them on the concrete event types.
DETAIL_FIELDS: tuple[str, ...] = (
    "severity",
    "reject_reason",
    "reason",
    "smtp_status",
    "url",
    "position",
    "ip",
    "user_agent",
    "unique",
    "proxy",
    "unsubscribe_type",
    "abuse_id",
    "sending_ip",
    "message_size",
    "relay_id",
    "relay_message_id",
    "from_email",
    "device",
    "preview_url",
    "contact_id",
)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal payloads give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def dedupe_key(event: NormalizedEvent) -> str:
    """The key under which a provider's retry of the same event is stored once.

    By default two events are the same when the same provider sent the same event name
    with the same payload; an adapter may set ``dedupe_basis`` to decide instead, and
    then the event name is not part of the key (SMTPeter's bounce repeating a failure
    of the same message is one event).
    """
    if event.dedupe_basis is not None:
        # The adapter's basis replaces the event name too: that is what lets two
        # different provider events (failure, bounce) count as one.
        text = f"{event.provider.value}\x00basis\x00{event.dedupe_basis}"
    else:
        text = f"{event.provider.value}\x00{event.provider_event}\x00{canonical_json(event.raw)}"
    # surrogatepass: a lone surrogate sent as "\ud800" is part of the payload too;
    # for every other text this is plain UTF-8, so existing keys do not change.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


_SMTP_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<![\d.])([245])\d\d(?![\d.])")


def smtp_status_in(text: str | None) -> str | None:
    """The first enhanced SMTP status code (``5.1.1``) mentioned in ``text``."""
    if not text:
        return None
    match = _SMTP_STATUS.search(text)
    return match.group(0) if match else None


def severity_from_smtp(text: str | None) -> Severity | None:
    """PERMANENT for a 5.x.x status (or a bare 5xx reply code), TEMPORARY for 4.x.x."""
    if not text:
        return None
    status = smtp_status_in(text)
    klass = status[0] if status else None
    if klass is None:
        code = _SMTP_CODE.search(text)
        klass = code.group(1) if code else None
    if klass == "5":
        return Severity.PERMANENT
    if klass == "4":
        return Severity.TEMPORARY
    return None


def utc_from_epoch(value: float) -> datetime:
    """A UTC datetime from unix seconds."""
    return datetime.fromtimestamp(value, tz=UTC)


# -- what a stored event may hold -------------------------------------------------------
# The columns that are indexed have these lengths (storage/models.py); longer values are
# refused per event rather than cut, because a cut address or message id would silently
# match nothing (or the wrong thing). Text without an index (subject, reason, URLs...)
# has no limit beyond the request body's.
MAX_EMAIL_LENGTH = 320
MAX_MESSAGE_ID_LENGTH = 255
MAX_TEMPLATE_LENGTH = 255
MAX_PROVIDER_EVENT_LENGTH = 64
MAX_TAG_LENGTH = 255
# Real senders use a handful; each tag is a row to write and an index entry.
MAX_TAGS = 100
# Times outside these are refused: before 1970 no provider sends anything real, and far
# beyond today a little arithmetic (a window, a partition bound) would overflow datetime.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# NUL cannot be stored in a PostgreSQL text column and lone surrogates (JSON "\ud800")
# cannot be encoded as UTF-8 at all: neither survives storage, so they are taken out of
# the normalized fields (NUL removed, a lone surrogate replaced by U+FFFD). ``raw``
# keeps exactly what was sent.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_TEXT_FIELDS: tuple[str, ...] = (
    "provider_event",
    "email",
    "message_id",
    "subject",
    "template",
    "custom_id",
    *(
        name
        for name in DETAIL_FIELDS
        if name not in ("severity", "reject_reason", "position", "unique", "proxy", "message_size")
    ),
)
_read_texts = operator.attrgetter(*_TEXT_FIELDS)
_INTEGER_FIELDS = ("position", "message_size")
_LIMITS: tuple[tuple[str, int], ...] = (
    ("email", MAX_EMAIL_LENGTH),
    ("message_id", MAX_MESSAGE_ID_LENGTH),
    ("template", MAX_TEMPLATE_LENGTH),
    ("provider_event", MAX_PROVIDER_EVENT_LENGTH),
)


def storable_text(text: str) -> str:
    """``text`` without the characters no database column can hold (see above)."""
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(lambda match: "" if match.group() == "\x00" else "\ufffd", text)


def make_storable(event: NormalizedEvent, *, names: dict[str, str] | None = None) -> str | None:
    """Cleans ``event`` in place so that every field but ``raw`` can be stored, and says
    why it cannot be stored at all: None, or a problem naming the field.

    Text loses NUL and lone surrogates; an integer detail outside 64 bits is dropped (raw
    keeps it); an overlong indexed field, too many tags or a time out of range is a
    problem. ``names`` maps a field to the provider's own name for it, for the message.
    """
    names = names or {}
    texts = [text for text in _read_texts(event) if text is not None]
    # One search over everything first: almost every event has nothing to clean.
    if _UNSTORABLE.search("\n".join([*texts, *event.tags])):
        for name in _TEXT_FIELDS:
            value = getattr(event, name)
            if isinstance(value, str):
                setattr(event, name, storable_text(value))
        event.tags = tuple(map(storable_text, event.tags))
    if not all(event.tags) or len(set(event.tags)) < len(event.tags):
        event.tags = tuple(dict.fromkeys(tag for tag in event.tags if tag))
    for name in _INTEGER_FIELDS:
        value = getattr(event, name)
        if value is not None and not INT64_MIN <= value <= INT64_MAX:
            setattr(event, name, None)
    for name, limit in _LIMITS:
        value = getattr(event, name)
        if value is not None and len(value) > limit:
            return f"'{names.get(name, name)}' is longer than {limit} characters"
    if len(event.tags) > MAX_TAGS:
        return f"'{names.get('tags', 'tags')}' has more than {MAX_TAGS} tags"
    for tag in event.tags:
        if len(tag) > MAX_TAG_LENGTH:
            return (
                f"'{names.get('tags', 'tags')}' has a tag longer than {MAX_TAG_LENGTH} characters"
            )
    for name in ("occurred_at", "sent_at"):
        moment = getattr(event, name)
        if moment is not None and not EARLIEST <= moment < LATEST:
            return (
                f"'{names.get(name, name)}' is out of range: {moment.isoformat()} is not between"
                f" {EARLIEST.year} and {LATEST.year}"
            )
    return None

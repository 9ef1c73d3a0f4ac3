"""The normalized email event: one shape for every provider.

Pure data and pure functions: nothing here does I/O or imports the rest of the gateway.
The type set follows django-anymail's, so no provider's distinction is lost.
"""

from __future__ import annotations

import enum
import hashlib
import json
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
    # surrogatepass: a lone surrogate (readable JSON can carry one) is hashed, not an error.
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

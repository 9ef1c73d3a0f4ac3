"""Web hooks as data: what a customer configured, which events it wants, and the rules
of retrying and disabling. No I/O."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain.events import EventType, NormalizedEvent, Provider


class WebhookFormat(enum.Enum):
    JANGOMAIL = "JANGOMAIL"
    BREVO = "BREVO"
    SMTPETER = "SMTPETER"
    GATEWAY = "GATEWAY"


class HttpMethod(enum.Enum):
    GET = "GET"
    POST = "POST"


class DeliveryStatus(enum.Enum):
    PENDING = "PENDING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    HELD = "HELD"


OPEN_STATUSES = frozenset({DeliveryStatus.PENDING, DeliveryStatus.RETRYING})
FINAL_STATUSES = frozenset({DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED})


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    id: int
    account_id: int
    url: str
    method: HttpMethod
    events: frozenset[EventType]
    format: WebhookFormat
    # field -> parameter name; None sends every field under its default name.
    parameters: Mapping[str, str] | None
    tags: tuple[str, ...]
    templates: tuple[str, ...]
    secret: str
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    backfill_days: int
    created_at: datetime
    updated_at: datetime
    # (name, value) pairs sent on every call; names as given, checked by custom_headers.
    headers: tuple[tuple[str, str], ...] = ()
    # The secret before the last rotation, and until when it still signs.
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets a call made at ``now`` is signed with: the current one, and the
        previous one during its grace period (receivers may still hold only that one)."""
        if (
            self.previous_secret is not None
            and self.previous_secret_until is not None
            and now < self.previous_secret_until
        ):
            return (self.secret, self.previous_secret)
        return (self.secret,)

    def wants(self, event: NormalizedEvent) -> bool:
        """Whether this web hook is owed ``event``: its type, all its tags, one of its
        templates (each filter only when set)."""
        if event.type not in self.events:
            return False
        if self.tags and not set(self.tags).issubset(event.tags):
            return False
        return not self.templates or event.template in self.templates


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    account_id: int
    webhook_id: int
    event_id: int | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
    delivery_id: int
    webhook_id: int
    account_id: int
    number: int
    at: datetime
    method: str
    url: str
    status_code: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str | None
    request_body: str = field(default="", repr=False)


MAX_HEADERS = 20
MAX_HEADER_NAME = 100
MAX_HEADER_VALUE = 2048
# Set by the gateway on every call, or hop-by-hop (they describe one connection, not
# the request): a customer's value would break the call, its signature or the bounded
# read of the answer.
RESERVED_HEADERS = frozenset(
    {
        "accept-encoding",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "webhook-id",
        "webhook-signature",
        "webhook-timestamp",
    }
)
# RFC 7230 token characters (section 3.2.6).
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def custom_headers(pairs: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A web hook's own headers, checked: ValueError saying what is wrong.

    Names are RFC 7230 tokens, each once (letter case aside), none of ours or
    hop-by-hop. Values are printable ASCII (tabs allowed): no CR, LF or NUL can split
    the request, and HTTP clients encode header values as ASCII. Surrounding
    whitespace is not part of a value (RFC 7230) and is dropped.
    """
    if len(pairs) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    checked = []
    for name, value in pairs:
        if not name or len(name) > MAX_HEADER_NAME or not set(name) <= _TOKEN:
            raise ValueError(
                f"{name!r} is not a header name (1 to {MAX_HEADER_NAME} letters, digits "
                "or !#$%&'*+-.^_`|~)"
            )
        lowered = name.lower()
        if lowered in RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by the gateway or describes the connection")
        if lowered in seen:
            raise ValueError(f"{name!r} is given twice")
        seen.add(lowered)
        value = value.strip(" \t")
        if len(value) > MAX_HEADER_VALUE:
            raise ValueError(f"the value of {name!r} is over {MAX_HEADER_VALUE} characters")
        if any(not (" " <= c <= "~" or c == "\t") for c in value):
            raise ValueError(
                f"the value of {name!r} holds a control or non-ASCII character (CR, LF, NUL, …)"
            )
        checked.append((name, value))
    return tuple(checked)


def is_success(response_status: int, fmt: WebhookFormat) -> bool:
    """JangoMail counts only 200 as success (201 is a failure there); others any 2xx."""
    if fmt is WebhookFormat.JANGOMAIL:
        return response_status == 200
    return 200 <= response_status < 300


# Retries wait up to this fraction longer than the schedule says, at random: the
# deliveries that failed together (an endpoint down) do not all come back at once.
RETRY_JITTER = 0.1


def next_retry_delay(
    attempts_made: int,
    schedule: Sequence[float],
    retry_after: float | None,
    spread: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the schedule is spent.

    ``attempts_made`` counts the failed attempt just made. A receiver's Retry-After is
    honoured when it asks for longer than the schedule would wait. The wait is never
    shorter than either; ``spread`` (0 to 1) adds up to ``RETRY_JITTER`` of it.
    """
    if attempts_made > len(schedule):
        return None
    delay = schedule[attempts_made - 1]
    if retry_after is not None:
        delay = max(delay, min(retry_after, 86_400.0))
    return delay * (1 + RETRY_JITTER * spread())


def sample_event(at: datetime) -> NormalizedEvent:
    """The event sendTestEvent delivers: plainly a test, never stored as traffic."""
    return NormalizedEvent(
        type=EventType.DELIVERED,
        provider=Provider.BREVO,
        provider_event="delivered",
        email="test@example.com",
        occurred_at=at,
        raw={"test": True},
        message_id="test-message@gateway.invalid",
        subject="Test event from the email event gateway",
        tags=("test",),
    )


def backfill_start(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)

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

"""What a stored event is, how events are filtered, and a message's current state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from gateway.domain.events import EventType, NormalizedEvent, Provider, Severity


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A normalized event as kept: the gateway's id, its account and arrival time."""

    id: int
    account_id: int
    received_at: datetime
    event: NormalizedEvent


def bare_message_id(message_id: str) -> str:
    """Message ids are stored without angle brackets and matched either way."""
    return message_id.strip().strip("<>").strip()


def email_key(email: str) -> str:
    """Addresses are matched case-insensitively."""
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """``events(where:)``: every given criterion must hold; ``tags`` means all of them.

    ``start`` is inclusive and ``end`` exclusive, on ``occurred_at``.
    """

    message_id: str | None = None
    email: str | None = None
    template: str | None = None
    tags: tuple[str, ...] = ()
    types: frozenset[EventType] = field(default_factory=frozenset)
    providers: frozenset[Provider] = field(default_factory=frozenset)
    start: datetime | None = None
    end: datetime | None = None

    def matches(self, event: NormalizedEvent) -> bool:
        """The same test the store applies, for events that are not read from it."""
        if self.message_id is not None and (
            event.message_id is None
            or bare_message_id(event.message_id) != bare_message_id(self.message_id)
        ):
            return False
        if self.email is not None and email_key(event.email) != email_key(self.email):
            return False
        if self.template is not None and event.template != self.template:
            return False
        if self.tags and not set(self.tags).issubset(event.tags):
            return False
        if self.types and event.type not in self.types:
            return False
        if self.providers and event.provider not in self.providers:
            return False
        if self.start is not None and event.occurred_at < self.start:
            return False
        return self.end is None or event.occurred_at < self.end


# A message's state is the most advanced event seen, whatever order they arrived in:
# a late Brevo `request` (QUEUED) must not undo `delivered`. Permanent failures and
# recipient actions outrank progress; temporary trouble ranks below delivery.
_PRECEDENCE: dict[EventType, int] = {
    EventType.UNKNOWN: 0,
    EventType.QUEUED: 1,
    EventType.SENT: 2,
    EventType.DEFERRED: 3,
    EventType.DELIVERED: 5,
    EventType.AUTORESPONDED: 6,
    EventType.OPENED: 7,
    EventType.CLICKED: 8,
    EventType.FAILED: 9,
    EventType.REJECTED: 10,
    EventType.BOUNCED: 11,
    EventType.UNSUBSCRIBED: 12,
    EventType.COMPLAINED: 13,
}


def _rank(event: NormalizedEvent) -> int:
    if event.type is EventType.BOUNCED and event.severity is not Severity.PERMANENT:
        return 4  # a soft bounce is still on its way: delivery or a hard bounce may follow
    return _PRECEDENCE[event.type]


def message_state(events: Iterable[NormalizedEvent]) -> EventType | None:
    """The current state of a message from its events, in any order."""
    best: NormalizedEvent | None = None
    for event in events:
        if best is None or _rank(event) > _rank(best):
            best = event
    return None if best is None else best.type


def in_order(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """A timeline: by when each event happened, arrival breaking ties."""
    return sorted(events, key=lambda stored: (stored.event.occurred_at, stored.id))


def message_sent_at(events: Sequence[NormalizedEvent]) -> datetime | None:
    """When a message was sent: the earliest sent time its events carry (a send event's
    own time: Brevo ``request``, SMTPeter ``attempt``, JangoMail ``sent``, or a sent time
    the provider states), never after the message's first event; None without one.

    Providers' clocks disagree by seconds, so a send event stamped after a delivery or
    an open does not make the message sent after it was opened.
    """
    sent = [event.sent_at for event in events if event.sent_at is not None]
    if not sent:
        return None
    return min(*sent, *(event.occurred_at for event in events))


def carry_sent_at(events: Sequence[StoredEvent], sent_at: datetime | None) -> list[StoredEvent]:
    """A message's timeline with its sent time on every event, as one message has one."""
    if sent_at is None:
        return list(events)
    return [
        stored
        if stored.event.sent_at == sent_at
        else replace(stored, event=replace(stored.event, sent_at=sent_at))
        for stored in events
    ]

"""What every provider adapter is given, what it answers and what it may raise.

An adapter turns one HTTP request's content into normalized events. It knows its
provider's wire format; it does no I/O. Events are accepted one by one: a request that
can be read gives a :class:`ParsedRequest` (every event that could be normalized, and a
:class:`RefusedEvent` for each one that could not); only a request that cannot be read
at all raises :class:`PayloadError`. No other exception leaves ``parse``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gateway.domain.events import NormalizedEvent, Provider, make_storable


class PayloadError(ValueError):
    """A request that cannot be read at all as this provider's events.

    ``status`` is the HTTP answer: 400 unreadable (not JSON, not UTF-8, nested too
    deep...), 413 too large, 415 wrong media type, 404 a JangoMail route event that is
    none of JangoMail's. ``message`` names the problem; it is shown to the caller verbatim.
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """The parts of an HTTP request an adapter reads."""

    method: str
    body: bytes
    content_type: str = ""
    query: Sequence[tuple[str, str]] = ()
    # JangoMail puts the event name in the route: /ingest/jangomail/{token}/{event}
    route_event: str | None = None
    # When the gateway received it: the time of an event whose provider sends none
    # (SMTPeter's click and abuse webhooks).
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """An ingest source's provider settings.

    ``timezone`` is an IANA name used where the provider sends local times (JangoMail).
    ``parameters`` maps a gateway field name to the parameter name this source's
    provider account sends it under (JangoMail lets customers rename every one).
    """

    timezone: str = "UTC"
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefusedEvent:
    """One event of a readable request that could not be normalized.

    ``index`` is its position in the request (0 for a single event); ``reason`` names
    the field (``event[3]: missing field 'event'``); ``body`` is what to keep for
    replay, a request the same adapter reads alone: for JSON providers that event's
    own JSON text exactly as sent, for JangoMail the request body as is.
    """

    index: int
    reason: str
    body: bytes


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A readable request: every event that could be normalized, in the order sent,
    and every one that could not."""

    events: list[NormalizedEvent]
    refused: list[RefusedEvent]


class EventRefused(Exception):
    """Raised inside an adapter while normalizing one event: that event is refused
    for this reason (naming the field), the others are not affected."""


class ProviderAdapter(Protocol):
    provider: Provider

    def parse(self, request: IngestRequest, source: SourceConfig) -> ParsedRequest:
        """The request's events one by one; PayloadError only if it cannot be read."""
        ...


class RequestBuilder:
    """Collects a request's events one by one, each made storable or refused."""

    def __init__(self, *, prefix_index: bool = True) -> None:
        self._prefix_index = prefix_index
        self.events: list[NormalizedEvent] = []
        self.refused: list[RefusedEvent] = []

    def add(
        self,
        index: int,
        body: bytes | Callable[[], bytes],
        normalize: Callable[[], NormalizedEvent],
        *,
        names: dict[str, str] | None = None,
    ) -> None:
        """Normalize one event. ``body`` is what to keep if it is refused (or makes it:
        most events are not refused, and finding an element's own text costs a read);
        ``names`` maps gateway fields to the provider's names for them, so that a
        refusal names the field as the provider sent it."""
        try:
            event = normalize()
            problem = make_storable(event, names=names)
        except EventRefused as refusal:
            problem = str(refusal)
        except Exception as error:
            # A bug of ours must cost one event, kept for replay once it is fixed,
            # never the whole request (a provider drops a batch answered 5xx).
            problem = f"could not be normalized ({type(error).__name__})"
        if problem is None:
            self.events.append(event)
            return
        reason = f"event[{index}]: {problem}" if self._prefix_index else problem
        kept = body if isinstance(body, bytes) else body()
        self.refused.append(RefusedEvent(index, reason, kept))

    def result(self) -> ParsedRequest:
        return ParsedRequest(self.events, self.refused)

"""What every provider adapter is given and what it may raise.

An adapter turns one HTTP request's content into normalized events. It knows its
provider's wire format; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gateway.domain.events import NormalizedEvent, Provider


class PayloadError(ValueError):
    """Input that cannot be read as this provider's events.

    ``status`` is the HTTP answer: 400 unreadable, 413 too large, 415 wrong media type,
    422 readable but missing or invalid fields. ``message`` names the problem, e.g.
    ``event[3]: missing field 'email'``; it is shown to the caller verbatim.
    """

    def __init__(self, message: str, *, status: int = 422) -> None:
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
    index: int  # position of the event in the request (0 for a single event)
    reason: str  # names the field, e.g. "event[3]: missing field 'event'"
    # what to keep for replay: that event alone as JSON; JangoMail: the request body as is
    body: bytes


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    events: list[NormalizedEvent]
    refused: list[RefusedEvent]


class ProviderAdapter(Protocol):
    provider: Provider

    def parse(self, request: IngestRequest, source: SourceConfig) -> list[NormalizedEvent]:
        """Normalized events in the request, in the order sent; raises PayloadError."""
        ...

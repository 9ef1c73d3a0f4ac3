"""What every event an adapter produces must satisfy, whatever it was sent."""

from __future__ import annotations

import enum
from datetime import UTC, timedelta

import orjson

from gateway.domain.events import (
    DETAIL_FIELDS,
    EARLIEST,
    LATEST,
    MAX_EMAIL_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    MAX_PROVIDER_EVENT_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MAX_TEMPLATE_LENGTH,
    NormalizedEvent,
    dedupe_key,
)
from gateway.providers.base import ParsedRequest

_TEXT = ("provider_event", "email", "message_id", "subject", "template", "custom_id")


def assert_storable(event: NormalizedEvent) -> None:
    """Aware UTC times in range, indexed fields within their columns, no character a
    database cannot hold, and every field but ``raw`` serializable by orjson."""
    for moment in (event.occurred_at, event.sent_at):
        if moment is not None:
            assert moment.utcoffset() == timedelta(0) and moment.tzinfo is UTC
            assert EARLIEST <= moment < LATEST
    assert len(event.email) <= MAX_EMAIL_LENGTH
    assert len(event.message_id or "") <= MAX_MESSAGE_ID_LENGTH
    assert len(event.template or "") <= MAX_TEMPLATE_LENGTH
    assert len(event.provider_event) <= MAX_PROVIDER_EVENT_LENGTH
    assert len(event.tags) <= MAX_TAGS
    assert all(0 < len(tag) <= MAX_TAG_LENGTH for tag in event.tags)
    texts = [getattr(event, name) for name in _TEXT] + list(event.tags)
    texts += [value for name in DETAIL_FIELDS if isinstance(value := getattr(event, name), str)]
    for text in texts:
        if text is not None:
            assert "\x00" not in text
            text.encode()  # no lone surrogate
    details = {
        name: value.value if isinstance(value, enum.Enum) else value
        for name in DETAIL_FIELDS
        if (value := getattr(event, name)) is not None
    }
    orjson.dumps([details, list(event.tags), [text for text in texts if text is not None]])
    dedupe_key(event)


def assert_sound(parsed: ParsedRequest, *, indexed: bool = True) -> None:
    """Every event storable, every refusal naming its event and not one of our bugs."""
    assert isinstance(parsed, ParsedRequest)
    for event in parsed.events:
        assert_storable(event)
    for refused in parsed.refused:
        assert "could not be normalized" not in refused.reason, refused.reason
        if indexed:
            assert refused.reason.startswith(f"event[{refused.index}]: ")

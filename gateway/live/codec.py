"""Stored events as compact JSON-able values for the live bus, and back.

Only fields that differ from their defaults are written (most of an event's detail
fields are ``None``), and short keys are used for the envelope, so a typical event is a
few hundred bytes on Redis. The field list is read from ``NormalizedEvent`` itself, so
a field added there travels without a change here.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.domain.events import NormalizedEvent
from gateway.domain.query import StoredEvent

# Which adapter decides "the same event" is ingest's business, never a subscriber's.
_NOT_SENT = frozenset({"dedupe_basis"})


def _decoder_for(annotation: Any) -> Callable[[Any], Any] | None:
    """How to turn a JSON value back into a field of this type (None: as it is)."""
    options = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else (annotation,)
    )
    for option in options:
        if isinstance(option, type) and issubclass(option, enum.Enum):
            return option
        if option is datetime:
            return datetime.fromisoformat
        if typing.get_origin(option) is tuple:
            return tuple
    return None


_HINTS = typing.get_type_hints(NormalizedEvent)
_FIELDS: tuple[tuple[str, Any], ...] = tuple(
    (field.name, field.default)
    for field in dataclasses.fields(NormalizedEvent)
    if field.name not in _NOT_SENT
)
_DECODERS: dict[str, Callable[[Any], Any]] = {
    name: decoder for name, _ in _FIELDS if (decoder := _decoder_for(_HINTS[name])) is not None
}


def encode_event(stored: StoredEvent) -> dict[str, Any]:
    """A JSON-able (by orjson: enums, datetimes and tuples included) form of ``stored``."""
    event = stored.event
    fields: dict[str, Any] = {}
    for name, default in _FIELDS:
        value = getattr(event, name)
        if value is not default and value != default:
            fields[name] = value
    return {"i": stored.id, "a": stored.account_id, "r": stored.received_at, "e": fields}


def decode_event(value: Any) -> StoredEvent:
    """The StoredEvent that :func:`encode_event` was given, from its JSON-decoded form."""
    fields: dict[str, Any] = value["e"]
    for name, raw in fields.items():
        decoder = _DECODERS.get(name)
        if decoder is not None and raw is not None:
            fields[name] = decoder(raw)
    return StoredEvent(
        id=value["i"],
        account_id=value["a"],
        received_at=datetime.fromisoformat(value["r"]),
        event=NormalizedEvent(**fields),
    )

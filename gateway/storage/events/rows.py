"""How an event is laid out as a row: the tables, and the conversion both ways.

Preparing a row never raises: a value the database could not hold is either made safe
(characters PostgreSQL cannot hold in text are dropped from the columns that are
searched, while ``raw`` keeps them, JSON-escaped) or the event is refused with a
reason naming the field.
"""

from __future__ import annotations

import enum
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.engine import Dialect

from gateway.domain.events import DETAIL_FIELDS, NormalizedEvent, dedupe_key
from gateway.domain.jsontext import json_text
from gateway.domain.query import bare_message_id, email_key
from gateway.storage.models import EventRow, EventTag, TagCount

events_table = EventRow.__table__  # type: ignore[attr-defined]
tags_table = EventTag.__table__  # type: ignore[attr-defined]
counts_table = TagCount.__table__  # type: ignore[attr-defined]

_TIMES = ("occurred_at", "sent_at", "received_at")
# NUL, which PostgreSQL's text cannot hold, and lone surrogates, which no UTF-8 can.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_TAG_LENGTH: int = tags_table.c.tag.type.length
_LENGTHS: dict[str, int] = {
    column.name: column.type.length
    for column in events_table.c
    if getattr(column.type, "length", None) is not None
}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to insert, with the id and owner the writer gave it."""

    id: int
    account_id: int
    source_id: int | None
    event: NormalizedEvent


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event with its row already in the form the dialect's insert takes.

    Preparing costs ~20 µs an event in Python; done as each request arrives, it is off
    the group commit's path, where the database would wait for it.
    """

    new: NewEvent
    # SQLite: the bound parameters in column order. PostgreSQL: the row as JSON.
    values: tuple[Any, ...] | bytes
    tags: tuple[str, ...]  # as stored: cleaned, each once


@dataclass(frozen=True, slots=True)
class Unstorable:
    """An event that cannot be stored as it is, and why (the field first)."""

    new: NewEvent
    reason: str


class _Refused(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def _text(field: str, value: object, *, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise _Refused(field, f"must be text, not {type(value).__name__}")
    text = stored_text(value)
    if limit is not None and len(text) > limit:
        raise _Refused(field, f"longer than {limit} characters")
    return text


def _optional_text(field: str, value: Any, *, limit: int | None = None) -> str | None:
    return None if value is None else _text(field, value, limit=limit)


def _json(field: str, value: Any) -> str:
    try:
        return json_text(value)
    except (ValueError, TypeError, RecursionError) as problem:
        raise _Refused(field, f"cannot be stored as JSON ({problem})") from None


def stored_text(value: str) -> str:
    """``value`` as a text column stores it (what PostgreSQL or UTF-8 cannot hold
    removed)."""
    return _UNSTORABLE.sub("", value) if _UNSTORABLE.search(value) is not None else value


def stored_tags(tags: Sequence[Any]) -> tuple[str, ...]:
    """The event's tags as stored: cleaned, each once, in their order."""
    cleaned = (_text("tags", tag, limit=_TAG_LENGTH) for tag in tags)
    return tuple(dict.fromkeys(cleaned))


def _row_values(new: NewEvent, tags: tuple[str, ...], now: datetime) -> dict[str, Any]:
    event = new.event
    details = {
        name: value.value if isinstance(value, enum.Enum) else value
        for name in DETAIL_FIELDS
        if (value := getattr(event, name)) is not None
    }
    email = _text("email", event.email, limit=_LENGTHS["email"])
    message_id = _optional_text("message_id", event.message_id)
    message_id = bare_message_id(message_id) if message_id else None
    if message_id is not None and len(message_id) > _LENGTHS["message_id"]:
        raise _Refused("message_id", f"longer than {_LENGTHS['message_id']} characters")
    return {
        "id": new.id,
        "account_id": new.account_id,
        "source_id": new.source_id,
        "type": event.type.value,
        "provider": event.provider.value,
        "provider_event": _text("provider_event", event.provider_event)[
            : _LENGTHS["provider_event"]
        ],
        "message_id": message_id,
        "email": email,
        "email_key": email_key(email),
        "occurred_at": event.occurred_at,
        "sent_at": event.sent_at,
        "subject": _optional_text("subject", event.subject),
        "template": _optional_text("template", event.template, limit=_LENGTHS["template"]),
        "tags": orjson.dumps(list(tags)).decode(),
        "custom_id": _optional_text("custom_id", event.custom_id),
        "details": _json("details", details),
        "raw": _json("raw", event.raw),
        "dedupe_key": dedupe_key(event),
        "received_at": now,
    }


def prepare_events(
    dialect: Dialect, events: Sequence[NewEvent], now: datetime
) -> list[PreparedEvent | Unstorable]:
    """``events`` made ready for the inserts on ``dialect``, in order; never raises:
    an event that cannot be stored is an :class:`Unstorable` saying why."""
    return [_prepare(dialect, new, now) for new in events]


def _prepare(dialect: Dialect, new: NewEvent, now: datetime) -> PreparedEvent | Unstorable:
    try:
        tags = stored_tags(new.event.tags)
        row = _row_values(new, tags, now)
        if dialect.name == "postgresql":
            for name in _TIMES:
                # As UTCDateTime would: a naive time is a bug upstream, not UTC by guess.
                if row[name] is not None and row[name].utcoffset() is None:
                    raise _Refused(name, "must be an aware datetime")
            return PreparedEvent(new, orjson.dumps(row), tags)
        names, processors = _sqlite_binding(dialect)
        values = [row[name] for name in names]
        for index, process in processors:
            values[index] = process(values[index])
        return PreparedEvent(new, tuple(values), tags)
    except _Refused as refused:
        return Unstorable(new, str(refused))
    except Exception as problem:  # whatever else a value does: refused, not raised
        return Unstorable(new, f"cannot be stored: {type(problem).__name__}: {problem}")


_Binding = tuple[list[str], list[tuple[int, Callable[[Any], Any]]]]
_bindings: weakref.WeakKeyDictionary[Dialect, _Binding] = weakref.WeakKeyDictionary()


def _sqlite_binding(dialect: Dialect) -> _Binding:
    """The events table's columns in order, and SQLAlchemy's bind processor of each
    column that has one (the times): values are stored as SQLAlchemy would."""
    binding = _bindings.get(dialect)
    if binding is None:
        columns = list(events_table.c)
        binding = _bindings[dialect] = (
            [column.name for column in columns],
            [
                (index, process)
                for index, column in enumerate(columns)
                if (process := column.type.dialect_impl(dialect).bind_processor(dialect))
            ],
        )
    return binding

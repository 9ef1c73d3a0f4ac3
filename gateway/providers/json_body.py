"""Reading a JSON request body the way hostile traffic needs it read.

A body is unreadable (PayloadError 400) when it is not UTF-8, not JSON, uses the
``NaN``/``Infinity`` literals JSON does not have, holds an integer of more digits than
Python converts (4,300) or nests deeper than the parser can follow. Everything else is
read, integers of any size and lone surrogates (``"\\ud800"``) included: what a field
may hold is the adapter's and the domain's business, per event.

orjson reads the usual body (~4x faster than the standard library); whatever it
refuses, or might read otherwise (a run of 19 digits: an integer beyond 64 bits, which
orjson reads as a float), is read by the standard library, whose answer is the rule.

A top-level array is read element by element, so that each event keeps its own JSON
text exactly as sent: that is what is kept, and replayed, when the event is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.providers.base import PayloadError

# Deeper than this, an event is refused (its own problem, not the batch's): no provider
# nests more than a few levels, and storage serializes ``raw`` with a bounded depth.
MAX_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A number orjson may read as a float: an integer beyond 64 bits has 19 digits or more.
# Found as a run of 19 "0" in the body with every digit made "0" and every other byte
# a space (a regular expression took 5x as long).
_DIGITS_ONLY = bytes(ord("0") if byte in b"0123456789" else ord(" ") for byte in range(256))
_LONG_RUN = b"0" * 19
_UNREAD = object()


def _read_fast(body: bytes) -> Any:
    """The body's JSON value as orjson reads it, or _UNREAD where orjson refuses it or
    might read it otherwise than the standard library."""
    if _LONG_RUN in body.translate(_DIGITS_ONLY):
        return _UNREAD
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # BOM, NaN, lone surrogates, too deep, not JSON...
        return _UNREAD


class JsonBody:
    """A readable body of one JSON object or an array of values: the events' values,
    and on demand each one's exact JSON text (what is kept when it is refused)."""

    def __init__(self, body: bytes, document: Any) -> None:
        self._body = body
        self._array = isinstance(document, list)
        self.values: list[Any] = document if self._array else [document]
        self._texts: list[str] | None = None
        self._deep: set[int] | None = None

    def body(self, index: int) -> bytes:
        """Event ``index`` alone as a request body, byte for byte as it was sent."""
        # The text came from UTF-8, so it holds no lone surrogate as a character (those
        # are still "\ud800" escapes here): plain UTF-8 gives the bytes back.
        return self._element_texts()[index].encode()

    def too_deep(self, index: int) -> bool:
        """True when event ``index`` nests more than MAX_DEPTH levels."""
        if self._deep is None:
            self._deep = set()
            # Counting brackets is a bound that costs nothing, and one walk of the
            # whole document clears every element at once in all but hostile cases.
            levels = MAX_DEPTH + 1 if self._array else MAX_DEPTH
            if self._body.count(b"[") + self._body.count(b"{") > levels and too_deep(
                self.values if self._array else self.values[0], levels
            ):
                self._deep = {n for n, value in enumerate(self.values) if too_deep(value)}
        return index in self._deep

    def _element_texts(self) -> list[str]:
        # Only a refusal needs them: found by reading the text again, element by element.
        if self._texts is None:
            text = decode_text(self._body)
            self._texts = list(_element_texts(text, _skip(text, 0), self._array))
        return self._texts


def decode_text(body: bytes) -> str:
    """The body as text: UTF-8 (a leading byte order mark is allowed), else 400."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 text: bad byte at {exc.start}") from exc


def read_document(body: bytes) -> Any:
    """The whole body as one JSON value."""
    value = _read_fast(body)
    if value is _UNREAD:
        text = decode_text(body)
        value, end = _value_at(text, _skip(text, 0))
        _expect_end(text, end)
    return value


def read_elements(body: bytes) -> JsonBody:
    """The events of a body that is one JSON object or an array of them (elements of
    any type: what is not an object is the adapter's to refuse, per event)."""
    document = read_document(body)
    if not isinstance(document, dict | list):
        raise PayloadError(
            f"body must be a JSON object or an array of objects, not {json_type(document)}"
        )
    return JsonBody(body, document)


def _element_texts(text: str, start: int, array: bool) -> Iterator[str]:
    if not array:
        yield text[start : _value_at(text, start)[1]]
        return
    position = _skip(text, start + 1)
    if text.startswith("]", position):
        return
    # The whole text has been read once: it is a well-formed array.
    while True:
        end = _value_at(text, position)[1]
        yield text[position:end]
        after = _skip(text, end)
        if text.startswith("]", after):
            return
        position = _skip(text, after + 1)  # past the comma


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests arrays and objects more than ``limit`` levels deep."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not any(isinstance(node, dict | list) for node in level):
            return False
    return True


def json_type(value: Any) -> str:
    """``value``'s JSON type, for messages: "a string", "an array"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _skip(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _value_at(text: str, position: int) -> tuple[Any, int]:
    try:
        value, end = _DECODER.raw_decode(text, position)
    except json.JSONDecodeError as exc:
        raise _syntax_error(text, exc.pos, exc.msg) from exc
    except RecursionError as exc:
        raise PayloadError("body is not readable JSON: nested too deep") from exc
    except ValueError as exc:  # NaN/Infinity, integers of more than 4,300 digits
        raise PayloadError(f"body is not readable JSON: {exc}") from exc
    return value, end


def _expect_end(text: str, position: int) -> None:
    position = _skip(text, position)
    if position != len(text):
        raise _syntax_error(text, position, "extra data after the JSON value")


def _syntax_error(text: str, position: int, problem: str) -> PayloadError:
    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)
    return PayloadError(
        f"body is not valid JSON: {problem} at line {line} column {column} (char {position})"
    )

"""JSON text of event data, lossless: what providers send is kept as they sent it.

A readable payload can hold what orjson refuses to write (integers beyond 64 bits,
lone surrogates such as ``"\\ud800"``) or reads back otherwise (long integers). Every
place that writes or reads an event's data as JSON (storage, the live bus, web hook
bodies) goes through here, so such a payload is stored, streamed and delivered alike.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# A run of 19 digits: a number orjson may read as a float (beyond 64 bits).
_LONG_NUMBER = re.compile(r"\d{19}")


def json_text(value: Any) -> str:
    """``value`` as JSON text, exactly: integers beyond 64 bits and lone surrogates
    (which orjson refuses) go through the standard library, escaped as ASCII. NaN and
    infinities, which JSON has no word for, are null either way."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(_finite(value), ensure_ascii=True, separators=(",", ":"), default=str)


def json_bytes(value: Any) -> bytes:
    """:func:`json_text` as UTF-8 bytes, without a detour through text when orjson can."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json_text(value).encode()


def json_value(text: str | bytes) -> Any:
    """What :func:`json_text` wrote, read back as it was."""
    if _LONG_NUMBER.search(text if isinstance(text, str) else text.decode("utf-8")) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # a lone surrogate's escape
            pass
    return json.loads(text)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value

"""JSON answers for the HTTP routes, and reading the credentials they are sent."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from starlette.responses import Response


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, **extra: Any) -> JSON:
    """An error answer: ``{"error": message}``, never a stack trace."""
    return JSON({"error": message, **extra}, status_code=status)


def bearer_token(header: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header, if that is one."""
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The (username, password) of an ``Authorization: Basic`` header, if that is one."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None

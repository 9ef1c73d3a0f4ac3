"""JSON answers for the HTTP routes, and reading the credentials they are sent."""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.requests import Request
from starlette.responses import Response

from gateway.ids import NodeLeaseLost

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
# Failures of what a route depends on, not of what it was sent: worth a retry.
# NodeLeaseLost: this process may not mint ids until its node lease is back.
UNAVAILABLE = (OperationalError, InterfaceError, RedisError, OSError, TimeoutError, NodeLeaseLost)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, **extra: Any) -> JSON:
    """An error answer: ``{"error": message}``, never a stack trace."""
    return JSON({"error": message, **extra}, status_code=status)


def answered(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering an exception that escapes it instead of raising it.

    An exception that reaches uvicorn makes it close the connection, so a provider's
    next request on that kept-alive connection fails too. A database or Redis that is
    unavailable is 503 (try again); anything else is a defect, logged, and 500.
    """

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            return failure(endpoint.__name__, exc)

    return guarded


def failure(where: str, exc: Exception) -> Response:
    """The answer to an exception that escaped a route (``where`` names the route, not
    its path: an ingest path holds a token)."""
    if isinstance(exc, UNAVAILABLE):
        log.warning("%s: unavailable: %r", where, exc)
        answer = error(503, f"temporarily unavailable ({type(exc).__name__}); try again")
        answer.headers["retry-after"] = "5"
        return answer
    log.error("%s failed", where, exc_info=exc)
    return error(500, "internal error; it has been logged")


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

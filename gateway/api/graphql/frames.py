"""Websocket frames checked before Strawberry reads them.

Strawberry's protocol handlers trust a frame's shape once it is JSON: ``[1]``, ``null``
or a ``payload`` that is not an object raised inside them (a traceback, and the socket
dropped with 1006). So every frame a client sends is checked here first, as each
protocol defines it, and a malformed one closes the connection with 4400 and a reason
naming the problem (graphql-transport-ws's code for an invalid message; the legacy
graphql-ws protocol has no close codes, so it is first told why in a
``connection_error``). Strawberry then sees the client gone.

This is a wrapper of the ASGI ``receive`` and ``send`` callables, no part of Strawberry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
INVALID_MESSAGE = 4400

# The message types each protocol lets a client send, and which of them carry an id.
_CLIENT_TYPES = {
    TRANSPORT_WS: {"connection_init", "ping", "pong", "subscribe", "complete"},
    LEGACY_WS: {"connection_init", "start", "stop", "connection_terminate"},
}
_WITH_ID = {"subscribe", "complete", "start", "stop"}
_WITH_REQUEST = {"subscribe", "start"}


class InvalidFrame(ValueError):
    """A client frame that its protocol does not allow; the message says why."""


def _optional(value: object, kind: type[dict[str, Any]] | type[str], name: str) -> None:
    if value is not None and not isinstance(value, kind):
        noun = "a string" if kind is str else "an object"
        raise InvalidFrame(f"'{name}' must be {noun} or null")


def check_frame(protocol: str, text: str) -> None:
    """Raise :class:`InvalidFrame` unless ``text`` is a message a client of
    ``protocol`` may send."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidFrame("a message must be valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidFrame("a message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise InvalidFrame("a message needs a string 'type'")
    if kind not in _CLIENT_TYPES[protocol]:
        raise InvalidFrame(f"unknown message type {kind[:40]!r}")
    if kind in _WITH_ID and not isinstance(message.get("id"), str):
        raise InvalidFrame(f"a {kind!r} message needs a string 'id'")
    payload = message.get("payload")
    if kind in _WITH_REQUEST:
        if not isinstance(payload, dict):
            raise InvalidFrame(f"a {kind!r} message needs a 'payload' object")
        if not isinstance(payload.get("query"), str):
            raise InvalidFrame("'payload.query' must be a string")
        _optional(payload.get("variables"), dict, "payload.variables")
        _optional(payload.get("operationName"), str, "payload.operationName")
        _optional(payload.get("extensions"), dict, "payload.extensions")
    else:
        _optional(payload, dict, "payload")


async def _nothing() -> None:
    return None


class FrameGuard:
    """``receive`` and ``send`` of one websocket, with every client frame checked."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._subprotocol: str | None = None
        self._closed = False

    def send(self, message: Message) -> Awaitable[None]:
        # Not a coroutine function: every result of every subscriber passes here, and
        # handing back the inner send's awaitable saves a coroutine per message.
        if self._closed:
            return _nothing()  # we closed the socket already; Strawberry is finishing up
        if message["type"] == "websocket.accept":
            self._subprotocol = message.get("subprotocol")
        return self._send(message)

    async def receive(self) -> Message:
        message = await self._receive()
        protocol = self._subprotocol
        if message["type"] != "websocket.receive" or protocol not in _CLIENT_TYPES:
            return message
        text = message.get("text")
        try:
            if text is None:
                raise InvalidFrame("a message must be text, not binary")
            check_frame(protocol, text)
        except InvalidFrame as invalid:
            return await self._refuse(protocol, str(invalid))
        return message

    async def _refuse(self, protocol: str, reason: str) -> Message:
        log.info("websocket closed: invalid %s message: %s", protocol, reason)
        reason = reason.encode()[:123].decode(errors="ignore")  # a close reason's limit
        if protocol == LEGACY_WS:
            error: dict[str, Any] = {"type": "connection_error", "payload": {"message": reason}}
            await self._send({"type": "websocket.send", "text": orjson.dumps(error).decode()})
        await self._send({"type": "websocket.close", "code": INVALID_MESSAGE, "reason": reason})
        self._closed = True
        return {"type": "websocket.disconnect", "code": INVALID_MESSAGE}


def guard_frames(scope: Scope, receive: Receive, send: Send) -> tuple[Receive, Send]:
    """``receive`` and ``send`` for a websocket ``scope`` with client frames checked;
    other scopes get theirs back."""
    if scope["type"] != "websocket":
        return receive, send
    guard = FrameGuard(receive, send)
    return guard.receive, guard.send

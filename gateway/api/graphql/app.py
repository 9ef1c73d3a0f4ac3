"""/graphql over HTTP (POST, GET with GraphiQL) and websocket, behind API-key authentication.

HTTP callers send ``Authorization: Bearer <key>``. Websocket callers (graphql-transport-ws
and the legacy graphql-ws) send it in ``connection_init``'s payload, as
``{"authorization": "Bearer <key>"}`` (any case: GraphiQL sends its headers pane there);
until that succeeds the context has no account and every resolver refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from gateway.api.graphiql import graphiql_page
from gateway.api.graphql.context import Context, WebSocketContext
from gateway.api.graphql.frames import guard_frames
from gateway.api.graphql.subscriptions import LIVE_SINK, LiveSink, Selection
from gateway.api.responses import bearer_token, error, failure
from gateway.runtime import Services

UNAUTHORIZED = "missing or invalid API key: send 'Authorization: Bearer <api key>'"


async def _read_body(request: Request, limit: int) -> bytes | Response:
    """The body of a POST, read as it streams in and never past ``limit``; or the answer
    to a body over it or not UTF-8 (Strawberry would fail on the latter with a 500)."""
    too_large = f"body is over the limit of {limit} bytes (GATEWAY_MAX_GRAPHQL_BODY_BYTES)"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return error(413, too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return error(413, too_large)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return error(400, f"body is not UTF-8: bad byte at {exc.start}")
    return bytes(body)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app that reads a body already read: that body, then what
    the connection sends next (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _wants_graphiql(request: Request) -> bool:
    return (
        request.method == "GET"
        and "query" not in request.query_params
        and "text/html" in request.headers.get("accept", "")
    )


def _offer_sink(context: Context, message: dict[str, Any], selection: Selection) -> None:
    """Let the operation starting in this task write its results directly (see
    gateway.api.graphql.subscriptions): ``message`` is its protocol's result message,
    ``selection`` the request it was started with."""
    if isinstance(context, WebSocketContext) and context.websocket is not None:
        LIVE_SINK.set(LiveSink.for_message(context.websocket, message, selection))


def _authorization(params: dict[str, object] | None) -> str | None:
    for key, value in (params or {}).items():
        if key.lower() == "authorization" and isinstance(value, str):
            return value
    return None


class _TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, with a ping on quiet connections once acknowledged (the
    legacy graphql-ws handler sends its own "ka")."""

    _pinging: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        interval = self.view.keep_alive_interval
        if self.connection_acknowledged and interval and self._pinging is None:
            self._pinging = asyncio.create_task(self._ping_every(interval))

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        selection = Selection(operation.query, operation.variables, operation.operation_name)
        _offer_sink(self.context, {"id": operation.id, "type": "next"}, selection)
        await super().run_operation(operation)

    async def _ping_every(self, interval: float) -> None:
        with contextlib.suppress(WebSocketDisconnected):
            while True:
                await asyncio.sleep(interval)
                await self.send_message({"type": "ping"})

    async def shutdown(self) -> None:
        if self._pinging is not None:
            self._pinging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinging
        await super().shutdown()


class _LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws, its operations offered a direct way to send their results."""

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        selection = Selection(query, variables, operation_name)
        _offer_sink(self.context, {"type": "data", "id": operation_id}, selection)
        await super().handle_async_results(operation_id, query, operation_name, variables)


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view, with the caller's account settled before it runs."""

    graphql_transport_ws_handler_class = _TransportWSHandler
    graphql_ws_handler_class = _LegacyWSHandler

    def __init__(self, services: Services, schema: BaseSchema, **kwargs: Any) -> None:
        settings = services.settings
        kwargs.setdefault("keep_alive", True)
        kwargs.setdefault("keep_alive_interval", settings.ws_keep_alive_seconds)
        kwargs.setdefault("max_subscriptions_per_connection", settings.ws_max_subscriptions)
        kwargs.setdefault(
            "connection_init_wait_timeout", timedelta(seconds=settings.ws_init_timeout_seconds)
        )
        super().__init__(schema, **kwargs)
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._handle(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        # Answered here, not raised: uvicorn closes the connection of an app that
        # raises, failing the client's next request on it too.
        try:
            await self._handle(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            await failure("graphql", exc)(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        receive, send = guard_frames(scope, receive, send)
        if scope["type"] == "http":
            request = Request(scope, receive)
            if not _wants_graphiql(request):
                token = bearer_token(request.headers.get("authorization"))
                account_id = (
                    await self.services.accounts.account_for_api_key(token) if token else None
                )
                if account_id is None:
                    response = error(401, UNAUTHORIZED)
                    response.headers["www-authenticate"] = "Bearer"
                    await response(scope, receive, send)
                    return
                request.state.account_id = account_id
                if request.method == "POST":
                    body = await _read_body(request, self.services.settings.max_graphql_body_bytes)
                    if isinstance(body, Response):
                        await body(scope, receive, send)
                        return
                    receive = _replaying(body, receive)
        await super().__call__(scope, receive, send)

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL page (assets served from the package), not Strawberry's CDN one."""
        return HTMLResponse(graphiql_page())

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        if isinstance(request, WebSocket):
            return WebSocketContext(services=self.services, account_id=None, websocket=request)
        # Set in __call__ once the key is checked; GraphiQL's page has none.
        account_id: int | None = getattr(request.state, "account_id", None)
        return Context(services=self.services, account_id=account_id)

    async def on_ws_connect(self, context: Context) -> None:
        """Authenticate connection_init, on both protocols; refuse the connection if the
        key is missing or wrong."""
        assert isinstance(context, WebSocketContext)
        context.account_id = None  # a second connection_init (graphql-ws) starts over
        token = bearer_token(_authorization(context.connection_params))
        account_id = await self.services.accounts.account_for_api_key(token) if token else None
        if account_id is None:
            raise ConnectionRejectionError({"message": UNAUTHORIZED})
        context.account_id = account_id
        if context.websocket is not None:
            context.websocket.state.account_id = account_id  # for the access log

    def decode_json(self, data: str | bytes) -> object:
        """orjson, whose errors are all JSONDecodeError (a 400 from Strawberry): nesting
        too deep or a lone surrogate would escape json.loads as another error (a 500).
        A request is an object, or a list of them (a batch, refused by Strawberry)."""
        document = orjson.loads(data)
        if not isinstance(document, dict | list):
            raise orjson.JSONDecodeError("a GraphQL request is a JSON object", str(data)[:80], 0)
        return document

    def encode_json(self, data: object) -> str:
        """orjson: ~10x faster than json.dumps, which matters with a message per
        subscriber per event. Values it refuses (integers over 64 bits) go the slow way."""
        try:
            return orjson.dumps(data).decode()
        except TypeError:
            encoded = super().encode_json(data)
            return encoded if isinstance(encoded, str) else encoded.decode()

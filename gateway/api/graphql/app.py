"""/graphql over HTTP (POST, GET with GraphiQL) behind API-key authentication."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.schema import BaseSchema

from gateway.api.graphql.schema import Context
from gateway.api.responses import error
from gateway.runtime import Services

UNAUTHORIZED = "missing or invalid API key: send 'Authorization: Bearer <api key>'"


def bearer_token(header: str | None) -> str | None:
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _wants_graphiql(request: Request) -> bool:
    return (
        request.method == "GET"
        and "query" not in request.query_params
        and "text/html" in request.headers.get("accept", "")
    )


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view, with the caller's account settled before it runs."""

    def __init__(self, services: Services, schema: BaseSchema, **kwargs: Any) -> None:
        super().__init__(schema, **kwargs)
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
                scope.setdefault("state", {})["account_id"] = account_id
        await super().__call__(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return Context(services=self.services, account_id=request.state._state.get("account_id"))

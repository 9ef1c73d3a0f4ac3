"""The Starlette application: routes, and a lifespan that opens the process's services."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from gateway.api import console, graphiql, health, ingest, smtpeter_rest
from gateway.api.graphql.app import GatewayGraphQL
from gateway.api.graphql.schema import build_schema
from gateway.api.responses import error
from gateway.logs import AccessLog
from gateway.runtime import Services, open_services
from gateway.settings import Settings
from gateway.worker import running_worker

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    bootstrap: bool = False,
    worker: bool = False,
    base_url: str = "",
) -> Starlette:
    """The gateway as an ASGI app; its services start with the lifespan.

    ``bootstrap`` creates a ``default`` account on an empty database and prints its
    key and ingest URLs (under ``base_url``); ``worker`` runs a delivery worker inside
    this process.
    """
    settings = settings or Settings()
    schema = build_schema(settings)
    graphql = _GraphQLEndpoint()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            if bootstrap:
                await _bootstrap(services, base_url)
            graphql.view = GatewayGraphQL(services, schema)
            _tune_collector()
            async with contextlib.AsyncExitStack() as stack:
                if worker:
                    await stack.enter_async_context(running_worker(services))
                yield

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, str(exc.detail))

    async def server_error(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error(500, "internal error; it has been logged")

    routes = [
        *ingest.routes,
        *smtpeter_rest.routes,
        *health.routes,
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *graphiql.routes,
        *console.routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(AccessLog, routes=routes)],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def _tune_collector() -> None:
    """Keep Python's full collections, which stop everything, rare and short.

    A full collection walks every tracked object: with 1,000 websockets ~0.5M of them,
    350-450 ms here, during which no event is sent. The start-up heap (schema, modules:
    ~230k objects) never becomes garbage; frozen, it is not walked. Each live event parks
    a few new objects in every subscriber until the next one, and young collections
    promote them; collecting the young generation every 20,000 allocations instead of
    700 promotes far fewer. Measured with 1,000 subscribers at 20 events/s: a full
    collection every ~13 s before, none in 60 s after.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


async def _bootstrap(services: Services, base_url: str) -> None:
    if await services.accounts.count_accounts():
        return
    from gateway.cli import _print_account
    from gateway.services.accounts import InputError

    try:
        created = await services.accounts.create_account("default")
    except InputError:
        return  # another replica made it first
    _print_account(created, as_json=False, base_url=base_url)


class _GraphQLEndpoint:
    """The /graphql ASGI endpoint; its view is made once services exist (lifespan)."""

    view: GatewayGraphQL | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.view is None:
            raise RuntimeError("the gateway's lifespan has not started")
        await self.view(scope, receive, send)

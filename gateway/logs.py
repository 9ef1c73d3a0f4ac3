"""One log format for the gateway and uvicorn, and one access line per request.

``GATEWAY_LOG_FORMAT=human`` (the default) writes ``time LEVEL logger: message``;
``json`` writes one JSON object per line, with a request's fields as keys. Both go to
standard error through the same handler, uvicorn's lines included (``log_config`` is
handed to uvicorn).

The access line names the *route template* (``/ingest/brevo/{token}``), never the path:
ingest paths carry a source's token, and a log is no place for a credential.
"""

from __future__ import annotations

import logging
import logging.config
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("gateway.access")

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came in ``extra``.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the fields given in
    ``extra``, and a traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class QuietWebsocketChatter(logging.Filter):
    """Drops uvicorn's own lines for each websocket (accepted, open, closed): the access
    log has one line per connection already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.error" or record.levelno > logging.INFO:
            return True
        message = str(record.msg)
        return not (message in {"connection open", "connection closed"} or '"WebSocket ' in message)


def log_config(log_format: str = "human") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document for the gateway and uvicorn alike."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": HUMAN_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": formatter},
        "filters": {"quiet_websockets": {"()": QuietWebsocketChatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "gateway",
                "filters": ["quiet_websockets"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            # uvicorn's loggers write through the root handler, in our format.
            "uvicorn": {"handlers": [], "level": "INFO", "propagate": True},
            "uvicorn.error": {"handlers": [], "level": "INFO", "propagate": True},
            # Replaced by gateway.access, which knows the route and the account.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "alembic": {"level": "WARNING"},
            # arq logs two lines per job and httpx one per request; every call is in
            # the delivery log already.
            "arq.worker": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
        },
    }


def configure_logging(log_format: str = "human") -> None:
    """Set up this process's logging (the CLI does, before anything logs)."""
    logging.config.dictConfig(log_config(log_format))


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route that serves ``scope`` (``-`` if none does)."""
    for route in routes:
        match, _child = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path_format", None) or getattr(route, "path", "-"))
    return "-"


class RouteTemplates:
    """:func:`route_template`, remembered per path: matching every route's pattern
    costs more than the rest of a small ingest request's logging. Paths are few (one
    per ingest source and event); the cache is bounded all the same."""

    def __init__(self, routes: Sequence[BaseRoute], size: int = 4096) -> None:
        self._routes = routes
        self._size = size
        self._known: dict[tuple[str, str], str] = {}

    def __call__(self, scope: Scope) -> str:
        key = (scope["type"], scope["path"])
        template = self._known.get(key)
        if template is None:
            template = route_template(self._routes, scope)
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[key] = template
        return template


class AccessLog:
    """ASGI middleware: one ``gateway.access`` line per request or websocket, when it
    ends: method, route template, status (a websocket's close code), duration, and the
    account once a route has authenticated one (``request.state.account_id``)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.route_template = RouteTemplates(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self.route_template(scope)
        status: int | None = None

        def send_noting_status(message: Message) -> Awaitable[None]:
            # Not a coroutine function: a websocket's every message passes here.
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "websocket.close":
                status = message.get("code", 1000)
            elif kind == "websocket.accept" and status is None:
                status = 101
            return send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except BaseException:
            status = 500 if scope["type"] == "http" and status is None else status
            raise
        finally:
            self._log(scope, route, status, started)

    @staticmethod
    def _log(scope: Scope, route: str, status: int | None, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        method = scope.get("method", "WS")
        account = (scope.get("state") or {}).get("account_id")
        account_id = None if account is None else str(account)
        access_log.info(
            "%s %s %s %.1fms account=%s",
            method,
            route,
            status if status is not None else "-",
            duration_ms,
            account_id if account_id is not None else "-",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
                "account_id": account_id,
            },
        )

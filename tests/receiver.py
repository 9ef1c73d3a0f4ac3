"""A real web hook receiver on 127.0.0.1 (uvicorn): records every call made to it.

Each test takes a path of its own (``receiver.endpoint()``) and may script its answers.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query or self.body.decode(), keep_blank_values=True))


Answer = Callable[[Received], Response | Awaitable[Response]]


@dataclass
class Endpoint:
    path: str
    url: str
    calls: list[Received] = field(default_factory=list)
    answer: Answer = field(default=lambda _r: Response("ok", status_code=200))

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path}: {len(self.calls)} calls, wanted {count}")
            await asyncio.sleep(0.02)
        return self.calls


class Receiver:
    def __init__(self) -> None:
        self.base_url = ""
        self.endpoints: dict[str, Endpoint] = {}
        self.app = Starlette(
            routes=[Route("/{path:path}", self._receive, methods=["GET", "POST", "PUT"])]
        )

    def endpoint(self, answer: Answer | None = None) -> Endpoint:
        path = f"/hook/{uuid.uuid4().hex[:12]}"
        endpoint = Endpoint(path, self.base_url + path)
        if answer is not None:
            endpoint.answer = answer
        self.endpoints[path] = endpoint
        return endpoint

    async def _receive(self, request: Request) -> Response:
        received = Received(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            at=time.monotonic(),
        )
        endpoint = self.endpoints.get(received.path)
        if endpoint is None:
            return Response("no such hook", status_code=404)
        endpoint.calls.append(received)
        answer = endpoint.answer(received)
        return await answer if inspect.isawaitable(answer) else answer

"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.responses import JSON
from gateway.metrics import CONTENT_TYPE
from gateway.runtime import Services


async def healthz(_request: Request) -> Response:
    """The process is up and serving."""
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database and Redis answer; 503 naming what does not."""
    services: Services = request.app.state.services
    state = await services.ready()
    ready = all(value == "ok" for value in state.values())
    return JSON(
        {"status": "ok" if ready else "unavailable", **state}, status_code=200 if ready else 503
    )


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's metrics (the outbox's gauges read from
    the database at most every GATEWAY_METRICS_CACHE_SECONDS)."""
    services: Services = request.app.state.services
    await services.queue_watch.refresh()
    return Response(services.metrics.render(), headers={"content-type": CONTENT_TYPE})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

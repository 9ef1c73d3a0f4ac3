"""The console: a page and its static assets, shipped inside the package (no build step,
nothing fetched from elsewhere). It reads everything through /graphql like any client."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"


def content_security_policy(request: Request) -> str:
    """Only this gateway's own scripts, styles and connections: no inline script, no
    other origin. The websocket origin is named since not every browser counts ws: to
    the page's host as 'self'; both schemes, since behind a proxy that ends TLS the
    gateway sees http while the browser speaks wss."""
    host = request.url.netloc
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


async def console_page(request: Request) -> Response:
    return FileResponse(
        CONSOLE_DIR / "index.html",
        headers={
            "content-security-policy": content_security_policy(request),
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-cache",
        },
    )


async def home(_request: Request) -> Response:
    return RedirectResponse("/console", status_code=307)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/console", console_page, methods=["GET"]),
    Mount("/console/assets", StaticFiles(directory=CONSOLE_DIR / "assets"), name="console-assets"),
]

"""The two servers the benchmark measures, each in a uvicorn process of its own.

- ``gateway``: ``gateway.app:create_app`` with a ``Settings`` for the chosen database.
- ``bare``: a Starlette app whose one route reads the body and parses the JSON, as the
  Brevo ingest route does (stdlib ``json.loads``), and does nothing else: the ceiling.

Run as ``python scripts/bench_servers.py {gateway|bare} --port P [...]``; the
benchmark starts them through :class:`ServerProcess`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def bare_app() -> Starlette:
    async def parse(request: Request) -> Response:
        document = json.loads(await request.body())
        events = len(document) if isinstance(document, list) else 1
        return JSONResponse({"stored": events, "duplicates": 0, "ids": []})

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/ingest/brevo/{token}", parse, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """Starts one of the servers on a free 127.0.0.1 port; stops it on exit."""

    def __init__(self, kind: str, *, log_path: Path, **options: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        # BENCH_SERVER_SCRIPT: a wrapper around this module (e.g. to profile the server).
        script = os.environ.get("BENCH_SERVER_SCRIPT", str(Path(__file__)))
        self._command = [sys.executable, script, kind, "--port", str(self.port)]
        for name, value in options.items():
            self._command += [f"--{name.replace('_', '-')}", value]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            self._command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} server exited with {self._process.returncode}; "
                    f"see {self._log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} server did not start; see {self._log_path}")
            time.sleep(0.1)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["gateway", "bare"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare_app()
    else:
        from gateway.app import create_app
        from gateway.settings import Settings

        # Settings given here, not read from the environment or a .env file.
        settings = Settings(
            database_url=args.database_url,
            redis_url=args.redis_url,
            data_dir=Path(args.data_dir),
            _env_file=None,  # type: ignore[call-arg]
        )
        app = create_app(settings)
    os.environ.pop("WEB_CONCURRENCY", None)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

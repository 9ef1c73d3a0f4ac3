"""One log format for uvicorn and the gateway, and one access line per request that
never holds a key or a token."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.logs import JsonFormatter
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway, free_port
from tests.support import body, brevo_event
from tests.test_graphql_errors import logged

HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) [\w.]+: ")


def access(record: logging.LogRecord) -> bool:
    return record.name == "gateway.access"


def server_lines(caplog: pytest.LogCaptureFixture) -> str:
    """What the gateway and uvicorn logged (the test's own HTTP client logs its URLs)."""
    return "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("gateway", "uvicorn"))
    )


async def test_a_graphql_request_gets_one_access_line_with_route_status_and_account(
    gateway: Gateway, account: CreatedAccount, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway.client(account.api_key) as client:
        await client.post("/graphql", json={"query": "{ webhooks { id } }"})

    record = await logged(caplog, access)
    assert record.__dict__["route"] == "/graphql"
    assert record.__dict__["status"] == 200
    assert record.__dict__["account_id"] == str(account.account_id)
    assert record.__dict__["duration_ms"] >= 0
    assert len([r for r in caplog.records if access(r)]) == 1
    assert account.api_key not in server_lines(caplog)


async def test_the_access_line_names_the_ingest_route_template_not_its_token(
    gateway: Gateway, account: CreatedAccount, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = account.ingest_tokens["brevo"]
    async with gateway.client() as client:
        await client.post(
            f"/ingest/brevo/{token}",
            content=body(brevo_event()),
            headers={"content-type": "application/json"},
        )

    record = await logged(caplog, access)
    assert record.__dict__["route"].startswith("/ingest/")
    assert "{token}" in record.__dict__["route"]
    assert token not in server_lines(caplog)


async def test_an_unknown_path_is_logged_without_its_path(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway.client() as client:
        await client.get("/no/such/secret-looking-path")

    record = await logged(caplog, access)
    assert record.__dict__["status"] == 404
    assert "secret-looking-path" not in server_lines(caplog)


def test_the_json_formatter_writes_one_object_with_the_extra_fields_and_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            sys.exc_info(),
            extra={"route": "/r"},
        )

    line = JsonFormatter().format(record)

    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == "failed x"
    assert document["level"] == "ERROR"
    assert document["route"] == "/r"
    assert "ValueError: boom" in document["traceback"]


def wait_for_line(path: Path, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.02)


@contextmanager
def served(tmp_path: Path, log_format: str) -> Iterator[tuple[str, Path]]:
    """``gateway serve`` as a user runs it, its standard error in a file; yields its
    URL and that file once uvicorn says it is running."""
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_LOG_FORMAT": log_format,
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    errors_path = tmp_path / "stderr"
    with errors_path.open("w") as errors:
        server = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "gateway.cli",
                "serve",
                "--port",
                str(port),
                "--no-worker",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_line(errors_path, "Uvicorn running")
            with urllib.request.urlopen(f"{base}/healthz", timeout=30) as answer:
                assert answer.status == 200
            wait_for_line(errors_path, "gateway.access")  # logged after answering
            yield base, errors_path
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_json_format_makes_every_line_of_the_server_json_uvicorns_included(
    tmp_path: Path,
) -> None:
    with served(tmp_path, "json") as (_base, errors):
        pass

    records = [json.loads(line) for line in errors.read_text().splitlines()]
    loggers = {record["logger"] for record in records}
    assert "uvicorn.error" in loggers
    (healthz,) = [r for r in records if r["logger"] == "gateway.access"]
    assert (healthz["route"], healthz["status"]) == ("/healthz", 200)


def test_human_format_is_one_format_for_uvicorn_and_the_gateway(tmp_path: Path) -> None:
    with served(tmp_path, "human") as (_base, errors):
        pass

    lines = errors.read_text().splitlines()
    assert any(" uvicorn.error: " in line for line in lines)
    assert any(" gateway.access: GET /healthz 200 " in line for line in lines)
    assert all(HUMAN_LINE.match(line) for line in lines), lines

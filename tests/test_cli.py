"""The `gateway` command as a user runs it: a real process on a SQLite data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.cli import ingest_urls
from gateway.ids import IdGenerator
from gateway.services.accounts import AccountService
from gateway.settings import Settings
from gateway.storage.db import make_engine


def gateway(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=data_dir,
    )


def run_json(data_dir: Path, *args: str) -> dict[str, Any]:
    done = gateway(data_dir, *args)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


async def key_owner(data_dir: Path, api_key: str) -> int | None:
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    engine = make_engine(settings.sqlalchemy_url)
    try:
        accounts = AccountService(engine, IdGenerator(), cache_seconds=0, cache_size=10)
        return await accounts.account_for_api_key(api_key)
    finally:
        await engine.dispose()


async def test_accounts_key_mints_a_working_key_for_an_existing_account(tmp_path: Path) -> None:
    created = run_json(tmp_path, "accounts", "create", "acme", "--json")

    minted = run_json(tmp_path, "accounts", "key", "acme", "--json")

    assert minted["account"] == "acme"
    assert minted["api_key"] != created["api_key"]
    assert await key_owner(tmp_path, minted["api_key"]) == int(created["account_id"])
    # The old key still works: a new key is not a revocation.
    assert await key_owner(tmp_path, created["api_key"]) == int(created["account_id"])


def test_accounts_key_for_an_unknown_account_says_so(tmp_path: Path) -> None:
    run_json(tmp_path, "accounts", "create", "acme", "--json")

    done = gateway(tmp_path, "accounts", "key", "nobody", "--json")

    assert done.returncode == 2
    assert "no account is named 'nobody'" in done.stderr


def test_jangomail_gets_one_full_ingest_url_per_event_type() -> None:
    urls = ingest_urls("http://127.0.0.1:8000", "jangomail", "src_x")

    assert urls[0] == "http://127.0.0.1:8000/ingest/jangomail/src_x/sent"
    assert [url.rsplit("/", 1)[1] for url in urls] == [
        "sent",
        "open",
        "click",
        "unsubscribe",
        "bounce",
        "complaint",
        "block",
    ]
    assert ingest_urls("http://h:1/", "brevo", "t") == ["http://h:1/ingest/brevo/t"]


def test_serve_prints_a_banner_that_can_be_used_as_printed(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    errors = (tmp_path / "stderr").open("w")
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "gateway.cli", "serve", "--port", str(port), "--no-worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    lines: list[str] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append(line.rstrip())
            if "/ingest/smtpeter/" in line:
                break
    finally:
        server.terminate()
        server.wait(timeout=30)
        errors.close()
    printed = "\n".join(lines)
    assert "/ingest/smtpeter/" in printed, (tmp_path / "stderr").read_text()
    base = f"http://127.0.0.1:{port}"
    assert f"{base}/graphql" in printed
    assert str((tmp_path / "data" / "gateway.db").resolve()) in printed
    assert f"{base}/ingest/brevo/src_" in printed
    jangomail = [line for line in lines if "/ingest/jangomail/" in line]
    assert [line.rsplit("/", 1)[1] for line in jangomail] == [
        "sent",
        "open",
        "click",
        "unsubscribe",
        "bounce",
        "complaint",
        "block",
    ]

"""`gateway doctor` on real parts: a SQLite file of the test's own, the test Redis, and
a real worker started and stopped in this process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from gateway.doctor import Finding, diagnose
from gateway.domain.events import EventType
from gateway.heartbeat import TTL_SECONDS, WORKER_KEY_PREFIX, live_workers, worker_heartbeat
from gateway.runtime import open_services
from gateway.services.webhooks import WebhookChanges
from gateway.settings import Settings
from gateway.worker import running_worker
from tests.conftest import settings_for
from tests.ops_support import migrated_to, quiet_redis


@pytest.fixture
async def doctor_redis(redis_url: str) -> AsyncIterator[str]:
    async with quiet_redis(redis_url) as url:
        yield url


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings}


def run_doctor(
    tmp_path: Path, database_url: str, redis_url: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


async def test_doctor_says_a_database_behind_its_schema_needs_gateway_migrate(
    tmp_path: Path, doctor_redis: str
) -> None:
    database_url = await migrated_to(tmp_path / "behind.db", "0004")

    done = run_doctor(tmp_path, database_url, doctor_redis)

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    [schema] = [check for check in report["checks"] if check["check"] == "schema"]
    assert schema["ok"] is False
    assert "revision 0004" in schema["message"]
    assert "run gateway migrate" in schema["message"]


async def test_doctor_reports_a_stopped_worker(tmp_path: Path, doctor_redis: str) -> None:
    database_url = await migrated_to(tmp_path / "gateway.db", None)
    settings = settings_for(tmp_path, doctor_redis, database_url)
    async with open_services(settings) as services:
        async with running_worker(services):
            async with asyncio.timeout(10):  # the first beat comes as the worker starts
                while not by_check(await diagnose(settings))["workers"].ok:
                    await asyncio.sleep(0.01)
        findings = by_check(await diagnose(settings))

    assert not findings["workers"].ok
    assert "no worker alive" in findings["workers"].message
    assert "start `gateway worker`" in findings["workers"].message


async def test_doctor_finds_a_running_worker_and_a_healthy_deployment(
    tmp_path: Path, doctor_redis: str
) -> None:
    database_url = await migrated_to(tmp_path / "gateway.db", None)
    settings = settings_for(tmp_path, doctor_redis, database_url)
    async with open_services(settings) as services, running_worker(services):
        findings = await diagnose(settings)
        async with asyncio.timeout(10):
            while not by_check(findings)["workers"].ok:
                findings = await diagnose(settings)

    assert all(finding.ok for finding in findings), findings
    assert [finding.check for finding in findings] == [
        "database",
        "schema",
        "redis",
        "workers",
        "queue",
        "clock",
    ]
    assert by_check(findings)["workers"].message.startswith("1 alive")


async def test_doctor_reports_deliveries_waiting_with_no_worker_to_send_them(
    tmp_path: Path, doctor_redis: str
) -> None:
    database_url = await migrated_to(tmp_path / "gateway.db", None)
    settings: Settings = settings_for(tmp_path, doctor_redis, database_url)
    async with open_services(settings) as services:
        account = await services.accounts.create_account("doctor")
        webhook, _ = await services.webhooks.create(
            account.account_id,
            WebhookChanges(url="http://127.0.0.1:9/hook", events=[EventType.DELIVERED]),
        )
        await services.deliveries.send_test(account.account_id, webhook.id)

    queue = by_check(await diagnose(settings, max_lag_seconds=0))["queue"]

    assert not queue.ok
    assert queue.message.startswith("1 deliveries due, the oldest waiting")
    assert "gateway worker" in queue.message


async def test_a_heartbeat_expires_by_itself_should_its_worker_be_killed(
    doctor_redis: str,
) -> None:
    client = redis.asyncio.Redis.from_url(doctor_redis)
    try:
        async with worker_heartbeat(client) as worker_id:
            key = WORKER_KEY_PREFIX + worker_id
            async with asyncio.timeout(10):
                while not await client.exists(key):
                    await asyncio.sleep(0.01)
            ttl = await client.ttl(key)
            [beat] = await live_workers(client)
    finally:
        await client.aclose()

    assert 0 < ttl <= TTL_SECONDS
    assert (beat.worker_id, beat.pid) == (worker_id, os.getpid())


async def test_a_worker_whose_task_ended_stops_beating(doctor_redis: str) -> None:
    client = redis.asyncio.Redis.from_url(doctor_redis)
    worker_task: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        async with worker_heartbeat(client, worker=worker_task, beat_seconds=0.05):
            async with asyncio.timeout(10):
                while not await live_workers(client):
                    await asyncio.sleep(0.01)
            worker_task.set_result(None)  # the arq worker stopped (or crashed)
            async with asyncio.timeout(10):
                while await live_workers(client):
                    await asyncio.sleep(0.01)
            gone = await live_workers(client)
    finally:
        await client.aclose()

    assert gone == []

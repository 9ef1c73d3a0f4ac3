"""`gateway worker` processes on one PostgreSQL and one Redis: several share the load
without a success delivered twice, and a worker killed mid-delivery loses nothing."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from starlette.responses import Response

from gateway.settings import async_database_url
from gateway.storage.db import make_engine, migrate
from tests.conftest import Gateway, redis_database, serve, settings_for
from tests.receiver import Received, Receiver
from tests.support import body, brevo_event
from tests.test_webhooks import create_webhook, settled

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def worker_redis(redis_url: str) -> str:
    url = redis_database(redis_url, 2)
    client = redis.Redis.from_url(url)
    client.flushdb()
    return url


@pytest.fixture(scope="module")
async def front(
    postgres_url: str, worker_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """A gateway with no worker of its own: deliveries wait for worker processes."""
    engine = make_engine(async_database_url(postgres_url))
    await migrate(engine)
    await engine.dispose()
    settings = settings_for(tmp_path_factory.mktemp("front"), worker_redis, postgres_url)
    async with serve(settings, "postgres", worker=False) as running:
        yield running


class Workers:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "worker"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers(postgres_url: str, worker_redis: str, front: Gateway) -> Iterator[Workers]:
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "REDIS_URL": worker_redis,
        "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
        "GATEWAY_RETRY_SCHEDULE": "0.2,0.4",
        "GATEWAY_DELIVERY_TIMEOUT_SECONDS": "1",
        "GATEWAY_SWEEP_INTERVAL_SECONDS": "0.5",
    }
    pool = Workers(env)
    yield pool
    pool.stop_all()


async def test_two_worker_processes_deliver_each_success_once(
    front: Gateway, workers: Workers, receiver: Receiver
) -> None:
    account = await front.new_account()
    endpoint = receiver.endpoint()
    async with front.client(account.api_key) as api:
        webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
        workers.start()
        workers.start()
        async with front.client() as client:
            for start in range(0, 300, 100):
                events = [brevo_event(email=f"w{i}@example.com") for i in range(start, start + 100)]
                response = await client.post(
                    f"/ingest/brevo/{account.ingest_tokens['brevo']}",
                    content=body(events),
                    headers={"content-type": "application/json"},
                )
                assert response.json()["stored"] == 100
        found = await settled(api, webhook["id"], 300, {"SUCCEEDED"}, timeout=60)
    per_delivery = collections.Counter(call.headers["webhook-id"] for call in endpoint.calls)
    assert len(per_delivery) == 300
    assert set(per_delivery.values()) == {1}
    assert all(len(d["attempts"]) == 1 for d in found)


async def test_worker_killed_mid_delivery_loses_nothing(
    front: Gateway, workers: Workers, receiver: Receiver
) -> None:
    account = await front.new_account()
    first_call = asyncio.Event()

    async def hang_once(received: Received) -> Response:
        if not first_call.is_set():
            first_call.set()
            await asyncio.sleep(30)  # the worker dies while waiting for this answer
        return Response("ok")

    endpoint = receiver.endpoint(hang_once)
    async with front.client(account.api_key) as api:
        webhook, _ = await create_webhook(api, url=endpoint.url, events=["DELIVERED"])
        doomed = workers.start()
        async with front.client() as client:
            await client.post(
                f"/ingest/brevo/{account.ingest_tokens['brevo']}",
                content=body(brevo_event(email="survivor@example.com")),
                headers={"content-type": "application/json"},
            )
        await asyncio.wait_for(first_call.wait(), 20)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        workers.start()
        [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"}, timeout=45)
    assert len(endpoint.calls) >= 2
    assert json.loads(endpoint.calls[-1].body)["email"] == "survivor@example.com"
    assert delivery["attempts"][-1]["statusCode"] == 200

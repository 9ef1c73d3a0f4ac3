"""The load generator: POSTs Brevo events over keep-alive connections, in its own process.

Every request carries events never sent before (numbered from ``--first``), so nothing
is deduplicated. The bodies are made before the clock starts, so the generator spends
its time on HTTP only. ``--connections`` workers each keep one request in flight;
requests completed inside the window (after the warm-up) are counted. Given several URLs
(replicas of one gateway), the workers take them in turn. With ``--rate``
the requests are paced instead: request n is sent at n / rate seconds from the start
(or as soon as a connection is free, if the server falls behind).

Run as ``python scripts/bench_load.py URL [URL ...] --first N [...]``: prints one JSON
document.
:func:`run_load` runs it from the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import bench_events
import uvloop


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU used during the window: by the server process, and by the whole machine
    (the load generator, the database and whatever else runs on this shared box)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.result: dict[str, float] = {}

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._machine = _machine_ticks()
        self._self = time.process_time()
        self._server = _process_cpu_seconds(self.server_pid) if self.server_pid else 0.0

    def stop(self) -> None:
        wall = time.perf_counter() - self._wall
        busy, total = _machine_ticks()
        cpus = os.cpu_count() or 1
        self.result = {
            "machine_busy_cpus": (busy - self._machine[0])
            / max(total - self._machine[1], 1)
            * cpus,
            "load_generator_cpus": (time.process_time() - self._self) / wall,
        }
        if self.server_pid:
            self.result["server_cpus"] = (
                _process_cpu_seconds(self.server_pid) - self._server
            ) / wall


async def _generate(
    urls: list[str],
    bodies: list[bytes],
    *,
    events_per_body: int,
    connections: int,
    warmup: float,
    duration: float,
    meter: CpuMeter,
    rate: float | None = None,
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    counted = {"requests": 0, "events": 0, "stored": 0, "errors": 0}
    problems: list[str] = []
    next_body = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        begin = time.perf_counter()
        window_start = begin + warmup
        window_end = window_start + duration

        async def measure_cpu() -> None:
            await asyncio.sleep(window_start - time.perf_counter())
            meter.start()
            await asyncio.sleep(window_end - time.perf_counter())
            meter.stop()

        cpu_task = asyncio.create_task(measure_cpu())

        async def worker(url: str) -> None:
            nonlocal next_body
            while True:
                if next_body >= len(bodies):
                    problems.append("ran out of prepared bodies")
                    return
                body = bodies[next_body]
                next_body += 1
                if rate:
                    await asyncio.sleep(begin + (next_body - 1) / rate - time.perf_counter())
                started = time.perf_counter()
                if started >= window_end:
                    return
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        answer = await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    status, answer = 0, repr(exc).encode()
                finished = time.perf_counter()
                if not window_start <= finished < window_end:
                    continue
                counted["requests"] += 1
                latencies.append(finished - started)
                if status != 200:
                    counted["errors"] += 1
                    if len(problems) < 5:
                        problems.append(f"{status}: {answer[:200]!r}")
                    continue
                counted["events"] += events_per_body
                counted["stored"] += int(json.loads(answer).get("stored", 0))

        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(connections)))
        await cpu_task
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        **counted,
        "seconds": duration,
        "events_per_s": counted["events"] / duration,
        "requests_per_s": counted["requests"] / duration,
        "latency_p50_ms": quantile(0.5) * 1000,
        "latency_p99_ms": quantile(0.99) * 1000,
        "bodies_used": next_body,
        "problems": problems,
        "cpu": meter.result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls", nargs="+", metavar="url")
    parser.add_argument("--first", type=int, required=True, help="number of the first event")
    parser.add_argument("--batch", type=int, default=1, help="events per request (1: an object)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-events", type=int, required=True, help="bodies to prepare")
    parser.add_argument("--server-pid", type=int, help="the server's process, for its CPU use")
    parser.add_argument("--rate", type=float, help="requests per second (default: flat out)")
    args = parser.parse_args()
    if args.batch == 1:
        bodies = [
            bench_events.single_body(n) for n in range(args.first, args.first + args.max_events)
        ]
    else:
        bodies = [
            bench_events.batch_body(n, args.batch)
            for n in range(args.first, args.first + args.max_events, args.batch)
        ]
    result = uvloop.run(
        _generate(
            args.urls,
            bodies,
            events_per_body=args.batch,
            connections=args.connections,
            warmup=args.warmup,
            duration=args.duration,
            meter=CpuMeter(args.server_pid),
            rate=args.rate,
        )
    )
    result["body_bytes_mean"] = sum(len(body) for body in bodies[:1000]) / min(len(bodies), 1000)
    print(json.dumps(result))


def run_load(
    url: str | list[str],
    *,
    first: int,
    max_events: int,
    batch: int = 1,
    connections: int = 32,
    warmup: float = 3.0,
    duration: float = 10.0,
    server_pid: int | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """Run the generator in a process of its own; its JSON result. Several URLs: the
    connections take them in turn."""
    command = [
        sys.executable,
        str(Path(__file__)),
        *([url] if isinstance(url, str) else url),
        f"--first={first}",
        f"--batch={batch}",
        f"--connections={connections}",
        f"--warmup={warmup}",
        f"--duration={duration}",
        f"--max-events={max_events}",
    ]
    if server_pid is not None:
        command.append(f"--server-pid={server_pid}")
    if rate is not None:
        command.append(f"--rate={rate}")
    done = subprocess.run(
        command, capture_output=True, check=False, timeout=600 + warmup + duration
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


if __name__ == "__main__":
    main()

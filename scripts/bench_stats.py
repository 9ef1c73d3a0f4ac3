"""scripts/bench stats: ``eventStats`` latency over HTTP at 1M stored events.

The store is filled through the gateway's own ``insert_events`` (so the rollup is what
ingest would have written), with bench_events' data: 90 days of Brevo events. Then
``eventStats`` over a 30-day window (30 daily buckets) is asked over HTTP, one request
at a time on one keep-alive connection, grouped by type, provider, template and tag;
p50/p99 of each. It prints a table and writes JSON to ``bench-results/``; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import bench_store
from bench_queries import _quantiles
from bench_run import ROOT, _events_label, log, write_results
from bench_servers import ServerProcess

# A database of its own: the ingest benchmark drops and recreates bench_store's.
bench_store.POSTGRES_BENCH_DB = "gateway_bench_stats"
FULL_EVENTS, QUICK_EVENTS = 1_000_000, 100_000
REQUESTS, WARMUP = 200, 20
P50_TARGET_MS = 50.0
# 30 whole UTC days inside bench_events' 90 days (from 2026-01-01).
WINDOW = {"start": "2026-01-16T00:00:00Z", "end": "2026-02-15T00:00:00Z"}
STATS_QUERY = """
query Stats($where: EventFilter, $group: StatsGroup) {
  eventStats(where: $where, interval: DAY, groupBy: $group) { start key count }
}
"""
GROUPS = ("TYPE", "PROVIDER", "TEMPLATE", "TAG")


async def http_latency(base_url: str, api_key: str, group: str) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    payload = {"query": STATS_QUERY, "variables": {"where": WINDOW, "group": group}}
    samples: list[float] = []
    buckets: set[str] = set()
    async with aiohttp.ClientSession(
        base_url, connector=aiohttp.TCPConnector(limit=1), headers=headers
    ) as session:
        for n in range(WARMUP + REQUESTS):
            started = time.perf_counter()
            async with session.post("/graphql", json=payload) as response:
                body = await response.json()
            elapsed = time.perf_counter() - started
            if response.status != 200 or body.get("errors"):
                raise RuntimeError(f"eventStats failed: {response.status} {body}")
            if n >= WARMUP:
                samples.append(elapsed)
            rows = body["data"]["eventStats"]
            buckets = {row["start"] for row in rows}
            total = sum(row["count"] for row in rows)
    return {**_quantiles(samples), "buckets": len(buckets), "rows": len(rows), "total": total}


async def bench_backend(
    backend: str, events: int, redis_url: str, work_dir: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {"backend": backend, "stored_events": events}
    store = await bench_store.create_store(backend, work_dir)
    try:
        account = await bench_store.create_account(store)
        ids = await bench_store.node_ids(store)
        log(f"{backend}: filling the store with {events:,} events")
        results["fill"] = await bench_store.insert_direct(
            store,
            account_id=account.account_id,
            source_id=0,
            ids=ids,
            first=0,
            count=events,
            rows_per_transaction=10_000,
            progress=f"{backend} fill",
        )
        await bench_store.after_bulk_load(store)
        gateway = ServerProcess(
            "gateway",
            log_path=work_dir / f"gateway-{backend}.log",
            database_url=store.database_url,
            redis_url=redis_url,
            data_dir=str(work_dir),
        )
        with gateway:
            results["stats"] = {}
            for group in GROUPS:
                log(f"{backend}: eventStats 30 days by {group}")
                results["stats"][group] = await http_latency(
                    gateway.base_url, account.api_key, group
                )
    finally:
        if backend == "postgres":
            await bench_store.drop_store_if_exists()
    return results


def print_table(all_results: list[dict[str, Any]]) -> None:
    for results in all_results:
        title = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[results["backend"]]
        size = _events_label(results["stored_events"])
        print(f"\n{title}: eventStats, 30 daily buckets @{size}, over HTTP")
        print(f"{'groupBy':<10}{'p50 (p99)':<22}{'buckets':>8}{'events':>12}  target")
        for group, measured in results["stats"].items():
            mark = "pass" if measured["p50_ms"] <= P50_TARGET_MS else "FAIL"
            print(
                f"{group:<10}{measured['p50_ms']:.1f} ms ({measured['p99_ms']:.1f})".ljust(32)
                + f"{measured['buckets']:>8}{measured['total']:>12,}  "
                f"p50 <= {P50_TARGET_MS:g} ms {mark}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench stats", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} stored events")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    events = QUICK_EVENTS if args.quick else FULL_EVENTS
    backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    started = time.perf_counter()
    all_results = []
    for backend in backends:
        work_dir = Path(tempfile.mkdtemp(prefix=f"gateway-bench-stats-{backend}-"))
        all_results.append(asyncio.run(bench_backend(backend, events, args.redis_url, work_dir)))
        shutil.rmtree(work_dir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print_table(all_results)
    write_results(
        args.out,
        name="bench-stats",
        quick=args.quick,
        command="scripts/bench stats",
        seconds=elapsed,
        results=all_results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

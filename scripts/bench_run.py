"""scripts/bench: ingest and query throughput of the gateway, each beside its ceiling.

For each database (SQLite, PostgreSQL), from one run on this machine:

(a) single-event ingest, ``POST /ingest/brevo/{token}``, one event per request over 32
    keep-alive connections, beside a bare Starlette endpoint that only parses the JSON:
    three pairs of runs, bare then gateway, and the pair of the median ratio is the
    figure (on a shared machine one pair alone has varied by a third from run to run);
(b) batched ingest (arrays of 500) into an empty store and into a store of 1M events,
    beside ``insert_events`` called directly (no HTTP, no parsing);
(c) ``events(where: {email})`` and ``events(where: {tags: [a, b]})`` p50/p99 over HTTP
    at 1M events, beside the same SQL replayed with the raw driver;
(d) ``events(where: {email})`` p50/p99 over HTTP at 1M events while single-event ingest
    runs at half the rate (a) measured, beside the same query with no ingest just before.

The gateway and the bare endpoint each run in a uvicorn process of their own; the load
generator (aiohttp) runs in a third. It prints a table and writes the figures as JSON
to ``bench-results/``. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_load
import bench_queries
import bench_store
from bench_servers import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plan:
    stored_events: int  # the "1M" store
    warmup: float  # seconds of load before the window
    duration: float  # seconds in the measured window
    queries: int  # requests per query class
    query_warmup: int
    ceiling_events: int  # events inserted directly for the batched-ingest ceiling
    batch_connections: int


FULL = Plan(1_000_000, 3.0, 10.0, 200, 20, 60_000, 8)
QUICK = Plan(100_000, 2.0, 5.0, 100, 10, 30_000, 8)

# Targets (GitHub issue): minimum events/s, or maximum p50 in ms per database.
SINGLE_TARGET = 2_500
SINGLE_RATIO_TARGET = 0.25
SINGLE_ROUNDS = 3  # pairs of (a) runs, bare then gateway
BATCH_EMPTY_TARGET = 10_000
BATCH_FULL_TARGET = 5_000
EMAIL_P50_TARGET = 10.0
EMAIL_UNDER_INGEST_P99_TARGET = 50.0
TAGS_P50_TARGET = {"postgres": 15.0, "sqlite": 50.0}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Numbering:
    """Hands out ranges of event numbers: every event sent in one run is distinct."""

    def __init__(self, start: int) -> None:
        self.next = start

    def take(self, count: int) -> int:
        first = self.next
        self.next += count
        return first


def _events_label(count: int) -> str:
    return f"{count // 1_000_000}M" if count % 1_000_000 == 0 else f"{count // 1000}k"


async def email_under_ingest(
    base_url: str, api_key: str, ingest_url: str, *, rate: float, first: int, plan: Plan, pid: int
) -> dict[str, Any]:
    """(d): the email query, one request at a time, for a window with no ingest and
    then inside the window of a paced single-event ingest load (run in its own
    process, waited for on a thread). Measured back to back, since on a shared box
    the machine's load drifts between (c) and here."""
    [email] = [query for query in bench_queries.query_classes(100_000) if query.name == "email"]
    idle = await bench_queries.http_latency(
        base_url, api_key, email, warmup=plan.query_warmup, time_limit=plan.duration - 1.0
    )
    budget = int(rate * (plan.warmup + plan.duration) * 1.2) + 100
    load = asyncio.create_task(
        asyncio.to_thread(
            bench_load.run_load,
            ingest_url,
            first=first,
            max_events=budget,
            rate=rate,
            warmup=plan.warmup,
            duration=plan.duration,
            server_pid=pid,
        )
    )
    # The generator's start-up (an interpreter, its bodies) and warm-up come first;
    # the queries end before its window does.
    await asyncio.sleep(plan.warmup)
    query = await bench_queries.http_latency(
        base_url, api_key, email, warmup=plan.query_warmup, time_limit=plan.duration - 1.0
    )
    ingest = await load
    return {
        "rate_target": rate,
        "query": query,
        "idle": idle,
        "ingest": ingest,
        "cpu": ingest["cpu"],
    }


async def bench_backend(backend: str, plan: Plan, redis_url: str, work_dir: Path) -> dict[str, Any]:
    """Every figure for one database."""
    results: dict[str, Any] = {"backend": backend, "stored_events": plan.stored_events}
    log(f"{backend}: creating the database")
    store = await bench_store.create_store(backend, work_dir)
    try:
        account = await bench_store.create_account(store)
        ids = await bench_store.node_ids(store)
        source_id = 0  # events written directly carry no ingest source
        token = account.ingest_tokens["brevo"]
        # Event numbers 0..stored_events-1 are the filled store's; the rest come after.
        numbers = Numbering(10 * plan.stored_events)
        window = {"warmup": plan.warmup, "duration": plan.duration}
        single_budget = int(20_000 * (plan.warmup + plan.duration))
        batch_budget = int(40_000 * (plan.warmup + plan.duration))

        gateway = ServerProcess(
            "gateway",
            log_path=work_dir / f"gateway-{backend}.log",
            database_url=store.database_url,
            redis_url=redis_url,
            data_dir=str(work_dir),
        )
        bare = ServerProcess("bare", log_path=work_dir / "bare.log")
        with bare, gateway:
            # (a) single-event ingest, beside the bare parse endpoint: pairs of runs,
            # the figure from the pair of the median ratio.
            def single_events(server: ServerProcess, what: str, round_number: int) -> Any:
                log(f"{backend}: (a) {what}, 32 connections ({round_number})")
                return bench_load.run_load(
                    f"{server.base_url}/ingest/brevo/{token}",
                    first=numbers.take(single_budget),
                    max_events=single_budget,
                    server_pid=server.pid,
                    **window,
                )

            pairs = [
                (
                    single_events(bare, "bare parse endpoint", round_number),
                    single_events(gateway, "gateway single-event ingest", round_number),
                )
                for round_number in range(1, SINGLE_ROUNDS + 1)
            ]
            pairs.sort(key=lambda pair: _ratio(pair[1], pair[0]))
            results["single_bare"], results["single_gateway"] = pairs[len(pairs) // 2]
            results["single_rounds"] = [
                {
                    "bare_per_s": bare_run["events_per_s"],
                    "gateway_per_s": gateway_run["events_per_s"],
                    "ratio": _ratio(gateway_run, bare_run),
                }
                for bare_run, gateway_run in pairs
            ]

            # (b) batched ingest into an empty store, beside direct inserts.
            await bench_store.empty_events(store)
            log(f"{backend}: (b) ceiling: insert_events directly, empty store")
            results["batch_empty_ceiling"] = await bench_store.insert_direct(
                store,
                account_id=account.account_id,
                source_id=source_id,
                ids=ids,
                first=numbers.take(plan.ceiling_events),
                count=plan.ceiling_events,
                rows_per_transaction=2000,
            )
            await bench_store.empty_events(store)
            log(f"{backend}: (b) gateway batched ingest (500 a request), empty store")
            results["batch_empty_gateway"] = bench_load.run_load(
                f"{gateway.base_url}/ingest/brevo/{token}",
                first=numbers.take(batch_budget),
                max_events=batch_budget,
                batch=500,
                connections=plan.batch_connections,
                server_pid=gateway.pid,
                **window,
            )

            # Fill to the "1M" store: the data shape of bench_events.
            await bench_store.empty_events(store)
            log(f"{backend}: filling the store with {plan.stored_events:,} events")
            results["fill"] = await bench_store.insert_direct(
                store,
                account_id=account.account_id,
                source_id=source_id,
                ids=ids,
                first=0,
                count=plan.stored_events,
                rows_per_transaction=10_000,
                progress=f"{backend} fill",
            )
            started = time.perf_counter()
            await bench_store.after_bulk_load(store)
            results["after_bulk_load_seconds"] = time.perf_counter() - started
            results["stored_before_queries"] = await bench_store.count_events(store)
            log(
                f"{backend}: filled in {results['fill']['wall_seconds']:.0f} s "
                f"({results['stored_before_queries']:,} events)"
            )

            # (c) queries at the filled store.
            results["queries"] = {}
            for query in bench_queries.query_classes(plan.queries):
                log(f"{backend}: (c) {query.name}: HTTP, then raw SQL")
                http = await bench_queries.http_latency(
                    gateway.base_url,
                    account.api_key,
                    query,
                    warmup=plan.query_warmup,
                    time_limit=120,
                )
                raw = await bench_queries.raw_latency(
                    store, account.account_id, query, warmup=plan.query_warmup, time_limit=120
                )
                results["queries"][query.name] = {"http": http, "raw": raw}

            # (d) the email query while single-event ingest runs at half its maximum.
            rate = results["single_gateway"]["events_per_s"] / 2
            log(f"{backend}: (d) email query under single-event ingest at {rate:,.0f}/s")
            results["email_under_ingest"] = await email_under_ingest(
                gateway.base_url,
                account.api_key,
                f"{gateway.base_url}/ingest/brevo/{token}",
                rate=rate,
                first=numbers.take(int(rate * (plan.warmup + plan.duration) * 1.2) + 100),
                plan=plan,
                pid=gateway.pid,
            )

            # (b) batched ingest into the filled store.
            log(f"{backend}: (b) ceiling: insert_events directly, filled store")
            results["batch_full_ceiling"] = await bench_store.insert_direct(
                store,
                account_id=account.account_id,
                source_id=source_id,
                ids=ids,
                first=numbers.take(plan.ceiling_events),
                count=plan.ceiling_events,
                rows_per_transaction=2000,
            )
            log(f"{backend}: (b) gateway batched ingest (500 a request), filled store")
            results["batch_full_gateway"] = bench_load.run_load(
                f"{gateway.base_url}/ingest/brevo/{token}",
                first=numbers.take(batch_budget),
                max_events=batch_budget,
                batch=500,
                connections=plan.batch_connections,
                server_pid=gateway.pid,
                **window,
            )
            results["stored_at_end"] = await bench_store.count_events(store)
    finally:
        if backend == "postgres":
            await bench_store.drop_store_if_exists()
    return results


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _ratio(gateway: dict[str, Any], ceiling: dict[str, Any]) -> float:
    rate: float = ceiling["events_per_s"]
    return gateway["events_per_s"] / rate if rate else 0.0


def table_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per figure: figure, value, ceiling, ratio, target, mark."""
    backend = results["backend"]
    size = _events_label(results["stored_events"])
    rows: list[dict[str, str]] = []

    def load_problems(result: dict[str, Any]) -> str:
        errors = result.get("errors", 0)
        lost = result.get("events", 0) - result.get("stored", 0)
        notes = []
        if errors:
            notes.append(f"{errors} errors")
        if lost:
            notes.append(f"{lost} not stored")
        return f" ({', '.join(notes)})" if notes else ""

    single = results["single_gateway"]
    bare = results["single_bare"]
    ratio = _ratio(single, bare)
    rounds = ", ".join(f"{pair['ratio']:.0%}" for pair in results.get("single_rounds", []))
    rows.append(
        {
            "figure": "(a) single-event ingest, 32 conns"
            + (f" (median of {rounds})" if rounds else ""),
            "value": _rate(single["events_per_s"]) + load_problems(single),
            "ceiling": _rate(bare["requests_per_s"]) + " bare parse",
            "ratio": f"{ratio:.0%}",
            "target": f">= {SINGLE_TARGET:,}/s, >= {SINGLE_RATIO_TARGET:.0%}",
            "mark": _mark(
                single["events_per_s"] >= SINGLE_TARGET
                and ratio >= SINGLE_RATIO_TARGET
                and not single["errors"]
            ),
        }
    )
    for key, label, target in (
        ("batch_empty", "empty store", BATCH_EMPTY_TARGET),
        ("batch_full", f"{size} store", BATCH_FULL_TARGET),
    ):
        gateway = results[f"{key}_gateway"]
        ceiling = results[f"{key}_ceiling"]
        ratio = gateway["events_per_s"] / ceiling["events_per_s"] if ceiling["events_per_s"] else 0
        rows.append(
            {
                "figure": f"(b) batched ingest x500, {label}",
                "value": _rate(gateway["events_per_s"]) + load_problems(gateway),
                "ceiling": _rate(ceiling["events_per_s"]) + " insert_events",
                "ratio": f"{ratio:.0%}",
                "target": f">= {target:,}/s",
                "mark": _mark(gateway["events_per_s"] >= target and not gateway["errors"]),
            }
        )
    for name, measured in results["queries"].items():
        http, raw = measured["http"], measured["raw"]
        target = EMAIL_P50_TARGET if name == "email" else TAGS_P50_TARGET[backend]
        rows.append(
            {
                "figure": f"(c) {name} @{size}, p50 (p99)",
                "value": f"{http['p50_ms']:.1f} ms ({http['p99_ms']:.1f})",
                "ceiling": f"{raw['p50_ms']:.2f} ms ({raw['p99_ms']:.2f}) raw SQL",
                "ratio": f"x{http['p50_ms'] / raw['p50_ms']:.1f}" if raw["p50_ms"] else "-",
                "target": f"p50 <= {target:g} ms",
                "mark": _mark(http["p50_ms"] <= target),
            }
        )
    under = results.get("email_under_ingest")
    if under is not None:
        loaded, ingest = under["query"], under["ingest"]
        idle = under["idle"]
        rows.append(
            {
                "figure": f"(d) email @{size} under ingest "
                f"{ingest['events_per_s']:,.0f}/s, p50 (p99)" + load_problems(ingest),
                "value": f"{loaded['p50_ms']:.1f} ms ({loaded['p99_ms']:.1f})",
                "ceiling": f"{idle['p50_ms']:.1f} ms ({idle['p99_ms']:.1f}) no ingest",
                "ratio": f"x{loaded['p99_ms'] / idle['p99_ms']:.1f} p99" if idle["p99_ms"] else "-",
                "target": f"p99 <= {EMAIL_UNDER_INGEST_P99_TARGET:g} ms",
                "mark": _mark(
                    loaded["p99_ms"] <= EMAIL_UNDER_INGEST_P99_TARGET and not ingest["errors"]
                ),
            }
        )
    return rows


def cpu_note(results: dict[str, Any]) -> str:
    """CPU in each load window: this box is shared, so say who had the processors."""
    parts = []
    for key, label in (
        ("single_bare", "(a) bare"),
        ("single_gateway", "(a) gateway"),
        ("batch_empty_gateway", "(b) empty"),
        ("batch_full_gateway", "(b) full"),
        ("email_under_ingest", "(d)"),
    ):
        cpu = results.get(key, {}).get("cpu", {})
        if cpu:
            parts.append(
                f"{label} {cpu.get('server_cpus', 0):.2f}/{cpu['load_generator_cpus']:.2f}"
                f"/{cpu['machine_busy_cpus']:.2f}"
            )
    return (
        f"CPUs busy in the load windows (server/load generator/whole machine, of "
        f"{os.cpu_count()}): " + ", ".join(parts)
    )


def print_table(all_results: list[dict[str, Any]]) -> None:
    columns = ("figure", "value", "ceiling", "ratio", "target", "mark")
    for results in all_results:
        if "error" in results:
            print(f"\n{results['backend']}: FAILED: {results['error']}")
            continue
        rows = table_rows(results)
        results["table"] = rows
        widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
        title = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[results["backend"]]
        print(f"\n{title}")
        print("  ".join(c.ljust(widths[c]) for c in columns))
        print("  ".join("-" * widths[c] for c in columns))
        for row in rows:
            print("  ".join(row[c].ljust(widths[c]) for c in columns))
        print(cpu_note(results))


def write_results(
    out: Path,
    *,
    name: str,
    quick: bool,
    command: str,
    seconds: float,
    results: Any,
    **more: Any,
) -> None:
    """Say how long the benchmark took on this machine, and write ``results`` (with
    ``more`` beside them) to ``out/{name}-{UTC stamp}[-quick].json``."""
    print(f"\n{platform.node()}: {os.cpu_count()} CPUs; took {seconds / 60:.1f} min")
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{name}-{stamp}{'-quick' if quick else ''}.json"
    document = {
        "started_at": stamp,
        "command": " ".join([command, *sys.argv[1:]]),
        **more,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": seconds,
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    print(f"results written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--quick", action="store_true", help="100k stored events, 5 s windows, 100 queries"
    )
    parser.add_argument("--events", type=int, help="stored events for (b) and (c)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.events:
        plan = Plan(args.events, *list(plan.__dict__.values())[1:])
    backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]

    started = time.perf_counter()
    all_results: list[dict[str, Any]] = []
    for backend in backends:
        work_dir = Path(tempfile.mkdtemp(prefix=f"gateway-bench-{backend}-"))
        try:
            all_results.append(asyncio.run(bench_backend(backend, plan, args.redis_url, work_dir)))
            shutil.rmtree(work_dir, ignore_errors=True)
        except Exception as exc:
            traceback.print_exc()
            all_results.append({"backend": backend, "error": repr(exc), "logs": str(work_dir)})
            print(f"{backend}: failed; server logs kept in {work_dir}", file=sys.stderr)
    elapsed = time.perf_counter() - started

    print_table(all_results)
    write_results(
        args.out,
        name="bench",
        quick=args.quick,
        command="scripts/bench",
        seconds=elapsed,
        results=all_results,
        plan=plan.__dict__,
    )
    return 1 if any("error" in results for results in all_results) else 0


if __name__ == "__main__":
    sys.exit(main())

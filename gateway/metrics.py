"""Prometheus metrics of one gateway process, on a registry of its own.

Not prometheus_client's global registry: tests run several gateways in one process,
and each must count only its own. Counters and histograms are incremented where things
happen; gauges of state (queue depth, subscribers, pool) are read when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.domain.events import NormalizedEvent

__all__ = ["CONTENT_TYPE", "Metrics", "rejection_reason"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Counters declared up front, by name: help text and label names. A scraper sees each
# from the start; inc() fills a label its caller does not know with "".
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gateway_ingest_events_total": (
        "Events received, by provider, type and outcome (stored, duplicate, refused; "
        "a refused event has no type)",
        ("provider", "type", "outcome"),
    ),
    "gateway_ingest_rejected_total": (
        "Refused ingest requests and events, kept for replay, by reason class",
        ("provider", "reason"),
    ),
    "gateway_ingest_unauthorized_total": (
        "Ingest requests without a source's Basic credentials (not kept)",
        ("provider",),
    ),
    "gateway_delivery_attempts_total": (
        "Web hook calls, by format and the delivery's state after the call",
        ("format", "outcome"),
    ),
    "gateway_live_subscribers_dropped_total": (
        "Live subscribers cut off for falling too far behind",
        (),
    ),
    "gateway_live_messages_dropped_total": (
        "Live messages not published (Redis too slow or unreachable)",
        (),
    ),
}

# Ingest refusals by the status answered, as words a dashboard can show.
_REASONS = {
    400: "unreadable",
    401: "unauthorized",
    404: "not_found",
    413: "too_large",
    415: "media_type",
    422: "invalid",
}

# Group commits: 1 (alone) up to GATEWAY_INGEST_BATCH_MAX (2000 by default).
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
# Web hook calls: a local receiver answers in ~1 ms; the default timeout is 10 s.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def rejection_reason(status: int) -> str:
    """The reason class of an ingest refusal answered with ``status``."""
    return _REASONS.get(status, str(status))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._counters: dict[str, Counter] = {}
        for name, (help_text, labels) in COUNTERS.items():
            self._counter(name, help_text, labels)
        self._batch_events = Histogram(
            "gateway_ingest_batch_events",
            "Events written per group-commit transaction",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._delivery_seconds = Histogram(
            "gateway_delivery_duration_seconds",
            "Time of one web hook call, by format",
            ("format",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _counter(self, name: str, help_text: str, labels: Iterable[str]) -> Counter:
        counter = Counter(name, help_text, tuple(labels), registry=self.registry)
        self._counters[name] = counter
        return counter

    # Counting

    def inc(self, name: str, amount: float = 1, help: str = "", **labels: str) -> None:
        """Add ``amount`` to the counter ``name``; one not declared in COUNTERS is made
        on first use with these label names (``help`` its help text)."""
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counter(name, help or name, sorted(labels))
        names = COUNTERS[name][1] if name in COUNTERS else sorted(labels)
        target = counter.labels(**{key: labels.get(key, "") for key in names}) if names else counter
        target.inc(amount)

    def value(self, name: str, **labels: str) -> float:
        """A counter's value (0 if never counted), for tests."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def ingest_batch(self, written: Iterable[tuple[NormalizedEvent, bool]]) -> None:
        """One group commit: each event with whether it was stored (else a duplicate)."""
        counts: dict[tuple[str, str, str], int] = {}
        size = 0
        for event, stored in written:
            size += 1
            key = (event.provider.value, event.type.value, "stored" if stored else "duplicate")
            counts[key] = counts.get(key, 0) + 1
        if not size:
            return
        self._batch_events.observe(size)
        events = self._counters["gateway_ingest_events_total"]
        for (provider, event_type, outcome), count in counts.items():
            events.labels(provider=provider, type=event_type, outcome=outcome).inc(count)

    def ingest_refused(self, provider: str, status: int, count: int = 1) -> None:
        """``count`` refused events (or unreadable requests) answered with ``status``."""
        self.inc(
            "gateway_ingest_rejected_total",
            count,
            provider=provider,
            reason=rejection_reason(status),
        )
        self.inc("gateway_ingest_events_total", count, provider=provider, outcome="refused")

    def delivery_attempted(self, format: str, outcome: str, seconds: float) -> None:
        """One web hook call in ``format``, leaving its delivery ``outcome``."""
        self.inc("gateway_delivery_attempts_total", format=format, outcome=outcome)
        self._delivery_seconds.labels(format=format).observe(seconds)

    # Read when scraped

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at each scrape."""
        Gauge(name, help_text, registry=self.registry).set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str) -> WSGIServer | None:
        """Serve these metrics at ``http://<addr>:<port>/metrics`` from a thread, for
        a worker process, which has no HTTP server of its own; port 0: not at all."""
        if not port:
            return None
        server, _thread = start_http_server(port, addr, registry=self.registry)
        return server

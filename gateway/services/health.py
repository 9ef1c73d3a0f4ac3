"""Operational state for /metrics and `gateway doctor`: the outbox read from the
database, at most once per ``cache_seconds`` however often it is asked for (a scrape
every second from several Prometheus servers must not become database load).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from gateway.live import LiveHub
from gateway.metrics import Metrics
from gateway.storage.health import QueueHealth, queue_health

log = logging.getLogger(__name__)


class QueueWatch:
    def __init__(self, engine: AsyncEngine, *, cache_seconds: float = 5.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._read_at = -math.inf
        self._lock = asyncio.Lock()
        self.last: QueueHealth | None = None

    async def read(self) -> QueueHealth:
        """The outbox now, or as read less than ``cache_seconds`` ago."""
        async with self._lock:  # concurrent scrapes share one read
            if self.last is None or time.monotonic() - self._read_at >= self._cache_seconds:
                async with self._engine.connect() as connection:
                    self.last = await queue_health(connection, now=datetime.now(UTC))
                self._read_at = time.monotonic()
            return self.last

    async def refresh(self) -> None:
        """Read before a scrape; a failed read leaves the last values (logged)."""
        try:
            await self.read()
        except Exception as exc:
            log.warning("metrics: the outbox could not be read (%s)", exc)


_OUTBOX_GAUGES = (
    ("gateway_delivery_queue_due", "due", "Open deliveries whose time has come"),
    ("gateway_delivery_queue_scheduled", "scheduled", "Open deliveries waiting for a retry's time"),
    (
        "gateway_delivery_lag_seconds",
        "lag_seconds",
        "How long the oldest due delivery has waited past its time",
    ),
    ("gateway_deliveries_held", "held", "Deliveries HELD for disabled web hooks"),
    ("gateway_webhooks_disabled", "webhooks_disabled", "Web hooks disabled"),
)


class _OutboxGauges(Collector):
    """The outbox as ``watch`` last read it; nothing before a first read (a worker's
    metrics, which nobody refreshes, leave the outbox to the servers')."""

    def __init__(self, watch: QueueWatch) -> None:
        self._watch = watch

    def collect(self) -> Iterator[Metric]:
        last = self._watch.last
        if last is None:
            return
        for name, read, help_text in _OUTBOX_GAUGES:
            yield GaugeMetricFamily(name, help_text, value=float(getattr(last, read)))


def register_gauges(
    metrics: Metrics, engine: AsyncEngine, watch: QueueWatch, live: LiveHub
) -> None:
    """The gauges read at each scrape: the outbox (as ``watch`` last read it: the same
    on every replica of one database), live subscribers and the connection pool (this
    process's)."""
    metrics.registry.register(_OutboxGauges(watch))
    metrics.gauge(
        "gateway_live_subscribers", "Live subscribers on this process", live.subscriber_count
    )
    pool = engine.pool
    if isinstance(pool, QueuePool):
        metrics.gauge("gateway_db_pool_checked_out", "Database connections in use", pool.checkedout)
        metrics.gauge("gateway_db_pool_size", "Database connections the pool keeps", pool.size)

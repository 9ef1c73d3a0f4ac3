"""Publishing to Redis from one background task, many messages per round trip.

Redis answers ~5,400 PUBLISH a second one at a time here and ~80,000 pipelined, so
messages wait in a buffer for the task, which sends all of them in one pipeline. The
caller never waits for Redis: ingest must not slow down, or hang, because Redis does.
What cannot be sent (Redis unreachable, buffer full) is dropped, and the channels it was
for get a gap message once Redis answers again, so subscribers re-read the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.metrics import Metrics

log = logging.getLogger(__name__)

GAP_MESSAGE = b'{"gap":true}'
# Messages sent per pipeline: large enough to amortize the round trip, small enough
# that one slow pipeline does not hold everything behind it.
_PIPELINE_MAX = 1000
_RETRY_SECONDS = 0.5


class Publisher:
    def __init__(self, redis: Redis, *, metrics: Metrics, max_pending: int = 20_000) -> None:
        self._redis = redis
        self._metrics = metrics
        self._max_pending = max_pending
        self._pending: deque[tuple[str, bytes]] = deque()
        self._gapped: set[str] = set()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing waits to be sent
        self._task: asyncio.Task[None] | None = None

    def send(self, channel: str, message: bytes) -> None:
        """Queue ``message`` for ``channel``; returns at once."""
        if len(self._pending) >= self._max_pending:
            dropped_channel, _ = self._pending.popleft()
            self._gapped.add(dropped_channel)
            self._metrics.inc(
                "gateway_live_messages_dropped_total",
                help="Live messages not published (Redis too slow or unreachable).",
            )
        self._pending.append((channel, message))
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-publisher")
        self._wakeup.set()

    async def stop(self, *, flush_seconds: float = 2.0) -> None:
        """Send what is waiting (for at most ``flush_seconds``), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_seconds):
                await self._idle.wait()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending or self._gapped:
                count = min(len(self._pending), _PIPELINE_MAX)
                batch = [self._pending.popleft() for _ in range(count)]
                gaps = sorted(self._gapped)
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for channel in gaps:
                            pipe.publish(channel, GAP_MESSAGE)
                        for channel, message in batch:
                            pipe.publish(channel, message)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    log.warning("live messages not published (%s); retrying", exc)
                    self._gapped.update(channel for channel, _ in batch)
                    self._metrics.inc(
                        "gateway_live_messages_dropped_total",
                        len(batch),
                        help="Live messages not published (Redis too slow or unreachable).",
                    )
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue
                self._gapped.difference_update(gaps)
            self._idle.set()

"""Sending a web hook's due deliveries: what one ``deliver_webhook`` job does.

The database decides what is due (``storage.outbox``); each delivery is claimed with a
lease before its call (``DeliverySender.attempt``), so a stale, duplicated or expired
job sends nothing twice, and a job that finds nothing due does nothing. When a job
ends, it queues one for the web hook's next due time (its retries), so no delivery
waits on a job that is gone.

Calls in flight to one web hook are capped twice: by its share of the worker (the
process's ``GATEWAY_DELIVERY_CONCURRENCY`` over the web hooks with work in hand, and
never more than half of it), and by a limit that adapts (AIMD): halved on each failed
call, down to one for an endpoint that fails every call, one more on each success.
The deliveries of one message (to one recipient) go out in the order their events
occurred, one after the other; other messages do not wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.delivery.sender import DeliverySender, Outcome
from gateway.ids import IdGenerator
from gateway.services.outbox import DeliveryQueue
from gateway.storage import outbox as store
from gateway.storage.db import begin_write

log = logging.getLogger(__name__)

# How long one job sends before it hands on to a new one (arq's job timeout must
# cover this, plus the calls then in flight).
DRAIN_SECONDS = 30.0


class EndpointLimit:
    """Calls in flight to one endpoint: additive increase, multiplicative decrease."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0

    def has_room(self, share: int) -> bool:
        return self.in_flight < max(1, min(int(self.limit), share))

    def succeeded(self) -> None:
        self.limit = min(float(self.ceiling), self.limit + 1)

    def failed(self) -> None:
        """A failed call, timeout, 429 or Retry-After: the endpoint has enough."""
        self.limit = max(1.0, self.limit / 2)


@dataclass(eq=False)
class _Drain:
    """One web hook's deliveries in hand in this process."""

    webhook_id: int
    limit: EndpointLimit
    ready: collections.deque[store.DueDelivery] = field(default_factory=collections.deque)
    # Deliveries waiting for an earlier one of their message (in ready or running).
    behind: dict[tuple[str, str], collections.deque[store.DueDelivery]] = field(
        default_factory=dict
    )
    running: dict[int, tuple[store.DueDelivery, asyncio.Task[None]]] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)  # claimed elsewhere meanwhile
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    again: bool = False  # a job came for this web hook while it ran
    sent: int = 0

    def add(self, found: list[store.DueDelivery]) -> None:
        floor = datetime.min.replace(tzinfo=UTC)
        for item in sorted(found, key=lambda d: (_aware(d.occurred_at) or floor, d.id)):
            key = item.message_key
            if key is not None and key in self.behind:
                self.behind[key].append(item)
                continue
            if key is not None:
                self.behind[key] = collections.deque()
            self.ready.append(item)

    def done(self, item: store.DueDelivery) -> None:
        key = item.message_key
        if key is None:
            return
        waiting = self.behind[key]
        if waiting:
            self.ready.append(waiting.popleft())
        else:
            del self.behind[key]

    def in_hand(self) -> set[int]:
        waiting = {item.id for queue in self.behind.values() for item in queue}
        return {item.id for item in self.ready} | set(self.running) | waiting

    def drop_waiting(self) -> None:
        """Let go of what has not started: still due in the database, for the next job."""
        self.ready.clear()
        for key in list(self.behind):
            self.behind[key].clear()
            if not any(item.message_key == key for item, _ in self.running.values()):
                del self.behind[key]


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC times."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        sender: DeliverySender,
        queue: DeliveryQueue,
        *,
        concurrency: int,
        sweep_interval_seconds: float,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._sender = sender
        self._queue = queue
        self._concurrency = concurrency
        self._sweep_after = timedelta(seconds=sweep_interval_seconds)
        self._drain_seconds = drain_seconds
        self._calls = asyncio.Semaphore(concurrency)
        self._drains: dict[int, _Drain] = {}
        self._limits: dict[int, EndpointLimit] = {}
        self._page = concurrency * 2
        # No endpoint ever holds more than half the worker: calls already in flight to
        # a slow one cannot be taken back when another web hook's work arrives.
        self._endpoint_ceiling = max(1, math.ceil(concurrency / 2))

    async def deliver(self, webhook_id: int) -> int:
        """The job: send the web hook's due deliveries; returns how many calls."""
        running = self._drains.get(webhook_id)
        if running is not None:
            # One drain per web hook in this process: it looks again before it ends.
            running.again = True
            running.progress.set()
            return 0
        limit = self._limits.setdefault(webhook_id, EndpointLimit(self._endpoint_ceiling))
        drain = _Drain(webhook_id, limit)
        self._drains[webhook_id] = drain
        try:
            await self._drain(drain)
        finally:
            del self._drains[webhook_id]
            for _, task in drain.running.values():
                task.cancel()
            if limit.in_flight == 0 and limit.limit >= limit.ceiling:
                self._limits.pop(webhook_id, None)
        return drain.sent

    def _share(self) -> int:
        """Each web hook with work in hand gets an equal part of the worker."""
        busy = sum(1 for d in self._drains.values() if d.ready or d.running)
        return max(1, math.ceil(self._concurrency / max(1, busy)))

    async def _drain(self, drain: _Drain) -> None:
        deadline = time.monotonic() + self._drain_seconds
        more = True  # the last look may not have found everything due
        found_none = False  # the last look found nothing due
        while True:
            if drain.again:
                drain.again, more = False, True
            in_hand = drain.in_hand()
            if more and len(in_hand) <= self._page // 2 and time.monotonic() < deadline:
                async with self._engine.connect() as connection:
                    found = await store.due_of_webhook(
                        connection,
                        webhook_id=drain.webhook_id,
                        now=datetime.now(UTC),
                        limit=self._page,
                        leave_out=in_hand | drain.skipped,
                    )
                more = len(found) == self._page
                found_none = not found
                drain.add(found)
            if time.monotonic() >= deadline:
                drain.drop_waiting()
            self._start_ready(drain)
            if drain.running:
                drain.progress.clear()
                await drain.progress.wait()
                continue
            if time.monotonic() >= deadline:
                # Hand on to a fresh job: arq's job timeout stays meaningful.
                await self._queue.deliver_now({drain.webhook_id: f"more:{self._ids.next_id()}"})
                return
            if more:
                continue
            async with self._engine.connect() as connection:
                when = await store.next_due(
                    connection, webhook_id=drain.webhook_id, now=datetime.now(UTC)
                )
            when, now = _aware(when), datetime.now(UTC)
            if when is not None and when <= now:
                if not found_none:  # more fell due meanwhile: look again
                    more = True
                    continue
                # Due, yet not found: one this drain could not claim (another worker's
                # lease ran out, an attempt failed). A later job takes it.
                when = now + timedelta(seconds=1)
            if when is not None:
                await self._queue.deliver_at(drain.webhook_id, when)
            if not drain.again:  # nothing awaited since this was last read: no job lost
                return

    def _start_ready(self, drain: _Drain) -> None:
        share = self._share()
        while drain.ready and drain.limit.has_room(share):
            item = drain.ready.popleft()
            drain.limit.in_flight += 1
            task = asyncio.create_task(self._send(drain, item), name=f"deliver-{item.id}")
            drain.running[item.id] = (item, task)

    async def _send(self, drain: _Drain, item: store.DueDelivery) -> None:
        """One attempt. Its places among the calls in flight (the endpoint's and the
        process's) are given up as soon as its call ends, not once its result is
        written: the write waits for a batch. The next delivery of its message waits
        for the write."""
        acquired = freed = False

        def free(succeeded: bool | None) -> None:
            nonlocal freed
            if freed:
                return
            freed = True
            if acquired:
                self._calls.release()
            drain.limit.in_flight -= 1
            if succeeded is True:
                drain.limit.succeeded()
            elif succeeded is False:
                drain.limit.failed()
            drain.progress.set()

        outcome: Outcome | None = None
        try:
            await self._calls.acquire()
            acquired = True
            outcome = await self._sender.attempt(item.id, on_called=free)
        except Exception:
            # Its lease runs out and it is due again: the sweeper or the next job.
            log.exception("delivery %s: the attempt failed", item.id)
        finally:
            free(None)
            if outcome is None or outcome.status is None:
                drain.skipped.add(item.id)
            else:
                drain.sent += 1
            drain.running.pop(item.id, None)
            drain.done(item)
            drain.progress.set()

    async def sweep(self, limit: int = 1000) -> int:
        """Queue a job for each web hook whose due deliveries seem to have lost theirs
        (due for longer than a sweep interval, and no worker holds them: Redis lost its
        queue, or a job expired), and release the held deliveries of enabled web hooks.
        A job queued for nothing finds nothing due."""
        now = datetime.now(UTC)
        async with begin_write(self._engine) as connection:
            released = await store.release_held_of_enabled(connection, now=now)
            stale = await store.webhooks_with_due(
                connection, due_before=now - self._sweep_after, now=now, limit=limit
            )
        webhook_ids = sorted(set(released) | set(stale))
        token = f"sweep:{int(now.timestamp() * 1000)}"
        await self._queue.deliver_now({webhook_id: token for webhook_id in webhook_ids})
        return len(webhook_ids)

    async def close(self) -> None:
        for drain in list(self._drains.values()):
            for _, task in drain.running.values():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

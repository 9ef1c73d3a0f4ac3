"""Group commit for any kind of item: many concurrent callers, one call per batch.

A database commits a few hundred transactions a second here; work that arrives
concurrently is gathered while the previous batch runs and handled in one call (one
transaction), and each caller gets its own result. Alone, an item waits for nobody.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from gateway import tracing

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from opentelemetry.trace import Link

    _Pending = tuple[T, asyncio.Future[R], int, Link | None]


class Batcher(Generic[T, R]):
    """``await submit(item)`` runs ``item`` through ``run(batch)`` with whatever else
    is waiting; ``run`` returns one result per item, in order.

    A batch holds up to ``max_batch`` by ``weight`` (1 an item unless given). ``then``,
    if given, runs with each batch's items after its callers have their results.

    One batch runs at a time, so that what arrives meanwhile makes the next one bigger.
    With ``concurrency`` above 1, a further batch starts beside the running ones only
    when a full one is waiting: it cannot grow by waiting, and on PostgreSQL its insert
    runs in a second server process while the first commits (arrays of 500 events).
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        name: str,
        max_batch: int = 500,
        weight: Callable[[T], int] | None = None,
        then: Callable[[list[T]], Awaitable[None]] | None = None,
        concurrency: int = 1,
    ) -> None:
        self._run = run
        self._name = name
        self._max_batch = max_batch
        self._weight = weight or (lambda _item: 1)
        self._then = then
        self._concurrency = max(1, concurrency)
        # Each item with its caller's future, weight and span (a link when tracing).
        self._pending: collections.deque[_Pending[T, R]] = collections.deque()
        self._pending_weight = 0
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=self._name)
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        weight = self._weight(item)
        self._pending.append((item, done, weight, tracing.current_link()))
        self._pending_weight += weight
        self._wake.set()
        return await done

    async def close(self) -> None:
        for task in [*([self._task] if self._task else []), *self._running]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    def _may_start(self) -> bool:
        if not self._pending:
            return False
        if not self._running:
            return True
        return len(self._running) < self._concurrency and self._pending_weight >= self._max_batch

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._may_start():
                batch = [self._pending.popleft()]
                total = batch[0][2]
                while self._pending and total + self._pending[0][2] <= self._max_batch:
                    batch.append(self._pending.popleft())
                    total += batch[-1][2]
                self._pending_weight -= total
                task = asyncio.create_task(self._run_batch(batch), name=self._name)
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _run_batch(self, batch: list[_Pending[T, R]]) -> None:
        items = [item for item, *_ in batch]
        # A batch is nobody's child (its task was started by whoever came first): a span
        # of its own, linked to the callers' spans.
        links = [link for *_, link in batch if link is not None]
        try:
            with tracing.span(
                f"{self._name} batch", {"gateway.batch.size": len(items)}, root=True, links=links
            ):
                results = await self._run(items)
        except Exception as exc:
            log.exception("%s: a batch of %d failed", self._name, len(items))
            for _, done, *_ in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for (_, done, *_), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)
        if self._then is not None:
            try:
                await self._then(items)
            except Exception:
                log.exception("%s: the after-batch step failed", self._name)

"""Group commit for any kind of item: many concurrent callers, one call per batch.

A database commits a few hundred transactions a second here; work that arrives
concurrently is gathered while the previous batch runs and handled in one call (one
transaction), and each caller gets its own result. Alone, an item waits for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Batcher(Generic[T, R]):
    """``await submit(item)`` runs ``item`` through ``run(batch)`` with whatever else
    is waiting; ``run`` returns one result per item, in order.

    A batch holds up to ``max_batch`` by ``weight`` (1 an item unless given). ``then``,
    if given, runs after each batch's callers have their results, before the next batch.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        name: str,
        max_batch: int = 500,
        weight: Callable[[T], int] | None = None,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._run = run
        self._name = name
        self._max_batch = max_batch
        self._weight = weight or (lambda _item: 1)
        self._then = then
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=self._name)
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, done))
        return await done

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            total = self._weight(batch[0][0])
            while total < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                total += self._weight(batch[-1][0])
            items = [item for item, _ in batch]
            try:
                results = await self._run(items)
            except Exception as exc:
                log.exception("%s: a batch of %d failed", self._name, len(items))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)
            if self._then is not None:
                await self._then()

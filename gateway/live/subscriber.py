"""One local subscriber of the live hub: a bounded queue between the hub and a consumer.

The hub hands items over without ever waiting (``offer``); the consumer waits for them
(``get``). A consumer that falls more than ``max_queue`` items behind is cut off: its
queue is dropped and its next ``get`` raises :class:`SubscriberOverflow`. Ingest never
waits for a slow websocket, and a stuck one holds at most ``max_queue`` items.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class SubscriberOverflow(Exception):
    """The subscriber fell too far behind and was dropped."""

    def __init__(self, max_queue: int) -> None:
        super().__init__(f"more than {max_queue} items were waiting for this subscriber")
        self.max_queue = max_queue


class Gap(enum.Enum):
    """Items may have been lost on the way (Redis was unreachable for a moment): a
    subscriber that can catch up from the store should do so now."""

    GAP = "gap"


GAP = Gap.GAP


class Subscriber(Generic[T]):
    """Receives the items of one (account, kind) that ``accept`` lets through."""

    def __init__(
        self,
        key: tuple[int, str],
        *,
        max_queue: int,
        accept: Callable[[T], bool] | None,
        on_close: Callable[[Subscriber[T]], None],
    ) -> None:
        self.key = key  # (account id, kind): where the hub files it
        self._max_queue = max_queue
        self._accept = accept
        self._on_close = on_close
        self._items: deque[T | Gap] = deque()
        # A bare future rather than an asyncio.Event: this is paid per subscriber per event.
        self._waiter: asyncio.Future[None] | None = None
        self._overflowed = False
        self._closed = False
        self._detached = False

    def offer(self, items: Iterable[T]) -> None:
        """Queue the accepted items; never blocks (called by the hub's reader)."""
        if self._overflowed or self._closed:
            return
        accept = self._accept
        before = len(self._items)
        self._items.extend(items if accept is None else (item for item in items if accept(item)))
        if len(self._items) > self._max_queue:
            self._overflowed = True
            self._items.clear()  # free the memory now, not when the consumer wakes
            self._detach()
        if len(self._items) != before or self._overflowed:
            self._wake()

    def signal_gap(self) -> None:
        """Tell the consumer that items may have been missed."""
        if not self._overflowed and not self._closed:
            self._items.append(GAP)
            self._wake()

    async def get(self) -> T | Gap:
        """The next item, or GAP; raises SubscriberOverflow once the queue overflowed."""
        while not self._items:
            if self._overflowed:
                raise SubscriberOverflow(self._max_queue)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Stop receiving; the hub forgets this subscriber."""
        self._closed = True
        self._items.clear()
        self._detach()

    def _detach(self) -> None:
        if not self._detached:
            self._detached = True
            self._on_close(self)

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def __len__(self) -> int:
        return len(self._items)

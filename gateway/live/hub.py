"""The live hub: account-scoped channels that reach every gateway process.

Anything may publish (``hub.publish(account_id, kind, payload)``); every process's hub
hears it through one Redis pattern subscription (one connection per process, opened
when the first local subscriber arrives, not one per websocket) and hands each message
to the local subscribers of that account and kind. A message is decoded once per process,
however many subscribers it has: they all receive the same Python objects.

Publishing goes through Redis even for subscribers in the same process: one path, one
order, and what a subscriber sees here is what it would see on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.domain.jsontext import json_bytes, json_value
from gateway.live.publisher import Publisher
from gateway.live.subscriber import Subscriber
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL_PREFIX = "gateway:live"
# How long a new subscriber waits for the Redis subscription before giving up.
_LISTEN_TIMEOUT_SECONDS = 5.0
_RECONNECT_MAX_SECONDS = 5.0
# Subscribers woken per turn of the event loop (each then costs ~40 µs to send).
_WAKE_AT_ONCE = 50


class LiveUnavailable(Exception):
    """The hub cannot listen to Redis now; live items cannot be promised."""


@dataclass(frozen=True)
class Kind(Generic[T]):
    """A kind of live item: its channel name, and how a process decodes a published
    JSON value into what its subscribers receive."""

    name: str
    decode: Callable[[Any], T]


def _as_is(value: Any) -> Any:
    return value


class LiveHub:
    def __init__(self, redis: Redis, *, max_queue: int, metrics: Metrics) -> None:
        self._redis = redis
        self._max_queue = max_queue
        self._metrics = metrics
        # Pub/sub ignores Redis database numbers; gateways sharing a Redis server on
        # different databases must not hear each other's accounts.
        database = redis.connection_pool.connection_kwargs.get("db", 0)
        self._prefix = f"{CHANNEL_PREFIX}:{database}:"
        self._publisher = Publisher(redis, metrics=metrics)
        self._decoders: dict[str, Callable[[Any], Any]] = {}
        self._subscribers: dict[tuple[int, str], dict[Subscriber[Any], None]] = {}
        self._listening = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    # Publishing

    def publish(self, account_id: int, kind: str | Kind[Any], payload: Any) -> None:
        """Send one JSON-able (by orjson) item to ``account_id``'s subscribers of
        ``kind`` in every process; returns at once."""
        self.publish_many(account_id, kind, (payload,))

    def publish_many(self, account_id: int, kind: str | Kind[Any], payloads: Iterable[Any]) -> None:
        """Send several items as one Redis message."""
        name = kind if isinstance(kind, str) else kind.name
        message = json_bytes({"items": list(payloads)})
        self._publisher.send(f"{self._prefix}{account_id}:{name}", message)

    # Subscribing

    @contextlib.asynccontextmanager
    async def subscribe(
        self, account_id: int, kind: Kind[T], *, accept: Callable[[T], bool] | None = None
    ) -> AsyncIterator[Subscriber[T]]:
        """A subscriber to ``account_id``'s items of ``kind`` that ``accept`` lets
        through; once this returns, every item published from now on reaches it.

        Raises LiveUnavailable if Redis cannot be listened to.
        """
        self._decoders.setdefault(kind.name, kind.decode)
        key = (account_id, kind.name)
        subscriber: Subscriber[T] = Subscriber(
            key, max_queue=self._max_queue, accept=accept, on_close=self._forget
        )
        self._subscribers.setdefault(key, {})[subscriber] = None
        try:
            await self._wait_listening()
            yield subscriber
        finally:
            subscriber.close()

    def subscriber_count(self, account_id: int | None = None) -> int:
        """Local subscribers (of one account), for metrics and tests."""
        return sum(
            len(group)
            for (account, _), group in self._subscribers.items()
            if account_id is None or account == account_id
        )

    def _forget(self, subscriber: Subscriber[Any]) -> None:
        group = self._subscribers.get(subscriber.key)
        if group is not None:
            group.pop(subscriber, None)
            if not group:
                del self._subscribers[subscriber.key]
        if subscriber.overflowed:
            self._metrics.inc(
                "gateway_live_subscribers_dropped_total",
                help="Live subscribers cut off for falling too far behind.",
            )

    async def _wait_listening(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_forever(), name="live-reader")
        try:
            async with asyncio.timeout(_LISTEN_TIMEOUT_SECONDS):
                await self._listening.wait()
        except TimeoutError:
            raise LiveUnavailable("live events are unavailable: Redis does not answer") from None

    # Lifecycle and the Redis side

    async def stop(self) -> None:
        await self._publisher.stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _read_forever(self) -> None:
        delay = 0.1
        connected_before = False
        pattern = f"{self._prefix}*"
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                async for message in pubsub.listen():
                    kind = message["type"]
                    if kind == "pmessage":
                        await self._dispatch(message["channel"], message["data"])
                    elif kind == "psubscribe":
                        self._listening.set()
                        delay = 0.1
                        if connected_before:
                            # Whatever was published while we were away is lost to us.
                            self._signal_gap_to_all()
                        connected_before = True
            except (RedisError, OSError) as exc:
                log.warning("live hub lost Redis (%s); reconnecting in %.1fs", exc, delay)
            finally:
                self._listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_SECONDS)

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        account, _, name = channel.decode()[len(self._prefix) :].partition(":")
        try:
            key = (int(account), name)
        except ValueError:
            return  # not one of ours
        group = self._subscribers.get(key)
        if not group:
            return  # nobody here listens to that account: not even decoded
        try:
            envelope = json_value(data)
            if envelope.get("gap"):
                for subscriber in list(group):
                    subscriber.signal_gap()
                return
            decode = self._decoders.get(name, _as_is)
            items = [decode(value) for value in envelope["items"]]
        except Exception:
            log.exception("unreadable live message on %s", channel)
            return
        for number, subscriber in enumerate(list(group), 1):
            subscriber.offer(items)
            if number % _WAKE_AT_ONCE == 0:
                # Let the subscribers woken so far send, and other work (ingest) run:
                # waking a thousand at once would hold the loop for tens of ms.
                await asyncio.sleep(0)

    def _signal_gap_to_all(self) -> None:
        for group in list(self._subscribers.values()):
            for subscriber in list(group):
                subscriber.signal_gap()

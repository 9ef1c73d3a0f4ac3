"""Live events: published once their transaction commits, streamed with catch-up.

A subscriber may pass the id of the last event it saw. It is first sent what it missed,
from the store, then what is stored from then on, with no gap and no duplicate:

1. subscribe to the hub first, so that everything committed from now on is queued;
2. read the store after that id, page by page;
3. then serve the queue, skipping what step 2 already sent.

Step 3 skips by identity, not by "id <= the last id sent": ids are made before commit,
so with several replicas an event may commit after one with a larger id. Skipping by id
would lose it; skipping what was sent loses nothing. Only events that can be in both
the store read and the queue need remembering: those committed after step 1, whose ids
were made at most a transaction's length before it (see ``_OVERLAP_MS``).

When the hub reports a gap (Redis was briefly unreachable), the same catch-up runs again
from the last event sent.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from gateway.domain.query import EventFilter, StoredEvent
from gateway.ids import id_floor_for_ms
from gateway.live.codec import decode_event, encode_event
from gateway.live.hub import Kind, LiveHub
from gateway.live.subscriber import Gap
from gateway.services.events import EventQueries

EVENTS: Kind[StoredEvent] = Kind("events", decode_event)

# An event committed after a subscription started had its id made at most this long
# before (ids are made just before the transaction; no transaction runs a minute).
_OVERLAP_MS = 60_000
# Events per Redis message: a 2,000-event batch of large payloads in one message could
# pass Redis's output buffer limit for subscribers (32 MB by default).
_MESSAGE_MAX = 500


class LiveEvents:
    def __init__(self, hub: LiveHub, queries: EventQueries, *, page_size: int) -> None:
        self._hub = hub
        self._queries = queries
        self._page_size = page_size

    async def publish(self, stored: Sequence[StoredEvent]) -> None:
        """The ingest writer's after-commit hook: one message per account per batch.

        Deduplicated events are not in ``stored``: subscribers never see a provider's
        retry twice.
        """
        by_account: defaultdict[int, list[StoredEvent]] = defaultdict(list)
        for event in stored:
            by_account[event.account_id].append(event)
        for account_id, events in by_account.items():
            for start in range(0, len(events), _MESSAGE_MAX):
                chunk = events[start : start + _MESSAGE_MAX]
                self._hub.publish_many(account_id, EVENTS, [encode_event(event) for event in chunk])

    async def stream(
        self, account_id: int, where: EventFilter, *, after_id: int | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
        """``account_id``'s events matching ``where`` as they are stored, oldest first;
        with ``after_id``, first those stored after it.

        Raises SubscriberOverflow when the consumer falls too far behind, and
        LiveUnavailable when Redis cannot be listened to.
        """

        def accept(stored: StoredEvent) -> bool:
            # The channel is the account's already; checked again because a tenant's
            # events reaching another would be the one unforgivable bug here.
            return stored.account_id == account_id and where.matches(stored.event)

        async with self._hub.subscribe(account_id, EVENTS, accept=accept) as live:
            started_ms = int(time.time() * 1000)
            cursor = after_id
            sent_by_catch_up: set[int] = set()
            if after_id is not None:
                async for stored in self._catch_up(account_id, where, after_id, sent_by_catch_up):
                    yield stored
                    cursor = stored.id
            while True:
                item = await live.get()
                if isinstance(item, Gap):
                    # Read from the last event sent, or from when we started listening.
                    since = cursor if cursor is not None else id_floor_for_ms(started_ms) - 1
                    async for stored in self._catch_up(account_id, where, since, sent_by_catch_up):
                        yield stored
                        cursor = max(cursor or 0, stored.id)
                    continue
                if item.id in sent_by_catch_up:
                    sent_by_catch_up.discard(item.id)
                    continue
                yield item
                cursor = max(cursor or 0, item.id)

    async def _catch_up(
        self, account_id: int, where: EventFilter, after_id: int, remember: set[int]
    ) -> AsyncIterator[StoredEvent]:
        """Events stored after ``after_id``, oldest first; those that may also be queued
        live are added to ``remember``."""
        overlap_floor = id_floor_for_ms(int(time.time() * 1000) - _OVERLAP_MS)
        while True:
            page = await self._queries.since(
                account_id, where, after_id=after_id, limit=self._page_size
            )
            for stored in page:
                if stored.id >= overlap_floor:
                    remember.add(stored.id)
                yield stored
            if len(page) < self._page_size:
                return
            after_id = page[-1].id

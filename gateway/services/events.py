"""Reading events: pages for GraphQL, a message's timeline, SMTPeter's windows.

Every read is bounded: a filter names at most ``max_filter_tags`` tags (each one is a
join), and the database stops a read after ``timeout_seconds`` (QueryTimeout).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.events import EventType
from gateway.domain.query import (
    EventFilter,
    StoredEvent,
    carry_sent_at,
    in_order,
    message_sent_at,
    message_state,
)
from gateway.domain.stats import (
    StatsBucket,
    StatsGroup,
    StatsInterval,
    hour_of,
    hour_start,
    rollup_plan,
    rollup_spans,
    tally,
)
from gateway.services.accounts import InputError
from gateway.services.reads import bounded
from gateway.storage import event_counts
from gateway.storage import events as event_store

# eventStats counts at most this many events itself (a filter the rollup cannot answer,
# or the part hours at the edges of a window that does not start and end on the hour).
STATS_SCAN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[StoredEvent]
    has_next_page: bool


@dataclass(frozen=True, slots=True)
class MessageTimeline:
    message_id: str
    events: list[StoredEvent]
    state: EventType
    # From its send event, never after its first event; on every event of ``events``.
    sent_at: datetime | None = None


def encode_cursor(row_id: int, kind: str = "event") -> str:
    return base64.urlsafe_b64encode(f"{kind}:{row_id}".encode()).decode()


def decode_cursor(cursor: str, *, field: str = "after", kind: str = "event") -> int:
    """The id in a cursor of ``kind``; InputError naming ``field`` if it is not one."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        found, _, value = text.partition(":")
        if found != kind:
            raise ValueError(found)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InputError(field, "is not a cursor this API gave out") from None


class EventQueries:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_page_size: int,
        max_filter_tags: int,
        timeout_seconds: float,
    ) -> None:
        self._engine = engine
        self._max_page_size = max_page_size
        self._max_filter_tags = max_filter_tags
        self._timeout = timeout_seconds

    def check_filter(self, where: EventFilter) -> None:
        """InputError naming ``where.tags`` if the filter asks for too many tags."""
        if len(where.tags) > self._max_filter_tags:
            raise InputError(
                "where.tags",
                f"at most {self._max_filter_tags} tags in one filter "
                f"(GATEWAY_MAX_FILTER_TAGS), got {len(where.tags)}",
            )

    @contextlib.asynccontextmanager
    async def _reading(self, where: EventFilter) -> AsyncIterator[AsyncConnection]:
        self.check_filter(where)
        async with bounded(self._engine, self._timeout) as connection:
            yield connection

    async def page(
        self, account_id: int, where: EventFilter, *, first: int, after: str | None
    ) -> EventPage:
        """One page of a Relay connection, newest first, keyset-paginated."""
        if first < 0 or first > self._max_page_size:
            raise InputError("first", f"must be between 0 and {self._max_page_size}")
        if where.start is not None and where.end is not None and where.end <= where.start:
            raise InputError("where.end", "must be after where.start")
        before_id = decode_cursor(after) if after else None
        async with self._reading(where) as connection:
            events = await event_store.find_events(
                connection, account_id=account_id, where=where, limit=first + 1, before_id=before_id
            )
        return EventPage(events[:first], len(events) > first)

    async def since(
        self, account_id: int, where: EventFilter, *, after_id: int, limit: int
    ) -> list[StoredEvent]:
        """Events stored after ``after_id``, oldest first (for catching up)."""
        async with self._reading(where) as connection:
            return await event_store.find_events(
                connection,
                account_id=account_id,
                where=where,
                limit=limit,
                after_id=after_id,
                oldest_first=True,
            )

    async def window(self, account_id: int, where: EventFilter, *, limit: int) -> list[StoredEvent]:
        """Every event in ``where``'s window, in the order they happened."""
        async with self._reading(where) as connection:
            events = await event_store.find_events(
                connection, account_id=account_id, where=where, limit=limit
            )
        return in_order(events)

    async def message(
        self, account_id: int, message_id: str, *, limit: int = 1000
    ) -> MessageTimeline | None:
        """A message's events in the order they happened, its state and sent time."""
        events = await self.window(account_id, EventFilter(message_id=message_id), limit=limit)
        state = message_state(stored.event for stored in events)
        if state is None:
            return None
        sent_at = message_sent_at([stored.event for stored in events])
        return MessageTimeline(
            events[0].event.message_id or message_id,
            carry_sent_at(events, sent_at),
            state,
            sent_at,
        )

    async def stats(
        self,
        account_id: int,
        where: EventFilter,
        *,
        interval: StatsInterval,
        group: StatsGroup,
    ) -> list[StatsBucket]:
        """eventStats: the account's events counted per bucket and key, by bucket then key.

        Whole hours come from the rollup ingest keeps; the part hours at the edges of
        the window, and filters the rollup cannot answer, are counted from the events,
        up to STATS_SCAN_LIMIT of them (more is an InputError saying what to narrow).
        """
        if where.start is not None and where.end is not None and where.end <= where.start:
            raise InputError("where.end", "must be after where.start")
        plan = rollup_plan(where, group)
        width = interval.hours
        counts: dict[tuple[int, str], int] = {}
        async with self._reading(where) as connection:
            if plan is None:
                scans = [where]
                hint = "give start and end, or use fewer filters (see eventStats in the README)"
            else:
                first_hour, end_hour, scans = _whole_hours(where)
                hint = "start and end on whole hours are counted from the rollup"
                if first_hour is None or end_hour is None or first_hour < end_hour:
                    for span, first, end in rollup_spans(first_hour, end_hour, interval):
                        for start, key, count in await event_counts.read_rollup(
                            connection,
                            account_id=account_id,
                            plan=plan,
                            span=span,
                            width_hours=width,
                            first_hour=first,
                            end_hour=end,
                        ):
                            counts[start, key] = counts.get((start, key), 0) + count
            for scan in scans:
                found = await event_store.find_events(
                    connection, account_id=account_id, where=scan, limit=STATS_SCAN_LIMIT + 1
                )
                if len(found) > STATS_SCAN_LIMIT:
                    too_many = f"matches over {STATS_SCAN_LIMIT} events to count one by one"
                    raise InputError("where", f"{too_many}: {hint}")
                for bucket, n in tally((s.event for s in found), interval, group).items():
                    counts[bucket] = counts.get(bucket, 0) + n
        return [
            StatsBucket(hour_start(start), key, n) for (start, key), n in sorted(counts.items())
        ]


def _whole_hours(where: EventFilter) -> tuple[int | None, int | None, list[EventFilter]]:
    """The whole hours of ``where``'s window, ``[first, end)`` (None: unbounded), and
    the filters of the part hours at its edges, which the rollup cannot count."""
    first_hour = end_hour = None
    scans: list[EventFilter] = []
    if where.start is not None:
        first_hour = hour_of(where.start)
        if hour_start(first_hour) != where.start:
            first_hour += 1
            scans.append(replace(where, end=_earlier(where.end, _hour_or_none(first_hour))))
    if where.end is not None:
        end_hour = hour_of(where.end)
        if hour_start(end_hour) != where.end and (first_hour is None or end_hour >= first_hour):
            scans.append(replace(where, start=hour_start(end_hour)))
    return first_hour, end_hour, scans


def _hour_or_none(hour: int) -> datetime | None:
    """The start of ``hour``, or None past the last time a datetime can hold."""
    try:
        return hour_start(hour)
    except (OverflowError, ValueError, OSError):
        return None


def _earlier(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None or second is None:
        return first or second
    return min(first, second)

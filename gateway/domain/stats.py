"""Counting events per time bucket and key (``eventStats``), without I/O.

Ingest keeps a rollup: per account, UTC hour (and UTC day), event type and one
*dimension* (the provider, the template, or one tag), how many events were stored. Every event has
exactly one provider, so the provider rows summed per type are the type counts too.
A filter the rollup can answer names at most one dimension besides the type; what it
cannot answer (an address, a message id, several tags, or two dimensions at once) is
counted from the events themselves, up to a bound.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.domain.events import NormalizedEvent
from gateway.domain.query import EventFilter

HOUR_SECONDS = 3600


class StatsInterval(enum.Enum):
    HOUR = "HOUR"
    DAY = "DAY"

    @property
    def hours(self) -> int:
        return 1 if self is StatsInterval.HOUR else 24


class StatsGroup(enum.Enum):
    TYPE = "TYPE"
    PROVIDER = "PROVIDER"
    TEMPLATE = "TEMPLATE"
    TAG = "TAG"


class Dimension(enum.Enum):
    """What a rollup row counts besides its type (the ``dimension`` column)."""

    PROVIDER = "provider"
    TEMPLATE = "template"
    TAG = "tag"


@dataclass(frozen=True, slots=True)
class StatsBucket:
    start: datetime
    key: str
    count: int


@dataclass(frozen=True, slots=True)
class RollupPlan:
    """How to read ``where`` grouped by ``group`` from the rollup: the rows of one
    dimension, restricted to ``keys`` (if any) and ``types`` (if any), grouped by
    their type or by their key."""

    dimension: Dimension
    keys: tuple[str, ...]
    types: tuple[str, ...]
    by_type: bool


def rollup_plan(where: EventFilter, group: StatsGroup) -> RollupPlan | None:
    """The rollup read that answers ``where`` grouped by ``group``, or None if only the
    events themselves can (see the module docstring)."""
    if where.message_id is not None or where.email is not None or len(where.tags) > 1:
        return None
    types = tuple(sorted(t.value for t in where.types))
    # The dimensions the filter names, each with the keys it allows.
    named: dict[Dimension, tuple[str, ...]] = {}
    if where.providers:
        named[Dimension.PROVIDER] = tuple(sorted(p.value for p in where.providers))
    if where.template is not None:
        named[Dimension.TEMPLATE] = (where.template,)
    if where.tags:
        named[Dimension.TAG] = where.tags
    if group is StatsGroup.TYPE:
        if len(named) > 1:
            return None
        dimension, keys = next(iter(named.items()), (Dimension.PROVIDER, ()))
        return RollupPlan(dimension, keys, types, by_type=True)
    dimension = Dimension[group.value]
    if set(named) - {dimension}:
        return None
    return RollupPlan(dimension, named.get(dimension, ()), types, by_type=False)


def hour_of(moment: datetime) -> int:
    """Hours since the Unix epoch, UTC: the rollup's time column."""
    return int(moment.timestamp() // HOUR_SECONDS)


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * HOUR_SECONDS, UTC)


def keys_of(event: NormalizedEvent, group: StatsGroup) -> tuple[str, ...]:
    """What ``event`` counts under when grouped by ``group``: TEMPLATE and TAG count only
    events that have one, and an event with two tags counts under each."""
    if group is StatsGroup.TYPE:
        return (event.type.value,)
    if group is StatsGroup.PROVIDER:
        return (event.provider.value,)
    if group is StatsGroup.TEMPLATE:
        return () if event.template is None else (event.template,)
    return tuple(dict.fromkeys(event.tags))


SPANS = (1, 24)  # the rollup keeps rows of one hour and rows of one UTC day
_PROVIDER, _TEMPLATE, _TAG = (
    Dimension.PROVIDER.value,
    Dimension.TEMPLATE.value,
    Dimension.TAG.value,
)


def rollup_rows(
    rows: Iterable[tuple[int, datetime, str, str, str | None, Sequence[str]]],
) -> list[tuple[int, str, int, int, str, str, int]]:
    """The rollup rows that events add when stored, or take off when purged, as
    ``(account_id, dimension, span, hour, key, type, count)``: a row of each span
    (hours it covers, ``hour`` its first hour), in primary-key order (concurrent
    writers take the rows' locks in one order). ``rows`` are ``(account_id,
    occurred_at, type, provider, template, tags)`` as stored."""
    # A batch's events mostly share their hour, type, provider, template and tags:
    # counted by those first, each distinct kind of event is expanded into rows once
    # (4x faster than row by row for a batch of 500 live events).
    kinds = Counter(
        (
            account_id,
            int(occurred_at.timestamp() // HOUR_SECONDS),
            kind,
            provider,
            template,
            tuple(tags),
        )
        for account_id, occurred_at, kind, provider, template, tags in rows
    )
    return _rollup_rows(kinds.items())


def rollup_decrements_of_kinds(
    kinds: Iterable[tuple[tuple[int, int, str, str, str | None, tuple[str, ...]], int]],
) -> list[tuple[int, str, int, int, str, str, int]]:
    """:func:`rollup_rows` for events already counted by kind: ``((account_id,
    hour, type, provider, template, tags), how many)``, ``hour`` in hours since the
    Unix epoch (a whole partition's events, grouped by the database)."""
    return _rollup_rows(kinds)


def _rollup_rows(
    kinds: Iterable[tuple[tuple[int, int, str, str, str | None, tuple[str, ...]], int]],
) -> list[tuple[int, str, int, int, str, str, int]]:
    counts: dict[tuple[int, str, int, int, str, str], int] = {}
    for (account_id, hour, type_name, provider, template, tags), n in kinds:
        keys = [(_PROVIDER, provider)]
        if template is not None:
            keys.append((_TEMPLATE, template))
        keys.extend((_TAG, tag) for tag in dict.fromkeys(tags))
        for span in SPANS:
            first = hour // span * span
            for dimension, key in keys:
                row = (account_id, dimension, span, first, key, type_name)
                counts[row] = counts.get(row, 0) + n
    return [(*row, n) for row, n in sorted(counts.items())]


def rollup_spans(
    first_hour: int | None, end_hour: int | None, interval: StatsInterval
) -> list[tuple[int, int | None, int | None]]:
    """How to read whole hours ``[first_hour, end_hour)`` (None: unbounded) from the
    rollup: ``(span, first, end)`` ranges. Days come from day rows (a 30-day chart
    reads 30 rows a key and type, not 720); the hours of part days from hour rows."""
    if interval is StatsInterval.HOUR:
        return [(1, first_hour, end_hour)]
    first_day = None if first_hour is None else -(-first_hour // 24) * 24
    end_day = None if end_hour is None else end_hour // 24 * 24
    if first_day is not None and end_day is not None and first_day >= end_day:
        return [(1, first_hour, end_hour)]
    ranges: list[tuple[int, int | None, int | None]] = [(24, first_day, end_day)]
    if first_hour is not None and first_day is not None and first_hour < first_day:
        ranges.append((1, first_hour, first_day))
    if end_hour is not None and end_day is not None and end_day < end_hour:
        ranges.append((1, end_day, end_hour))
    return ranges


def tally(
    events: Iterable[NormalizedEvent], interval: StatsInterval, group: StatsGroup
) -> dict[tuple[int, str], int]:
    """Counts per (first hour of the bucket, key), from the events themselves."""
    counts: dict[tuple[int, str], int] = {}
    width = interval.hours
    for event in events:
        bucket = hour_of(event.occurred_at) // width * width
        for key in keys_of(event, group):
            counts[bucket, key] = counts.get((bucket, key), 0) + 1
    return counts

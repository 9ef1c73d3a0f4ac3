"""Retention: what is older than an account's retention days is purged, a batch at a time.

Age is time of *receipt* (of an event or rejected payload), of creation (a delivery)
or of the call (an attempt), read from the row's id (gateway.ids): "older than" is an
id range of an index, never a scan. An event's own ``occurredAt`` does not count: an
event received today about last year is kept like any other received today.

Every batch (at most ``batch_size`` rows) is a transaction of its own, taken like any
other writer's (storage.db.begin_write), so ingest waits at most one short batch.
The workers run :meth:`RetentionService.purge` on arq's cron (gateway.worker).

On PostgreSQL, events, their tags and delivery attempts are kept in partitions of a
week (storage.partitions). Each run first makes the partitions of the days ahead,
then drops every partition in which no row is younger than its own account's
retention (no account with a longer retention has a row in it): its rows go at once,
counted off tag_counts and the eventStats rollup from the partition itself. The
batches then purge what is left to purge, row by row as on SQLite: rows in a
partition that another account's longer retention keeps, and the expired part of the
partition the cut-off falls in. The drops come first, so the batches never walk rows
a drop would take.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ids import id_floor_for_ms
from gateway.services.accounts import InputError
from gateway.storage import partitions
from gateway.storage import retention as store
from gateway.storage.db import begin_write, is_sqlite

log = logging.getLogger(__name__)

MAX_RETENTION_DAYS = 3650


@dataclass
class Purged:
    """How many rows one purge removed, by kind."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    rejected: int = 0
    accounts: set[int] = field(default_factory=set)
    # PostgreSQL: the partitions dropped (storage.partitions), e.g. "events_p20261129".
    partitions: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.events + self.deliveries + self.attempts + self.rejected


@dataclass(frozen=True, slots=True)
class AccountRetention:
    """An account's retention: its own days (None: the default) and the days in effect."""

    days: int
    override: int | None


CronField = set[int] | int | None


def cron_schedule(interval_seconds: int) -> tuple[CronField, CronField, CronField]:
    """arq cron's ``hour``, ``minute`` and ``second`` that run every
    ``interval_seconds`` (which divides a minute, an hour or a day evenly: see
    Settings), at the same times of day on every worker."""
    if interval_seconds < 60:
        return None, None, set(range(0, 60, interval_seconds))
    if interval_seconds < 3600:
        return None, set(range(0, 60, interval_seconds // 60)), 0
    return set(range(0, 24, interval_seconds // 3600)), 0, 0


class RetentionService:
    def __init__(self, engine: AsyncEngine, *, default_days: int, batch_size: int) -> None:
        self._engine = engine
        self._default_days = default_days
        self._batch_size = batch_size

    async def account_retention(self, account_id: int) -> AccountRetention:
        async with self._engine.connect() as connection:
            override = await store.retention_days(connection, account_id=account_id)
        return AccountRetention(override or self._default_days, override)

    async def set_account_retention(self, account_id: int, days: int | None) -> AccountRetention:
        """Set the account's own days (None: back to the default)."""
        if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
            raise InputError("days", f"must be between 1 and {MAX_RETENTION_DAYS}, or null")
        async with begin_write(self._engine) as connection:
            await store.set_retention_days(connection, account_id=account_id, days=days)
        return AccountRetention(days or self._default_days, days)

    async def purge(self, now: datetime | None = None) -> Purged:
        """Purge every account's rows older than its retention at ``now``."""
        now = now or datetime.now(UTC)
        purged = Purged()
        async with self._engine.connect() as connection:
            accounts = await store.account_retentions(connection)
        floors = {
            account_id: _floor(now, days or self._default_days) for account_id, days in accounts
        }
        if not is_sqlite(self._engine):
            await self.ensure_partitions(now)
            await self._drop_expired_partitions(floors, purged)
        for account_id, below in floors.items():
            before = purged.total
            await self._purge_account(account_id, below, now, purged)
            if purged.total > before:
                purged.accounts.add(account_id)
        # Payloads refused before their token named an account: the default applies.
        purged.rejected += await self._in_batches(
            store.purge_rejected, account_id=None, below_id=_floor(now, self._default_days)
        )
        if purged.total:
            log.info(
                "retention purged %d events, %d deliveries, %d attempts, %d rejected payloads"
                " (%d partitions dropped)",
                purged.events,
                purged.deliveries,
                purged.attempts,
                purged.rejected,
                len(purged.partitions),
            )
        return purged

    async def ensure_partitions(self, now: datetime | None = None) -> list[str]:
        """PostgreSQL: make the partitions of the days ahead that are missing
        (storage.partitions); their names. Nothing on SQLite."""
        if is_sqlite(self._engine):
            return []
        today = (now or datetime.now(UTC)).date()
        try:
            async with begin_write(self._engine) as connection:
                made = await partitions.ensure_partitions(connection, today=today)
        except DBAPIError as exc:
            if not _lock_not_available(exc):
                raise
            log.warning("partitions ahead not made: their tables were busy; next run")
            return []
        if made:
            log.info("made partitions %s", ", ".join(made))
        return made

    async def _drop_expired_partitions(self, floors: dict[int, int], purged: Purged) -> None:
        """Drop the partitions that hold no row younger than its account's retention:
        those that end before every account's floor, or whose rows are all of accounts
        whose floor is past their end. One left detached by a run cut short is
        finished."""
        if not floors:
            return
        async with self._engine.connect() as connection:
            found = await partitions.existing_partitions(connection)
        latest = max(floors.values())
        for table in ("events", "delivery_attempts"):
            for day, bounds in sorted(found[table].items()):
                if bounds is not None:
                    end = bounds[1]
                    if end > latest:
                        continue
                    keeping = [account for account, floor in floors.items() if floor < end]
                    if keeping:
                        async with self._engine.connect() as connection:
                            if await store.has_rows_of(
                                connection, table=table, day=day, accounts=keeping
                            ):
                                continue
                try:
                    await self._drop_partition(
                        table, day, attached=bounds is not None, purged=purged
                    )
                except DBAPIError as exc:
                    if not _lock_not_available(exc):
                        raise
                    log.warning("partition %s not dropped: busy; next run", day)
                    break

    async def _drop_partition(
        self, table: str, day: date, *, attached: bool, purged: Purged
    ) -> None:
        if table == "delivery_attempts":
            async with begin_write(self._engine) as connection:
                await store.drop_attempts_partition(connection, day=day)
            purged.partitions.append(partitions.partition_name(table, day))
            return
        if attached:
            async with begin_write(self._engine) as connection:
                await store.detach_events_partition(connection, day=day)
        async with begin_write(self._engine) as connection:
            per_account = await store.empty_detached_events(connection, day=day)
        async with begin_write(self._engine) as connection:
            await store.drop_detached_events(connection, day=day)
        purged.events += sum(per_account.values())
        purged.accounts.update(per_account)
        purged.partitions += [
            partitions.partition_name(name, day) for name in ("events", "event_tags")
        ]

    async def _purge_account(
        self, account_id: int, below: int, now: datetime, purged: Purged
    ) -> None:
        purged.events += await self._in_batches(
            store.purge_events, account_id=account_id, below_id=below
        )
        async with self._engine.connect() as connection:
            webhooks = await store.webhook_ids(connection, account_id=account_id)
        for webhook_id in webhooks:
            purged.attempts += await self._in_batches(
                store.purge_attempts, webhook_id=webhook_id, below_id=below
            )
            purged.deliveries += await self._in_batches(
                store.purge_deliveries, webhook_id=webhook_id, below_id=below, now=now
            )
        purged.rejected += await self._in_batches(
            store.purge_rejected, account_id=account_id, below_id=below
        )

    async def _in_batches(
        self, purge_batch: Callable[..., Awaitable[int]], **arguments: Any
    ) -> int:
        """Run ``purge_batch`` (a storage.retention purge) in transactions of its own
        until one removes less than a full batch; how many rows went in all."""
        total = 0
        while True:
            async with begin_write(self._engine) as connection:
                removed = await purge_batch(connection, limit=self._batch_size, **arguments)
            total += removed
            if removed < self._batch_size:
                return total


def _lock_not_available(exc: DBAPIError) -> bool:
    """PostgreSQL gave up waiting for a table's lock (lock_timeout)."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"


def _floor(now: datetime, days: int) -> int:
    """The smallest id minted ``days`` before ``now``: anything below is older."""
    return id_floor_for_ms(int((now - timedelta(days=days)).timestamp() * 1000))

"""PostgreSQL's daily partitions (storage.partitions): made by the migration and ahead,
moved into by 0013 with every row kept, deduplicating across days, dropped whole by
retention, and pruned by the reads. Each test has a database of its own."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.doctor import diagnose
from gateway.domain.query import EventFilter
from gateway.ids import id_floor_for_ms
from gateway.services.retention import RetentionService
from gateway.settings import async_database_url
from gateway.storage import events as event_store
from gateway.storage.db import alembic_config, begin_write, make_engine, migrate
from gateway.storage.events import NewEvent
from gateway.storage.events.rows import _row_values, events_table, stored_tags, tags_table
from gateway.storage.partitions import (
    day_bounds,
    day_of_id,
    ensure_partitions,
    existing_partitions,
    missing_ranges,
    partition_name,
    period_start,
)
from tests.conftest import _admin, settings_for
from tests.support import delivered_events
from tests.test_migrations import command_upgrade
from tests.test_retention import assert_counts_match_events

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
TABLES = ("events", "event_tags", "delivery_attempts")


def command_downgrade(connection: Any, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An empty PostgreSQL database of this test's own (not migrated)."""
    name = f"gateway_partitions_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    engine = make_engine(async_database_url(f"{postgres_url.rsplit('/', 1)[0]}/{name}"))
    try:
        yield engine
    finally:
        await engine.dispose()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def partitions(engine: AsyncEngine, table: str) -> set[str]:
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass($1)",
            (table,),
        )
        return {str(name) for name in result.scalars()}


async def new_account(connection: AsyncConnection, account_id: int, days: int | None) -> None:
    await connection.execute(
        text(
            "INSERT INTO accounts (id, name, created_at, retention_days)"
            " VALUES (:id, :name, :at, :days)"
        ),
        {"id": account_id, "name": f"a{account_id}", "at": datetime.now(UTC), "days": days},
    )


def received_at(moment: datetime, count: int, account_id: int, tag: str) -> list[NewEvent]:
    """``count`` events with ids of ``moment`` (as if received then)."""
    first = id_floor_for_ms(int(moment.timestamp() * 1000)) + random.randrange(1 << 21)
    return [
        NewEvent(
            first + n,
            account_id,
            None,
            replace(event, occurred_at=moment, template="tpl", tags=("t", tag)),
        )
        for n, event in enumerate(delivered_events(count))
    ]


def test_new_partitions_are_weeks_cut_short_where_one_exists() -> None:
    monday = date(2026, 11, 30)
    thursday = monday + 3 * DAY
    assert period_start(thursday, 7) == monday
    assert missing_ranges([], thursday, thursday + 15 * DAY, 7) == [
        (thursday, monday + WEEK),
        (monday + WEEK, monday + 2 * WEEK),
        (monday + 2 * WEEK, monday + 3 * WEEK),
    ]
    # Around one that exists (made with another period, or the migration's older rows).
    existing = [(monday + 9 * DAY, monday + 10 * DAY)]
    assert missing_ranges(existing, monday + WEEK, monday + 2 * WEEK, 7) == [
        (monday + WEEK, monday + 9 * DAY),
        (monday + 10 * DAY, monday + 2 * WEEK),
    ]
    assert missing_ranges([(monday, monday + WEEK)], thursday, monday + WEEK, 7) == []


async def test_the_migration_makes_the_partitions_of_today_and_ahead(
    database: AsyncEngine,
) -> None:
    await migrate(database)
    today = datetime.now(UTC).date()
    # Today's partition ends on Sunday; then a week each, to two weeks ahead.
    monday = today + timedelta(days=7 - today.weekday())
    starts = [
        today,
        *(monday + n * WEEK for n in range(3) if monday + n * WEEK <= today + 14 * DAY),
    ]
    for table in TABLES:
        assert await partitions(database, table) == {partition_name(table, day) for day in starts}
    async with database.connect() as connection:
        kinds = await connection.exec_driver_sql(
            "SELECT relname, relkind FROM pg_class WHERE relname = ANY($1)",
            ([*TABLES, "event_dedupe"],),
        )
        assert {str(name): kind for name, kind in kinds} == {
            "events": b"p",
            "event_tags": b"p",
            "delivery_attempts": b"p",
            "event_dedupe": b"r",
        }


async def test_processes_starting_at_once_make_each_partition_once(
    database: AsyncEngine,
) -> None:
    await migrate(database)
    today = datetime.now(UTC).date()

    async def ensure() -> list[str]:
        async with begin_write(database) as connection:
            return await ensure_partitions(connection, today=today, first=today - 20 * DAY)

    first, second = await asyncio.gather(ensure(), ensure())
    made = sorted([*first, *second])
    assert made and not (first and second)
    assert len(made) == len(set(made))
    assert set(made) <= set().union(*[await partitions(database, table) for table in TABLES])


async def test_the_migration_goes_back_down_to_one_table_with_its_rows(
    database: AsyncEngine,
) -> None:
    await migrate(database)
    now = datetime.now(UTC)
    async with begin_write(database) as connection:
        await new_account(connection, 7, None)
        news = received_at(now, 3, 7, "down")
        await event_store.insert_events(connection, events=news, now=now)
    async with database.begin() as connection:
        await connection.run_sync(lambda sync: command_downgrade(sync, "0012"))
    async with database.connect() as connection:
        kinds = await connection.exec_driver_sql(
            "SELECT relname, relkind FROM pg_class WHERE relname = ANY($1)",
            ([*TABLES, "event_dedupe", partition_name("events", now.date())],),
        )
        assert {str(name): kind for name, kind in kinds} == {
            "events": b"r",
            "event_tags": b"r",
            "delivery_attempts": b"r",
        }
        stored = await connection.exec_driver_sql("SELECT id FROM events ORDER BY id")
        assert [int(i) for i in stored.scalars()] == sorted(new.id for new in news)
    await migrate(database)  # and up again
    assert partition_name("events", now.date()) in await partitions(database, "events")


async def test_a_migrated_database_keeps_its_rows_and_their_dedupe_keys(
    database: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    ages = {1: 50 * DAY, 2: 50 * DAY + timedelta(minutes=1), 3: 2 * DAY, 4: timedelta(minutes=5)}
    async with database.begin() as connection:
        await connection.run_sync(lambda sync: command_upgrade(sync, "0012"))
        await new_account(connection, 7, None)
        news = [
            received_at(now - age, 1, 7, f"n{number}")[0] for number, age in sorted(ages.items())
        ]
        for new in news:
            await connection.execute(
                events_table.insert(),
                [_row_values(new, stored_tags(new.event.tags), new.event.occurred_at)],
            )
            await connection.execute(
                tags_table.insert(),
                [{"account_id": 7, "tag": tag, "event_id": new.id} for tag in new.event.tags],
            )
        await connection.exec_driver_sql(
            "INSERT INTO webhooks (id, account_id, url, method, events, format, parameters,"
            " tags, templates, secret, enabled, consecutive_failures, backfill_days,"
            " created_at, updated_at, headers) VALUES (1, 7, 'https://example.com', 'POST',"
            " '[]', 'GATEWAY', NULL, '[]', '[]', 's', true, 0, 7, now(), now(), '[]')"
        )
        await connection.exec_driver_sql(
            "INSERT INTO deliveries (id, account_id, webhook_id, event_id, status, attempts,"
            " created_at, updated_at) VALUES ($1, 7, 1, $1, 'SUCCEEDED', 1, now(), now())",
            (news[2].id,),
        )
        await connection.exec_driver_sql(
            "INSERT INTO delivery_attempts (id, account_id, webhook_id, delivery_id, number, at,"
            " method, url, request_body, duration_ms) VALUES ($1, 7, 1, $1, 1, now(), 'POST',"
            " 'https://example.com', '{}', 1.5)",
            (news[2].id,),
        )
        before = {
            table: (
                await connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2, 3")
            ).all()
            for table in TABLES
        }

    await migrate(database)

    async with database.connect() as connection:
        after = {
            table: (
                await connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2, 3")
            ).all()
            for table in TABLES
        }
        where = await connection.exec_driver_sql(
            "SELECT tableoid::regclass::text, id FROM events ORDER BY id"
        )
        placed = {int(event_id): str(name) for name, event_id in where}
    assert after == before
    # The rows of before today share one partition, from the oldest one's day.
    oldest = partition_name("events", (now - 50 * DAY).date())
    assert placed[news[0].id] == placed[news[1].id] == placed[news[2].id] == oldest
    assert placed[news[3].id] == partition_name("events", (now - timedelta(minutes=5)).date())
    # A provider's retry of a moved event is a duplicate, received today.
    retry = [NewEvent(news[3].id + 100, 7, None, news[0].event)]
    async with begin_write(database) as connection:
        assert await event_store.insert_events(connection, events=retry, now=now) == set()


async def test_a_retried_event_is_stored_once_whatever_the_day_it_comes(
    database: AsyncEngine,
) -> None:
    await migrate(database)
    now = datetime.now(UTC)
    async with begin_write(database) as connection:
        await new_account(connection, 7, None)
        await ensure_partitions(connection, today=now.date(), first=(now - 3 * DAY).date())
        [old] = received_at(now - 3 * DAY, 1, 7, "x")
        assert await event_store.insert_events(connection, events=[old], now=now) == {old.id}
    [today] = received_at(now, 1, 7, "x")
    retry = NewEvent(today.id, 7, None, old.event)
    async with begin_write(database) as connection:
        assert await event_store.insert_events(connection, events=[retry], now=now) == set()

    # Two writers at once with the same new event: the second waits for the first's
    # commit, then skips it.
    [fresh] = received_at(now, 1, 7, "y")
    twin = NewEvent(fresh.id + 1, 7, None, fresh.event)
    async with begin_write(database) as first:
        assert await event_store.insert_events(first, events=[fresh], now=now) == {fresh.id}

        async def second_writer() -> set[int]:
            async with begin_write(database) as second:
                return await event_store.insert_events(second, events=[twin], now=now)

        waiting = asyncio.create_task(second_writer())
        await asyncio.sleep(0)  # the second writer's statement is on its way
        for _ in range(3000):  # until the second writer waits for the first's lock
            # A connection a time: pg_stat_activity is read once a transaction.
            async with database.connect() as watcher:
                locks = await watcher.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if locks.scalar_one():
                    break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the second writer never waited for the first")
    assert await waiting == set()
    async with database.connect() as connection:
        stored = await connection.exec_driver_sql("SELECT id FROM events ORDER BY id")
        assert [int(i) for i in stored.scalars()] == [old.id, fresh.id]


async def test_retention_drops_the_expired_days_and_purges_the_rest_exactly(
    database: AsyncEngine,
) -> None:
    """One day of retention by default; account 8 keeps three. Events received over
    the last three days: the days wholly past every account's retention are dropped,
    the day that account 8 still needs stays, with account 7's rows in it purged."""
    await migrate(database)
    now = datetime.now(UTC)
    ages = [timedelta(hours=h) for h in (6, 30, 54, 78)]
    stamped: dict[int, dict[timedelta, list[int]]] = {7: {}, 8: {}}
    async with begin_write(database) as connection:
        await new_account(connection, 7, None)
        await new_account(connection, 8, 3)
        # A partition a day for the past days (the migration's begin today).
        await ensure_partitions(
            connection, today=now.date(), first=(now - 4 * DAY).date(), period_days=1
        )
    for age in ages:
        for account_id in (7, 8):
            if account_id == 8 and age != timedelta(hours=54):
                continue
            batch = received_at(now - age, 40, account_id, f"age{age.days}")
            async with begin_write(database) as connection:
                stored = await event_store.insert_events(connection, events=batch, now=now - age)
            stamped[account_id][age] = sorted(stored)
    async with database.connect() as connection:
        bounds_before = {
            day: bounds
            for day, bounds in (await existing_partitions(connection))["events"].items()
            if bounds is not None
        }

    purged = await RetentionService(database, default_days=1, batch_size=25).purge(now)

    kept_day = (now - timedelta(hours=54)).date()
    floor = id_floor_for_ms(int((now - DAY).timestamp() * 1000))
    async with database.connect() as connection:
        bounds = (await existing_partitions(connection))["events"]
    expired = {
        partition_name("events", day)
        for day, (start, end) in bounds_before.items()
        if end <= floor and day != kept_day
    }
    assert expired  # at least the day of 78 hours ago
    assert set(bounds) == set(bounds_before) - {
        datetime.strptime(n[-8:], "%Y%m%d").date() for n in expired
    }
    assert {name for name in purged.partitions if name.startswith("events_")} == expired
    assert partition_name("event_tags", kept_day) in await partitions(database, "event_tags")
    async with database.connect() as connection:
        remaining = await connection.exec_driver_sql(
            "SELECT account_id, id FROM events ORDER BY id"
        )
        by_account: dict[int, set[int]] = {7: set(), 8: set()}
        for account_id, event_id in remaining:
            by_account[int(account_id)].add(int(event_id))
        keys = await connection.exec_driver_sql("SELECT event_id FROM event_dedupe")
        dedupe = {int(event_id) for event_id in keys.scalars()}
    assert by_account[7] == set(stamped[7][timedelta(hours=6)])
    assert by_account[8] == set(stamped[8][timedelta(hours=54)])
    assert dedupe == by_account[7] | by_account[8]
    assert purged.events == 3 * 40
    for account_id in (7, 8):
        await assert_counts_match_events(_Store(database), account_id)


class _Store:
    """What assert_counts_match_events reads: ``services.engine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.services = self
        self.engine = engine


async def plan_of(connection: AsyncConnection, read: Any) -> dict[str, Any]:
    """The plan PostgreSQL makes for the statement ``read`` (a storage call) sends."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        sent.append((statement, parameters))

    event.listen(connection.sync_engine, "before_cursor_execute", capture)
    try:
        await read(connection)
    finally:
        event.remove(connection.sync_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = [item for item in sent if "FROM events" in item[0]]
    result = await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
    plan = result.scalar_one()
    return dict((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in nodes(child))]


async def test_reads_walk_indexes_and_only_the_partitions_their_ids_allow(
    database: AsyncEngine,
) -> None:
    await migrate(database)
    now = datetime.now(UTC)
    async with begin_write(database) as connection:
        await new_account(connection, 7, None)
        await ensure_partitions(
            connection, today=now.date(), first=(now - 3 * DAY).date(), period_days=1
        )
        news = [new for age in range(4) for new in received_at(now - age * DAY, 2500, 7, "p")]
        await event_store.insert_events(connection, events=news, now=now)
        await connection.exec_driver_sql("ANALYZE")
    days = [(now - age * DAY).date() for age in range(4)]
    all_partitions = await partitions(database, "events")
    two_days_ago = day_bounds(days[2])
    email = news[0].event.email

    async with database.connect() as connection:
        newest = await plan_of(
            connection,
            lambda c: event_store.find_events(
                c, account_id=7, where=EventFilter(email=email), limit=50
            ),
        )
        before_cursor = await plan_of(
            connection,
            lambda c: event_store.find_events(
                c, account_id=7, where=EventFilter(email=email), limit=50, before_id=two_days_ago[1]
            ),
        )
        in_range = await plan_of(
            connection,
            lambda c: event_store.find_events(
                c,
                account_id=7,
                where=EventFilter(message_id="<m@example.com>"),
                limit=50,
                after_id=two_days_ago[0],
                before_id=two_days_ago[1] - 1,
            ),
        )
        by_id = await plan_of(
            connection,
            lambda c: event_store.get_events(c, account_id=7, ids=[news[0].id, news[-1].id]),
        )

    # Every partition that holds rows is read through an index (a Sort, if any, is of
    # the few rows the indexes found; the empty partitions ahead may be scanned).
    holding = {partition_name("events", day) for day in days}
    for plan in (newest, before_cursor, in_range, by_id):
        reads = [
            (node["Node Type"], node["Relation Name"])
            for node in nodes(plan)
            if node.get("Relation Name") in holding
        ]
        assert reads, plan
        assert all(kind in {"Index Scan", "Index Only Scan"} for kind, _name in reads), reads
        assert "Merge Append" not in {node["Node Type"] for node in nodes(plan)}

    def scanned(plan: dict[str, Any]) -> set[str]:
        return {node["Relation Name"] for node in nodes(plan) if "Relation Name" in node}

    # Newest first: the partitions one after another (an ordered Append, stopped by the
    # limit), through the address's index.
    assert scanned(newest) == all_partitions
    assert all("email" in node.get("Index Name", "email") for node in nodes(newest))
    # A cursor leaves out the partitions above it; an id range is one day's partition.
    assert scanned(before_cursor) == {
        name for name in all_partitions if name[-8:] <= f"{days[2]:%Y%m%d}"
    }
    assert scanned(in_range) == {partition_name("events", days[2])}
    assert scanned(by_id) == {partition_name("events", days[0]), partition_name("events", days[3])}


async def test_doctor_says_when_partitions_run_out(
    database: AsyncEngine, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    await migrate(database)
    url = f"{postgres_url.rsplit('/', 1)[0]}/{database.url.database}"
    settings = settings_for(tmp_path, redis_url, url)
    ready = {finding.check: finding for finding in await diagnose(settings)}["partitions"]
    assert ready.ok, ready.message
    assert ready.message.startswith("ready until")
    # No worker has run for weeks: nothing covers today any more.
    async with begin_write(database) as connection:
        found = await existing_partitions(connection)
        today = datetime.now(UTC).date()
        for table, days in found.items():
            for day, bounds in days.items():
                if bounds is not None and day_of_id(bounds[1]) > today:
                    await connection.exec_driver_sql(f'DROP TABLE "{partition_name(table, day)}"')
    short = {finding.check: finding for finding in await diagnose(settings)}["partitions"]
    assert not short.ok
    assert "events until" in short.message and "0 days ahead" in short.message
    assert "gateway migrate" in short.message

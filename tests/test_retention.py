"""Retention on both databases: a purge removes exactly what was received before an
account's retention window, with its tags, tag counts and eventStats rollup, while
ingest goes on; an account's own days override the default.

Old rows are written through the storage layer with ids of the past: an id is the
moment of receipt (gateway.ids), which is what retention measures.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from gateway.ids import id_floor_for_ms
from gateway.runtime import open_services
from gateway.services.accounts import CreatedAccount
from gateway.services.outbox import delivery_row
from gateway.services.retention import RetentionService, cron_schedule
from gateway.settings import Settings
from gateway.storage import events as event_store
from gateway.storage import outbox as outbox_store
from gateway.storage.db import begin_write
from gateway.storage.events import NewEvent
from gateway.storage.partitions import ensure_partitions
from gateway.storage.rejections import list_rejected, save_rejected
from gateway.storage.webhooks import get_webhook
from gateway.worker import running_worker
from tests.conftest import Gateway, settings_for
from tests.ops_support import quiet_redis
from tests.receiver import Receiver
from tests.support import brevo_event, delivered_events, gql, gql_errors, ingest_brevo, rollup_of
from tests.test_webhooks import create_webhook, settled

DAY = timedelta(days=1)
ACCOUNT = "query { account { retentionDays retentionDaysOverride } }"
SET_DAYS = (
    "mutation($d: Int) { setRetentionDays(days: $d) { retentionDays retentionDaysOverride } }"
)


def purger(gateway: Gateway, *, days: int = 1, batch_size: int = 200) -> RetentionService:
    """A purge with a retention of ``days`` on the gateway's own database."""
    return RetentionService(gateway.services.engine, default_days=days, batch_size=batch_size)


async def stamp(
    gateway: Gateway, account_id: int, *, age: timedelta, count: int, now: datetime
) -> list[int]:
    """``count`` events received ``age`` before ``now`` (their ids and receipt times say
    so; they happened then too), with tags and a template; returns their ids."""
    received = now - age
    # Ids of that millisecond, under a node no running process holds this far back.
    first = id_floor_for_ms(int(received.timestamp() * 1000)) + random.randrange(1 << 21)
    events = [
        NewEvent(
            first + n,
            account_id,
            None,
            replace(
                event,
                occurred_at=received,
                template=f"tpl{n % 3}",
                tags=("t", f"age{age.days}", f"n{n % 5}"),
            ),
        )
        for n, event in enumerate(delivered_events(count))
    ]
    async with begin_write(gateway.services.engine) as connection:
        # PostgreSQL: a day of the past has no partition unless made (ids of the past
        # are minted only here).
        await ensure_partitions(connection, today=now.date(), first=received.date())
        stored = await event_store.insert_events(connection, events=events, now=received)
    assert len(stored) == count
    return sorted(stored)


async def event_ids(gateway: Gateway, account_id: int) -> set[int]:
    async with gateway.services.engine.connect() as connection:
        found = await connection.execute(
            text("SELECT id FROM events WHERE account_id = :a"), {"a": account_id}
        )
        return {int(row.id) for row in found}


async def assert_counts_match_events(gateway: Gateway, account_id: int) -> None:
    """tag_counts, event_tags and the eventStats rollup count exactly the account's
    remaining events."""
    async with gateway.services.engine.connect() as connection:
        remaining = await event_store.get_events(
            connection, account_id=account_id, ids=sorted(await event_ids(gateway, account_id))
        )
        tag_counts: dict[str, int] = dict(
            (
                await connection.execute(
                    text("SELECT tag, count FROM tag_counts WHERE account_id = :a"),
                    {"a": account_id},
                )
            ).all()
        )
        tag_rows: dict[str, int] = dict(
            (
                await connection.execute(
                    text("SELECT tag, count(*) FROM event_tags WHERE account_id = :a GROUP BY tag"),
                    {"a": account_id},
                )
            ).all()
        )
        rollup = {
            tuple(row[:-1]): row[-1]
            for row in (
                await connection.execute(
                    text(
                        "SELECT account_id, dimension, span, hour, key, type, count"
                        " FROM event_counts WHERE account_id = :a"
                    ),
                    {"a": account_id},
                )
            ).all()
        }
    expected_tags: dict[str, int] = {}
    for stored in remaining:
        for tag in stored.event.tags:
            expected_tags[tag] = expected_tags.get(tag, 0) + 1
    assert tag_counts == expected_tags
    assert tag_rows == expected_tags
    expected_rollup = {
        tuple(row[:-1]): row[-1]
        for row in rollup_of((account_id, stored.event) for stored in remaining)
    }
    assert rollup == expected_rollup


async def test_purge_removes_exactly_what_was_received_before_the_window(
    gateway: Gateway, account: CreatedAccount
) -> None:
    now = datetime.now(UTC)
    young = await stamp(gateway, account.account_id, age=timedelta(hours=12), count=30, now=now)
    older = await stamp(gateway, account.account_id, age=timedelta(hours=36), count=450, now=now)
    oldest = await stamp(gateway, account.account_id, age=timedelta(hours=60), count=450, now=now)

    purged = await purger(gateway).purge(now)

    assert purged.events >= len(older) + len(oldest)
    assert account.account_id in purged.accounts
    assert await event_ids(gateway, account.account_id) == set(young)
    await assert_counts_match_events(gateway, account.account_id)


async def test_ingest_succeeds_throughout_a_purge(
    gateway: Gateway, account: CreatedAccount
) -> None:
    now = datetime.now(UTC)
    for days in (2, 3):
        await stamp(gateway, account.account_id, age=days * DAY, count=1500, now=now)
    purge = asyncio.create_task(purger(gateway, batch_size=100).purge(now))
    ingested: list[str] = []
    during = 0  # requests answered while the purge was still running
    # Requests one after another until the purge is done (at least a few).
    while not purge.done() or len(ingested) < 5:
        n = len(ingested)
        ingested += await ingest_brevo(
            gateway, account, brevo_event(**{"message-id": f"<live-{n}@example.com>", "id": n})
        )
        during += not purge.done()
    purged = await purge
    assert during >= 1
    assert purged.events >= 3000
    assert {int(i) for i in ingested} == await event_ids(gateway, account.account_id)
    await assert_counts_match_events(gateway, account.account_id)


async def test_an_accounts_own_days_keep_its_older_events(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    other = await gateway.new_account()
    data = await gql(api, SET_DAYS, d=2)
    assert data["setRetentionDays"] == {"retentionDays": 2, "retentionDaysOverride": 2}
    now = datetime.now(UTC)
    kept: dict[int, list[int]] = {}
    for owner in (account.account_id, other.account_id):
        kept[owner] = await stamp(gateway, owner, age=DAY / 2, count=5, now=now)
        kept[owner] += await stamp(gateway, owner, age=DAY * 1.5, count=5, now=now)
        await stamp(gateway, owner, age=DAY * 2.5, count=5, now=now)

    await purger(gateway).purge(now)

    assert await event_ids(gateway, account.account_id) == set(kept[account.account_id])
    assert await event_ids(gateway, other.account_id) == set(kept[other.account_id][:5])
    await assert_counts_match_events(gateway, account.account_id)


async def test_account_retention_reads_back_and_resets_to_the_default(
    api: httpx.AsyncClient, gateway: Gateway
) -> None:
    default = gateway.settings.retention_days
    assert (await gql(api, ACCOUNT))["account"] == {
        "retentionDays": default,
        "retentionDaysOverride": None,
    }
    await gql(api, SET_DAYS, d=30)
    assert (await gql(api, ACCOUNT))["account"]["retentionDays"] == 30
    data = await gql(api, SET_DAYS, d=None)
    assert data["setRetentionDays"] == {"retentionDays": default, "retentionDaysOverride": None}


async def test_retention_days_out_of_range_is_refused_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    for days in (0, 3651):
        [error] = await gql_errors(api, SET_DAYS, d=days)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "days"}
        assert "between 1 and 3650" in error["message"]


async def test_old_rejected_payloads_are_purged_and_new_ones_kept(
    gateway: Gateway, account: CreatedAccount
) -> None:
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    now = datetime.now(UTC)
    async with begin_write(gateway.services.engine) as connection:
        [kept] = await list_rejected(connection, account_id=account.account_id, limit=1)
        old = {**kept, "id": id_floor_for_ms(int((now - 3 * DAY).timestamp() * 1000)) + 7}
        await save_rejected(connection, [old])

    await purger(gateway).purge(now)

    async with gateway.services.engine.connect() as connection:
        left = await list_rejected(connection, account_id=account.account_id, limit=10)
    assert [row["id"] for row in left] == [kept["id"]]


async def test_a_delivery_whose_event_was_purged_fails_at_once_without_a_call(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _secret = await create_webhook(
        api, url=endpoint.url, method="POST", format="GATEWAY", events=["DELIVERED"]
    )
    now = datetime.now(UTC)
    [event_id] = await stamp(gateway, account.account_id, age=3 * DAY, count=1, now=now)
    services = gateway.services
    delivery_id = services.ids.next_id()
    async with begin_write(services.engine) as connection:
        config = await get_webhook(connection, webhook_id=int(webhook["id"]))
        assert config is not None
        row = delivery_row(config, event_id, now, delivery_id)
        # Waiting for a retry an hour away: nothing sends it before the purge.
        row["status"], row["next_attempt_at"] = "RETRYING", now + timedelta(hours=1)
        await outbox_store.insert_deliveries(connection, rows=[row])
    await purger(gateway).purge(now)
    assert event_id not in await event_ids(gateway, account.account_id)
    await gql(api, "mutation($id: ID!) { redeliver(deliveryId: $id) { id } }", id=str(delivery_id))

    [delivery] = await settled(api, webhook["id"], 1, {"FAILED"})
    [attempt] = delivery["attempts"]
    assert "no longer stored" in attempt["error"]
    assert attempt["statusCode"] is None
    assert endpoint.calls == []
    state = await gql(
        api, "query($id: ID!) { webhook(id: $id) { consecutiveFailures } }", id=webhook["id"]
    )
    assert state["webhook"]["consecutiveFailures"] == 0


async def test_a_worker_runs_the_purge_on_its_cron(tmp_path: Path, redis_url: str) -> None:
    """A worker of its own on SQLite, purging every second."""
    async with quiet_redis(redis_url) as worker_redis:
        settings = settings_for(
            tmp_path, worker_redis, None, retention_days=1, retention_interval_seconds=1
        )
        async with open_services(settings) as services:
            account = await services.accounts.create_account("cron")
            stamped = Gateway("sqlite", "", services, settings)
            now = datetime.now(UTC)
            [old] = await stamp(stamped, account.account_id, age=2 * DAY, count=1, now=now)
            [young] = await stamp(stamped, account.account_id, age=DAY / 2, count=1, now=now)
            async with running_worker(services), asyncio.timeout(10):
                while old in await event_ids(stamped, account.account_id):
                    await asyncio.sleep(0.05)
            assert await event_ids(stamped, account.account_id) == {young}


def test_the_purge_interval_must_divide_a_minute_an_hour_or_a_day() -> None:
    assert cron_schedule(30) == (None, None, {0, 30})
    assert cron_schedule(600) == (None, {0, 10, 20, 30, 40, 50}, 0)
    assert cron_schedule(3600) == (set(range(24)), 0, 0)
    with pytest.raises(ValidationError, match="GATEWAY_RETENTION_INTERVAL_SECONDS"):
        Settings(_env_file=None, retention_interval_seconds=5400)

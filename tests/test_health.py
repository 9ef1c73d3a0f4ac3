"""The outbox as operators see it (storage/health.py through QueueWatch): due, lag and
held deliveries and disabled web hooks, read from a database of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.domain.events import EventType
from gateway.runtime import open_services
from gateway.services.health import QueueWatch
from gateway.services.webhooks import WebhookChanges
from tests.conftest import settings_for
from tests.ops_support import migrated_to, quiet_redis


@pytest.fixture
async def ops_redis(redis_url: str) -> AsyncIterator[str]:
    async with quiet_redis(redis_url) as url:
        yield url


async def test_a_due_delivery_with_no_worker_shows_as_due_and_lagging(
    tmp_path: Path,
    ops_redis: str,
) -> None:
    database_url = await migrated_to(tmp_path / "gateway.db", None)
    settings = settings_for(tmp_path, ops_redis, database_url)
    async with open_services(settings) as services:
        account = await services.accounts.create_account("health")
        webhook, _ = await services.webhooks.create(
            account.account_id,
            WebhookChanges(url="http://127.0.0.1:9/hook", events=[EventType.DELIVERED]),
        )
        await services.deliveries.send_test(account.account_id, webhook.id)

        health = await QueueWatch(services.engine, cache_seconds=0).read()

    assert (health.due, health.held, health.webhooks_disabled) == (1, 0, 0)
    assert health.oldest_due_at is not None
    assert health.lag_seconds > 0


async def test_scrapes_within_the_cache_time_read_the_database_once(
    tmp_path: Path,
    ops_redis: str,
) -> None:
    database_url = await migrated_to(tmp_path / "gateway.db", None)
    settings = settings_for(tmp_path, ops_redis, database_url)
    async with open_services(settings) as services:
        watch = QueueWatch(services.engine, cache_seconds=3600)
        first = await watch.read()
        account = await services.accounts.create_account("cached")
        webhook, _ = await services.webhooks.create(
            account.account_id,
            WebhookChanges(url="http://127.0.0.1:9/hook", events=[EventType.DELIVERED]),
        )
        await services.deliveries.send_test(account.account_id, webhook.id)

        again = await watch.read()
        fresh = await QueueWatch(services.engine, cache_seconds=0).read()

    assert again is first
    assert (first.due, fresh.due) == (0, 1)

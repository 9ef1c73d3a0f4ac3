"""Web hook changes wait for the account's in-flight group commits, so an event being
stored is either seen by the outbox or found afterwards: a web hook created meanwhile
backfills it, and one deleted meanwhile takes its deliveries along instead of failing
the batch. (PostgreSQL: the account's row lock; SQLite: the single writer.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text

from gateway.domain.events import EventType, NormalizedEvent, Provider
from gateway.runtime import Services
from gateway.services.accounts import CreatedAccount
from gateway.storage.db import begin_write, write_lock
from gateway.storage.events import NewEvent, insert_events
from gateway.storage.webhooks import lock_account_webhooks
from tests.conftest import Gateway
from tests.receiver import Receiver
from tests.support import gql
from tests.test_webhooks import create_webhook, settled


async def during_an_open_ingest(
    services: Services, account_id: int, email: str, change: Awaitable[Any]
) -> Any:
    """Start ``change`` while a group commit has stored an event for ``email`` but not
    committed it; it must wait for the commit. Returns what ``change`` returned."""
    now = datetime.now(UTC)
    event = NormalizedEvent(
        type=EventType.DELIVERED,
        provider=Provider.BREVO,
        provider_event="delivered",
        email=email,
        occurred_at=now,
        raw={"event": "delivered", "email": email, "n": now.isoformat()},
    )
    async with begin_write(services.engine) as connection:
        await insert_events(
            connection,
            events=[NewEvent(services.ids.next_id(), account_id, None, event)],
            now=now,
        )
        task = asyncio.ensure_future(change)
        await asyncio.sleep(0.5)
        assert not task.done(), "the web hook changed beside an open ingest"
    return await asyncio.wait_for(task, 10)


async def test_a_web_hook_created_during_an_ingest_gets_its_events(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await during_an_open_ingest(
        gateway.services,
        account.account_id,
        "inflight@example.com",
        create_webhook(api, url=endpoint.url, events=["DELIVERED"], backfillDays=1),
    )
    [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert delivery["event"]["email"] == "inflight@example.com"


async def test_a_web_hook_deleted_during_an_ingest_waits_for_it(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    webhook, _ = await create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
    deleted = await during_an_open_ingest(
        gateway.services,
        account.account_id,
        "deleted@example.com",
        gql(api, "mutation($id: ID!) { deleteWebhook(id: $id) }", id=webhook["id"]),
    )
    assert deleted["deleteWebhook"] is True
    assert (await gql(api, "{ webhooks { id } }"))["webhooks"] == []


async def lock_waiters(services: Services, count: int) -> None:
    """Until ``count`` writers wait for a lock (PostgreSQL: any lock of this database,
    here the account's row; SQLite: the process's write lock)."""
    for _ in range(250):
        if services.engine.dialect.name == "postgresql":
            async with services.engine.connect() as connection:
                found = await connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                waiting = int(found.scalar_one())
        else:
            waiting = write_lock(services.engine).waiting
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} writers wait for the lock")


async def test_an_ingest_that_waited_for_a_new_web_hook_writes_its_delivery(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """The other order: the ingest arrives while a web hook is being created, waits for
    it, and then must see it. On PostgreSQL the group commit reads the web hooks in a
    statement after the one that waited for the account's row lock, with a snapshot
    taken after the web hook committed. The web hook backfills nothing, so its
    delivery can only come from the ingest's outbox."""
    services = gateway.services
    event = NormalizedEvent(
        type=EventType.DELIVERED,
        provider=Provider.BREVO,
        provider_event="delivered",
        email="waited@example.com",
        occurred_at=datetime.now(UTC),
        raw={"event": "delivered", "email": "waited@example.com"},
    )
    async with begin_write(services.engine) as connection:
        # Something else holds the account's web hook lock: both wait for it, the web
        # hook's creation first.
        await lock_account_webhooks(connection, account.account_id)
        creating = asyncio.ensure_future(
            create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
        )
        await lock_waiters(services, 1)  # the creation is queued first
        ingesting = asyncio.ensure_future(services.writer.write(account.account_id, None, [event]))
        await lock_waiters(services, 2)
        assert not creating.done() and not ingesting.done()
    webhook, _ = await asyncio.wait_for(creating, 10)
    result = await asyncio.wait_for(ingesting, 10)
    assert result.stored == 1
    [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert delivery["event"]["email"] == "waited@example.com"

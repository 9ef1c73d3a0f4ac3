"""A web hook created while a group commit is in flight waits for it, so the events of
that commit are either seen by the outbox or found by the web hook's backfill: none
falls between the two. (PostgreSQL: the account's advisory lock; SQLite: the writer.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from gateway.domain.events import EventType, NormalizedEvent, Provider
from gateway.services.accounts import CreatedAccount
from gateway.storage.db import begin_write
from gateway.storage.events import NewEvent, insert_events
from tests.conftest import Gateway
from tests.receiver import Receiver
from tests.test_webhooks import create_webhook, settled


async def test_a_web_hook_created_during_an_ingest_gets_its_events(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    services = gateway.services
    endpoint = receiver.endpoint()
    now = datetime.now(UTC)
    event = NormalizedEvent(
        type=EventType.DELIVERED,
        provider=Provider.BREVO,
        provider_event="delivered",
        email="inflight@example.com",
        occurred_at=now,
        raw={"event": "delivered", "email": "inflight@example.com", "n": now.isoformat()},
    )
    async with begin_write(services.engine) as connection:
        # An ingest transaction that has stored its event but not committed yet.
        await insert_events(
            connection,
            events=[NewEvent(services.ids.next_id(), account.account_id, None, event)],
            now=now,
        )
        creating = asyncio.create_task(
            create_webhook(api, url=endpoint.url, events=["DELIVERED"], backfillDays=1)
        )
        await asyncio.sleep(0.5)
        assert not creating.done(), "the web hook was created beside an open ingest"
    webhook, _ = await asyncio.wait_for(creating, 10)
    [delivery] = await settled(api, webhook["id"], 1, {"SUCCEEDED"})
    assert delivery["event"]["email"] == "inflight@example.com"

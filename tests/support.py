"""Small helpers the tests share."""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.events import EventType, NormalizedEvent, Provider
from gateway.domain.stats import rollup_rows
from gateway.storage.db import begin_write

if TYPE_CHECKING:
    from gateway.services.accounts import CreatedAccount
    from tests.conftest import Gateway


async def gql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """Run a GraphQL operation that must succeed; returns its data."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body["errors"]
    data: dict[str, Any] = body["data"]
    return data


async def gql_errors(
    client: httpx.AsyncClient, query: str, **variables: Any
) -> list[dict[str, Any]]:
    """Run a GraphQL operation that must fail; returns its errors."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    body = response.json()
    assert body.get("errors"), body
    errors: list[dict[str, Any]] = body["errors"]
    return errors


def brevo_event(**fields: Any) -> dict[str, Any]:
    """A Brevo webhook event as the seed documents it, with ``fields`` changed."""
    event: dict[str, Any] = {
        "event": "delivered",
        "email": "jane@example.com",
        "id": 1234,
        "date": "2026-11-20 10:00:00",
        "ts": 1763629200,
        "message-id": "<201798300811.5787683@relay.example.com>",
        "ts_event": 1763629200,
        "subject": "Your order",
        "X-Mailin-custom": "order-77",
        "sending_ip": "198.51.100.7",
        "template_id": 22,
        "tags": ["transac_messages"],
    }
    event.update(fields)
    return event


_numbers = itertools.count()


def delivered_events(
    count: int, *, tags: tuple[str, ...] = ("t",), numbered_tag: bool = False, padding: int = 0
) -> list[NormalizedEvent]:
    """``count`` distinct normalized Brevo ``delivered`` events, for writing directly.
    Each carries ``tags``, and with ``numbered_tag`` one tag of its own (``n<number>``);
    ``padding`` characters in the raw payload make rows of a realistic size."""
    now = datetime.now(UTC)
    return [
        NormalizedEvent(
            type=EventType.DELIVERED,
            provider=Provider.BREVO,
            provider_event="delivered",
            email=f"user{n}@example.com",
            occurred_at=now,
            tags=(*tags, f"n{n}") if numbered_tag else tags,
            raw={"event": "delivered", "n": n, "padding": "x" * padding},
        )
        for n in (next(_numbers) for _ in range(count))
    ]


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def ingest_brevo(
    gateway: Gateway, account: CreatedAccount, *events: dict[str, Any]
) -> list[str]:
    """Post Brevo events to the account's ingest URL; returns the ids stored."""
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body(list(events)),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    return [str(stored_id) for stored_id in response.json()["ids"]]


@contextlib.asynccontextmanager
async def database_refuses_subject(engine: AsyncEngine, subject: str) -> AsyncIterator[None]:
    """While open, the database refuses events whose subject is ``subject``: a
    constraint (PostgreSQL) or trigger (SQLite), standing for anything a database may
    refuse of one value that no parser would catch."""
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    quoted = subject.replace("'", "''")
    async with begin_write(engine) as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(
                text(
                    f"ALTER TABLE events ADD CONSTRAINT {name}"
                    f" CHECK (subject IS DISTINCT FROM '{quoted}') NOT VALID"
                )
            )
        else:
            await connection.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON events"
                    f" WHEN NEW.subject = '{quoted}'"
                    f" BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
                )
            )
    try:
        yield
    finally:
        async with begin_write(engine) as connection:
            if engine.dialect.name == "postgresql":
                await connection.execute(text(f"ALTER TABLE events DROP CONSTRAINT {name}"))
            else:
                await connection.execute(text(f"DROP TRIGGER {name}"))


def rollup_of(events: Iterable[tuple[int, NormalizedEvent]]) -> list[tuple[Any, ...]]:
    """The eventStats rollup rows that ``(account_id, event)`` pairs add, each event's
    template and tags as stored (gateway.domain.stats.rollup_rows)."""
    return rollup_rows(
        (
            account_id,
            event.occurred_at,
            event.type.value,
            event.provider.value,
            event.template,
            event.tags,
        )
        for account_id, event in events
    )

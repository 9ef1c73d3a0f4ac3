"""Failures stay where they start: an event the database refuses, or that cannot be
stored as it is, fails alone; every other event of its group commit (other callers,
other accounts, the same caller's other events) is stored. On SQLite and PostgreSQL.

The parsers' cleaning is bypassed here: NormalizedEvent objects go to the writer
directly, with values a parser would never let through."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.events import EventType, NormalizedEvent, Provider
from gateway.domain.jsontext import json_text
from gateway.ids import IdGenerator
from gateway.services.ingest import IngestWriter
from gateway.settings import async_database_url
from gateway.storage.db import begin_write, make_engine, migrate
from gateway.storage.events import get_events
from tests.support import database_refuses_subject, delivered_events

# A subject the database refuses: a constraint (PostgreSQL) or trigger (SQLite) the
# tests add, standing for anything a database may refuse of one value.
REFUSED = "the database refuses this subject"
_ids = IdGenerator(9)


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    else:
        url = async_database_url(request.getfixturevalue("postgres_url"))
    engine = make_engine(url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def refusing(engine: AsyncEngine) -> AsyncIterator[None]:
    """The database refuses events whose subject is REFUSED, for this test."""
    async with database_refuses_subject(engine, REFUSED):
        yield


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[IngestWriter]:
    writer = IngestWriter(engine, IdGenerator(10), concurrency=1 if engine.name == "sqlite" else 2)
    yield writer
    await writer.stop()


async def new_account(engine: AsyncEngine) -> int:
    account_id = _ids.next_id()
    async with begin_write(engine) as connection:
        await connection.execute(
            text("INSERT INTO accounts (id, name, created_at) VALUES (:id, :name, :at)"),
            {"id": account_id, "name": f"f-{uuid.uuid4().hex[:12]}", "at": datetime.now(UTC)},
        )
    return account_id


async def stored_count(engine: AsyncEngine, account_id: int) -> int:
    async with engine.connect() as connection:
        found = await connection.execute(
            text("SELECT count(*) FROM events WHERE account_id = :a"), {"a": account_id}
        )
        return int(found.scalar_one())


def event(**changes: object) -> NormalizedEvent:
    return replace(delivered_events(1)[0], **changes)  # type: ignore[arg-type]


async def test_an_event_the_database_refuses_fails_alone(
    engine: AsyncEngine, writer: IngestWriter, refusing: None
) -> None:
    account = await new_account(engine)
    result = await writer.write(account, None, [event(), event(subject=REFUSED), event()])
    assert (result.stored, result.duplicates) == (2, 0)
    [(index, reason)] = result.failed
    assert index == 1
    assert "refused" in reason
    assert await stored_count(engine, account) == 2


async def test_an_event_too_long_for_a_column_fails_alone_naming_the_field(
    engine: AsyncEngine, writer: IngestWriter
) -> None:
    account = await new_account(engine)
    result = await writer.write(
        account, None, [event(email="x" * 321 + "@example.com"), event(tags=("t" * 256,)), event()]
    )
    assert result.stored == 1
    assert result.failed == (
        (0, "email: longer than 320 characters"),
        (1, "tags: longer than 255 characters"),
    )


async def test_characters_postgresql_cannot_hold_are_dropped_from_columns_kept_in_raw(
    engine: AsyncEngine, writer: IngestWriter
) -> None:
    account = await new_account(engine)
    sent = event(email="nul\x00@example.com", subject="a\ud800b", raw={"email": "nul\x00\ud800"})
    result = await writer.write(account, None, [sent])
    assert result.stored == 1
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT email, subject, raw FROM events WHERE id = :id"),
                {"id": result.ids[0]},
            )
        ).one()
    assert (row.email, row.subject) == ("nul@example.com", "ab")
    assert row.raw == '{"email":"nul\\u0000\\ud800"}'


async def test_one_accounts_refused_events_fail_none_of_another_accounts_requests(
    engine: AsyncEngine, writer: IngestWriter, refusing: None
) -> None:
    """200 valid requests of account A, at once with account B's events the database
    refuses, those too long for their column, with characters PostgreSQL cannot hold,
    and with an account that does not exist (its foreign key): in the same group
    commits. Every one of A's requests succeeds."""
    good, bad = await new_account(engine), await new_account(engine)
    gone = _ids.next_id()  # no such account
    hostile = [
        (bad, [event(subject=REFUSED)]),
        (bad, [event(email="x" * 400)]),
        (bad, [event(tags=("t" * 300,))]),
        (bad, [event(email="nul\x00@example.com", message_id="<a\x00b>")]),
        (gone, [event()]),
    ]
    calls = []
    for n in range(200):
        calls.append(writer.write(good, None, [event()]))
        if n % 4 == 0:
            account_id, events = hostile[n // 4 % len(hostile)]
            calls.append(writer.write(account_id, None, events))
    results = await asyncio.wait_for(asyncio.gather(*calls), 60)
    assert sum(r.stored == 1 and not r.failed for r in results) == 200 + 1  # and one NUL
    assert await stored_count(engine, good) == 200
    refused = [r for r in results if r.failed]
    assert len(refused) == 40  # REFUSED, too long x2, gone: 4 of every 5 hostile calls
    assert all(r.stored == 0 and len(r.failed) == 1 for r in refused)
    # The NUL event (the same each time: stored once, then a duplicate), cleaned.
    assert await stored_count(engine, bad) == 1


# -- any value at all ------------------------------------------------------------------

# Every code point, lone surrogates and NUL included.
_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
_long_text = st.one_of(_any_text, st.text(st.sampled_from("ab\x00\ud800é"), max_size=400))
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats()  # NaN and infinities too
    | _any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_any_text, inner, max_size=4),
    max_leaves=12,
)
_times = st.datetimes(timezones=st.just(UTC))
_events = st.builds(
    NormalizedEvent,
    type=st.sampled_from(EventType),
    provider=st.sampled_from(Provider),
    provider_event=_long_text,
    email=_long_text,
    occurred_at=_times,
    raw=st.dictionaries(_any_text, _json_values, max_size=6),
    message_id=st.none() | _long_text,
    sent_at=st.none() | _times,
    subject=st.none() | _long_text,
    template=st.none() | _long_text,
    tags=st.lists(_long_text, max_size=4).map(tuple),
    custom_id=st.none() | _any_text,
    reason=st.none() | _any_text,
    url=st.none() | _long_text,
    position=st.none() | st.integers(),
    message_size=st.none() | st.integers(),
    unique=st.none() | st.booleans(),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=st.lists(_events, min_size=1, max_size=5))
async def test_any_event_is_stored_or_refused_alone_and_read_back_as_sent(
    engine: AsyncEngine, writer: IngestWriter, events: list[NormalizedEvent]
) -> None:
    # Each one different (a duplicate is not stored twice).
    events = [replace(event, raw={**event.raw, "#": n}) for n, event in enumerate(events)]
    account = await new_account(engine)
    result = await writer.write(account, None, events)
    failed = {index for index, _reason in result.failed}
    # Only what no column can hold is refused, naming the field.
    for _index, reason in result.failed:
        assert re.fullmatch(r"(email|tags|template|message_id): longer than \d+ characters", reason)
    assert result.duplicates == 0
    assert result.stored + len(failed) == len(events)
    async with engine.connect() as connection:
        found = await get_events(connection, account_id=account, ids=result.ids)
    assert len(found) == result.stored
    kept = [event for index, event in enumerate(events) if index not in failed]
    sent = dict(zip(result.ids, kept, strict=True))
    for stored in found:
        # raw exactly as sent (JSON has no NaN: null, as orjson writes it).
        assert json_text(stored.event.raw) == json_text(sent[stored.id].raw)

"""eventStats over both databases: the rollup written with the events, the part hours
at a window's edges and the filters it cannot answer counted from the events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.domain.events import EventType, NormalizedEvent, Provider
from gateway.domain.stats import StatsInterval, rollup_spans
from gateway.services.accounts import CreatedAccount
from gateway.settings import async_database_url
from gateway.storage.db import make_engine, migrate
from gateway.storage.event_counts import event_counts_table
from gateway.storage.events import NewEvent, events_table, tags_table
from gateway.storage.events.rows import _row_values, stored_tags
from gateway.storage.models import Account
from tests.conftest import Gateway, _admin
from tests.support import brevo_event, gql, gql_errors, ingest_brevo, rollup_of
from tests.test_migrations import command_upgrade

accounts_table = Account.__table__  # type: ignore[attr-defined]

STATS = """
query($w: EventFilter, $i: StatsInterval, $g: StatsGroup) {
  eventStats(where: $w, interval: $i, groupBy: $g) { start key count }
}
"""


def at(text: str) -> int:
    """Brevo's ts_event (seconds) of a UTC time."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def sent(n: int, when: str, **fields: Any) -> dict[str, Any]:
    return brevo_event(
        **{
            "message-id": f"<m{n}@stats>",
            "ts_event": at(when),
            "ts": at(when),
            "email": f"u{n}@example.com",
        },
        **fields,
    )


@pytest.fixture
async def traffic(gateway: Gateway, account: CreatedAccount) -> None:
    await ingest_brevo(
        gateway,
        account,
        sent(1, "2026-11-20T00:10:00", template_id=1, tags=["a"]),
        sent(2, "2026-11-20T10:10:00", template_id=1, tags=["a", "b"]),
        sent(3, "2026-11-20T10:45:00", event="hard_bounce", template_id=2, tags=["b"]),
        sent(4, "2026-11-20T23:59:59", event="opened", template_id=1, tags=[]),
        sent(5, "2026-11-21T08:00:00", template_id=2, tags=["a"]),
    )


async def stats(api: httpx.AsyncClient, **variables: Any) -> list[tuple[str, str, int]]:
    data = await gql(api, STATS, **variables)
    return [(b["start"], b["key"], b["count"]) for b in data["eventStats"]]


DAY_20 = "2026-11-20T00:00:00+00:00"
DAY_21 = "2026-11-21T00:00:00+00:00"


async def test_days_by_type_sum_the_hours_of_each_utc_day(
    api: httpx.AsyncClient, traffic: None
) -> None:
    assert await stats(api) == [
        (DAY_20, "BOUNCED", 1),
        (DAY_20, "DELIVERED", 2),
        (DAY_20, "OPENED", 1),
        (DAY_21, "DELIVERED", 1),
    ]


async def test_a_retried_event_is_counted_once(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, traffic: None
) -> None:
    await ingest_brevo(gateway, account, sent(5, "2026-11-21T08:00:00", template_id=2, tags=["a"]))
    assert (DAY_21, "DELIVERED", 1) in await stats(api)


async def test_hours_by_template_for_some_types(api: httpx.AsyncClient, traffic: None) -> None:
    assert await stats(
        api, i="HOUR", g="TEMPLATE", w={"types": ["DELIVERED", "BOUNCED"], "end": DAY_21}
    ) == [
        ("2026-11-20T00:00:00+00:00", "1", 1),
        ("2026-11-20T10:00:00+00:00", "1", 1),
        ("2026-11-20T10:00:00+00:00", "2", 1),
    ]


async def test_tags_count_each_tag_of_an_event(api: httpx.AsyncClient, traffic: None) -> None:
    assert await stats(api, g="TAG") == [
        (DAY_20, "a", 2),
        (DAY_20, "b", 2),
        (DAY_21, "a", 1),
    ]


async def test_types_of_one_tag(api: httpx.AsyncClient, traffic: None) -> None:
    assert await stats(api, w={"tags": ["b"]}) == [(DAY_20, "BOUNCED", 1), (DAY_20, "DELIVERED", 1)]


async def test_providers(api: httpx.AsyncClient, traffic: None) -> None:
    assert await stats(api, g="PROVIDER", w={"providers": ["BREVO"]}) == [
        (DAY_20, "BREVO", 4),
        (DAY_21, "BREVO", 1),
    ]


async def test_a_window_off_the_hour_counts_only_the_events_inside_it(
    api: httpx.AsyncClient, traffic: None
) -> None:
    where = {"start": "2026-11-20T10:30:00Z", "end": "2026-11-21T07:59:00Z"}
    assert await stats(api, w=where) == [(DAY_20, "BOUNCED", 1), (DAY_20, "OPENED", 1)]


async def test_a_window_inside_one_hour(api: httpx.AsyncClient, traffic: None) -> None:
    where = {"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T10:30:00Z"}
    assert await stats(api, w=where) == [(DAY_20, "DELIVERED", 1)]


async def test_filters_the_rollup_cannot_answer_are_counted_from_the_events(
    api: httpx.AsyncClient, traffic: None
) -> None:
    assert await stats(api, g="TAG", w={"email": "U2@example.com"}) == [
        (DAY_20, "a", 1),
        (DAY_20, "b", 1),
    ]
    assert await stats(api, w={"tags": ["a", "b"]}) == [(DAY_20, "DELIVERED", 1)]
    assert await stats(api, g="PROVIDER", w={"template": "2"}) == [
        (DAY_20, "BREVO", 1),
        (DAY_21, "BREVO", 1),
    ]


async def test_an_account_sees_only_its_own_counts(gateway: Gateway, traffic: None) -> None:
    other = await gateway.new_account()
    async with gateway.client(other.api_key) as client:
        assert await stats(client) == []


async def test_end_before_start_names_the_field(api: httpx.AsyncClient) -> None:
    errors = await gql_errors(
        api, STATS, w={"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T09:00:00Z"}
    )
    assert errors[0]["extensions"]["field"] == "where.end"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_migration_counts_the_events_already_stored(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url = async_database_url(request.getfixturevalue("postgres_url"))
        url = f"{url.rsplit('/', 1)[0]}/gateway_backfill_{uuid.uuid4().hex[:8]}"
        _admin(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'backfill.db'}"
    events = [
        (7, "2026-11-20T10:10:00", "tpl", ("a", "b")),
        (7, "2026-11-20T10:50:00", None, ("a",)),
        (8, "2026-11-21T00:00:00", "tpl", ()),
    ]
    normalized = [
        (
            account_id,
            NormalizedEvent(
                type=EventType.DELIVERED,
                provider=Provider.BREVO,
                provider_event="delivered",
                email=f"u{n}@example.com",
                occurred_at=datetime.fromisoformat(when).replace(tzinfo=UTC),
                raw={"n": n},
                template=template,
                tags=tags,
            ),
        )
        for n, (account_id, when, template, tags) in enumerate(events)
    ]
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command_upgrade(sync, "0005"))
            await connection.execute(
                accounts_table.insert(),
                [{"id": n, "name": f"a{n}", "created_at": datetime.now(UTC)} for n in (7, 8)],
            )
            for n, (account_id, event) in enumerate(normalized):
                # As the ingest of a gateway before the rollup wrote them.
                await connection.execute(
                    events_table.insert(),
                    [
                        _row_values(
                            NewEvent(n, account_id, None, event),
                            stored_tags(event.tags),
                            datetime.now(UTC),
                        )
                    ],
                )
                for tag in event.tags:
                    await connection.execute(
                        tags_table.insert(), [{"account_id": account_id, "tag": tag, "event_id": n}]
                    )
        await migrate(engine)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(event_counts_table).order_by(*event_counts_table.primary_key.columns)
                )
            ).all()
    finally:
        await engine.dispose()
        if backend == "postgres":
            _admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    assert [tuple(row) for row in rows] == rollup_of(normalized)


async def test_the_widest_window_off_the_hour_is_answered(
    api: httpx.AsyncClient, traffic: None
) -> None:
    where = {"start": "0001-01-01T00:30:00Z", "end": "9999-12-31T23:30:00Z"}
    assert await stats(api, w=where, g="PROVIDER") == [(DAY_20, "BREVO", 4), (DAY_21, "BREVO", 1)]


async def test_whole_days_and_the_hours_of_part_days_add_up(
    api: httpx.AsyncClient, traffic: None
) -> None:
    where = {"start": "2026-11-20T10:00:00Z", "end": "2026-11-22T00:00:00Z"}
    assert await stats(api, w=where) == [
        (DAY_20, "BOUNCED", 1),
        (DAY_20, "DELIVERED", 1),
        (DAY_20, "OPENED", 1),
        (DAY_21, "DELIVERED", 1),
    ]


@pytest.mark.parametrize(
    ("first", "end", "interval", "ranges"),
    [
        (None, None, StatsInterval.DAY, [(24, None, None)]),
        (10, 100, StatsInterval.HOUR, [(1, 10, 100)]),
        (10, 100, StatsInterval.DAY, [(24, 24, 96), (1, 10, 24), (1, 96, 100)]),
        (24, 48, StatsInterval.DAY, [(24, 24, 48)]),
        (10, 20, StatsInterval.DAY, [(1, 10, 20)]),
        (None, 30, StatsInterval.DAY, [(24, None, 24), (1, 24, 30)]),
        (30, None, StatsInterval.DAY, [(24, 48, None), (1, 30, 48)]),
    ],
)
def test_rollup_reads_days_from_day_rows_and_the_rest_from_hour_rows(
    first: int | None, end: int | None, interval: StatsInterval, ranges: list[Any]
) -> None:
    assert rollup_spans(first, end, interval) == ranges

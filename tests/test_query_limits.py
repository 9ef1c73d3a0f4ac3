"""Bounded query cost: at most GATEWAY_MAX_FILTER_TAGS tags a filter, however they are
sent, and no read runs past GATEWAY_QUERY_TIMEOUT_SECONDS on either database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from gateway.domain.events import Provider
from gateway.services.accounts import CreatedAccount
from gateway.services.rejections import IngestCall, Refusal
from gateway.settings import async_database_url
from gateway.storage.db import ReadTimeout, bounded_read, make_engine, migrate
from tests.conftest import Gateway, redis_database, serve, settings_for
from tests.support import delivered_events, gql, gql_errors

TAGS = [f"t{n}" for n in range(20)]
EVENTS_BY_TAGS = """
query($tags: [String!]) { events(where: {tags: $tags}, first: 50) { edges { node { id } } } }
"""


async def store_crossed_tags(gateway: Gateway, account: CreatedAccount, count: int) -> None:
    """``count`` events, each carrying every tag of TAGS but one (event n lacks tag n
    mod 20): every tag is common and no event has them all, the worst case for an
    all-of-tags filter (each event found by one tag is checked against the others)."""
    writer = gateway.services.writer
    for start in range(0, count, 2000):
        events = []
        for missing in range(20):
            tags = tuple(tag for n, tag in enumerate(TAGS) if n != missing)
            events += delivered_events(min(2000, count - start) // 20, tags=tags)
        await writer.write(account.account_id, None, events)


async def test_a_filter_of_more_tags_than_the_limit_sent_as_variables_is_refused(
    api: httpx.AsyncClient,
) -> None:
    errors = await gql_errors(api, EVENTS_BY_TAGS, tags=[f"tag{n}" for n in range(200)])
    assert errors[0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "where.tags"}
    assert "at most 20 tags" in errors[0]["message"]
    assert "GATEWAY_MAX_FILTER_TAGS" in errors[0]["message"]


async def test_a_filter_of_as_many_tags_as_the_limit_answers_within_a_second(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    await store_crossed_tags(gateway, account, 2000)
    matching = delivered_events(3, tags=tuple(TAGS))
    await gateway.services.writer.write(account.account_id, None, matching)
    started = time.perf_counter()
    data = await gql(api, EVENTS_BY_TAGS, tags=TAGS)
    elapsed = time.perf_counter() - started
    assert len(data["events"]["edges"]) == 3
    assert elapsed < 1.0


async def test_the_rest_tags_route_refuses_more_tags_than_the_limit(
    gateway: Gateway, account: CreatedAccount
) -> None:
    tags = ";".join(f"tag{n}" for n in range(21))
    async with gateway.client() as client:
        response = await client.get(
            f"/v1/events/tags/{tags}", params={"access_token": account.api_key}
        )
    assert response.status_code == 400
    assert "at most 20 tags" in response.json()["error"]


@pytest.fixture(params=["sqlite", "postgres"])
async def impatient(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
) -> AsyncIterator[Gateway]:
    """A gateway whose event reads may run for 2 ms only: far less than the crossed
    tags of 10,000 events take on either database (tens of milliseconds at best)."""
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    if database_url is not None:
        engine = make_engine(async_database_url(database_url))
        await migrate(engine)
        await engine.dispose()
    settings = settings_for(
        tmp_path, redis_database(redis_url, 3), database_url, query_timeout_seconds=0.002
    )
    async with serve(settings, request.param) as running:
        yield running


async def test_a_read_past_the_time_bound_is_stopped_with_a_query_timeout_error(
    impatient: Gateway,
) -> None:
    account = await impatient.new_account()
    await store_crossed_tags(impatient, account, 10_000)
    async with impatient.client(account.api_key) as api:
        errors = await gql_errors(api, EVENTS_BY_TAGS, tags=TAGS)
    assert errors[0]["extensions"]["code"] == "QUERY_TIMEOUT"
    assert "GATEWAY_QUERY_TIMEOUT_SECONDS" in errors[0]["message"]
    if impatient.backend == "postgres":
        # The database stopped it: no backend is still running it.
        assert impatient.settings.database_url is not None
        connection = await asyncpg.connect(impatient.settings.database_url)
        try:
            running = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE '%FROM event_tags AS driver%' AND pid <> pg_backend_pid()"
            )
        finally:
            await connection.close()
        assert running == 0


async def test_a_list_read_past_the_time_bound_is_a_query_timeout_error_too(
    impatient: Gateway,
) -> None:
    """Not only event reads: rejectedPayloads (here 500 bodies of 60 KB, far more than
    2 ms of reading) is stopped at the same bound and answered QUERY_TIMEOUT."""
    account = await impatient.new_account()
    [source] = [
        s
        for s in await impatient.services.accounts.list_sources(account.account_id)
        if s.provider == "BREVO"
    ]
    call = IngestCall(account.account_id, source.id, Provider.BREVO, "POST", None, "", "")
    await impatient.services.rejections.keep(
        call, [Refusal(400, "unreadable", b"x" * 60_000) for _ in range(500)]
    )
    async with impatient.client(account.api_key) as api:
        errors = await gql_errors(api, "{ rejectedPayloads(first: 500) { id body } }")
    assert errors[0]["extensions"]["code"] == "QUERY_TIMEOUT"
    assert "GATEWAY_QUERY_TIMEOUT_SECONDS" in errors[0]["message"]


async def test_a_rest_read_past_the_time_bound_answers_503_naming_the_bound(
    impatient: Gateway,
) -> None:
    account = await impatient.new_account()
    await store_crossed_tags(impatient, account, 10_000)
    async with impatient.client() as client:
        response = await client.get(
            f"/v1/events/tags/{';'.join(TAGS)}", params={"access_token": account.api_key}
        )
    assert response.status_code == 503
    assert "GATEWAY_QUERY_TIMEOUT_SECONDS" in response.json()["error"]


# A statement that runs for minutes unless stopped, on each database.
ENDLESS = {
    "sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n",
    "postgres": "SELECT pg_sleep(600)",
}


@pytest.mark.parametrize(
    ("backend", "engine_bound"),
    [("sqlite", None), ("postgres", None), ("postgres", 0.1)],
    ids=["sqlite", "postgres-per-read", "postgres-read-engine"],
)
async def test_a_bounded_read_is_stopped_by_the_database(
    backend: str, engine_bound: float | None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url = async_database_url(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'endless.db'}"
    engine = make_engine(url, statement_timeout_seconds=engine_bound)
    try:
        started = time.perf_counter()
        with pytest.raises(ReadTimeout):
            async with bounded_read(engine, 0.1) as connection:
                await connection.exec_driver_sql(ENDLESS[backend])
        elapsed = time.perf_counter() - started
        async with bounded_read(engine, 0.1) as connection:  # the connection is fine
            assert (await connection.exec_driver_sql("SELECT 1")).scalar_one() == 1
            if backend == "postgres":
                still_running = await connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                    " AND query = 'SELECT pg_sleep(600)'"
                )
                assert still_running.scalar_one() == 0
    finally:
        await engine.dispose()
    assert elapsed < 5

"""Ids: node numbers leased in the database, so that no two processes mint the same id
whatever Redis forgets and however processes start, stop or lapse."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ids import IdGenerator, NodeLeaseLost, id_floor_for_ms, unix_ms
from gateway.services.nodes import NodeLease, NoFreeNode
from gateway.settings import async_database_url
from gateway.storage.db import make_engine, migrate
from tests.conftest import POSTGRES_ADMIN_DSN, _admin, redis_database, serve, settings_for
from tests.support import brevo_event, ingest_brevo


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated database of the test's own: tests here hold and free every node."""
    name = f"gateway_ids_{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        request.getfixturevalue("postgres_url")  # PostgreSQL is there (or skip/fail)
        _admin(f'CREATE DATABASE "{name}"')
        url = async_database_url(f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'ids.db'}"
    made = make_engine(url)
    try:
        await migrate(made)
        yield made
    finally:
        await made.dispose()
        if request.param == "postgres":
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def hold_all_nodes_but(engine: AsyncEngine, free: int) -> None:
    """Every node held far into the future but ``free``: a claim can only get that one."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE id_nodes SET owner = 'test', expires_at_ms = 9000000000000000 "
                "WHERE node <> :free"
            ),
            {"free": free},
        )
        await connection.execute(
            text("UPDATE id_nodes SET owner = NULL, expires_at_ms = 0 WHERE node = :free"),
            {"free": free},
        )


async def until_claimed(lease: NodeLease, *, within: float = 10.0) -> None:
    """Claim a node as soon as one is free (within ``within`` seconds)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await lease.renew()
            return
        except NoFreeNode:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


def test_no_id_is_minted_once_the_lease_has_lapsed() -> None:
    ids = IdGenerator(7, until_ms=unix_ms() - 1)
    with pytest.raises(NodeLeaseLost):
        ids.next_id()


def test_a_new_holder_mints_above_the_previous_holders_expiry_even_if_its_clock_is_behind() -> None:
    ids = IdGenerator.unleased()
    previous_expiry = unix_ms() + 60_000  # the previous holder's clock was a minute ahead
    ids.take_node(7, floor_ms=previous_expiry, until_ms=previous_expiry + 60_000)
    first, second = ids.next_id(), ids.next_id()
    assert id_floor_for_ms(previous_expiry) <= first < second


async def test_a_lapsed_lease_is_taken_over_with_ids_above_the_old_holders(
    engine: AsyncEngine,
) -> None:
    await hold_all_nodes_but(engine, free=42)
    old = IdGenerator.unleased()
    await NodeLease(engine, old, lease_seconds=0.3).renew()  # never renewed after
    minted = [old.next_id()]
    while True:  # until the lease lapses: the old holder then refuses
        try:
            minted.append(old.next_id())
        except NodeLeaseLost:
            break
        await asyncio.sleep(0.01)
    new = IdGenerator.unleased()
    # The old holder stops minting a little before its lease ends: the node is free
    # once the lease has ended in the database too.
    await until_claimed(NodeLease(engine, new, lease_seconds=60))
    assert new.node == old.node == 42
    assert new.next_id() > max(minted)


async def test_a_lease_is_renewed_before_it_lapses(engine: AsyncEngine) -> None:
    ids = IdGenerator.unleased()
    lease = NodeLease(engine, ids, lease_seconds=1.0)
    await lease.start()
    try:
        started = unix_ms()
        while unix_ms() < started + 2500:  # two and a half lease periods
            ids.next_id()
            await asyncio.sleep(0.02)
    finally:
        await lease.close()


async def test_a_released_node_is_claimed_again_from_where_its_holder_stopped(
    engine: AsyncEngine,
) -> None:
    await hold_all_nodes_but(engine, free=9)
    first = IdGenerator.unleased()
    lease = NodeLease(engine, first, lease_seconds=60)
    await lease.renew()
    last = first.next_id()
    await lease.close()
    with pytest.raises(NodeLeaseLost):
        first.next_id()
    second = IdGenerator.unleased()
    await NodeLease(engine, second, lease_seconds=60).renew()  # not a minute later
    assert second.node == 9
    assert second.next_id() > last


async def test_concurrent_claims_get_distinct_nodes(engine: AsyncEngine) -> None:
    generators = [IdGenerator.unleased() for _ in range(12)]
    leases = [NodeLease(engine, ids, lease_seconds=60) for ids in generators]
    await asyncio.gather(*(lease.renew() for lease in leases))
    try:
        assert len({lease.node for lease in leases}) == len(leases)
    finally:
        for lease in leases:
            await lease.close()


async def test_two_gateways_on_one_postgresql_mint_distinct_ids_after_a_redis_flush(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """What node numbers counted in Redis got wrong: a gateway started after a flush
    took the number of one still running."""
    database = make_engine(async_database_url(postgres_url))
    await migrate(database)
    await database.dispose()
    shared_redis = redis_database(redis_url, 3)
    first_settings = settings_for(tmp_path / "a", shared_redis, postgres_url)
    second_settings = settings_for(tmp_path / "b", shared_redis, postgres_url)
    async with serve(first_settings, "postgres") as first:
        client = redis.asyncio.Redis.from_url(shared_redis)
        await client.flushdb()
        await client.aclose()
        async with serve(second_settings, "postgres") as second:
            account = await first.new_account()

            async def ingest(gateway: object, prefix: str) -> list[str]:
                ids: list[str] = []
                for batch in range(10):
                    ids += await ingest_brevo(
                        gateway,  # type: ignore[arg-type]
                        account,
                        *(brevo_event(email=f"{prefix}{batch}-{n}@example.com") for n in range(20)),
                    )
                return ids

            from_first, from_second = await asyncio.gather(ingest(first, "a"), ingest(second, "b"))
            nodes = (first.services.node_lease.node, second.services.node_lease.node)
    assert len(from_first) == len(from_second) == 200
    assert len(set(from_first) | set(from_second)) == 400
    assert None not in nodes and nodes[0] != nodes[1]

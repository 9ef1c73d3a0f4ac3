"""The caches in front of token, API key and credential look-ups stay bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event

from gateway.ids import IdGenerator
from gateway.services.accounts import AccountService
from gateway.storage.db import make_engine, migrate


async def test_asking_about_100000_unknown_tokens_leaves_the_caches_at_their_maximum(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'caches.db'}")
    try:
        await migrate(engine)
        service = AccountService(engine, IdGenerator(1), cache_seconds=3600, cache_size=1000)
        for start in range(0, 100_000, 500):
            await asyncio.gather(
                *(service.source_for_token(f"src_unknown{n}") for n in range(start, start + 500)),
                *(
                    service.account_for_api_key(f"egw_unknown{n}")
                    for n in range(start, start + 500)
                ),
            )
        sizes = service.cache_sizes()
    finally:
        await engine.dispose()
    assert sizes["sources"] == sizes["api_keys"] == 1000


async def test_concurrent_requests_for_a_token_not_cached_make_one_query(
    tmp_path: Path,
) -> None:
    """When an entry lapses under load, the requests waiting for it share one look-up
    (not one query, and one pooled connection, each)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'caches.db'}")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    try:
        await migrate(engine)
        service = AccountService(engine, IdGenerator(1), cache_seconds=3600, cache_size=1000)
        created = await service.create_account("shop")
        token = created.ingest_tokens["brevo"]
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        sources = await asyncio.gather(*(service.source_for_token(token) for _ in range(50)))
        accounts = await asyncio.gather(
            *(service.account_for_api_key(created.api_key) for _ in range(50))
        )
    finally:
        await engine.dispose()
    assert {source.account_id for source in sources if source is not None} == {created.account_id}
    assert None not in sources
    assert set(accounts) == {created.account_id}
    assert len(statements) == 2  # one per cache

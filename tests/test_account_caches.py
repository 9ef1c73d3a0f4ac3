"""The caches in front of token, API key and credential look-ups stay bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

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

"""Rejected payloads: ingest requests, or single events of them, that were refused and
are kept for replay.

Paths arrive here with the ingest token already replaced by ``{token}``: no token is
stored in clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.storage.models import RejectedPayload

rejected_table = RejectedPayload.__table__  # type: ignore[attr-defined]


async def save_rejected(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Keep refused requests or events (id, provider, method, path, query, body,
    size, event_index, status, reason, …), in one statement."""
    if rows:
        await connection.execute(insert(rejected_table), list(rows))


async def list_rejected(
    connection: AsyncConnection, *, account_id: int, limit: int, before_id: int | None = None
) -> list[dict[str, Any]]:
    """An account's refused requests, newest first (before ``before_id``, if given)."""
    query = select(rejected_table).where(rejected_table.c.account_id == account_id)
    if before_id is not None:
        query = query.where(rejected_table.c.id < before_id)
    result = await connection.execute(query.order_by(rejected_table.c.id.desc()).limit(limit))
    return [dict(row) for row in result.mappings()]


async def get_rejected(
    connection: AsyncConnection, *, account_id: int, rejected_id: int
) -> dict[str, Any] | None:
    result = await connection.execute(
        select(rejected_table).where(
            rejected_table.c.account_id == account_id, rejected_table.c.id == rejected_id
        )
    )
    row = result.mappings().one_or_none()
    return None if row is None else dict(row)


async def mark_replayed(connection: AsyncConnection, *, rejected_id: int, at: datetime) -> None:
    await connection.execute(
        update(rejected_table).where(rejected_table.c.id == rejected_id).values(replayed_at=at)
    )

"""Leases of id node numbers (the ``id_nodes`` table): claim, renew, release.

Every statement is one UPDATE of one row, so that two processes racing for a node are
settled by the row lock (PostgreSQL, where the loser's WHERE is checked again against
the winner's row and no longer holds) or the write lock (SQLite).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.storage.models import IdNode

nodes_table = IdNode.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class NodeClaim:
    node: int
    # The previous holder minted ids only in milliseconds below this (unix ms).
    floor_ms: int


async def claim_node(
    connection: AsyncConnection, *, owner: str, now_ms: int, expires_at_ms: int
) -> NodeClaim | None:
    """Take a released node or the one whose lease lapsed longest ago; None if every
    node is held. The caller commits."""
    c = nodes_table.c
    # Released (its holder stopped minting, whatever the clocks say) or lapsed.
    free = or_(c.owner.is_(None), c.expires_at_ms < now_ms)
    lapsed = (
        select(c.node)
        .where(free)
        .order_by(c.expires_at_ms, c.node)
        .limit(1)
        # PostgreSQL: concurrent claimers pass over each other's rows instead of
        # queueing for the same one (SQLite renders nothing: it has one writer).
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await connection.execute(
        update(nodes_table)
        # Free again: should the row have been claimed while this statement waited
        # for its lock, PostgreSQL checks this against the new row and skips it.
        .where(c.node == lapsed, free)
        # On the right-hand side columns are the row's old values: the floor is the
        # previous holder's expiry.
        .values(owner=owner, floor_ms=c.expires_at_ms, expires_at_ms=expires_at_ms)
        .returning(c.node, c.floor_ms)
    )
    row = result.first()
    return None if row is None else NodeClaim(int(row.node), int(row.floor_ms))


async def renew_node(
    connection: AsyncConnection, *, node: int, owner: str, expires_at_ms: int
) -> bool:
    """Extend ``owner``'s lease; False if the node is no longer theirs."""
    c = nodes_table.c
    result = await connection.execute(
        update(nodes_table)
        .where(c.node == node, c.owner == owner)
        .values(expires_at_ms=expires_at_ms)
    )
    return result.rowcount == 1


async def release_node(connection: AsyncConnection, *, node: int, owner: str, last_ms: int) -> None:
    """Give the node back: free at once, its next holder minting from ``last_ms`` (the
    millisecond after the last id minted under it) on."""
    c = nodes_table.c
    await connection.execute(
        update(nodes_table)
        .where(c.node == node, c.owner == owner)
        .values(owner=None, expires_at_ms=last_ms)
    )

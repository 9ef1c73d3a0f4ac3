"""This process's lease on an id node number: claimed at start, renewed in the
background, given back at a clean stop (see gateway.ids for why)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ids import IdGenerator, unix_ms
from gateway.storage import nodes as store
from gateway.storage.db import begin_write

log = logging.getLogger(__name__)


class NoFreeNode(RuntimeError):
    """Every node number is leased to a live process."""


class NodeLease:
    """Keeps ``ids`` minting under a node number no other live process holds.

    Renewed every quarter of ``lease_seconds``, so a renewal may fail three times in a
    row (the database restarting, say) before the lease lapses; after a failure it is
    tried again every second. If the lease lapses anyway, ``ids`` refuses to mint until
    a renewal or a new claim succeeds: better a failed ingest than a repeated id.
    """

    def __init__(self, engine: AsyncEngine, ids: IdGenerator, *, lease_seconds: float) -> None:
        self._engine = engine
        self._ids = ids
        self._lease_ms = int(lease_seconds * 1000)
        self._renew_every = lease_seconds / 4
        self._retry_every = min(1.0, lease_seconds / 20)
        self.owner = f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(6)}"
        self.node: int | None = None
        self._expires_at_ms = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Claim a node. Without one (the database unreachable or not migrated yet)
        the process starts all the same, mints no ids, and keeps trying."""
        try:
            await self.renew()
        except Exception as exc:
            log.warning("no id node lease yet (%s: %s); retrying", type(exc).__name__, exc)
        self._task = asyncio.create_task(self._keep(), name="id-node-lease")

    async def renew(self) -> None:
        """Extend the lease on our node, or claim another if it is not ours any more."""
        now = unix_ms()
        expires = now + self._lease_ms
        claim: store.NodeClaim | None = None
        async with begin_write(self._engine) as connection:
            renewed = self.node is not None and await store.renew_node(
                connection, node=self.node, owner=self.owner, expires_at_ms=expires
            )
            if not renewed:
                claim = await store.claim_node(
                    connection, owner=self.owner, now_ms=now, expires_at_ms=expires
                )
        # Only once committed: until then the row may not say what memory would.
        self._expires_at_ms = expires
        if renewed:
            self._ids.extend(expires)
            return
        if claim is None:
            self._expires_at_ms = 0
            raise NoFreeNode("every id node number is leased to a live process")
        if self.node is not None:
            log.warning("id node %d was taken over; now node %d", self.node, claim.node)
        self.node = claim.node
        self._ids.take_node(claim.node, floor_ms=claim.floor_ms, until_ms=expires)

    async def state(self) -> str:
        """ "ok" while ids can be minted; otherwise why not, after one more try."""
        if self.node is not None and unix_ms() < self._expires_at_ms:
            return "ok"
        try:
            await self.renew()
        except Exception as exc:
            return f"no id node lease: {type(exc).__name__}"
        return "ok"

    async def _keep(self) -> None:
        wait = self._renew_every if self.node is not None else self._retry_every
        while True:
            await asyncio.sleep(wait)
            try:
                # A renewal stuck on a dead connection must not stop the next tries.
                await asyncio.wait_for(self.renew(), timeout=self._renew_every)
                wait = self._renew_every
            except Exception as exc:  # TimeoutError included
                log.warning("id node lease not renewed (%s: %s)", type(exc).__name__, exc)
                wait = self._retry_every

    async def close(self) -> None:
        """Stop renewing and give the node back, free for the next process at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        resume_at = self._ids.stop()
        if self.node is None:
            return
        try:
            async with begin_write(self._engine) as connection:
                await store.release_node(
                    connection, node=self.node, owner=self.owner, last_ms=resume_at
                )
        except Exception as exc:
            # It lapses on its own within the lease time.
            log.warning("id node %d not released (%s: %s)", self.node, type(exc).__name__, exc)
        self.node = None

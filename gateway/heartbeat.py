"""Worker heartbeats: each running delivery worker keeps a Redis key alive.

The key (``gateway:worker:<host>:<pid>:<random>``) is set every ``BEAT_SECONDS`` with
a time to live of three beats, so a worker that stops, is killed or loses Redis
disappears within ``TTL_SECONDS`` with nothing to clean up; `gateway doctor` lists the
keys alive. A worker that stops cleanly deletes its key at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

WORKER_KEY_PREFIX = "gateway:worker:"
BEAT_SECONDS = 5.0
TTL_SECONDS = 15


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """One live worker as its last heartbeat described it."""

    worker_id: str
    host: str
    pid: int
    started_at: str
    beat_at: str


@contextlib.asynccontextmanager
async def worker_heartbeat(
    redis: Redis,
    *,
    worker: asyncio.Future[Any] | None = None,
    beat_seconds: float = BEAT_SECONDS,
    ttl_seconds: int = TTL_SECONDS,
) -> AsyncIterator[str]:
    """Beat for as long as the block runs (and ``worker``, the worker's task, has not
    ended); yields the worker's id."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    key = WORKER_KEY_PREFIX + worker_id
    started_at = datetime.now(UTC).isoformat()

    async def beat() -> None:
        while worker is None or not worker.done():
            value = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": started_at,
                "beat_at": datetime.now(UTC).isoformat(),
            }
            try:
                await redis.set(key, json.dumps(value), ex=ttl_seconds)
            except (RedisError, OSError) as exc:
                log.warning("worker heartbeat not written (%s); trying again", exc)
            await asyncio.sleep(beat_seconds)
        with contextlib.suppress(RedisError, OSError):
            await redis.delete(key)

    task = asyncio.create_task(beat(), name="worker-heartbeat")
    try:
        yield worker_id
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(RedisError, OSError):
            await redis.delete(key)


async def live_workers(redis: Redis) -> list[WorkerBeat]:
    """The workers whose heartbeat has not expired, by id."""
    keys = sorted([key async for key in redis.scan_iter(match=WORKER_KEY_PREFIX + "*")])
    if not keys:
        return []
    beats: list[WorkerBeat] = []
    for key, value in zip(keys, await redis.mget(keys), strict=True):
        if value is None:
            continue  # expired between the scan and the read
        try:
            fields = json.loads(value)
            beats.append(
                WorkerBeat(
                    worker_id=(key.decode() if isinstance(key, bytes) else key).removeprefix(
                        WORKER_KEY_PREFIX
                    ),
                    host=str(fields["host"]),
                    pid=int(fields["pid"]),
                    started_at=str(fields["started_at"]),
                    beat_at=str(fields["beat_at"]),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue  # not a heartbeat of ours
    return beats

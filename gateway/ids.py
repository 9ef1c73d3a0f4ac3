"""Sortable 63-bit ids: milliseconds, then the process's node number, then a sequence.

Events are inserted in id order, which keeps the primary-key index append-only (a
random text key slowed inserts into a large table 4x) and makes "newest first" an
index scan. Node numbers come from Redis at start-up, so processes never collide.
"""

from __future__ import annotations

import secrets
import threading
import time

_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_NODE_BITS = 10
_SEQUENCE_BITS = 12
_MAX_SEQUENCE = (1 << _SEQUENCE_BITS) - 1
NODE_COUNT = 1 << _NODE_BITS


class IdGenerator:
    """Unique, increasing ids for one process (thread-safe)."""

    def __init__(self, node: int | None = None) -> None:
        self.node = secrets.randbelow(NODE_COUNT) if node is None else node % NODE_COUNT
        self._last_ms = 0
        self._sequence = 0
        self._lock = threading.Lock()

    def next_id(self) -> int:
        with self._lock:
            now = int(time.time() * 1000) - _EPOCH_MS
            if now <= self._last_ms:
                # Same millisecond (or the clock stepped back): keep counting from the
                # last one so ids never repeat or go backwards.
                now = self._last_ms
                self._sequence += 1
                if self._sequence > _MAX_SEQUENCE:
                    now += 1
                    self._sequence = 0
            else:
                self._sequence = 0
            self._last_ms = now
            return (
                (now << (_NODE_BITS + _SEQUENCE_BITS))
                | (self.node << _SEQUENCE_BITS)
                | self._sequence
            )

    def next_ids(self, count: int) -> list[int]:
        return [self.next_id() for _ in range(count)]


def id_floor_for_ms(unix_ms: int) -> int:
    """The smallest id that could be made at ``unix_ms``."""
    return max(unix_ms - _EPOCH_MS, 0) << (_NODE_BITS + _SEQUENCE_BITS)

"""Sortable 63-bit ids: milliseconds, then the process's node number, then a sequence.

Events are inserted in id order, which keeps the primary-key index append-only (a
random text key slowed inserts into a large table 4x) and makes "newest first" an
index scan. A process mints ids only under a node number it has leased in the database
(services.nodes), and only in the milliseconds its lease covers: the next holder of
that node starts after them, so two processes never mint the same id, whatever their
clocks or Redis say.
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


class NodeLeaseLost(RuntimeError):
    """This process holds no lease on a node number that covers the present, so it
    mints no ids: failing is better than minting another process's."""


def unix_ms() -> int:
    return int(time.time() * 1000)


class IdGenerator:
    """Unique, increasing ids for one process (thread-safe).

    ``until_ms`` (unix milliseconds) bounds the milliseconds it may use: a lease's
    expiry (see ``take_node``). None is no bound, for a process that is known to be
    alone on its database.
    """

    def __init__(self, node: int | None = None, *, until_ms: int | None = None) -> None:
        self.node = secrets.randbelow(NODE_COUNT) if node is None else node % NODE_COUNT
        self._last_ms = 0
        self._sequence = 0
        self._until = None if until_ms is None else until_ms - _EPOCH_MS
        self._lock = threading.Lock()

    @classmethod
    def unleased(cls) -> IdGenerator:
        """A generator that mints nothing until ``take_node`` gives it a node."""
        return cls(0, until_ms=0)

    def take_node(self, node: int, *, floor_ms: int, until_ms: int) -> None:
        """Mint under ``node`` from now on, in milliseconds from ``floor_ms`` (where its
        previous holder's stopped) up to, not including, ``until_ms``."""
        with self._lock:
            self.node = node % NODE_COUNT
            floor = floor_ms - _EPOCH_MS
            if floor > self._last_ms:
                # The next id is the first of the floor's millisecond (or a later one).
                self._last_ms, self._sequence = floor, -1
            self._until = until_ms - _EPOCH_MS

    def extend(self, until_ms: int) -> None:
        """The lease was renewed: mint up to ``until_ms``."""
        with self._lock:
            self._until = until_ms - _EPOCH_MS

    def stop(self) -> int:
        """Mint no more; returns the unix millisecond a next holder of the node may
        start at (the one after the last used)."""
        with self._lock:
            self._until = 0
            return self._last_ms + 1 + _EPOCH_MS

    def next_id(self) -> int:
        with self._lock:
            now = int(time.time() * 1000) - _EPOCH_MS
            sequence = 0
            if now <= self._last_ms:
                # Same millisecond (or the clock stepped back): keep counting from the
                # last one so ids never repeat or go backwards.
                now = self._last_ms
                sequence = self._sequence + 1
                if sequence > _MAX_SEQUENCE:
                    now += 1
                    sequence = 0
            if self._until is not None and now >= self._until:
                raise NodeLeaseLost(
                    "this process's lease on its id node number has lapsed (the database "
                    "could not be reached to renew it): no ids until it is renewed"
                )
            self._last_ms, self._sequence = now, sequence
            return (now << (_NODE_BITS + _SEQUENCE_BITS)) | (self.node << _SEQUENCE_BITS) | sequence

    def next_ids(self, count: int) -> list[int]:
        return [self.next_id() for _ in range(count)]


def id_floor_for_ms(unix_ms: int) -> int:
    """The smallest id that could be made at ``unix_ms``."""
    return max(unix_ms - _EPOCH_MS, 0) << (_NODE_BITS + _SEQUENCE_BITS)


def ms_of_id(id_: int) -> int:
    """The unix millisecond ``id_`` was minted in (the inverse of id_floor_for_ms)."""
    return (id_ >> (_NODE_BITS + _SEQUENCE_BITS)) + _EPOCH_MS

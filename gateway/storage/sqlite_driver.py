"""aiosqlite, with each statement one trip to the driver's thread instead of four.

SQLAlchemy's aiosqlite adapter asks for a cursor, executes, fetches the rows and closes
the cursor: four hand-offs to the connection's thread and back, each a thread wake-up
and an event-loop callback. Under load that, not SQLite, was the cost of a small
transaction (a delivery claim is three statements, twelve hops). The cursor here is
made, executed, read to the end and closed in the one call to the thread, and keeps
what SQLAlchemy reads afterwards (description, rowcount, lastrowid). Server-side
(streaming) cursors are not used by the gateway and are not offered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import aiosqlite
from aiosqlite.context import contextmanager

T = TypeVar("T")


class OneTripCursor(aiosqlite.Cursor):
    """A cursor whose statement runs, and whose rows are fetched, in one trip."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        # No sqlite3 cursor yet: it is made in the thread, with the statement.
        super().__init__(conn, None)  # type: ignore[arg-type]
        self._rows: list[Any] = []
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    def _run(self, method: str, sql: str, parameters: Any) -> None:
        """In the connection's thread: execute, fetch everything, close."""
        cursor = self._conn._conn.cursor()
        try:
            getattr(cursor, method)(sql, parameters)
            self._description = cursor.description
            self._rows = cursor.fetchall() if cursor.description else []
            self._rowcount = cursor.rowcount
            self._lastrowid = cursor.lastrowid
        finally:
            cursor.close()

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> OneTripCursor:
        parameters = [] if parameters is None else parameters
        await self._conn._execute(self._run, "execute", sql, parameters)  # type: ignore[no-untyped-call]
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> OneTripCursor:
        await self._conn._execute(self._run, "executemany", sql, parameters)  # type: ignore[no-untyped-call]
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self._arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    @property
    def description(self) -> Any:
        return self._description


class OneTripConnection(aiosqlite.Connection):
    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in the connection's thread, in whatever transaction is
        open there: several statements for one trip."""
        result: T = await self._execute(work, self._conn)  # type: ignore[no-untyped-call]
        return result

    def run_inline(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` here, on the calling (event loop) thread, blocking it.

        For short work only: a trip to the connection's thread costs about a
        millisecond on a busy two-core machine (the thread waits to be scheduled and
        for the GIL), more than inserting a small group commit. Safe because whoever
        holds this connection has awaited everything it sent to the thread, which is
        therefore idle; the sqlite3 connection is opened with check_same_thread off.
        """
        return work(self._conn)

    async def commit(self) -> None:
        # Nothing open (work run here committed its own transaction): no trip.
        if self._connection is not None and not self._connection.in_transaction:
            return
        await super().commit()

    async def rollback(self) -> None:
        if self._connection is not None and not self._connection.in_transaction:
            return
        await super().rollback()

    @contextmanager  # awaitable and an async context manager, as aiosqlite's own
    async def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)


def connect(database: str, *args: Any, **kwargs: Any) -> OneTripConnection:
    """For SQLAlchemy's ``async_creator_fn``: what ``aiosqlite.connect`` would be."""

    def connector() -> sqlite3.Connection:
        # Used from the event loop's thread too (run_inline), never at the same time.
        kwargs["check_same_thread"] = False
        opened: sqlite3.Connection = sqlite3.connect(database, *args, **kwargs)
        return opened

    connection: OneTripConnection = OneTripConnection(connector, iter_chunk_size=64)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own connect
    return connection

"""The engine (one per process) and bringing a database to the newest schema."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from gateway.storage.partitions import ensure_partitions

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIGRATIONS = Path(__file__).parent / "migrations"


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


class _Unindexed(FunctionElement[Any]):
    inherit_cache = True


@compiles(_Unindexed)
def _as_is(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_Unindexed, "sqlite")
def _unary_plus(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


def unindexed(column: ColumnElement[T]) -> ColumnElement[T]:
    """``column`` in a condition that SQLite's planner must not look it up by.

    Without statistics, SQLite may drive ``id IN (...) AND status IN (...)`` by an index
    on status, reading every open row for a handful of ids (9 ms a claim at 20,000
    due, against 0.08 ms by id). Unary + (SQLite's documented way) takes the term out of
    its choice; other databases get the column as it is.
    """
    return cast(ColumnElement[T], _Unindexed(column))


def dialect_insert(connection: AsyncConnection, table: Any) -> Any:
    """INSERT with ON CONFLICT support for the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# How long a SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL is durable across process crashes in WAL mode; only a power cut may lose
    # the last transactions, the usual trade for an embedded store.
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA cache_size=-65536",
    # Temporary files in memory: a multi-row INSERT with constraints that may abort
    # keeps a statement journal, and RETURNING its rows; as files they were an open,
    # unlink and close per group commit, and their writes.
    "PRAGMA temp_store=MEMORY",
)


class WriteLock:
    """An asyncio lock that says how many wait for it."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.waiting = 0

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1

    async def __aexit__(self, *_exc: object) -> None:
        self._lock.release()


_write_locks: weakref.WeakKeyDictionary[Engine, WriteLock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def begin_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes.

    SQLite has one writer at a time. Left to its busy handler, fifty concurrent writers
    in one process sleep and retry with growing back-off (deliveries fell to ~50/s);
    taking turns on an asyncio lock first keeps them in line at full speed. PostgreSQL
    needs no such thing.
    """
    if not is_sqlite(engine):
        async with open_connection(engine) as connection, connection.begin():
            yield connection
        return
    async with write_lock(engine), open_connection(engine) as connection, connection.begin():
        yield connection


def write_lock(engine: AsyncEngine) -> WriteLock:
    """The lock SQLite writers of this process take turns on (begin_write)."""
    lock = _write_locks.get(engine.sync_engine)
    if lock is None:
        lock = _write_locks[engine.sync_engine] = WriteLock()
    return lock


@contextlib.asynccontextmanager
async def open_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.connect()``, without the wait SQLAlchemy's context adds on exit.

    SQLAlchemy's ``async with engine.connect()`` closes the connection in a task of its
    own, so that a cancellation cannot abandon the close halfway; the caller then waits
    for the event loop to come round to that task, which under load is a millisecond or
    two after every other ready callback. Once its transaction has been committed or
    rolled back, closing is a pool check-in with nothing to send (SQLite: no reset on
    return; PostgreSQL: the pool skips its reset after a finished transaction), so it
    completes here, at once.
    """
    connection = await engine.connect()
    try:
        yield connection
    finally:
        await connection.close()


class ReadTimeout(Exception):
    """A read ran past its time bound and the database stopped it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the read ran past its bound of {seconds:g} s and was stopped")
        self.seconds = seconds


# PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout.
_QUERY_CANCELED = "57014"
# Engines whose connections carry a statement_timeout of their own (make_engine).
_statement_timeouts: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def bounded_read(engine: AsyncEngine, seconds: float) -> AsyncIterator[AsyncConnection]:
    """A connection for reads that the database stops after ``seconds``: ReadTimeout.

    The bound is the database's own, so a statement stops even when its caller has gone
    (a client that disconnects leaves no query behind). PostgreSQL: the engine's own
    statement_timeout if it has one no longer than ``seconds`` (make_engine: nothing
    to send per read), else one local to the read's transaction (one more round trip:
    0.66 ms of a 2.4 ms read at p50 on the shared two-core box). SQLite: a timer on the
    event loop interrupts the connection (sqlite3_interrupt is made to be called from
    another thread); nothing is sent when the read ends in time (0.05 ms a read).
    """
    if not is_sqlite(engine):
        try:
            # Connecting is inside: a new connection's first queries (the driver's
            # set-up) are under the engine's bound too.
            async with open_connection(engine) as connection:
                if _statement_timeouts.get(engine.sync_engine, float("inf")) > seconds:
                    await connection.exec_driver_sql(
                        f"SET LOCAL statement_timeout = {max(int(seconds * 1000), 1)}"
                    )
                yield connection
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == _QUERY_CANCELED:
                raise ReadTimeout(seconds) from exc
            raise
        return
    async with open_connection(engine) as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None  # checked out: it is connected
        deadline = _SqliteDeadline(driver, seconds)
        try:
            yield connection
        except DBAPIError as exc:
            if deadline.fired:
                raise ReadTimeout(seconds) from exc
            raise
        finally:
            # Before the connection goes back to the pool: a late interrupt must not
            # reach another caller's statement.
            deadline.cancel()


class _SqliteDeadline:
    """Interrupts an aiosqlite connection from ``seconds`` on, until cancelled.

    aiosqlite's interrupt() calls sqlite3's at once, from the event loop's thread,
    while the statement runs on the connection's own. It stops only the statement
    running as it is made: one the read had yet to start (its next, or one still on
    its way to the connection's thread) would run to its end. So it is made again
    every millisecond until the read gives up.
    """

    def __init__(self, driver: Any, seconds: float) -> None:
        self._driver = driver
        self._event_loop = asyncio.get_running_loop()
        self._interrupts: set[asyncio.Future[None]] = set()
        self.fired = False
        self._timer = self._event_loop.call_later(seconds, self._interrupt)

    def _interrupt(self) -> None:
        self.fired = True
        interrupt = asyncio.ensure_future(self._driver.interrupt())
        self._interrupts.add(interrupt)
        interrupt.add_done_callback(self._interrupts.discard)
        self._timer = self._event_loop.call_later(0.001, self._interrupt)

    def cancel(self) -> None:
        self._timer.cancel()


def open_sqlite(database: str) -> sqlite3.Connection:
    """A plain sqlite3 connection to ``database`` with the engine's pragmas, in
    autocommit mode: whoever uses it begins and ends its transactions explicitly."""
    connection = sqlite3.connect(
        database,
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        # A group commit's statements have a text for each number of rows
        # (storage.events.write): keep those of the usual batch sizes prepared.
        cached_statements=512,
    )
    try:
        for pragma in SQLITE_PRAGMAS:
            connection.execute(pragma)
    except BaseException:
        connection.close()
        raise
    return connection


class SqliteThread:
    """A plain sqlite3 connection of its own, used from one dedicated thread only.

    For work that is several statements and should be one hand-off (the ingest
    writer's group commit: BEGIN IMMEDIATE, inserts, COMMIT): the event loop's thread
    runs no statement and never waits for SQLite's lock; the thread does, up to the
    busy timeout. Work begins and ends its own transactions; one left open is rolled
    back (it would hold the write lock for good). ``transaction`` runs work written
    with SQLAlchemy on the same connection, in a transaction it begins and ends.
    """

    def __init__(self, database: str) -> None:
        self._database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._sqlite: sqlite3.Connection | None = None
        self._engine: Engine | None = None  # SQLAlchemy's, over self._sqlite

    @staticmethod
    def for_engine(engine: AsyncEngine) -> SqliteThread | None:
        """One for the engine's database file; None where a second connection would
        not see the same database (in memory)."""
        database = engine.url.database
        if not is_sqlite(engine) or not database or database == ":memory:":
            return None
        if database.startswith("file:") or engine.url.query:
            return None  # URI options: left to the engine's own connections
        return SqliteThread(database)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in the thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` in the thread on a SQLAlchemy connection, in one
        transaction that takes SQLite's write lock as it begins (BEGIN IMMEDIATE) and
        commits unless ``work`` raises: statements written once for both databases,
        all of them in one hand-off (each through aiosqlite is several)."""
        return await self.run(functools.partial(self._in_transaction, work))

    def _in_transaction(self, work: Callable[[Connection], T], sqlite: sqlite3.Connection) -> T:
        if self._engine is None:
            self._engine = _engine_over(sqlite)
        with self._engine.begin() as connection:
            return work(connection)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._sqlite is None:
            self._sqlite = open_sqlite(self._database)
        connection = self._sqlite
        try:
            return work(connection)
        finally:
            if connection.in_transaction:
                log.warning("work on the SQLite thread left its transaction open")
                connection.execute("ROLLBACK")

    def _close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    async def close(self) -> None:
        """Close the connection (after any work still queued) and end the thread."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


def _engine_over(sqlite: sqlite3.Connection) -> Engine:
    """A SQLAlchemy engine whose one connection is ``sqlite`` (autocommit mode).

    SQLAlchemy's own begin sends nothing to the driver; the documented recipe for
    pysqlite (its "begin" event) makes it BEGIN IMMEDIATE, and its commit and rollback
    end that transaction.
    """
    engine = create_engine("sqlite://", creator=lambda: sqlite, poolclass=StaticPool)

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def plain_sqlite(connection: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``connection``, if that is what it is: a
    SqliteThread's ``transaction`` (through aiosqlite it is not). Statements sent to it
    straight skip SQLAlchemy's work per statement, and run in the same transaction."""
    driver = connection.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None


@functools.cache
def marks(count: int) -> str:
    """``count`` sqlite3 placeholders."""
    return ", ".join("?" * count)


class PlainRows:
    """A table's rows on a plain sqlite3 connection, with the values SQLAlchemy's own
    types make (times stored as it stores them, and read back as it reads them)."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self.columns = [column.name for column in table.c]
        self.column_list = ", ".join(self.columns)
        self._binds: dict[str, Callable[[Any], Any]] = {}
        self._results: list[Callable[[Any], Any] | None] = []
        for column in table.c:
            impl = column.type.dialect_impl(dialect)
            if bind := impl.bind_processor(dialect):
                self._binds[column.name] = bind
            self._results.append(impl.result_processor(dialect, None))

    def bind(self, column: str, value: Any) -> Any:
        """``value`` as the column stores it."""
        process = self._binds.get(column)
        return value if process is None else process(value)

    def read(self, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """Rows of all the table's columns, in its order, as SQLAlchemy reads them."""
        return [
            {
                name: value if process is None else process(value)
                for name, process, value in zip(self.columns, self._results, row, strict=True)
            }
            for row in rows
        ]


@functools.lru_cache(maxsize=64)
def plain_rows(table: Table, dialect: Dialect) -> PlainRows:
    return PlainRows(table, dialect)


class WriteTransactions:
    """Write transactions written against SQLAlchemy's sync ``Connection``, for work of
    several statements that runs often (a delivery's claim and its result).

    SQLite (a file): on a SqliteThread, in one hand-off, taking turns with the process's
    other writers (write_lock). PostgreSQL (and SQLite in memory): on the async engine
    (``run_sync``), as any other transaction.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite_worker = SqliteThread.for_engine(engine)

    async def run(self, work: Callable[[Connection], T]) -> T:
        if self._sqlite_worker is None:
            async with begin_write(self._engine) as connection:
                return await connection.run_sync(work)
        async with write_lock(self._engine):
            return await self._sqlite_worker.transaction(work)

    async def close(self) -> None:
        if self._sqlite_worker is not None:
            await self._sqlite_worker.close()


def make_engine(
    url: str, *, pool_size: int = 10, statement_timeout_seconds: float | None = None
) -> AsyncEngine:
    """An async engine; SQLite in WAL mode so readers never wait for the writer.

    ``statement_timeout_seconds`` (PostgreSQL): every statement on the engine's
    connections is stopped after that long, a setting made once per connection; an
    engine for reads only (see bounded_read).
    """
    if url.startswith("sqlite"):
        # Each aiosqlite connection is a thread polling for work; writers take turns
        # anyway (begin_write), so a few connections serve best: 15 cost a quarter
        # of the process's CPU in thread switching.
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            pool_size=4,
            max_overflow=2,
            pool_timeout=60,
            # The pool's rollback on return is a hop to the driver's thread for
            # nothing: a connection closes its own open transaction before it goes
            # back (and a read leaves none open).
            pool_reset_on_return=None,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        return engine
    if url.startswith("postgresql") and not url.startswith("postgresql+asyncpg://"):
        # Ingest's statements are written for asyncpg ($1 placeholders, its codecs).
        raise ValueError("PostgreSQL is reached through asyncpg: use a postgresql:// URL")
    # No pre-ping: it costs a round trip on every checkout (every query and every group
    # commit). Connections are recycled instead, and a dropped one fails one transaction,
    # which the caller sees (ingest answers 5xx, the provider retries; a delivery's job
    # fails and its lease lapses into a retry).
    connect_args: dict[str, Any] = {}
    if statement_timeout_seconds is not None:
        milliseconds = max(int(statement_timeout_seconds * 1000), 1)
        connect_args["server_settings"] = {"statement_timeout": str(milliseconds)}
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    if statement_timeout_seconds is not None:
        _statement_timeouts[engine.sync_engine] = statement_timeout_seconds
    return engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The schema revision this code needs (the newest migration)."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


async def schema_state(engine: AsyncEngine) -> str:
    """ "ok" unless the database's schema is older than this code needs; then what to
    do about it. A database not brought up to date fails in ways a client cannot tell
    apart from a bug. A newer schema, one this code does not know (migrated ahead of a
    rolling upgrade), is ok: migrations only add what older code does not use."""
    async with engine.connect() as connection:
        current = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    head = head_revision()
    known = {script.revision for script in _scripts().walk_revisions()}
    if current == head or (current is not None and current not in known):
        return "ok"
    return f"schema at revision {current or 'none'}, needs {head}: run gateway migrate"


async def migrate(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema (idempotent), with its partitions made
    ahead (PostgreSQL: storage.partitions)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
        await ensure_partitions(connection, today=datetime.now(UTC).date())

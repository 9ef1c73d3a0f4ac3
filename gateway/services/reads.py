"""Reads on behalf of API callers, each under GATEWAY_QUERY_TIMEOUT_SECONDS.

The database itself stops a read past its bound (storage.db.bounded_read), so a caller
who gives up leaves no query behind; the caller is told with QueryTimeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.storage.db import ReadTimeout, bounded_read


class QueryTimeout(Exception):
    """A read ran past GATEWAY_QUERY_TIMEOUT_SECONDS and was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the query ran past its time bound of {seconds:g} s "
            "(GATEWAY_QUERY_TIMEOUT_SECONDS) and was stopped: narrow the filter"
        )
        self.seconds = seconds


@contextlib.asynccontextmanager
async def bounded(engine: AsyncEngine, seconds: float) -> AsyncIterator[AsyncConnection]:
    """A connection for an API read that the database stops after ``seconds``."""
    try:
        async with bounded_read(engine, seconds) as connection:
            yield connection
    except ReadTimeout:
        raise QueryTimeout(seconds) from None

"""Events in SQL: the only package that knows how events are laid out.

``rows``: the tables and the conversion of an event to a row and back; ``write``: the
group commit's inserts; ``read``: the queries.
"""

from __future__ import annotations

from gateway.storage.events.read import find_events, get_events, get_events_sync
from gateway.storage.events.rows import (
    NewEvent,
    PreparedEvent,
    Unstorable,
    counts_table,
    events_table,
    prepare_events,
    tags_table,
)
from gateway.storage.events.write import (
    Inserted,
    NotAlone,
    SqliteBatch,
    insert_events,
    insert_prepared,
    refused_by_database,
    write_alone,
)

__all__ = [
    "Inserted",
    "NewEvent",
    "NotAlone",
    "PreparedEvent",
    "SqliteBatch",
    "Unstorable",
    "counts_table",
    "events_table",
    "find_events",
    "get_events",
    "get_events_sync",
    "insert_events",
    "insert_prepared",
    "prepare_events",
    "refused_by_database",
    "tags_table",
    "write_alone",
]

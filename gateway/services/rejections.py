"""Rejected payloads: what ingest could not store, kept so it can be replayed.

A refused request is kept whole, a refused event of a readable request alone (as JSON),
and of a body over the limit only a prefix, with its true size. The ingest token is
never kept: paths are stored as ``/ingest/{provider}/{token}[/{event}]``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.events import Provider
from gateway.ids import IdGenerator
from gateway.providers import jangomail
from gateway.providers.base import IngestRequest, PayloadError
from gateway.services.ingest import IngestResult, IngestWriter, parse_request
from gateway.services.reads import bounded
from gateway.storage import accounts as account_store
from gateway.storage import rejections as rejection_store
from gateway.storage.db import begin_write

log = logging.getLogger(__name__)

TOKEN_PLACEHOLDER = "{token}"  # noqa: S105  (what stands where the token was)


def unknown_route_event(provider: Provider, route_event: str | None) -> str | None:
    """Why a route's event cannot be read, or None: JangoMail's route names its event,
    and one that is none of its seven would be stored as UNKNOWN for ever."""
    if provider is not Provider.JANGOMAIL or jangomail.canonical_event(route_event or ""):
        return None
    return f"unknown JangoMail event {route_event!r}: use one of {', '.join(jangomail.EVENTS)}"


def storable(text: str) -> str:
    """``text`` as both databases and JSON can hold it: a reason may quote what was
    sent, and neither a NUL (PostgreSQL) nor a lone surrogate (UTF-8) can be stored or
    answered; each is written as its escape."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def kept_path(provider: Provider, route_event: str | None) -> str:
    """The ingest path as it is kept: the token replaced, the route's event quoted."""
    path = f"/ingest/{provider.value.lower()}/{TOKEN_PLACEHOLDER}"
    if route_event is not None:
        path += "/" + urllib.parse.quote(route_event, safe="")
    return path


def _route_event(provider: Provider, path: str) -> str | None:
    """The event of a kept JangoMail path ``/ingest/jangomail/{token}/{event}``."""
    parts = path.split("/")
    if provider is not Provider.JANGOMAIL or len(parts) < 5:
        return None
    return urllib.parse.unquote(parts[4])


@dataclass(frozen=True, slots=True)
class IngestCall:
    """The request a refusal comes from, as it is kept: everything but its body."""

    account_id: int
    source_id: int
    provider: Provider
    method: str
    route_event: str | None
    query: str
    content_type: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """One thing a request could not have stored: the whole request (``index`` None)
    or its event at ``index``; ``body`` is what a replay reads (a prefix when ``size``
    says the body was larger)."""

    status: int
    reason: str
    body: bytes
    index: int | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replaying one kept item did: the events stored (or found already stored),
    and why what is left still cannot be read."""

    payload: dict[str, object]
    result: IngestResult | None
    error: str | None = None


class RejectedPayloads:
    """Keeps what ingest refused, with the reason, for replay.

    A replay reads the kept item again with its source's settings as they are now
    (a JangoMail parameter renamed, a time zone fixed, an adapter that learned a new
    quirk) and stores what it carries; dedupe keys make a second replay a no-op.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        writer: IngestWriter,
        *,
        read_timeout: float = 10.0,
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._writer = writer
        self._read_timeout = read_timeout  # of rejectedPayloads (reads.bounded)

    async def keep(self, call: IngestCall, refusals: Sequence[Refusal]) -> list[int]:
        """Keep ``refusals`` of one request, in one transaction; returns their ids."""
        if not refusals:
            return []
        now = datetime.now(UTC)
        ids = [self._ids.next_id() for _ in refusals]
        rows = [
            {
                "id": row_id,
                "account_id": call.account_id,
                "source_id": call.source_id,
                "provider": call.provider.value,
                "method": call.method,
                "path": kept_path(call.provider, call.route_event),
                "query": call.query,
                "content_type": storable(call.content_type),
                "body": refusal.body,
                "size": len(refusal.body) if refusal.size is None else refusal.size,
                "event_index": refusal.index,
                "status": refusal.status,
                "reason": storable(refusal.reason),
                "received_at": now,
            }
            for row_id, refusal in zip(ids, refusals, strict=True)
        ]
        async with begin_write(self._engine) as connection:
            await rejection_store.save_rejected(connection, rows)
        return ids

    async def recent(
        self, account_id: int, *, limit: int, before_id: int | None = None
    ) -> list[dict[str, object]]:
        async with bounded(self._engine, self._read_timeout) as connection:
            return await rejection_store.list_rejected(
                connection, account_id=account_id, limit=limit, before_id=before_id
            )

    async def replay(self, account_id: int, rejected_id: int) -> ReplayOutcome | None:
        """Read a kept item again and store its events; None if the account has no
        such item. It is marked replayed once nothing in it is refused any more."""
        async with self._engine.connect() as connection:
            kept = await rejection_store.get_rejected(
                connection, account_id=account_id, rejected_id=rejected_id
            )
            source = (
                None
                if kept is None or kept["source_id"] is None
                else await account_store.get_source(
                    connection, account_id=account_id, source_id=int(kept["source_id"])
                )
            )
        if kept is None:
            return None
        if source is None:
            return ReplayOutcome(kept, None, "its ingest source has been deleted")
        body = bytes(cast(bytes, kept["body"]))
        size = kept.get("size")
        if isinstance(size, int) and size > len(body):
            return ReplayOutcome(
                kept, None, f"only the first {len(body)} of its {size} bytes were kept"
            )
        provider = Provider(source.provider)
        route_event = _route_event(provider, str(kept["path"]))
        if (unknown := unknown_route_event(provider, route_event)) is not None:
            return ReplayOutcome(kept, None, unknown)
        request = IngestRequest(
            method=str(kept["method"]),
            body=body,
            content_type=str(kept["content_type"]),
            query=urllib.parse.parse_qsl(str(kept["query"]), keep_blank_values=True),
            route_event=route_event,
            received_at=cast(datetime, kept["received_at"]),
        )
        try:
            parsed = parse_request(provider, request, source)
        except PayloadError as problem:
            return ReplayOutcome(kept, None, problem.message)
        except Exception as exc:  # an adapter's defect: see gateway.api.ingest
            log.exception("the %s adapter failed replaying %s", provider.value, rejected_id)
            return ReplayOutcome(
                kept, None, f"the gateway could not read it ({type(exc).__name__})"
            )
        try:
            result = await self._writer.write(account_id, source.id, parsed.events)
        except (DataError, IntegrityError, OverflowError) as exc:
            return ReplayOutcome(kept, None, f"the database refused its events ({exc!r})")
        if parsed.refused:
            return ReplayOutcome(kept, result, "; ".join(r.reason for r in parsed.refused))
        now = datetime.now(UTC)
        async with begin_write(self._engine) as connection:
            await rejection_store.mark_replayed(connection, rejected_id=rejected_id, at=now)
        return ReplayOutcome({**kept, "replayed_at": now}, result)

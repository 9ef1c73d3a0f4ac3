"""Ingest routes: POST /ingest/brevo/{token}, GET|POST /ingest/jangomail/{token}/{event},
POST /ingest/smtpeter/{token}.

Read the body (bounded), let the provider's adapter parse it event by event, store the
events it could read and keep each one it could not, answer with counts. A provider
that discards a refused batch (Brevo) must never lose the good events in it, so a
readable body is answered 200 with what was refused listed; only a body that cannot be
read at all is answered 4xx. Everything refused is kept for replay.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import tracing
from gateway.api.responses import JSON, UNAVAILABLE, answered, basic_credentials, error
from gateway.domain.events import NormalizedEvent, Provider
from gateway.domain.jsontext import json_bytes
from gateway.providers.base import IngestRequest, PayloadError
from gateway.providers.registry import provider_named
from gateway.runtime import Services
from gateway.services.ingest import IngestResult, parse_request
from gateway.services.rejections import IngestCall, Refusal, storable, unknown_route_event
from gateway.storage.accounts import SourceRecord

log = logging.getLogger(__name__)

# Of a body over the limit, this much is kept (with its true size): enough to see what
# was sent, bounded whatever was sent.
KEPT_PREFIX_BYTES = 64 * 1024
# Past the limit the rest of a body of no declared length is read (and dropped) to
# count its size, up to this many times the limit; beyond, the count is a lower bound.
_COUNTED_LIMITS = 16
# The most stored event ids an ingest span names.
TRACED_IDS = 100
# The status a refused event of a readable request is kept with: what it alone would
# have been answered.
_REFUSED_EVENT_STATUS = 422


@dataclass(frozen=True, slots=True)
class _Body:
    """A request's body, or past the limit its first bytes; ``size`` is its size."""

    data: bytes
    size: int

    def over(self, limit: int) -> bool:
        return self.size > limit


async def _read_body(request: Request, limit: int) -> _Body:
    """The body, read as it streams in; past ``limit`` only its first bytes are held."""
    declared = request.headers.get("content-length", "")
    declared_size = int(declared) if declared.isdigit() else None
    # Declared over the limit: its first bytes are all that will be kept.
    hold = KEPT_PREFIX_BYTES if declared_size is not None and declared_size > limit else limit
    held = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= hold:
            held += chunk
            continue
        if len(held) < KEPT_PREFIX_BYTES:
            held += chunk[: KEPT_PREFIX_BYTES - len(held)]
        del held[KEPT_PREFIX_BYTES:]
        if declared_size is not None or size > _COUNTED_LIMITS * limit:
            break
    if declared_size is not None and declared_size > size:
        size = declared_size
    return _Body(bytes(held), size)


async def ingest(request: Request) -> Response:
    # The route's template names the span, never the path: the path holds the token.
    route = INGEST_EVENT_ROUTE if "event" in request.path_params else INGEST_ROUTE
    with tracing.span(f"{request.method} {route}", {"http.route": route}, kind="server"):
        response = await _ingest(request)
        tracing.annotate({"http.response.status_code": response.status_code})
        return response


@answered
async def _ingest(request: Request) -> Response:
    services: Services = request.app.state.services
    provider = provider_named(request.path_params["provider"])
    if provider is None:
        return error(404, f"unknown provider {request.path_params['provider']!r}")
    # Named once known: whatever else stands in the path may be a misplaced token.
    tracing.annotate({"gateway.provider": provider.value.lower()})
    route_event: str | None = request.path_params.get("event")
    if provider is Provider.JANGOMAIL:
        if route_event is None:
            return error(404, "JangoMail events go to /ingest/jangomail/{token}/{event}")
    elif route_event is not None:
        return error(
            404, f"{provider.value.lower()} events go to /ingest/{provider.value.lower()}/{{token}}"
        )
    elif request.method != "POST":
        return error(405, f"{provider.value.lower()} events are POSTed")
    # Unknown tokens are refused without keeping the body: storing what anonymous
    # callers send would let anyone fill the disk.
    source = await services.accounts.source_for_token(request.path_params["token"])
    if source is None or source.provider != provider.value:
        return error(404, f"no {provider.value.lower()} ingest source has this token")
    # Like an unknown token, a request without the source's credentials is not kept.
    if not await services.accounts.basic_auth_accepted(
        source, basic_credentials(request.headers.get("authorization"))
    ):
        services.metrics.inc("gateway_ingest_unauthorized_total", provider=provider.value)
        answer = error(
            401,
            "this ingest source requires HTTP Basic credentials "
            "(user:password@ in the URL given to the provider); none or wrong ones were sent",
        )
        answer.headers["www-authenticate"] = 'Basic realm="gateway ingest", charset="UTF-8"'
        return answer

    call = IngestCall(
        account_id=source.account_id,
        source_id=source.id,
        provider=provider,
        method=request.method,
        route_event=route_event,
        # The query as sent (ASGI's query_string), without building the whole URL.
        query=request.scope.get("query_string", b"").decode("utf-8", "replace"),
        content_type=request.headers.get("content-type", ""),
    )
    limit = services.settings.max_body_bytes
    body = await _read_body(request, limit)
    if (unknown := unknown_route_event(provider, route_event)) is not None:
        return await _refuse_whole(services, call, body, PayloadError(unknown, status=404))
    if body.over(limit):
        problem = PayloadError(
            f"body of {body.size} bytes is over the limit of {limit}; "
            f"its first {len(body.data)} bytes are kept",
            status=413,
        )
        return await _refuse_whole(services, call, body, problem)
    try:
        events, refusals = _parse(provider, request, body.data, source)
    except PayloadError as problem:
        return await _refuse_whole(services, call, body, problem)

    try:
        result = await services.writer.write(source.account_id, source.id, events)
    except UNAVAILABLE:
        raise  # 503: the provider sends it again
    except Exception as exc:
        # The database refused what was read (a value it cannot hold): keep the request
        # whole, for a replay once the cause is mended, rather than fail it.
        log.warning("could not store %s events of source %s: %r", provider.value, source.id, exc)
        result = IngestResult(0, 0, ())
        reason = f"the database refused this request's events ({type(exc).__name__})"
        refusals = [Refusal(_REFUSED_EVENT_STATUS, reason, body.data)]
    # Events the store could not hold (a value the database refuses) are kept and
    # answered like the events the adapter refused.
    refusals += _unstored(provider, events, refusals, result, body.data)
    tracing.annotate(
        {
            "gateway.events.read": len(events),
            "gateway.events.stored": result.stored,
            "gateway.events.duplicates": result.duplicates,
            "gateway.events.refused": len(refusals),
            # What a delivery's span is found by (its gateway.event.id); bounded.
            "gateway.event.ids": list(result.ids[:TRACED_IDS]),
        }
    )
    await services.rejections.keep(call, refusals)
    if refusals:
        log.info("kept %d refused %s events of source %s", len(refusals), provider.value, source.id)
        services.metrics.ingest_refused(provider.value, _REFUSED_EVENT_STATUS, len(refusals))
    return JSON(
        {
            "stored": result.stored,
            "duplicates": result.duplicates,
            "ids": [str(event_id) for event_id in result.ids],
            "rejected": [{"index": r.index, "reason": storable(r.reason)} for r in refusals],
        }
    )


def _unstored(
    provider: Provider,
    events: list[NormalizedEvent],
    refused: list[Refusal],
    result: IngestResult,
    body: bytes,
) -> list[Refusal]:
    """The writer's failed events as refusals, each at its position in the request.

    Each element of a request that is not refused is one event, in order, so the
    events' positions are the request's positions less the refused ones. A failed
    event is kept as its own payload (JangoMail's request is one event: it is kept
    whole), replayable once the cause is mended."""
    if not result.failed:
        return []
    taken = {refusal.index for refusal in refused}
    positions = (index for index in itertools.count() if index not in taken)
    at = [next(positions) for _ in events]
    return [
        Refusal(
            _REFUSED_EVENT_STATUS,
            f"event[{at[index]}]: {reason}",
            body if provider is Provider.JANGOMAIL else json_bytes(events[index].raw),
            at[index],
        )
        for index, reason in result.failed
    ]


def _parse(
    provider: Provider, request: Request, body: bytes, source: SourceRecord
) -> tuple[list[NormalizedEvent], list[Refusal]]:
    """The request's events and what of it is refused; PayloadError if the body cannot
    be read at all.

    An adapter failing in a way it did not foresee has met input nobody thought of,
    not a bad request: the request is refused whole, kept, and answered 200 (so that
    the provider does not discard it), for a replay once the adapter is mended."""
    ingest_request = IngestRequest(
        method=request.method,
        body=body,
        content_type=request.headers.get("content-type", ""),
        # Only JangoMail reads a query string; parsing one is not free.
        query=request.query_params.multi_items() if provider is Provider.JANGOMAIL else [],
        route_event=request.path_params.get("event"),
        received_at=datetime.now(UTC),
    )
    try:
        parsed = parse_request(provider, ingest_request, source)
    except PayloadError:
        raise
    except Exception as exc:
        log.exception("the %s adapter failed on a request of source %s", provider.value, source.id)
        reason = f"the gateway could not read this request ({type(exc).__name__}); kept for replay"
        return [], [Refusal(_REFUSED_EVENT_STATUS, reason, body)]
    return parsed.events, [
        Refusal(_REFUSED_EVENT_STATUS, refused.reason, refused.body, refused.index)
        for refused in parsed.refused
    ]


async def _refuse_whole(
    services: Services, call: IngestCall, body: _Body, problem: PayloadError
) -> Response:
    """Keep a request that cannot be read at all, and answer why."""
    log.info("refused %s ingest for source %s: %s", call.provider.value, call.source_id, problem)
    await services.rejections.keep(
        call, [Refusal(problem.status, problem.message, body.data, size=body.size)]
    )
    services.metrics.ingest_refused(call.provider.value, problem.status)
    return error(problem.status, storable(problem.message))


INGEST_ROUTE = "/ingest/{provider}/{token}"
INGEST_EVENT_ROUTE = "/ingest/{provider}/{token}/{event}"
routes = [
    Route(INGEST_ROUTE, ingest, methods=["GET", "POST"]),
    Route(INGEST_EVENT_ROUTE, ingest, methods=["GET", "POST"]),
]

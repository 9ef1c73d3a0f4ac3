"""Ingest routes: POST /ingest/brevo/{token}, GET|POST /ingest/jangomail/{token}/{event},
POST /ingest/smtpeter/{token}.

Read the body (bounded), let the provider's adapter parse it, store the events, answer
with counts. Anything refused is answered with a 4xx that says why and kept whole.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.responses import JSON, basic_credentials, error
from gateway.domain.events import Provider
from gateway.providers.base import IngestRequest, PayloadError
from gateway.providers.registry import provider_named
from gateway.runtime import Services
from gateway.services.ingest import parse_request
from gateway.storage.accounts import SourceRecord

log = logging.getLogger(__name__)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadError(f"body of {declared} bytes is over the limit of {limit}", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(f"body is over the limit of {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def ingest(request: Request) -> Response:
    services: Services = request.app.state.services
    provider = provider_named(request.path_params["provider"])
    if provider is None:
        return error(404, f"unknown provider {request.path_params['provider']!r}")
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

    body = b""
    try:
        body = await _read_body(request, services.settings.max_body_bytes)
        parsed = parse_request(
            provider,
            IngestRequest(
                method=request.method,
                body=body,
                content_type=request.headers.get("content-type", ""),
                # Only JangoMail reads a query string; parsing one is not free.
                query=request.query_params.multi_items() if provider is Provider.JANGOMAIL else [],
                route_event=route_event,
                received_at=datetime.now(UTC),
            ),
            source,
        )
        if parsed.refused:
            # Until events are accepted one by one here: the request is refused whole.
            raise PayloadError(parsed.refused[0].reason, status=422)
    except PayloadError as problem:
        await _keep(services, request, source, body, problem)
        services.metrics.inc("gateway_ingest_rejected_total", provider=provider.value)
        return error(problem.status, problem.message)
    result = await services.writer.write(source.account_id, source.id, parsed.events)
    services.metrics.inc("gateway_ingest_events_total", result.stored, provider=provider.value)
    services.metrics.inc(
        "gateway_ingest_duplicates_total", result.duplicates, provider=provider.value
    )
    return JSON(
        {
            "stored": result.stored,
            "duplicates": result.duplicates,
            "ids": [str(event_id) for event_id in result.ids],
        }
    )


async def _keep(
    services: Services, request: Request, source: SourceRecord, body: bytes, problem: PayloadError
) -> None:
    log.info("refused %s ingest for source %s: %s", source.provider, source.id, problem.message)
    await services.rejections.keep(
        account_id=source.account_id,
        source_id=source.id,
        provider=source.provider,
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        content_type=request.headers.get("content-type", ""),
        body=body,
        status=problem.status,
        reason=problem.message,
    )


routes = [
    Route("/ingest/{provider}/{token}", ingest, methods=["GET", "POST"]),
    Route("/ingest/{provider}/{token}/{event}", ingest, methods=["GET", "POST"]),
]

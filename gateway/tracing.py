"""Optional OpenTelemetry tracing: spans from ingest through delivery.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (``Settings.otel_exporter_otlp_endpoint``).
Off, nothing of OpenTelemetry is imported (it is an optional extra, ``[otel]``), nothing
is sent, and every function here returns at once.

On, spans go over OTLP/HTTP (protobuf) to ``{endpoint}/v1/traces``. The endpoint comes
from Settings (so that ``.env`` and a test's Settings reach it, and no ``os.environ`` is
read outside ``gateway/settings.py``) and is handed to the exporter with the signal path
added, as the OTLP specification says for this variable. Everything else is the SDK's
own: it reads its environment itself (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``…_TIMEOUT``, ``…_COMPRESSION``, ``…_CERTIFICATE``,
``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``) — copying those into Settings would only let
the two drift apart.

The tracer provider is this module's, not OpenTelemetry's global one: the global one
can be set once per process, and one process may run gateways one after another (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from gateway.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Tracer

log = logging.getLogger(__name__)

SERVICE_NAME = "email-event-gateway"
AttributeValue = str | bool | int | float | Sequence[int]
# Span attributes by their OpenTelemetry names (dotted, so not keyword arguments).
Attributes = Mapping[str, AttributeValue | None]
Kind = Literal["internal", "server", "client"]
Connection = TypeVar("Connection")
Stored = TypeVar("Stored")
After = TypeVar("After")

# The running tracer, or None: tracing is off.
_tracer: Tracer | None = None


@contextlib.asynccontextmanager
async def tracing(settings: Settings) -> AsyncIterator[None]:
    """Trace while inside, when the settings name an endpoint; on exit, send what is
    left and stop."""
    global _tracer
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        yield
        return
    provider = _provider(endpoint)
    previous, _tracer = _tracer, provider.get_tracer("gateway")
    log.info("tracing to %s/v1/traces", endpoint.rstrip("/"))
    try:
        yield
    finally:
        _tracer = previous
        # Sends the spans not yet sent: blocking I/O (up to the export timeout when the
        # collector is gone), so not on the event loop.
        await asyncio.to_thread(provider.shutdown)


def _provider(endpoint: str) -> TracerProvider:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        # Asked for traces and unable to send them: say so at start-up, not never.
        raise RuntimeError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            'pip install "email-event-gateway[otel]"'
        ) from exc

    resource = Resource.create()  # reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def span(
    name: str,
    attributes: Attributes | None = None,
    /,
    *,
    kind: Kind = "internal",
    links: Sequence[Link] = (),
    root: bool = False,
) -> Iterator[None]:
    """A span around the block, child of the current one (``root``: of none, for work
    done on behalf of many, which ``links`` point to instead). Attributes that are None
    are left out. Off: nothing."""
    if _tracer is None:
        yield
        return
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        name,
        context=Context() if root else None,
        kind=SpanKind[kind.upper()],
        attributes=_present(attributes or {}),
        links=links,
    ):
        yield


def annotate(attributes: Attributes) -> None:
    """Add attributes to the current span (what is known only once the work is done)."""
    if _tracer is None:
        return
    from opentelemetry.trace import get_current_span

    get_current_span().set_attributes(_present(attributes))


def current_link() -> Link | None:
    """A link to the current span, for work that another task will do on its behalf."""
    if _tracer is None:
        return None
    from opentelemetry.trace import Link, get_current_span

    context = get_current_span().get_span_context()
    return Link(context) if context.is_valid else None


def traced_outbox(
    write: Callable[[Connection, Sequence[Stored]], Awaitable[After]],
) -> Callable[[Connection, Sequence[Stored]], Awaitable[After]]:
    """The ingest transaction's outbox hook, in a span of its own."""

    async def write_traced(connection: Connection, stored: Sequence[Stored]) -> After:
        if _tracer is None:
            return await write(connection, stored)
        with span("outbox write", {"gateway.events": len(stored)}):
            return await write(connection, stored)

    return write_traced


def _present(attributes: Attributes) -> dict[str, AttributeValue]:
    return {key: value for key, value in attributes.items() if value is not None}

"""Tracing: a gateway with OTEL_EXPORTER_OTLP_ENDPOINT set sends its spans over OTLP/HTTP
to a real collector on 127.0.0.1 (decoded with opentelemetry-proto); without it,
OpenTelemetry is never imported."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.settings import Settings
from tests.conftest import free_port, serve, settings_for
from tests.ops_support import quiet_redis
from tests.receiver import Receiver
from tests.support import brevo_event, gql, ingest_brevo
from tests.test_webhooks import create_webhook


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return None if kind is None else getattr(value, kind)


@dataclass
class ExportedSpan:
    name: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: list[tuple[bytes, bytes]]


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf."""

    base_url: str = ""
    spans: list[ExportedSpan] = field(default_factory=list)

    async def receive(self, request: Request) -> Response:
        exported = ExportTraceServiceRequest.FromString(await request.body())
        for resource_spans in exported.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ExportedSpan(
                            name=span.name,
                            trace_id=span.trace_id,
                            span_id=span.span_id,
                            parent_span_id=span.parent_span_id,
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            resource=resource,
                            links=[(link.trace_id, link.span_id) for link in span.links],
                        )
                    )
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    async def wait_for(
        self, name: str, where: Callable[[ExportedSpan], bool] = lambda _s: True
    ) -> ExportedSpan:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for span in self.spans:
                if span.name == name and where(span):
                    return span
            await asyncio.sleep(0.05)
        raise AssertionError(f"no span {name!r}; got {sorted({s.name for s in self.spans})}")


@dataclass
class Traced:
    collector: Collector
    token: str
    webhook_id: int
    event_ids: list[str]
    base_url: str


@pytest.fixture(scope="module")
async def collector() -> AsyncIterator[Collector]:
    collecting = Collector()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/traces", collecting.receive, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    collecting.base_url = f"http://127.0.0.1:{port}"
    yield collecting
    server.should_exit = True
    await task


@pytest.fixture(scope="module")
async def traced(
    collector: Collector,
    receiver: Receiver,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Traced]:
    """A gateway (SQLite, with its worker) tracing to the collector, and one event that
    a web hook delivered to the receiver."""
    with pytest.MonkeyPatch.context() as env:
        # The SDK's own settings, read by the SDK: spans go out within 50 ms.
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        env.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
        async with quiet_redis(redis_url) as queue_url:
            settings = settings_for(
                tmp_path_factory.mktemp("traced"),
                queue_url,
                None,
                otel_exporter_otlp_endpoint=collector.base_url,
            )
            async with serve(settings, "sqlite", worker=True) as gateway:
                account = await gateway.new_account()
                endpoint = receiver.endpoint()
                async with gateway.client(account.api_key) as api:
                    webhook, _ = await create_webhook(
                        api, url=endpoint.url, format="GATEWAY", events=["DELIVERED"]
                    )
                    event_ids = await ingest_brevo(gateway, account, brevo_event())
                    await endpoint.wait_for(1)
                    # The attempt is logged once the call is answered: wait for it, so
                    # that its span has ended too.
                    while not await _attempted(api, webhook["id"]):
                        await asyncio.sleep(0.05)
                yield Traced(
                    collector,
                    account.ingest_tokens["brevo"],
                    int(webhook["id"]),
                    event_ids,
                    gateway.base_url,
                )


async def _attempted(api: Any, webhook_id: str) -> bool:
    data = await gql(
        api,
        "query($id: ID!) { webhook(id: $id) { deliveries(first: 1) { edges { node { "
        "status } } } } }",
        id=webhook_id,
    )
    return any(e["node"]["status"] == "SUCCEEDED" for e in data["webhook"]["deliveries"]["edges"])


async def _ingest_span(traced: Traced) -> ExportedSpan:
    return await traced.collector.wait_for("POST /ingest/{provider}/{token}")


async def test_ingest_span_names_the_route_template_provider_and_counts(traced: Traced) -> None:
    span = await _ingest_span(traced)
    assert span.kind == 2  # SERVER
    assert span.attributes["http.route"] == "/ingest/{provider}/{token}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["gateway.provider"] == "brevo"
    assert span.attributes["gateway.events.read"] == 1
    assert span.attributes["gateway.events.stored"] == 1
    assert span.attributes["gateway.events.duplicates"] == 0
    assert span.attributes["gateway.events.refused"] == 0


async def test_group_commit_span_has_its_size_and_links_to_the_ingest_span(
    traced: Traced,
) -> None:
    ingest = await _ingest_span(traced)
    batch = await traced.collector.wait_for(
        "ingest-writer batch", lambda s: (ingest.trace_id, ingest.span_id) in s.links
    )
    assert batch.attributes["gateway.batch.size"] == 1
    assert batch.parent_span_id == b""  # a batch serves many requests: linked, not a child


async def test_outbox_write_is_a_span_inside_the_group_commit(traced: Traced) -> None:
    ingest = await _ingest_span(traced)
    batch = await traced.collector.wait_for(
        "ingest-writer batch", lambda s: (ingest.trace_id, ingest.span_id) in s.links
    )
    outbox = await traced.collector.wait_for(
        "outbox write", lambda s: s.parent_span_id == batch.span_id
    )
    assert outbox.trace_id == batch.trace_id
    assert outbox.attributes["gateway.events"] == 1


async def test_delivery_attempt_span_has_webhook_format_status_and_outcome(
    traced: Traced,
) -> None:
    span = await traced.collector.wait_for(
        "webhook delivery", lambda s: s.attributes.get("gateway.webhook.id") == traced.webhook_id
    )
    assert span.kind == 3  # CLIENT
    assert span.attributes["gateway.webhook.format"] == "GATEWAY"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["gateway.delivery.outcome"] == "succeeded"
    assert span.attributes["gateway.attempt.number"] == 1
    assert str(span.attributes["gateway.event.id"]) == traced.event_ids[0]


async def test_ingest_span_names_the_event_ids_a_delivery_span_is_found_by(
    traced: Traced,
) -> None:
    ingest = await _ingest_span(traced)
    delivery = await traced.collector.wait_for(
        "webhook delivery", lambda s: s.attributes.get("gateway.webhook.id") == traced.webhook_id
    )
    assert delivery.attributes["gateway.event.id"] in ingest.attributes["gateway.event.ids"]


async def test_spans_carry_the_service_name_from_the_sdk_environment(traced: Traced) -> None:
    span = await _ingest_span(traced)
    assert span.resource["service.name"] == "gateway-under-test"


async def test_no_span_name_or_attribute_holds_the_ingest_token(traced: Traced) -> None:
    await traced.collector.wait_for("webhook delivery")
    for span in traced.collector.spans:
        assert traced.token not in span.name
        for value in [*span.attributes.values(), *span.resource.values()]:
            assert traced.token not in str(value), span


async def test_refused_ingest_is_traced_with_its_status_and_without_the_token(
    traced: Traced,
) -> None:
    wrong = "not-a-token-" + "7" * 24
    async with httpx.AsyncClient(base_url=traced.base_url) as client:
        answer = await client.post(f"/ingest/brevo/{wrong}", json=[brevo_event()])
    assert answer.status_code == 404
    span = await traced.collector.wait_for(
        "POST /ingest/{provider}/{token}",
        lambda s: s.attributes.get("http.response.status_code") == 404,
    )
    assert span.attributes["gateway.provider"] == "brevo"
    assert all(wrong not in str(value) for value in span.attributes.values())


def test_endpoint_that_is_not_an_http_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        Settings(_env_file=None, otel_exporter_otlp_endpoint="collector:4318")  # type: ignore[call-arg]


_UNTRACED_GATEWAY = """
import asyncio, json, sys

import httpx
import uvicorn

from gateway.app import create_app
from gateway.settings import Settings


async def main(data_dir: str, redis_url: str, port: int) -> None:
    settings = Settings(data_dir=data_dir, redis_url=redis_url, allow_private_webhooks=True)
    app = create_app(settings, worker=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    account = await app.state.services.accounts.create_account("untraced")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        answer = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            json=[{"event": "delivered", "email": "a@example.com", "id": 1,
                   "message-id": "<m@example.com>", "date": "2024-05-01 10:00:00",
                   "ts_event": 1714557600}],
        )
    server.should_exit = True
    await task
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    print(json.dumps({"status": answer.status_code, "body": answer.json(), "loaded": loaded}))


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_without_an_endpoint_opentelemetry_is_never_imported(
    redis_url: str, tmp_path: Path
) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    async with quiet_redis(redis_url) as queue_url:
        finished = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-c",
                textwrap.dedent(_UNTRACED_GATEWAY),
                str(tmp_path),
                queue_url,
                str(free_port()),
            ],
            cwd=tmp_path,  # no .env of ours
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert finished.returncode == 0, finished.stderr
    import json

    report = json.loads(finished.stdout.strip().splitlines()[-1])
    assert report["status"] == 200 and report["body"]["stored"] == 1, report
    assert report["loaded"] == []


_WITHOUT_OPENTELEMETRY = """
import asyncio, sys

sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed

from gateway.settings import Settings
from gateway.tracing import tracing


async def main() -> None:
    settings = Settings(_env_file=None, otel_exporter_otlp_endpoint="http://127.0.0.1:4318")
    async with tracing(settings):
        pass


asyncio.run(main())
"""


def test_endpoint_without_the_otel_extra_stops_start_up_naming_the_extra() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WITHOUT_OPENTELEMETRY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert 'pip install "email-event-gateway[otel]"' in finished.stderr

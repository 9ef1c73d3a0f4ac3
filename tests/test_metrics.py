"""/metrics: Prometheus series of ingest, delivery, the outbox, live subscribers and
the database pool, and the Grafana dashboard and README that name them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway, free_port
from tests.receiver import Receiver
from tests.support import body, brevo_event, ingest_brevo
from tests.test_webhooks import create_webhook, settled

ROOT = Path(__file__).parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: Gateway) -> tuple[Samples, str]:
    async with gateway.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, response.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def exposed_names(text: str) -> set[str]:
    """Every series name /metrics declares or has samples of."""
    names = set(re.findall(r"^# HELP (\S+)", text, re.M))
    names |= set(re.findall(r"^(gateway_[a-z_]+)", text, re.M))
    return names


def dashboard_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return {name for expr in expressions for name in re.findall(r"\bgateway_[a-z_]+", expr)}


async def test_metrics_are_served_in_the_prometheus_text_format(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE gateway_ingest_events_total counter" in response.text


async def test_ingest_counts_events_by_provider_type_and_outcome(
    gateway: Gateway, account: CreatedAccount
) -> None:
    before, _ = await scrape(gateway)
    first = brevo_event(email="m1@example.com", event="delivered")
    await ingest_brevo(gateway, account, first, brevo_event(email="m2@example.com", event="click"))
    await ingest_brevo(gateway, account, first)  # the provider's retry

    after, _ = await scrape(gateway)

    def grew(**labels: str) -> float:
        name = "gateway_ingest_events_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew(provider="BREVO", type="DELIVERED", outcome="stored") == 1
    assert grew(provider="BREVO", type="CLICKED", outcome="stored") == 1
    assert grew(provider="BREVO", type="DELIVERED", outcome="duplicate") == 1


async def test_an_unreadable_body_counts_as_a_refusal_by_reason(
    gateway: Gateway, account: CreatedAccount
) -> None:
    before, _ = await scrape(gateway)
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400

    after, _ = await scrape(gateway)

    name, labels = "gateway_ingest_rejected_total", {"provider": "BREVO", "reason": "unreadable"}
    assert value(after, name, **labels) - value(before, name, **labels) == 1


async def test_group_commits_are_counted_in_the_batch_size_histogram(
    gateway: Gateway, account: CreatedAccount
) -> None:
    before, _ = await scrape(gateway)
    await ingest_brevo(gateway, account, brevo_event(email="batch@example.com"))

    after, _ = await scrape(gateway)

    count = "gateway_ingest_batch_events_count"
    assert value(after, count) - value(before, count) >= 1
    assert value(after, "gateway_ingest_batch_events_sum") > value(
        before, "gateway_ingest_batch_events_sum"
    )


async def test_a_delivery_is_counted_by_format_and_outcome_with_its_latency(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(
        api, url=endpoint.url, method="POST", format="SMTPETER", events=["DELIVERED"]
    )
    before, _ = await scrape(gateway)
    await ingest_brevo(gateway, account, brevo_event(email="hook@example.com"))
    await settled(api, webhook["id"], 1, {"SUCCEEDED"})

    after, _ = await scrape(gateway)

    attempts = "gateway_delivery_attempts_total"
    labels = {"format": "SMTPETER", "outcome": "SUCCEEDED"}
    assert value(after, attempts, **labels) - value(before, attempts, **labels) == 1
    latency = "gateway_delivery_duration_seconds_count"
    assert value(after, latency, format="SMTPETER") - value(before, latency, format="SMTPETER") == 1


async def test_outbox_live_and_pool_gauges_are_read_at_scrape_time(gateway: Gateway) -> None:
    samples, _ = await scrape(gateway)

    for gauge in (
        "gateway_delivery_queue_due",
        "gateway_delivery_queue_scheduled",
        "gateway_delivery_lag_seconds",
        "gateway_deliveries_held",
        "gateway_webhooks_disabled",
        "gateway_live_subscribers",
        "gateway_db_pool_checked_out",
    ):
        assert value(samples, gauge) >= 0, gauge
    assert value(samples, "gateway_db_pool_size") > 0


async def test_every_series_the_dashboard_queries_is_served_after_ingest_and_a_delivery(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = receiver.endpoint()
    webhook, _ = await create_webhook(
        api, url=endpoint.url, method="POST", format="BREVO", events=["DELIVERED"]
    )
    await ingest_brevo(gateway, account, brevo_event(email="dash@example.com"))
    async with gateway.client() as client:
        await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body({"event": "delivered"}),  # refused: no email
            headers={"content-type": "application/json"},
        )
    await settled(api, webhook["id"], 1, {"SUCCEEDED"})

    _, text = await scrape(gateway)

    missing = dashboard_names() - exposed_names(text)
    assert not missing, f"the dashboard queries series /metrics does not serve: {missing}"


async def test_the_readme_lists_every_series_served(gateway: Gateway) -> None:
    _, text = await scrape(gateway)
    readme = (ROOT / "README.md").read_text()

    # prometheus_client's *_created companions say when a series started: not ours.
    served = set(re.findall(r"^# HELP (gateway_\S+)", text, re.M))
    served = {name for name in served if not name.endswith("_created")}
    assert served
    missing = {name for name in served if f"`{name}`" not in readme}
    assert not missing, f"README's Metrics section does not list {missing}"


async def test_a_worker_serves_its_metrics_on_a_port_of_its_own() -> None:
    metrics = Metrics()
    metrics.delivery_attempted("BREVO", "SUCCEEDED", 0.02)
    server = metrics.serve(free_port(), "127.0.0.1")
    assert server is not None
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert 'gateway_delivery_attempts_total{format="BREVO",outcome="SUCCEEDED"} 1.0' in (
        response.text
    )

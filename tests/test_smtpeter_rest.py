"""The SMTPeter-compatible retrieval routes and SMTPeter's window rules."""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.smtpeter_rest import WindowError, add_months, window
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.support import body, brevo_event

TODAY = date(2026, 11, 23)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, (date(2026, 10, 24), date(2026, 11, 24))),
        ("2026-01-31", None, (date(2026, 1, 31), date(2026, 2, 28))),
        (None, "2026-03-31", (date(2026, 2, 28), date(2026, 3, 31))),
        ("2026-01-10", "2026-01-20", (date(2026, 1, 10), date(2026, 1, 20))),
        ("2026-01-10", "2026-05-20", (date(2026, 1, 10), date(2026, 2, 10))),
    ],
)
def test_window_rules(start: str | None, end: str | None, expected: tuple[date, date]) -> None:
    assert window(start, end, today=TODAY) == expected


def test_message_id_default_window_is_open() -> None:
    assert window(None, None, today=TODAY, default_open=True) == (None, None)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-13-01", None),
        ("yesterday", None),
        ("2026-01-10", "2026-01-10"),
        ("9999-12-01", None),
        (None, "0001-01-01"),
        ("9999-12-01", "9999-12-31"),
    ],
)
def test_bad_window_is_refused(start: str, end: str | None) -> None:
    with pytest.raises(WindowError):
        window(start, end, today=TODAY)


def test_add_months_clamps_to_month_end() -> None:
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 3, 31), -1) == date(2024, 2, 29)


@pytest.fixture
async def stored(gateway: Gateway, account: CreatedAccount) -> None:
    events = [
        brevo_event(
            event="delivered",
            email="ann@example.com",
            tags=["t1", "t2"],
            template_id=5,
            ts_event=1767261600,
        ),  # 2026-01-01 10:00
        brevo_event(
            event="opened", email="ann@example.com", tags=["t1"], template_id=5, ts_event=1769940000
        ),  # 2026-02-01 10:00
        brevo_event(
            event="click",
            email="bob@example.com",
            tags=["t2"],
            link="https://x",
            ts_event=1767348000,
        ),  # 2026-01-02 10:00
    ]
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/brevo/{account.ingest_tokens['brevo']}",
            content=body(events),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200


async def fetch(gateway: Gateway, account: CreatedAccount, path: str, **params: str) -> Any:
    async with gateway.client() as client:
        response = await client.get(path, params={"access_token": account.api_key, **params})
    assert response.status_code == 200, response.text
    return response.json()


async def test_events_by_email_in_a_window(
    gateway: Gateway, account: CreatedAccount, stored: None
) -> None:
    records = await fetch(gateway, account, "/v1/events/email/ann@example.com", start="2026-01-01")
    assert [record["event"] for record in records] == ["delivery"]
    assert records[0]["data"]["recipient"] == "ann@example.com"
    assert records[0]["data"]["time"] == "2026-01-01 10:00:00"


async def test_end_is_exclusive(gateway: Gateway, account: CreatedAccount, stored: None) -> None:
    records = await fetch(
        gateway, account, "/v1/events/email/ann@example.com", start="2026-01-01", end="2026-02-01"
    )
    assert [record["event"] for record in records] == ["delivery"]
    records = await fetch(gateway, account, "/v1/events/email/ann@example.com", end="2026-02-02")
    assert [record["event"] for record in records] == ["open"]


async def test_events_by_tags_need_all_of_them(
    gateway: Gateway, account: CreatedAccount, stored: None
) -> None:
    records = await fetch(gateway, account, "/v1/events/tags/t1;t2", start="2026-01-01")
    assert [record["event"] for record in records] == ["delivery"]
    records = await fetch(gateway, account, "/v1/events/tags/t2", start="2026-01-01")
    assert [record["event"] for record in records] == ["delivery", "click"]


async def test_events_by_template_with_tags(
    gateway: Gateway, account: CreatedAccount, stored: None
) -> None:
    records = await fetch(
        gateway, account, "/v1/events/template/5", start="2026-01-01", end="2026-03-01", tags="t1"
    )
    assert [record["event"] for record in records] == ["delivery"]


async def test_events_by_message_id_without_dates(
    gateway: Gateway, account: CreatedAccount, stored: None
) -> None:
    records = await fetch(
        gateway, account, "/v1/events/messageid/<201798300811.5787683@relay.example.com>"
    )
    assert [record["event"] for record in records] == ["delivery", "click", "open"]


async def test_malformed_date_is_400(gateway: Gateway, account: CreatedAccount) -> None:
    async with gateway.client() as client:
        response = await client.get(
            "/v1/events/email/a@b.c",
            params={"access_token": account.api_key, "start": "01/02/2026"},
        )
    assert response.status_code == 400
    assert "yyyy-mm-dd" in response.json()["error"]


@pytest.mark.parametrize(
    "params",
    [
        {"start": "9999-12-01"},
        {"end": "0001-01-01"},
        {"start": "0001-01-01", "end": "9999-12-31"},
        {"start": "9999-12-31"},
        {"tags": "a\x00b"},
    ],
)
async def test_edge_dates_and_nul_are_4xx_and_the_connection_stays(
    gateway: Gateway, account: CreatedAccount, params: dict[str, str]
) -> None:
    async with gateway.client() as client:
        response = await client.get(
            "/v1/events/email/a@b.c", params={"access_token": account.api_key, **params}
        )
        assert response.status_code < 500, response.text
        again = await client.get("/v1/events/email/a%00b", params={"access_token": account.api_key})
    assert again.status_code == 400
    assert again.json()["error"] == "email contains a NUL character"


async def test_without_access_token_is_401(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.get("/v1/events/email/a@b.c")
    assert response.status_code == 401


async def test_another_account_gets_nothing(
    gateway: Gateway, account: CreatedAccount, stored: None
) -> None:
    other = await gateway.new_account()
    assert await fetch(gateway, other, "/v1/events/email/ann@example.com", start="2026-01-01") == []


async def test_health_and_readiness(gateway: Gateway) -> None:
    async with gateway.client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "database": "ok",
            "schema": "ok",
            "ids": "ok",
            "redis": "ok",
        }
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "# TYPE gateway_ingest_events_total counter" in metrics.text


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["messageid", "email", "template", "tags", "other"]),
    value=st.text(min_size=1),
    params=st.dictionaries(st.sampled_from(["start", "end", "tags"]), st.text(), max_size=3),
)
async def test_any_parameters_are_answered_below_500(
    gateway: Gateway, account: CreatedAccount, kind: str, value: str, params: dict[str, str]
) -> None:
    def sendable(text: str) -> str:  # a URL cannot carry a lone surrogate
        return text.encode("utf-8", "replace").decode("utf-8")

    async with gateway.client() as client:
        response = await client.get(
            f"/v1/events/{kind}/{quote(sendable(value), safe='')}",
            params={"access_token": account.api_key}
            | {name: sendable(text) for name, text in params.items()},
        )
    assert response.status_code < 500, response.text

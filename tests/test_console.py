"""The console in a real browser: Debian's chromium, headless, driven by selenium against
a gateway served by uvicorn (SQLite). Each test waits for what the page shows; a
screenshot of each ends up in screenshots/ for people to look at.

Selenium blocks, and the gateway runs on this test's event loop: every browser step
runs in a thread (``in_browser``) so that the gateway keeps answering meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from starlette.responses import Response

from gateway.services.accounts import CreatedAccount
from tests.browser import SCREENSHOTS, chromium, in_browser, waiting
from tests.conftest import Gateway
from tests.receiver import Receiver
from tests.support import brevo_event, ingest_brevo
from tests.test_webhooks import create_webhook, settled

on_sqlite = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    yield from chromium(
        "--window-size=1400,2000", capabilities={"goog:loggingPrefs": {"browser": "ALL"}}
    )


wait = waiting(20)


def signed_out(driver: WebDriver, base_url: str) -> None:
    """The console with no key kept. The key is forgotten on a page of the same origin
    that runs no script: a console page still signing in would keep it again."""
    driver.get(f"{base_url}/healthz")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{base_url}/console")


def sign_in(driver: WebDriver, base_url: str, api_key: str) -> None:
    """Open the console in a fresh tab session, sign in, wait for the first load."""
    signed_out(driver, base_url)
    key = wait(driver).until(ec.visibility_of_element_located((By.ID, "api-key")))
    key.send_keys(api_key)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "tail-status"), "live"))


def count_of(driver: WebDriver, table: str, key: str) -> str | None:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-key='{key}']")
    return rows[0].get_attribute("data-count") if rows else None


def recent(hours_ago: float) -> int:
    return int(time.time() - hours_ago * 3600)


@on_sqlite
async def test_the_chart_counts_the_ingested_events(
    gateway: Gateway, account: CreatedAccount, browser: WebDriver
) -> None:
    await ingest_brevo(
        gateway,
        account,
        *[
            brevo_event(
                event=name,
                ts_event=recent(hours),
                ts=recent(hours),
                **{"message-id": f"<c{n}@console>"},
            )
            for n, (name, hours) in enumerate(
                [("delivered", 30), ("delivered", 3), ("hard_bounce", 2), ("opened", 1)]
            )
        ],
    )
    await in_browser(sign_in, browser, gateway.base_url, account.api_key)

    def counts() -> tuple[Any, ...]:
        wait(browser).until(lambda d: count_of(d, "traffic-type", "DELIVERED") == "2")
        return (
            count_of(browser, "traffic-type", "BOUNCED"),
            count_of(browser, "traffic-type", "OPENED"),
            count_of(browser, "traffic-provider", "BREVO"),
            browser.find_element(By.ID, "chart-type").get_attribute("data-total"),
            len(browser.find_elements(By.CSS_SELECTOR, "#chart-type canvas")),
        )

    assert await in_browser(counts) == ("1", "1", "4", "4", 1)
    rates = await in_browser(
        lambda: [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#rates-template td")]
    )
    assert rates[:3] == ["2", "66.7 %", "33.3 %"]  # template 22: delivered, delivery, bounce
    await in_browser(browser.save_screenshot, str(SCREENSHOTS / "console-traffic.png"))
    severe = [
        entry
        for entry in await in_browser(browser.get_log, "browser")
        # The favicon of /healthz, where signed_out goes first; the console has its own.
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ]
    assert severe == []  # no script error, nothing the Content-Security-Policy refused


@on_sqlite
async def test_a_rejected_payload_is_replayed_from_the_console(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient, browser: WebDriver
) -> None:
    query = urlencode(
        {
            "addr": "jane@example.com",
            "TransactionalEmailID": "9",
            "OpenDateTime": "1/28/2026 9:55:00 AM",
        }
    )
    async with gateway.client() as client:
        refused = await client.get(
            f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/open?{query}"
        )
    assert refused.status_code == 200
    assert [item["index"] for item in refused.json()["rejected"]] == [0]
    sources = (
        await api.post("/graphql", json={"query": "{ ingestSources { id provider } }"})
    ).json()
    [jangomail] = [
        s["id"] for s in sources["data"]["ingestSources"] if s["provider"] == "JANGOMAIL"
    ]
    fixed = await api.post(
        "/graphql",
        json={
            "query": "mutation($id: ID!) { updateIngestSource(id: $id, input: "
            '{parameters: [{field: "email", name: "addr"}]}) { id } }',
            "variables": {"id": jangomail},
        },
    )
    assert fixed.status_code == 200 and "errors" not in fixed.json()
    await in_browser(sign_in, browser, gateway.base_url, account.api_key)

    def replay() -> str:
        button = wait(browser).until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, "#rejected-payloads button.replay"))
        )
        button.click()
        outcome = wait(browser).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "#rejected-payloads [data-outcome]"))
        )
        browser.save_screenshot(str(SCREENSHOTS / "console-replayed.png"))
        return f"{outcome.get_attribute('data-outcome')}: {outcome.text}"

    assert await in_browser(replay) == "stored: stored 1, duplicates 0"


@on_sqlite
async def test_a_new_event_arrives_in_the_live_tail(
    gateway: Gateway, account: CreatedAccount, browser: WebDriver
) -> None:
    await in_browser(sign_in, browser, gateway.base_url, account.api_key)
    [stored] = await ingest_brevo(
        gateway,
        account,
        brevo_event(event="click", ts_event=recent(0), ts=recent(0), email="live@example.com"),
    )

    def arrived() -> tuple[str, str]:
        row = wait(browser).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, f"#live-tail tr[data-id='{stored}']"))
        )
        browser.save_screenshot(str(SCREENSHOTS / "console-tail.png"))
        return row.get_attribute("data-type") or "", row.text

    kind, text = await in_browser(arrived)
    assert kind == "CLICKED" and "live@example.com" in text


@on_sqlite
async def test_web_hook_health_shows_success_and_the_last_error(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    receiver: Receiver,
    browser: WebDriver,
) -> None:
    good, _ = await create_webhook(api, url=receiver.endpoint().url, events=["DELIVERED"])
    failing = receiver.endpoint(lambda _received: Response("down", status_code=503))
    bad, _ = await create_webhook(api, url=failing.url, events=["DELIVERED"])
    await ingest_brevo(gateway, account, brevo_event(ts_event=recent(1), ts=recent(1)))
    await settled(api, good["id"], 1, {"SUCCEEDED"})
    await settled(api, bad["id"], 1, {"FAILED"})
    await in_browser(sign_in, browser, gateway.base_url, account.api_key)

    def health(webhook_id: str) -> list[str]:
        row = browser.find_element(By.CSS_SELECTOR, f"#webhook-health tr[data-id='{webhook_id}']")
        return [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")]

    good_row, bad_row = await in_browser(lambda: (health(good["id"]), health(bad["id"])))
    await in_browser(browser.save_screenshot, str(SCREENSHOTS / "console-webhooks.png"))
    assert good_row[1:3] == ["enabled", "100.0 %"] and good_row[6] == ""
    assert bad_row[1:3] == ["enabled", "0.0 %"] and "HTTP 503" in bad_row[6]


@on_sqlite
async def test_a_wrong_key_is_refused_on_the_sign_in_form(
    gateway: Gateway, browser: WebDriver
) -> None:
    def try_wrong_key() -> tuple[str, bool]:
        signed_out(browser, gateway.base_url)
        key = wait(browser).until(ec.visibility_of_element_located((By.ID, "api-key")))
        key.send_keys("egw_not-a-key")
        browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
        wait(browser).until(ec.text_to_be_present_in_element((By.ID, "sign-in-error"), "key"))
        return (
            browser.find_element(By.ID, "sign-in-error").text,
            browser.find_element(By.ID, "dashboard").is_displayed(),
        )

    assert await in_browser(try_wrong_key) == ("That API key is not valid here.", False)


async def test_the_home_page_leads_to_the_console(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.get("/")
    assert (response.status_code, response.headers["location"]) == (307, "/console")


async def test_the_console_page_allows_only_its_own_scripts(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.get("/console")
    policy = response.headers["content-security-policy"]
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "script-src 'self';" in policy and "default-src 'none'" in policy
    host = gateway.base_url.split("//")[1]
    assert f"connect-src 'self' ws://{host} wss://{host};" in policy  # no other origin


async def test_the_charting_library_ships_with_its_licence(gateway: Gateway) -> None:
    async with gateway.client() as client:
        library = await client.get("/console/assets/vendor/uPlot.esm.js")
        licence = await client.get("/console/assets/vendor/uPlot.LICENSE")
    assert library.status_code == 200 and "javascript" in library.headers["content-type"]
    assert "MIT License" in licence.text

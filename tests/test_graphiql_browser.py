"""GraphiQL in a real browser with no way out: Debian's chromium, headless, driven by
selenium, every host but 127.0.0.1 unresolvable. It loads, takes the key once, fetches
the schema with it, runs the README's query, and shows a subscription's live event.

Selenium blocks and the gateway runs on this test's event loop, so every browser step
runs in a thread (``in_browser``). Screenshots go to screenshots/ for people to look at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from gateway.services.accounts import CreatedAccount
from tests.browser import SCREENSHOTS, chromium, in_browser, waiting
from tests.conftest import Gateway
from tests.support import brevo_event, ingest_brevo
from tests.test_subscriptions import subscribed

on_sqlite = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[WebDriver]:
    yield from chromium(
        "--window-size=1400,1000",
        # No internet: no host but the gateway's resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    )


wait = waiting(30)


# CodeMirror 5 (GraphiQL 3's editor) keeps its instance on its element.
VISIBLE_EDITOR = """
return Array.from(document.querySelectorAll(arguments[0] + ' .CodeMirror'))
  .find(e => e.offsetParent !== null).CodeMirror"""


def editor_text(driver: WebDriver, where: str) -> str:
    return str(driver.execute_script(VISIBLE_EDITOR + ".getValue()", where))


def open_graphiql(driver: WebDriver, base_url: str) -> None:
    """GraphiQL as a first-time visitor sees it (nothing in local storage)."""
    driver.get(f"{base_url}/graphql")
    driver.execute_script("localStorage.clear()")
    driver.get(f"{base_url}/graphql")
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".graphiql-query-editor"))


# The headers editor is the one holding the Authorization stub.
HEADERS_EDITOR = """
return Array.from(document.querySelectorAll('.graphiql-editor-tool .CodeMirror'))
  .find(e => e.CodeMirror.getValue().includes('Authorization')).CodeMirror"""


def type_key(driver: WebDriver, api_key: str) -> None:
    headers = json.dumps({"Authorization": f"Bearer {api_key}"})
    driver.execute_script(HEADERS_EDITOR + ".setValue(arguments[0])", headers)


def schema_is_shown(driver: WebDriver) -> None:
    driver.find_element(By.CSS_SELECTOR, "[aria-label='Show Documentation Explorer']").click()
    wait(driver).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".graphiql-doc-explorer-root-type")
    )
    assert not driver.find_elements(By.CSS_SELECTOR, ".graphiql-doc-explorer-error")


# GraphiQL settles the operation to run a moment after a tab is chosen, and keeps it
# in its tab state: running before that would run the previous tab's operation name.
ACTIVE_OPERATION = """
const state = JSON.parse(localStorage.getItem('graphiql:tabState') || 'null');
return state && state.tabs[state.activeTabIndex].operationName"""


def run_tab(driver: WebDriver, title: str) -> None:
    driver.find_element(
        By.XPATH, f"//*[contains(@class,'graphiql-tab')]//*[text()='{title}']"
    ).click()
    wait(driver).until(lambda d: d.execute_script(ACTIVE_OPERATION) == title)
    driver.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()


def response_contains(driver: WebDriver, text: str) -> None:
    wait(driver).until(lambda d: text in editor_text(d, ".graphiql-response"))


def hosts_loaded(driver: WebDriver) -> set[str]:
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return {urlsplit(url).netloc for url in urls if not url.startswith("data:")}


@on_sqlite
async def test_graphiql_runs_a_query_and_a_subscription_with_no_internet(
    gateway: Gateway, account: CreatedAccount, offline_browser: WebDriver
) -> None:
    driver = offline_browser
    await in_browser(open_graphiql, driver, gateway.base_url)
    assert await in_browser(hosts_loaded, driver) <= {urlsplit(gateway.base_url).netloc}

    await in_browser(type_key, driver, account.api_key)
    await in_browser(schema_is_shown, driver)
    await in_browser(run_tab, driver, "RecentEvents")
    await in_browser(response_contains, driver, '"pageInfo"')

    await in_browser(run_tab, driver, "LiveEvents")  # its tab has the stub: the key carries
    await subscribed(gateway, account)
    (stored,) = await ingest_brevo(gateway, account, brevo_event(id=4242))
    await in_browser(response_contains, driver, stored)
    await in_browser(driver.save_screenshot, str(SCREENSHOTS / "graphiql-subscription.png"))

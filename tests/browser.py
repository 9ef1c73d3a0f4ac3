"""Debian's chromium, headless, driven by selenium: what the browser tests share.

Selenium blocks, and the gateway under test runs on the test's event loop: every
browser step runs in a thread (``in_browser``) so that the gateway keeps answering.
Screenshots go to screenshots/ (git-ignored) for people to look at.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import need

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

T = TypeVar("T")


def chromium(*arguments: str, capabilities: dict[str, Any] | None = None) -> Iterator[WebDriver]:
    """A headless chromium with these extra ``arguments``, for a fixture to yield."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        need("chromium", "apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", *arguments):
        options.add_argument(argument)
    for name, value in (capabilities or {}).items():
        options.set_capability(name, value)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


async def in_browser(step: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(step, *args)


def waiting(seconds: float) -> Callable[[WebDriver], WebDriverWait[WebDriver]]:
    """``wait(driver)``: a WebDriverWait of ``seconds``."""

    def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
        return WebDriverWait(driver, seconds)

    return wait

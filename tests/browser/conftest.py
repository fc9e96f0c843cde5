"""Browser tests: headless Chromium, driven by Playwright, against `twist portproxy` and
real apps, each started as a subprocess on 127.0.0.1.

Why subprocesses: a browser test proves what a user sees from the outside, so portproxy
runs exactly as the docs start it (`twist portproxy ...`), and the tests themselves never
touch the reactor that pytest-twisted runs in its greenlet. Playwright's sync API keeps its
own asyncio loop and greenlets; it coexists with pytest-twisted's reactor greenlet (checked
with tests of both kinds in one session), so no helper process is needed for the browser.

Nothing here downloads a browser: Chromium comes from the system (`apt-get install
chromium`), found through PORTPROXY_TEST_CHROMIUM, /usr/bin/chromium or `chromium` on PATH;
without one every browser test is skipped, never passed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.harness import ACTION_TIMEOUT_MS, CHROMIUM_ARGS, Processes, find_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session; tests get fresh contexts from it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(
            "browser tests need the Python package playwright (pip install -e '.[test]')"
        )
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "browser tests need Chromium: set PORTPROXY_TEST_CHROMIUM, or install it "
            "(apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Make fresh browser contexts (a new profile each: no cookies, no cache); all are
    closed at teardown."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(**options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def context(new_context: Callable[..., BrowserContext]) -> BrowserContext:
    """A fresh browser context for this test."""
    return new_context()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A page in this test's fresh context."""
    return context.new_page()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start subprocesses (portproxy, apps) for this test; all are stopped at teardown."""
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()

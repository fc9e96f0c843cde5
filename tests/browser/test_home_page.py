"""The home page in a real browser (issue 16, SPEC 13): it follows ports as they open,
its links and copy buttons work, it breaks no rule of its own Content-Security-Policy,
fits a phone's width, and a port's waiting 502 page turns into the app once it starts.

portproxy and the apps run as subprocesses (tests/browser/harness.py); the page learns
about ports only through portproxy's own discovery and event stream.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.browser.harness import Process, Processes, save_screenshot
from tests.support import NGINX, free_port, nginx_under_prefix

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page

pytestmark = pytest.mark.browser

PASSWORD = "home-page-test-password"
# The page must follow a port within 2 s (SPEC 13); the wait allows for two shared
# cores. It bounds a hang, it does not measure speed.
LIVE_WAIT_MS = 10_000


def _app_html(name: str) -> str:
    return f"<!doctype html><title>{name}</title><p id=app>{name} page</p>"


def _home(proxy: Process) -> str:
    return f"http://localhost:{proxy.port}/"


def _signed_in_home(page: Page, proxy: Process) -> None:
    """Sign in with the form, then open the home page."""
    page.goto(f"{_home(proxy)}login")
    page.fill("input[type=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[type=password]", "Enter")
    page.goto(_home(proxy))
    assert page.locator("h1").first.inner_text().startswith("portproxy")


def _card(page: Page, port: int) -> str:
    return f'li.port[data-port="{port}"]'


def _watch_policy(page: Page) -> list[str]:
    """Collect console errors (a blocked script or style is reported there)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    return errors


def _wait_live(page: Page) -> None:
    """Until the first event from the ports stream has been rendered."""
    from playwright.sync_api import expect

    live = page.locator("#live")
    expect(live).to_have_attribute("data-state", "live", timeout=LIVE_WAIT_MS)


def test_a_new_app_appears_without_a_reload_and_its_link_opens_it(
    processes: Processes, page: Page
) -> None:
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    errors = _watch_policy(page)
    _signed_in_home(page, proxy)
    _wait_live(page)
    page.evaluate("window.notReloaded = true")

    app = processes.static_app("late", _app_html("Late app"))
    card = page.locator(_card(page, app.port))
    expect(card).to_be_visible(timeout=LIVE_WAIT_MS)
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded"
    # portproxy's own listener is listed, marked, and has no link.
    own = page.locator(_card(page, proxy.port))
    expect(own.locator(".badge.self")).to_have_text("this proxy")
    assert own.locator("a").count() == 0

    with page.expect_navigation():
        card.locator(f'a:text-is("/proxy/{app.port}/")').click()
    expect(page.locator("#app")).to_have_text("Late app page")
    assert page.url == f"{_home(proxy)}proxy/{app.port}/"
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_an_app_that_stops_leaves_the_list(processes: Processes, page: Page) -> None:
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    app = processes.static_app("brief", _app_html("Brief app"))
    _signed_in_home(page, proxy)
    _wait_live(page)
    expect(page.locator(_card(page, app.port))).to_be_visible()
    app.stop()
    expect(page.locator(_card(page, app.port))).to_have_count(0, timeout=LIVE_WAIT_MS)


def test_a_hostile_page_title_shows_as_text_in_the_live_list(
    processes: Processes, page: Page
) -> None:
    """An app's title is its author's text: rendered live, it stays text, runs nothing."""
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    _signed_in_home(page, proxy)
    _wait_live(page)
    hostile = "<img src=x onerror=window.pwned=1><b>bold</b>"
    # In <title> markup is plain text (RCDATA): the probe reads it back as written.
    app = processes.static_app("hostile", f"<!doctype html><title>{hostile}</title>")
    card = page.locator(_card(page, app.port))
    expect(card).to_contain_text(f"Yes: {hostile}", timeout=LIVE_WAIT_MS)
    assert card.locator("img, b").count() == 0
    assert page.evaluate("window.pwned === undefined")


def test_without_javascript_the_list_still_links_each_port(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    app = processes.static_app("plain", _app_html("Plain app"))
    page = new_context(java_script_enabled=False).new_page()
    _signed_in_home(page, proxy)
    card = page.locator(_card(page, app.port))
    expect(card).to_be_visible()
    assert card.locator("button.copy").first.is_hidden()  # they need the script
    with page.expect_navigation():
        card.locator(f'a:text-is("/proxy/{app.port}/")').click()
    expect(page.locator("#app")).to_have_text("Plain app page")


def test_the_sharing_placeholder_survives_live_updates(
    processes: Processes, page: Page
) -> None:
    """The contract the sharing controls rely on (home.py's docstring): each port's
    placeholder node is kept across re-renders, and every render is announced."""
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    first = processes.static_app("first", _app_html("First app"))
    _signed_in_home(page, proxy)
    _wait_live(page)
    page.evaluate(
        """port => {
            window.renders = [];
            document.addEventListener("portproxy:ports",
                event => window.renders.push(event.detail.map(e => e.port)));
            const div = document.querySelector(`.sharing[data-port="${port}"]`);
            div.appendChild(document.createElement("form")).id = "kept";
        }""",
        first.port,
    )
    second = processes.static_app("second", _app_html("Second app"))
    expect(page.locator(_card(page, second.port))).to_be_visible(timeout=LIVE_WAIT_MS)
    kept = page.locator(f'.sharing[data-port="{first.port}"] form#kept')
    expect(kept).to_have_count(1)
    assert page.evaluate(f"window.renders.some(r => r.includes({second.port}))")
    fresh = page.locator(f'.sharing[data-port="{second.port}"]')
    expect(fresh).to_have_attribute("data-access", "private")
    expect(fresh.locator(".access-note")).to_contain_text("Private")


def test_the_copy_button_puts_the_url_on_the_clipboard(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    app = processes.static_app("copied", _app_html("Copied app"))
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    _signed_in_home(page, proxy)
    card = page.locator(_card(page, app.port))
    button = card.locator(f'li:has(a:text-is("/proxy/{app.port}/")) button.copy')
    from playwright.sync_api import expect

    button.click()
    # "Copied" shows for 1.5 s: look for it first (waiting for it), the clipboard after.
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == (
        f"{_home(proxy)}proxy/{app.port}/"
    )


def test_the_waiting_502_page_turns_into_the_app_once_it_starts(
    processes: Processes, page: Page
) -> None:
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    _signed_in_home(page, proxy)
    port = free_port()
    response = page.goto(f"{_home(proxy)}proxy/{port}/")
    assert response is not None and response.status == 502
    root = processes.workdir / "waited-root"
    root.mkdir()
    (root / "index.html").write_text(_app_html("Waited app"), encoding="utf-8")
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
    processes.start("waited", [*argv, "--directory", str(root), str(port)], port=port)
    expect(page.locator("#app")).to_have_text("Waited app page", timeout=LIVE_WAIT_MS)


def test_the_page_fits_a_phone_and_a_desktop(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    """Also takes the docs' pictures (PORTPROXY_SCREENSHOTS=1): a few apps listed."""
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    titles = {"Shop - dev": "shop", "Project docs": "docs"}
    apps = [processes.static_app(name, _app_html(title)) for title, name in titles.items()]
    # An app on ::1 only: the page warns that IPv4 clients (and localhost, on some
    # systems) miss it.
    root = processes.workdir / "v6-root"
    root.mkdir()
    (root / "index.html").write_text(_app_html("IPv6 only"), encoding="utf-8")
    v6_port = free_port()
    v6_argv = [sys.executable, "-m", "http.server", "--bind", "::1"]
    apps.append(
        processes.start(
            "v6",
            [*v6_argv, "--directory", str(root), str(v6_port)],
            port=v6_port,
            hosts=("::1",),
        )
    )
    shown = {proxy.port, *(app.port for app in apps)}
    labelled = False
    sizes = {"home-desktop": (1280, 800), "home-phone": (390, 844)}
    for name, (width, height) in sizes.items():
        context = new_context(
            viewport={"width": width, "height": height},
            is_mobile=width < 600,
            has_touch=width < 600,
        )
        page = context.new_page()
        _signed_in_home(page, proxy)
        _wait_live(page)
        for app in apps:
            expect(page.locator(_card(page, app.port))).to_be_visible()
        if not labelled:
            # One port made public and labelled through the API: the page shows it live.
            status = page.evaluate(
                """port => fetch(`./.portproxy/api/ports/${port}`, {
                    method: "PATCH", headers: {"Content-Type": "application/json"},
                    body: JSON.stringify({access: "public", label: "storefront"})
                }).then(r => r.status)""",
                apps[0].port,
            )
            assert status == 200
            labelled = True
        shop = page.locator(_card(page, apps[0].port))
        expect(shop.locator(".badge.public")).to_have_text("public", timeout=LIVE_WAIT_MS)
        expect(shop.locator(".label")).to_have_text("storefront")
        for title in titles:  # the HTTP probe's page titles arrive live
            expect(page.locator("#ports")).to_contain_text(title, timeout=LIVE_WAIT_MS)
        expect(page.locator(_card(page, v6_port)).locator(".warnings")).to_be_visible()
        # The machine runs other people's processes too: the picture keeps this
        # test's own apps and portproxy, also after a live update re-renders the list.
        page.evaluate(
            """shown => {
                const keep = () => document.querySelectorAll("li.port").forEach(li => {
                    if (!shown.includes(Number(li.dataset.port))) { li.remove(); }
                });
                document.addEventListener("portproxy:ports", keep);
                keep();
            }""",
            sorted(shown),
        )
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
        save_screenshot(page, name)


def test_the_copy_button_falls_back_outside_a_secure_context(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    """Plain HTTP on a name other than localhost has no navigator.clipboard: the
    button copies through a selected text area instead."""
    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    app = processes.static_app("fallback", _app_html("Fallback app"))
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    home = f"http://home.test:{proxy.port}/"  # *.test resolves to 127.0.0.1 here
    page.goto(f"{home}login")
    page.fill("input[type=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[type=password]", "Enter")
    page.goto(home)
    assert page.evaluate("window.isSecureContext || !!navigator.clipboard") is False
    button = page.locator(_card(page, app.port)).locator("button.copy").first
    button.click()
    assert button.inner_text() == "Copied"
    # Read it back from a secure page of the same browser profile.
    reader = context.new_page()
    reader.goto(f"http://localhost:{proxy.port}/login")
    assert reader.evaluate("navigator.clipboard.readText()") == f"{home}proxy/{app.port}/"


def _nginx_under_prefix(processes: Processes, backend: int) -> Process:
    """nginx on a free port mounting portproxy under /pp/ without telling it (no
    X-Forwarded-Prefix): only relative URLs keep the browser under /pp/."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("this test needs nginx (apt-get install nginx)")
    port, argv = nginx_under_prefix(processes.workdir / "nginx", backend)
    return processes.start("nginx", argv, port=port)


def test_under_a_front_proxys_prefix_the_page_stays_under_it(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    from playwright.sync_api import expect

    proxy = processes.portproxy("--auth", "password", env={"PASSWORD": PASSWORD})
    front = _nginx_under_prefix(processes, proxy.port)
    home = f"http://localhost:{front.port}/pp/"
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"{home}login")
    page.fill("input[type=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[type=password]", "Enter")
    page.goto(home)
    _wait_live(page)  # the event stream was found under /pp/ too
    app = processes.static_app("prefixed", _app_html("Prefixed app"))
    card = page.locator(_card(page, app.port))
    expect(card).to_be_visible(timeout=LIVE_WAIT_MS)
    card.locator("button.copy").first.click()
    assert page.evaluate("navigator.clipboard.readText()") == f"{home}proxy/{app.port}/"
    with page.expect_navigation():
        card.locator(f'a:text-is("/proxy/{app.port}/")').click()
    expect(page.locator("#app")).to_have_text("Prefixed app page")
    assert page.url == f"{home}proxy/{app.port}/"

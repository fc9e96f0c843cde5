"""A share link in a real browser (SPEC 12): it opens its app, and nothing else.

portproxy runs as `twist portproxy` with a password; the link is made with the
`share` command on the same data dir and password, as a user on the machine would. A
fresh browser profile (no session, no cookies) opens the link and sees the app; the
same browser is refused another port and the start page: it is sent to sign in, and
the other app's page never shows.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.browser.harness import Process, Processes

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Response

pytestmark = pytest.mark.browser

PASSWORD = "share-link-browser-password"


def _app_html(name: str) -> str:
    return f"<!doctype html><title>{name}</title><p id=app>{name} page</p>"


def _share(proxy: Process, data_dir: str, port: int, *args: str) -> str:
    """Run `twist portproxy ... share PORT` as the instance's configuration; the link."""
    env = {k: v for k, v in os.environ.items() if k not in ("HASHED_PASSWORD",)}
    env["PASSWORD"] = PASSWORD
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "twisted",
            "portproxy",
            "--listen",
            f"tcp:{proxy.port}:interface=127.0.0.1",
            "--data-dir",
            data_dir,
            "share",
            str(port),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _until_honoured(link: str) -> None:
    """Wait (at most 2 s, the instance's promise) until the link answers its redirect."""
    url = urlsplit(link)
    deadline = time.monotonic() + 2.0
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", url.port, timeout=5)
        try:
            connection.request("GET", url.path, headers={"Host": url.netloc})
            status = connection.getresponse().status
        finally:
            connection.close()
        if status == 302:
            return
        assert time.monotonic() < deadline, f"the link still answers {status}"
        time.sleep(0.1)


def test_a_share_link_opens_its_app_in_a_fresh_browser_and_nothing_else(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    shared = processes.static_app("shared", _app_html("shared app"))
    other = processes.static_app("other", _app_html("other app"))
    proxy = processes.portproxy(env={"PASSWORD": PASSWORD})
    data_dir = str(processes.workdir / f"portproxy-data-{proxy.port}")
    link = _share(proxy, data_dir, shared.port, "--ttl", "2h")
    assert link.startswith(f"http://localhost:{proxy.port}/.portproxy/share/"), link
    _until_honoured(link)

    context = new_context()  # a fresh profile: no session, no cookie
    page = context.new_page()
    page.goto(link)
    assert urlsplit(page.url).path == f"/proxy/{shared.port}/"
    assert page.locator("#app").inner_text() == "shared app page"
    assert not any(c["name"].startswith("portproxy-session") for c in context.cookies())

    # Another port: not the app; a browser is sent to sign in.
    response = page.goto(f"http://localhost:{proxy.port}/proxy/{other.port}/")
    assert response is not None
    assert "other app" not in page.content()
    assert urlsplit(page.url).path in ("/login", "/.portproxy/login"), page.url
    assert page.locator("input[type=password]").count() == 1

    # The start page is not opened by a grant either.
    page.goto(f"http://localhost:{proxy.port}/")
    assert urlsplit(page.url).path in ("/login", "/.portproxy/login"), page.url

    # The shared app still works in the same browser.
    page.goto(f"http://localhost:{proxy.port}/proxy/{shared.port}/")
    assert page.locator("#app").inner_text() == "shared app page"


def _status(proxy: Process, path: str, token: str) -> int:
    """The status of a GET through the proxy with C{token} as a Bearer token."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        return connection.getresponse().status
    finally:
        connection.close()


def _failures(page: Page) -> list[str]:
    """Collect what went wrong in C{page}: console errors other than failed loads (a
    script the CSP blocked) and every API call that did not succeed."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    def on_response(response: Response) -> None:
        if "/.portproxy/api/" in response.url and response.status >= 400:
            errors.append(f"{response.status} {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    return errors


def test_the_start_page_makes_and_revokes_links_and_tokens_and_toggles_public(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    from playwright.sync_api import expect

    app = processes.static_app("panel", _app_html("panel app"))
    proxy = processes.portproxy(env={"PASSWORD": PASSWORD})
    home = f"http://localhost:{proxy.port}/"
    owner = new_context().new_page()
    errors = _failures(owner)
    owner.goto(home + "login")
    owner.fill("input[type=password]", PASSWORD)
    with owner.expect_navigation():
        owner.press("input[type=password]", "Enter")
    owner.goto(home)
    panel = owner.locator(f'li.port[data-port="{app.port}"] .sharing')
    # Without a click the level shows (the server wrote it); the script adds controls.
    expect(panel.locator(".access-note")).to_contain_text("Private")
    controls = panel.locator(".share-controls")
    expect(controls).to_have_count(1)

    # A link for two hours, shown once, opens the app in a fresh profile.
    controls.locator("select[name=ttl]").select_option("7200")
    controls.get_by_role("button", name="Create share link").click()
    link_box = controls.locator("input.link")
    expect(link_box).to_have_value(re.compile(r"^http://localhost:\d+/\.portproxy/share/"))
    link = link_box.input_value()
    expect(controls.locator("li.share")).to_have_count(1)
    guest = new_context().new_page()
    guest.goto(link)
    assert guest.locator("#app").inner_text() == "panel app page"

    # Revoked from the page: the guest's next request is refused.
    controls.locator("li.share").get_by_role("button", name="Revoke").click()
    expect(controls.locator("li.share")).to_have_count(0)
    # A new URL: the browser may answer the old one from its cache (http.server sends
    # Last-Modified, so Chromium may keep the page a moment), which is no request.
    guest.goto(f"{home}proxy/{app.port}/?after-revoke")
    assert "panel app" not in guest.content()

    # A token from the page: shown once, opens the port for a machine, revocable.
    controls.locator("input[name=name]").fill("ci")
    controls.get_by_role("button", name="Create token").click()
    secret_box = controls.get_by_label("token", exact=True)
    expect(secret_box).to_have_value(re.compile(r"^ppt_"))
    secret = secret_box.input_value()
    expect(controls.locator("li.token")).to_have_count(1)
    assert _status(proxy, f"/proxy/{app.port}/", secret) == 200
    controls.locator("li.token").get_by_role("button", name="Revoke").click()
    expect(controls.locator("li.token")).to_have_count(0)
    assert _status(proxy, f"/proxy/{app.port}/", secret) == 401

    # Made public from the page: anyone opens it, and the page says so.
    controls.get_by_role("button", name="Make public").click()
    expect(controls.get_by_role("button", name="Make private")).to_have_count(1)
    expect(panel.locator(".access-note")).to_contain_text("Public")
    stranger = new_context().new_page()
    stranger.goto(f"{home}proxy/{app.port}/")
    assert stranger.locator("#app").inner_text() == "panel app page"
    assert errors == []

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
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.browser.harness import Process, Processes

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

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

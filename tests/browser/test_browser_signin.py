"""One sign-in on the main host opens every proxy host, in a real browser (issue 17).

With `--proxy-domain localhost` the session cookie of `localhost` cannot cover
`<port>.localhost` (browsers keep cookies for the two apart), so a proxy host gets its
session through a short-lived ticket that the main host hands out to a signed-in user.
The tests are black-box: they only know that the ticket arrives on the proxy host as a
`/.portproxy/...?<query>` URL to which the main host redirected the browser.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import pytest

from tests.browser.harness import Process, Processes

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Request

pytestmark = pytest.mark.browser

PASSWORD = "browser-test-password"


def _app_html(name: str) -> str:
    return f"<!doctype html><title>{name}</title><p id=app>{name} page</p>"


def _main_host(proxy: Process) -> str:
    return f"localhost:{proxy.port}"


def _app_host(app: Process, proxy: Process) -> str:
    return f"{app.port}.localhost:{proxy.port}"


def _is_ticket(request: Request, host: str, main_host: str) -> bool:
    """A request for a portproxy URL with a query on C{host}, reached by a redirect from
    the main host: the ticket hand-over."""
    url = urlsplit(request.url)
    previous = request.redirected_from
    return (
        url.netloc == host
        and url.path.startswith("/.portproxy/")
        and bool(url.query)
        and previous is not None
        and urlsplit(previous.url).netloc == main_host
    )


def _sign_in(page: Page, proxy: Process) -> None:
    page.goto(f"http://{_main_host(proxy)}/login")
    page.fill("input[type=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[type=password]", "Enter")
    assert urlsplit(page.url).path != "/login", "the password was not accepted"
    assert any(c["name"].startswith("portproxy-session") for c in page.context.cookies())


def _session_cookies(context: BrowserContext) -> list[str]:
    return [
        f"{c['domain']}: {c['name']}"
        for c in context.cookies()
        if c["name"].startswith("portproxy-session")
    ]


def _unused_ticket(context: BrowserContext, proxy: Process, app: Process) -> str:
    """Follow, hop by hop and with the cookies C{context} would send, the redirects a
    navigation to C{app}'s host takes, and stop at the ticket URL before anything uses it.

    Playwright's routes see only the first request of a redirect chain, and its request
    client cannot resolve *.localhost, so the hops are plain HTTP to 127.0.0.1 with the
    browser's Host and cookies.
    """
    host = _app_host(app, proxy)
    url = f"http://{host}/"
    for _ in range(5):
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies(url))
        target = urlsplit(url)
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            connection.request(
                "GET",
                target.path + (f"?{target.query}" if target.query else ""),
                headers={
                    "Host": target.netloc,
                    "Accept": "text/html,application/xhtml+xml",
                    **({"Cookie": cookies} if cookies else {}),
                },
            )
            response = connection.getresponse()
            location = response.getheader("location")
        finally:
            connection.close()
        assert response.status in (302, 303, 307) and location, f"{url}: {response.status}"
        previous, url = url, urljoin(url, location)
        ticket = urlsplit(url)
        if (
            ticket.netloc == host
            and ticket.path.startswith("/.portproxy/")
            and ticket.query
            and urlsplit(previous).netloc == _main_host(proxy)
        ):
            return url
    raise AssertionError(f"no ticket was handed to {host}; last hop {url}")


def _refused(page: Page, url: str, app_name: str) -> None:
    """Open C{url} and check that the app's page did not show and no session was set."""
    page.goto(url)
    assert f"{app_name} page" not in page.content()
    assert _session_cookies(page.context) == []


def test_one_sign_in_on_the_main_host_opens_an_app_on_a_localhost_proxy_host(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    app = processes.static_app("app-one", _app_html("app one"))
    proxy = processes.portproxy("--proxy-domain", "localhost", env={"PASSWORD": PASSWORD})
    context = new_context()
    page = context.new_page()
    tickets: list[str] = []
    page.on(
        "request",
        lambda r: (
            tickets.append(r.url)
            if _is_ticket(r, _app_host(app, proxy), _main_host(proxy))
            else None
        ),
    )

    _sign_in(page, proxy)
    page.goto(f"http://{_app_host(app, proxy)}/")

    assert page.locator("#app").inner_text() == "app one page", proxy.log()
    assert urlsplit(page.url).netloc == _app_host(app, proxy)
    assert page.locator("input[type=password]").count() == 0
    assert len(tickets) == 1, f"expected one ticket hand-over, saw {tickets}"

    # The same ticket again, in a browser that never signed in: single use.
    _refused(new_context().new_page(), tickets[0], "app one")


def test_a_ticket_for_one_proxy_host_is_refused_on_another(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    one = processes.static_app("app-one", _app_html("app one"))
    two = processes.static_app("app-two", _app_html("app two"))
    proxy = processes.portproxy("--proxy-domain", "localhost", env={"PASSWORD": PASSWORD})
    signed_in = new_context()
    _sign_in(signed_in.new_page(), proxy)
    # Two unused tickets for app two's host: one to misuse, one to show that such a
    # ticket does open app two (so the refusal is the host binding, nothing else).
    misused = urlsplit(_unused_ticket(signed_in, proxy, two))
    control = _unused_ticket(signed_in, proxy, two)

    elsewhere = misused._replace(netloc=_app_host(one, proxy)).geturl()
    _refused(new_context().new_page(), elsewhere, "app one")

    page = new_context().new_page()
    page.goto(control)
    assert page.locator("#app").inner_text() == "app two page", proxy.log()

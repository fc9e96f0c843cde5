"""Sign in once on every host: tickets from the main host, over real sockets.

With C{--proxy-domain localhost}, a cookie set on C{localhost:<port>} cannot cover
C{5173.localhost:<port>}. A signed-out browser there is sent to the main host's ticket
endpoint, signs in there once, and comes back with a single-use ticket bound to the
proxy host, which becomes a host-only session cookie.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest
import pytest_twisted

from portproxy.auth.origins import Origin, url_origin
from tests.support import Recorder, get, parse_response, raw_request

PASSWORD = "correct horse battery staple"
HTML = b"Accept: text/html,application/xhtml+xml\r\n"


def _post_login(path: bytes, host: bytes, to: str) -> bytes:
    body = f"password={quote(PASSWORD)}&to={quote(to, safe='')}".encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (path, host, len(body), body)
    )


def _target(url: str) -> tuple[bytes, bytes]:
    """(Host, request target) for an absolute URL."""
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    return parts.netloc.encode(), target.encode()


def _session(headers: dict[bytes, list[bytes]]) -> tuple[bytes, bytes]:
    """(name=value, the whole Set-Cookie) of the session cookie that was set."""
    (value,) = [
        c for c in headers.get(b"set-cookie", []) if c.startswith(b"portproxy-session=")
    ]
    return value.split(b";")[0], value


class Browser:
    """Just enough of a browser: follows nothing by itself, keeps cookies per host."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[bytes, bytes] = {}

    async def go(self, url: str, request: bytes | None = None) -> tuple[int, Any, bytes]:
        host, target = _target(url)
        name = host.split(b":")[0]
        extra = HTML
        if name in self.cookies:
            extra += b"Cookie: " + self.cookies[name] + b"\r\n"
        raw = await raw_request(self.port, request or get(target, host=host, headers=extra))
        status, headers, body = parse_response(raw)
        for value in headers.get(b"set-cookie", []):
            if value.startswith(b"portproxy-session=") and b"Max-Age=0" not in value:
                assert b"Domain=" not in value  # host-only everywhere in these tests
                self.cookies[name] = value.split(b";")[0]
        return status, headers, body


@pytest.fixture
def localhost_proxy(make_proxy, tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        proxy_domains=("localhost",),
    )


@pytest.fixture
def host_pattern_proxy(make_proxy, tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        proxy_domains=("{{port}}.{{host}}",),
    )


async def _sign_in_on_main(browser: Browser, main: str) -> None:
    status, headers, _ = await browser.go(
        main + "/login", _post_login(b"/login", _target(main)[0], "/")
    )
    assert status == 302
    browser.cookies[_target(main)[0].split(b":")[0]] = _session(headers)[0]


async def _mint(browser: Browser, main: str, to: str) -> str:
    """The accept URL the main host sends a signed-in browser to."""
    status, headers, _ = await browser.go(
        main + "/.portproxy/ticket?to=" + quote(to, safe="")
    )
    assert status == 302, headers
    return str(headers[b"location"][0].decode())


@pytest_twisted.ensureDeferred
async def test_one_password_signs_in_on_a_localhost_proxy_host(
    upstream, localhost_proxy
) -> None:
    up = upstream(rec := Recorder())
    port = localhost_proxy.port
    main = f"http://localhost:{port}"
    app = f"http://{up.port}.localhost:{port}/app/page?x=1&y=%2F"
    browser = Browser(port)

    # 1. The proxy host sends a signed-out browser to the main host's ticket endpoint.
    status, headers, _ = await browser.go(app)
    assert status == 302
    ticket_url = headers[b"location"][0].decode()
    parts = urlsplit(ticket_url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "http",
        f"localhost:{port}",
        "/.portproxy/ticket",
    )
    assert parse_qs(parts.query)["to"] == [app]

    # 2. Not signed in there: to the main host's login page, which comes back here.
    status, headers, _ = await browser.go(ticket_url)
    assert status == 302
    login_url = urljoin(ticket_url, headers[b"location"][0].decode())
    assert urlsplit(login_url).path == "/.portproxy/login"
    status, _, page = await browser.go(login_url)
    assert status == 200 and b"<form" in page
    to = parse_qs(urlsplit(login_url).query)["to"][0]
    status, headers, _ = await browser.go(
        login_url, _post_login(b"/.portproxy/login", _target(main)[0], to)
    )
    assert status == 302
    _, set_cookie = _session(headers)
    assert b"Domain=" not in set_cookie  # localhost: host-only
    back = urljoin(login_url, headers[b"location"][0].decode())
    assert back == ticket_url

    # 3. Signed in: a ticket for the proxy host, handed to that host.
    status, headers, _ = await browser.go(back)
    assert status == 302
    assert headers[b"cache-control"] == [b"no-store"]
    assert headers[b"referrer-policy"] == [b"no-referrer"]
    accept_url = headers[b"location"][0].decode()
    accept = urlsplit(accept_url)
    assert (accept.netloc, accept.path) == (
        f"{up.port}.localhost:{port}",
        "/.portproxy/ticket/accept",
    )

    # 4. The proxy host takes the ticket: a host-only cookie, then the page.
    status, headers, _ = await browser.go(accept_url)
    assert status == 302
    assert headers[b"referrer-policy"] == [b"no-referrer"]
    assert headers[b"cache-control"] == [b"no-store"]
    _, set_cookie = _session(headers)
    attributes = {a.strip() for a in set_cookie.split(b";")}
    assert {b"HttpOnly", b"SameSite=Lax", b"Path=/"} <= attributes
    assert not any(a.startswith(b"Domain=") for a in attributes)
    assert b"Secure" not in attributes  # plain HTTP here
    assert urljoin(accept_url, headers[b"location"][0].decode()) == app
    status, _, body = await browser.go(app)
    assert status == 200
    assert rec.requests[-1]["uri"] == b"/app/page?x=1&y=%2F"
    # The session cookie never reaches the app.
    assert b"portproxy-session" not in b"".join(rec.header(-1, b"cookie"))

    # 5. Another port needs no password: straight through the main host's session.
    other = f"http://{up.port}.localhost:{port}/"
    del browser.cookies[f"{up.port}.localhost".encode()]
    status, headers, _ = await browser.go(other)
    status, headers, _ = await browser.go(headers[b"location"][0].decode())
    assert status == 302 and b"/.portproxy/ticket/accept?" in headers[b"location"][0]
    status, headers, _ = await browser.go(headers[b"location"][0].decode())
    assert status == 302 and _session(headers)


@pytest_twisted.ensureDeferred
async def test_a_replayed_ticket_is_refused(upstream, localhost_proxy) -> None:
    up = upstream(Recorder())
    port = localhost_proxy.port
    main, app = f"http://localhost:{port}", f"http://{up.port}.localhost:{port}/x"
    browser = Browser(port)
    await _sign_in_on_main(browser, main)
    accept_url = await _mint(browser, main, app)
    status, headers, _ = await Browser(port).go(accept_url)
    assert status == 302 and _session(headers)
    status, headers, body = await Browser(port).go(
        accept_url
    )  # another, cookie-less browser
    assert status == 403
    assert b"set-cookie" not in headers
    assert headers[b"cache-control"] == [b"no-store"]
    assert headers[b"referrer-policy"] == [b"no-referrer"]
    assert b"expired or was already used" in body
    assert b'href="./../../.portproxy/login?to=/x"' in body  # sign in on this host


@pytest_twisted.ensureDeferred
async def test_a_ticket_for_one_proxy_host_is_refused_on_another(
    upstream, localhost_proxy
) -> None:
    up = upstream(Recorder())
    port = localhost_proxy.port
    main = f"http://localhost:{port}"
    browser = Browser(port)
    await _sign_in_on_main(browser, main)
    accept_url = await _mint(browser, main, f"http://{up.port}.localhost:{port}/x")
    elsewhere = accept_url.replace(f"{up.port}.localhost", f"{up.port + 1}.localhost")
    for url in (elsewhere, accept_url.replace(f":{port}/", f":{port + 1}/")):
        host, target = _target(url)
        # Any Host may be sent to our socket: the ticket is bound to P's authority.
        raw = await raw_request(port, get(target, host=host, headers=HTML))
        assert parse_response(raw)[0] == 403


@pytest_twisted.ensureDeferred
async def test_expired_forged_and_missing_tickets_are_refused(
    upstream, localhost_proxy
) -> None:
    up = upstream(Recorder())
    port = localhost_proxy.port
    proxy_host = f"{up.port}.localhost:{port}"
    auth = localhost_proxy.instance.root.auth
    now = localhost_proxy.instance.reactor.seconds()
    bound = url_origin(f"http://{proxy_host}")
    expired = auth.tickets.issue(bound, now - 120, secrets.token_bytes(16))
    good = auth.mint_ticket(bound)
    head, mac = good.rsplit(".", 1)
    tampered = head + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    parts = good.split(".")
    longer = ".".join([parts[0], parts[1], str(int(parts[2]) + 30), *parts[3:]])
    for ticket in (expired, tampered, longer, "", "t1.x.1.y.z", "1.2.3.4"):
        url = f"http://{proxy_host}/.portproxy/ticket/accept?t={quote(ticket)}&to=/x"
        status, headers, body = await Browser(port).go(url)
        assert status == 403, ticket
        assert b"set-cookie" not in headers
    # Without Accept: text/html the refusal is JSON.
    raw = await raw_request(
        port,
        get(b"/.portproxy/ticket/accept?t=" + tampered.encode(), host=proxy_host.encode()),
    )
    status, headers, body = parse_response(raw)
    assert status == 403 and headers[b"content-type"] == [b"application/json"]
    assert json.loads(body)["login"].endswith("/.portproxy/login?to=/")
    # The untouched ticket still works: the refusals did not use it up.
    status, headers, _ = await Browser(port).go(
        f"http://{proxy_host}/.portproxy/ticket/accept?t={good}&to=/x"
    )
    assert status == 302 and _session(headers)


@pytest.mark.parametrize(
    "to",
    [
        "http://evil.com/",
        "https://evil.com/x",
        "//evil.com/x",
        "/\\evil.com",
        "javascript:alert(1)",
        "http://{p}.localhost.evil.com/",
        "http://evil.com@{p}.localhost/",
        "http://localhost:{port}/",  # the main host itself is no proxy host
        "/proxy/{p}/",
        "",
    ],
)
@pytest_twisted.ensureDeferred
async def test_the_ticket_endpoint_refuses_a_to_off_the_proxy_hosts(
    upstream, localhost_proxy, to: str
) -> None:
    up = upstream(rec := Recorder())
    port = localhost_proxy.port
    main = f"http://localhost:{port}"
    browser = Browser(port)
    await _sign_in_on_main(browser, main)
    to = to.replace("{p}", str(up.port)).replace("{port}", str(port))
    status, headers, _ = await browser.go(
        main + "/.portproxy/ticket?to=" + quote(to, safe="")
    )
    assert status == 400
    assert b"location" not in headers
    # Signed out, the same link does not even lead to the login page.
    status, headers, _ = await Browser(port).go(
        main + "/.portproxy/ticket?to=" + quote(to, safe="")
    )
    assert status == 400 and b"location" not in headers
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_host_patterns_sign_in_through_the_host_and_never_another_host_value(
    upstream, host_pattern_proxy
) -> None:
    up = upstream(rec := Recorder())
    port = host_pattern_proxy.port
    main = f"http://box.test:{port}"
    app = f"http://{up.port}.box.test:{port}/x"
    browser = Browser(port)
    status, headers, _ = await browser.go(app)
    assert status == 302
    assert headers[b"location"][0].decode() == (
        f"{main}/.portproxy/ticket?to=" + quote(app, safe="/:")
    )
    await _sign_in_on_main(browser, main)
    status, headers, _ = await browser.go(headers[b"location"][0].decode())
    assert status == 302
    status, headers, _ = await browser.go(headers[b"location"][0].decode())
    assert status == 302
    status, _, _ = await browser.go(app)
    assert status == 200 and rec.requests[-1]["uri"] == b"/x"
    # From box.test, a ticket for another {{host}} value is refused.
    for to in (
        f"http://{up.port}.evil.test:{port}/x",
        f"http://{up.port}.box.test.evil:{port}/",
    ):
        status, headers, _ = await browser.go(
            main + "/.portproxy/ticket?to=" + quote(to, safe="")
        )
        assert status == 400 and b"location" not in headers, to


@pytest_twisted.ensureDeferred
async def test_the_proxy_hosts_own_login_keeps_working(upstream, localhost_proxy) -> None:
    up = upstream(Recorder())
    port = localhost_proxy.port
    host = f"{up.port}.localhost:{port}".encode()
    status, _, page = parse_response(
        await raw_request(port, get(b"/.portproxy/login?to=/x", host=host, headers=HTML))
    )
    assert status == 200 and b"<form" in page
    status, headers, _ = parse_response(
        await raw_request(port, _post_login(b"/.portproxy/login", host, "/x"))
    )
    assert status == 302 and headers[b"location"] == [b"./../x"]
    assert b"Domain=" not in _session(headers)[1]


@pytest_twisted.ensureDeferred
async def test_a_cookie_that_can_cover_the_proxy_host_keeps_the_plain_login(
    upstream, make_proxy, tmp_path: Path
) -> None:
    proxy = make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        proxy_domains=("example.test",),
    )
    up = upstream(Recorder())
    status, headers, _ = parse_response(
        await raw_request(
            proxy.port, get(b"/x", host=b"%d.example.test" % up.port, headers=HTML)
        )
    )
    assert status == 302
    assert headers[b"location"][0].startswith(b"./.portproxy/login?to=http://")


@pytest_twisted.ensureDeferred
async def test_only_browser_navigations_are_sent_for_a_ticket(
    upstream, localhost_proxy
) -> None:
    up = upstream(Recorder())
    raw = await raw_request(
        localhost_proxy.port, get(b"/x", host=b"%d.localhost:1" % up.port)
    )
    status, headers, body = parse_response(raw)
    assert (status, json.loads(body)) == (401, {"error": "Unauthorized"})


@pytest_twisted.ensureDeferred
async def test_a_ticket_used_by_one_process_is_refused_by_another_sharing_the_data_dir(
    upstream, make_proxy, tmp_path: Path
) -> None:
    """What --workers does: processes with their own authenticator, one data dir."""
    first, second = (
        make_proxy(
            environ={"PASSWORD": PASSWORD},
            auth="password",
            data_dir=str(tmp_path),
            proxy_domains=("localhost",),
        )
        for _ in range(2)
    )
    up = upstream(Recorder())
    proxy_host = f"{up.port}.localhost:8080"
    ticket = first.instance.root.auth.mint_ticket(url_origin(f"http://{proxy_host}"))
    url = f"http://{proxy_host}/.portproxy/ticket/accept?t={ticket}&to=/"
    host, target = _target(url)
    raw = await raw_request(first.port, get(target, host=host, headers=HTML))
    assert parse_response(raw)[0] == 302
    raw = await raw_request(second.port, get(target, host=host, headers=HTML))
    assert parse_response(raw)[0] == 403
    assert os.listdir(tmp_path / "tickets")  # the nonce, until the ticket expires


def test_without_proxy_domains_nothing_is_written_for_tickets(
    make_proxy, tmp_path: Path
) -> None:
    make_proxy(environ={"PASSWORD": PASSWORD}, auth="password", data_dir=str(tmp_path))
    assert not (tmp_path / "tickets").exists()


# --- The attacker's review: where a ticket may go, and what it is worth ----------------


@pytest.mark.parametrize(
    "to",
    [
        "http://{p}.localhost:1/x",  # a listener someone else may own
        "http://{p}.localhost:80/x",
        "http://{p}.localhost/x",  # port 80 too
        "http://{p}.localhost:0/x",
        "https://{p}.localhost:{port}/x",  # another scheme than the browser used
    ],
)
@pytest_twisted.ensureDeferred
async def test_the_ticket_endpoint_mints_only_for_the_scheme_and_port_the_browser_used(
    upstream, localhost_proxy, to: str
) -> None:
    up = upstream(Recorder())
    port = localhost_proxy.port
    main = f"http://localhost:{port}"
    browser = Browser(port)
    await _sign_in_on_main(browser, main)
    to = to.replace("{p}", str(up.port)).replace("{port}", str(port))
    status, headers, _ = await browser.go(
        main + "/.portproxy/ticket?to=" + quote(to, safe="")
    )
    assert status == 400, headers.get(b"location")
    assert b"location" not in headers


@pytest_twisted.ensureDeferred
async def test_the_ticket_endpoint_refuses_a_host_that_needs_no_ticket_from_here(
    upstream, localhost_proxy, make_proxy, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    port = localhost_proxy.port
    # 127.0.0.1 is not the main host 5173.localhost signs in through (localhost is).
    alias = f"http://127.0.0.1:{port}"
    browser = Browser(port)
    await _sign_in_on_main(browser, alias)
    app = f"http://{up.port}.localhost:{port}/x"
    status, headers, _ = await browser.go(alias + "/.portproxy/ticket?to=" + quote(app))
    assert status == 400 and b"location" not in headers
    # A proxy host the main host's cookie covers (Domain=example.test) needs none.
    covered = make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path / "covered"),
        proxy_domains=("example.test",),
    )
    main = b"example.test:%d" % covered.port
    raw = await raw_request(covered.port, _post_login(b"/login", main, "/"))
    cookie = parse_response(raw)[1][b"set-cookie"][0].split(b";")[0]
    to = f"http://{up.port}.example.test:{covered.port}/x"
    raw = await raw_request(
        covered.port,
        get(
            b"/.portproxy/ticket?to=" + quote(to).encode(),
            host=main,
            headers=HTML + b"Cookie: " + cookie + b"\r\n",
        ),
    )
    status, headers, _ = parse_response(raw)
    assert status == 400 and b"location" not in headers


async def _status(port: int, host: str, target: bytes, cookie: bytes) -> int:
    raw = await raw_request(
        port, get(target, host=host.encode(), headers=HTML + b"Cookie: " + cookie + b"\r\n")
    )
    return parse_response(raw)[0]


@pytest_twisted.ensureDeferred
async def test_a_ticket_session_is_good_on_its_own_host_only(
    upstream, localhost_proxy
) -> None:
    """The review's service-worker attack: an app on P steals a ticket for P and
    redeems it from its backend. The session it gets must not reach past P."""
    up, other = upstream(rec := Recorder()), upstream(other_rec := Recorder())
    port = localhost_proxy.port
    main = f"http://localhost:{port}"
    proxy_host = f"{up.port}.localhost:{port}"
    browser = Browser(port)
    await _sign_in_on_main(browser, main)
    accept_url = await _mint(browser, main, f"http://{proxy_host}/x")
    # Redeemed by the thief (no browser, no cookie), as the app's backend would.
    status, headers, _ = await Browser(port).go(accept_url)
    assert status == 302
    stolen, set_cookie = _session(headers)
    assert b"Domain=" not in set_cookie

    assert await _status(port, proxy_host, b"/x", stolen) == 200
    assert rec.requests[-1]["uri"] == b"/x"
    for host, target in [
        (f"localhost:{port}", b"/"),  # the main host's home page
        (f"localhost:{port}", b"/proxy/%d/" % other.port),
        (f"localhost:{port}", b"/proxy/%d/" % up.port),
        (f"{other.port}.localhost:{port}", b"/"),  # another proxy host
        (f"127.0.0.1:{port}", b"/"),
        (f"{up.port}.localhost:{port + 1}", b"/x"),  # P's name, another port
    ]:
        assert await _status(port, host, target, stolen) == 302, (host, target)
    assert other_rec.requests == [] and len(rec.requests) == 1
    # P reached without its port is another origin for a browser (port 80).
    assert await _status(port, f"{up.port}.localhost", b"/x", stolen) == 302


@pytest_twisted.ensureDeferred
async def test_a_trailing_dot_proxy_host_signs_in_on_its_own_login_page(
    upstream, localhost_proxy
) -> None:
    """The ticket endpoint refuses 5173.localhost. as a target: no dead end there."""
    up = upstream(Recorder())
    port = localhost_proxy.port
    status, headers, _ = await Browser(port).go(f"http://{up.port}.localhost.:{port}/x")
    assert status == 302
    assert headers[b"location"][0].startswith(b"./.portproxy/login?to=http://")


@pytest_twisted.ensureDeferred
async def test_with_workers_and_no_shared_ticket_store_there_are_no_tickets(
    upstream, make_proxy, tmp_path: Path
) -> None:
    """A ticket must not be good once per process: without the shared directory, the
    proxy hosts fall back to their own sign-in page, and tickets are refused."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    proxy = make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(blocker),
        proxy_domains=("localhost",),
        workers=2,
    )
    up = upstream(Recorder())
    port = proxy.port
    proxy_host = f"{up.port}.localhost:{port}"
    status, headers, _ = await Browser(port).go(f"http://{proxy_host}/x")
    assert status == 302
    assert headers[b"location"][0].startswith(b"./.portproxy/login?to=http://")
    # A browser that arrives at the ticket endpoint anyway goes to P's own login page.
    main = f"http://localhost:{port}"
    browser = Browser(port)
    await _sign_in_on_main(browser, main)
    status, headers, _ = await browser.go(
        main + "/.portproxy/ticket?to=" + quote(f"http://{proxy_host}/x", safe="")
    )
    assert status == 302
    location = headers[b"location"][0].decode()
    assert location == f"http://{proxy_host}/.portproxy/login?to=/x"
    ticket = proxy.instance.root.auth.mint_ticket(
        Origin("http", f"{up.port}.localhost", port)
    )
    status, headers, _ = await Browser(port).go(
        f"http://{proxy_host}/.portproxy/ticket/accept?t={ticket}&to=/x"
    )
    assert status == 403 and b"set-cookie" not in headers


@pytest_twisted.ensureDeferred
async def test_a_ticket_whose_use_cannot_be_recorded_is_refused(
    upstream, localhost_proxy, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    port = localhost_proxy.port
    proxy_host = f"{up.port}.localhost:{port}"
    main = f"http://localhost:{port}"
    browser = Browser(port)
    await _sign_in_on_main(browser, main)
    accept_url = await _mint(browser, main, f"http://{proxy_host}/x")
    shutil.rmtree(tmp_path / "tickets")  # say, the data dir was wiped or the disk is full
    status, headers, _ = await Browser(port).go(accept_url)
    assert status == 403 and b"set-cookie" not in headers
    # Until the store works again, P sends browsers to its own sign-in page.
    status, headers, _ = await Browser(port).go(f"http://{proxy_host}/x")
    assert headers[b"location"][0].startswith(b"./.portproxy/login?to=http://")


@pytest_twisted.ensureDeferred
async def test_a_flood_of_refused_tickets_logs_a_bounded_number_of_lines(
    upstream, localhost_proxy
) -> None:
    from twisted.logger import ILogObserver, formatEvent, globalLogPublisher

    up = upstream(Recorder())
    port = localhost_proxy.port
    proxy_host = f"{up.port}.localhost:{port}".encode()
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        if "Refused a sign-in ticket" in text:
            lines.append(text)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    try:
        for _ in range(30):
            raw = await raw_request(
                port, get(b"/.portproxy/ticket/accept?t=junk", host=proxy_host)
            )
            assert parse_response(raw)[0] == 403
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observer))
    # A client replaying junk cannot fill the log: at most 10 lines a minute.
    assert 1 <= len(lines) <= 10

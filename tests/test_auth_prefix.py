"""Sign-in behind a front proxy that mounts portproxy under a path prefix.

With C{location /pp/ { proxy_pass http://127.0.0.1:8080/; }} and no extra header,
portproxy sees C{/login} while the browser is at C{/pp/login}: every sign-in redirect
and the form's action are relative, so the browser resolves them under C{/pp/}. A
trusted proxy's C{X-Forwarded-Prefix} is honoured; an untrusted peer's is ignored.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from portproxy.auth.redirects import (
    forwarded_prefix,
    mounted_location,
    safe_redirect_target,
)
from tests.support import (
    NGINX,
    Recorder,
    get,
    nginx_under_prefix,
    parse_response,
    raw_request,
)

PASSWORD = "correct horse battery staple"
HTML = b"Accept: text/html,application/xhtml+xml\r\n"
FRONT = "http://front.test"


def _post(path: bytes, fields: dict[str, str], extra: bytes = b"") -> bytes:
    body = "&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items()).encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (path, extra, len(body), body)
    )


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []
        self.hidden: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.actions.append(values.get("action") or "")
        if tag == "input" and values.get("type") == "hidden":
            self.hidden[values.get("name") or ""] = values.get("value") or ""


def _form(page: bytes) -> _Forms:
    forms = _Forms()
    forms.feed(page.decode())
    return forms


@pytest.fixture
def secured(make_proxy, tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_proxy(
        environ={"PASSWORD": PASSWORD}, auth="password", data_dir=str(tmp_path)
    )


@pytest.fixture
def behind_trusted(make_proxy, tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )


# --- Without any header: relative references ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sign_in_round_trip_stays_under_an_unannounced_prefix(
    upstream, secured
) -> None:
    up = upstream(rec := Recorder())
    path = b"/proxy/%d/x?y=1" % up.port
    browser_url = f"{FRONT}/pp{path.decode()}"  # what the browser really asked for
    status, headers, _ = parse_response(
        await raw_request(secured.port, get(path, headers=HTML))
    )
    assert status == 302
    login_url = urljoin(browser_url, headers[b"location"][0].decode())
    login = urlsplit(login_url)
    assert (login.netloc, login.path) == ("front.test", "/pp/login")
    to = parse_qs(login.query)["to"][0]
    assert to == path.decode()  # kept root-relative for portproxy itself

    status, _, page = parse_response(
        await raw_request(secured.port, get(b"/login?" + login.query.encode()))
    )
    assert status == 200
    form = _form(page)
    assert urlsplit(urljoin(login_url, form.actions[0])).path == "/pp/login"
    assert form.hidden["to"] == to

    status, headers, _ = parse_response(
        await raw_request(secured.port, _post(b"/login", {"password": PASSWORD, "to": to}))
    )
    assert status == 302
    back = urljoin(f"{FRONT}/pp/login", headers[b"location"][0].decode())
    assert back == browser_url
    cookie = next(
        c.split(b";")[0]
        for c in headers[b"set-cookie"]
        if c.startswith(b"portproxy-session=")
    )
    status, _, _ = parse_response(
        await raw_request(secured.port, get(path, headers=b"Cookie: " + cookie + b"\r\n"))
    )
    assert status == 200 and rec.requests[0]["uri"] == b"/x?y=1"


@pytest.mark.parametrize("logout", [b"/logout", b"/.portproxy/logout"])
@pytest_twisted.ensureDeferred
async def test_logout_stays_under_an_unannounced_prefix(secured, logout: bytes) -> None:
    status, headers, _ = parse_response(await raw_request(secured.port, get(logout)))
    assert status == 302
    resolved = urlsplit(
        urljoin(f"{FRONT}/pp{logout.decode()}", headers[b"location"][0].decode())
    )
    assert resolved.netloc == "front.test"
    assert resolved.path == "/pp" + logout.decode().replace("logout", "login")


@pytest.mark.parametrize(
    "to",
    [
        "//evil.com/x",
        "/\\evil.com",
        "/%2F%2Fevil.com",
        "/%2f/evil.com",
        "/%5Cevil.com",
        "/%5c%5cevil.com",
        "https://evil.com/",
        "javascript:alert(1)",
        "\t//evil.com",
        "/\t/evil.com",
        "http:evil.com",
        "./../evil.com",
    ],
)
@pytest_twisted.ensureDeferred
async def test_relative_redirect_after_sign_in_never_leaves_the_server(
    secured, to: str
) -> None:
    status, headers, _ = parse_response(
        await raw_request(secured.port, _post(b"/login", {"password": PASSWORD, "to": to}))
    )
    assert status == 302
    location = headers[b"location"][0].decode()
    assert location == "./"
    assert urlsplit(urljoin(f"{FRONT}/pp/login", location)).netloc == "front.test"


# --- X-Forwarded-Prefix ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trusted_forwarded_prefix_gives_absolute_paths_under_it(
    upstream, behind_trusted
) -> None:
    up = upstream(Recorder())
    path = b"/proxy/%d/x" % up.port
    prefix = b"X-Forwarded-Prefix: /pp/\r\n"
    status, headers, _ = parse_response(
        await raw_request(behind_trusted.port, get(path, headers=HTML + prefix))
    )
    assert status == 302
    assert headers[b"location"] == [b"/pp/login?to=" + path]
    _, _, page = parse_response(
        await raw_request(behind_trusted.port, get(b"/login", headers=prefix))
    )
    assert _form(page).actions == ["/pp/login"]
    _, headers, _ = parse_response(
        await raw_request(
            behind_trusted.port,
            _post(b"/login", {"password": PASSWORD, "to": path.decode()}, prefix),
        )
    )
    assert headers[b"location"] == [b"/pp" + path]
    _, headers, _ = parse_response(
        await raw_request(behind_trusted.port, get(b"/logout", headers=prefix))
    )
    assert headers[b"location"] == [b"/pp/login"]


@pytest_twisted.ensureDeferred
async def test_forwarded_prefix_from_an_untrusted_peer_is_ignored(
    upstream, secured
) -> None:
    up = upstream(Recorder())
    path = b"/proxy/%d/x" % up.port
    prefix = b"X-Forwarded-Prefix: //evil.com\r\n"
    _, headers, _ = parse_response(
        await raw_request(secured.port, get(path, headers=HTML + prefix))
    )
    assert headers[b"location"][0].startswith(b"./../../login?to=")
    _, headers, _ = parse_response(
        await raw_request(
            secured.port,
            _post(
                b"/login",
                {"password": PASSWORD, "to": path.decode()},
                prefix.replace(b"//evil.com", b"/pp"),
            ),
        )
    )
    assert headers[b"location"] == [b"." + path]


@pytest.mark.parametrize(
    "value",
    [
        b"//evil.com",
        b"/\\evil.com",
        b"https://evil.com",
        b"evil",
        b"/a/../b",
        b"/a b",
        b"/",
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_hostile_prefix_even_from_a_trusted_proxy_is_ignored(
    behind_trusted, value: bytes
) -> None:
    _, headers, _ = parse_response(
        await raw_request(
            behind_trusted.port,
            get(b"/logout", headers=b"X-Forwarded-Prefix: " + value + b"\r\n"),
        )
    )
    assert headers[b"location"] == [b"./login"]


# --- The pure composition, for any input ----------------------------------------------


@given(to=st.text(max_size=40), depth=st.integers(min_value=0, max_value=4))
def test_no_to_value_resolves_to_another_host(to: str, depth: int) -> None:
    here = b"/a" * depth + b"/login"
    checked = safe_redirect_target(to, allowed_host=lambda authority: False)
    location = mounted_location(here, checked.encode(), None).decode()
    resolved = urlsplit(urljoin(f"{FRONT}/pp{here.decode()}", location))
    assert resolved.netloc == "front.test" and resolved.path.startswith("/pp/")


@given(value=st.binary(max_size=24))
def test_no_forwarded_prefix_leads_off_the_server(value: bytes) -> None:
    prefix = forwarded_prefix(value)
    if prefix is None:
        return
    location = mounted_location(b"/login", b"/login", prefix).decode()
    assert urlsplit(urljoin(f"{FRONT}/x/y", location)).netloc == "front.test"


# --- Through a real nginx ----------------------------------------------------------------


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {log.read_text() if log.exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nginx did not start listening")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Any]:
    """Start nginx mounting a given port under /pp/; stopped at teardown."""
    if not (os.path.exists(NGINX) and os.access(NGINX, os.X_OK)):
        pytest.skip("nginx is not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(backend: int) -> int:
        root = tmp_path / "nginx"
        port, argv = nginx_under_prefix(root, backend)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        _wait_listening(port, proc, root / "error.log")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(tmp_path / "nginx", ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_sign_in_through_nginx_under_pp(upstream, secured, nginx) -> None:
    up = upstream(rec := Recorder())
    front = nginx(secured.port)
    base = f"http://127.0.0.1:{front}"
    start = f"{base}/pp/proxy/{up.port}/x?y=1"

    async def browse(url: str, request: bytes | None = None, cookie: bytes = b"") -> Any:
        parts = urlsplit(url)
        target = (parts.path + ("?" + parts.query if parts.query else "")).encode()
        extra = HTML + (b"Cookie: " + cookie + b"\r\n" if cookie else b"")
        return parse_response(
            await raw_request(front, request or get(target, headers=extra))
        )

    status, headers, _ = await browse(start)
    assert status == 302
    login_url = urljoin(start, headers[b"location"][0].decode())
    assert urlsplit(login_url).path == "/pp/login"

    status, _, page = await browse(login_url)
    assert status == 200
    form = _form(page)
    action = urljoin(login_url, form.actions[0])
    assert urlsplit(action).path == "/pp/login"

    post = _post(
        urlsplit(action).path.encode(), {"password": PASSWORD, "to": form.hidden["to"]}
    )
    status, headers, _ = await browse(action, post)
    assert status == 302
    assert urljoin(action, headers[b"location"][0].decode()) == start
    cookie = next(
        c.split(b";")[0]
        for c in headers[b"set-cookie"]
        if c.startswith(b"portproxy-session=")
    )
    status, _, body = await browse(start, cookie=cookie)
    assert (status, body) == (200, b"ok /x?y=1")
    assert [r["uri"] for r in rec.requests] == [b"/x?y=1"]

    status, headers, _ = await browse(f"{base}/pp/logout", cookie=cookie)
    assert status == 302
    assert (
        urlsplit(urljoin(f"{base}/pp/logout", headers[b"location"][0].decode())).path
        == "/pp/login"
    )

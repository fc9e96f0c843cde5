"""Sign-in through the whole proxy: every proxied route is protected end to end."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest
import pytest_twisted

from tests.support import Recorder, get, parse_response, raw_request

PASSWORD = "correct horse battery staple"
HTML = b"Accept: text/html,application/xhtml+xml\r\n"


def _post_login(path: bytes, to: str, password: str, host: bytes = b"127.0.0.1") -> bytes:
    body = f"password={quote(password)}&to={quote(to, safe='')}".encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (path, host, len(body), body)
    )


def _cookie(headers: dict[bytes, list[bytes]]) -> bytes:
    (set_cookie,) = [
        c for c in headers[b"set-cookie"] if c.startswith(b"portproxy-session=")
    ]
    return set_cookie.split(b";")[0]


@pytest.fixture
def secured(make_proxy, tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        proxy_domains=("example.test",),
    )


@pytest.mark.parametrize(
    "route", [b"/proxy/{p}/deep/x?q=1&r=%20", b"/absproxy/{p}/deep?q=1"]
)
@pytest_twisted.ensureDeferred
async def test_browser_is_sent_to_sign_in_and_lands_on_the_deep_link(
    upstream, secured, route: bytes
) -> None:
    up = upstream(rec := Recorder())
    url = route.replace(b"{p}", b"%d" % up.port)
    status, headers, _ = parse_response(
        await raw_request(secured.port, get(url, headers=HTML))
    )
    assert status == 302
    # Relative, so that it stays under a front proxy's path prefix.
    location = urlsplit(
        urljoin("http://127.0.0.1" + url.decode(), headers[b"location"][0].decode())
    )
    assert location.path == "/login" and location.netloc == "127.0.0.1"
    to = parse_qs(location.query)["to"][0]
    assert to == url.decode()
    assert rec.requests == []
    # A failed attempt first keeps the destination.
    status, _, page = parse_response(
        await raw_request(secured.port, _post_login(b"/login", to, "wrong"))
    )
    assert status == 401
    assert b'name="to"' in page
    assert html.escape(to).encode() in page
    status, headers, _ = parse_response(
        await raw_request(secured.port, _post_login(b"/login", to, PASSWORD))
    )
    assert status == 302
    assert headers[b"location"] == [b"." + url]  # relative to /login
    cookie = _cookie(headers)
    status, _, _ = parse_response(
        await raw_request(secured.port, get(url, headers=b"Cookie: " + cookie + b"\r\n"))
    )
    assert status == 200
    assert len(rec.requests) == 1


@pytest_twisted.ensureDeferred
async def test_proxy_host_round_trip_through_its_own_sign_in_page(
    upstream, secured
) -> None:
    up = upstream(rec := Recorder())
    host = b"%d.example.test" % up.port
    status, headers, _ = parse_response(
        await raw_request(secured.port, get(b"/app/page?x=1", host=host, headers=HTML))
    )
    assert status == 302
    location = urlsplit(urljoin("http://h/app/page", headers[b"location"][0].decode()))
    assert location.path == "/.portproxy/login" and location.netloc == "h"
    to = parse_qs(location.query)["to"][0]
    assert to == f"http://{host.decode()}/app/page?x=1"
    status, _, page = parse_response(
        await raw_request(
            secured.port, get(b"/.portproxy/login?to=" + quote(to).encode(), host=host)
        )
    )
    assert status == 200 and b"<form" in page
    status, headers, _ = parse_response(
        await raw_request(
            secured.port, _post_login(b"/.portproxy/login", to, PASSWORD, host)
        )
    )
    assert status == 302
    assert headers[b"location"] == [to.encode()]
    set_cookie = next(
        c for c in headers[b"set-cookie"] if c.startswith(b"portproxy-session=")
    )
    assert b"Domain=example.test" in set_cookie
    status, _, _ = parse_response(
        await raw_request(
            secured.port,
            get(
                b"/app/page?x=1",
                host=host,
                headers=b"Cookie: " + _cookie(headers) + b"\r\n",
            ),
        )
    )
    assert status == 200
    assert rec.requests[0]["uri"] == b"/app/page?x=1"


@pytest_twisted.ensureDeferred
async def test_login_on_main_host_widens_cookie_to_the_proxy_domain(
    upstream, secured
) -> None:
    up = upstream(rec := Recorder())
    status, headers, _ = parse_response(
        await raw_request(
            secured.port, _post_login(b"/login", "/", PASSWORD, b"example.test")
        )
    )
    assert status == 302
    set_cookie = next(
        c for c in headers[b"set-cookie"] if c.startswith(b"portproxy-session=")
    )
    assert b"Domain=example.test" in set_cookie
    for attribute in (b"HttpOnly", b"SameSite=Lax", b"Max-Age=604800", b"Path=/"):
        assert attribute in set_cookie
    assert b"Secure" not in set_cookie
    status, _, _ = parse_response(
        await raw_request(
            secured.port,
            get(
                b"/",
                host=b"%d.example.test" % up.port,
                headers=b"Cookie: " + _cookie(headers) + b"\r\n",
            ),
        )
    )
    assert status == 200 and len(rec.requests) == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        get(b"/proxy/{p}/api"),
        get(b"/proxy/{p}/api", headers=b"Accept: */*\r\n"),
        b"POST /proxy/{p}/api HTTP/1.1\r\nHost: h\r\nConnection: close\r\nAccept: text/html\r\n"
        b"Content-Length: 0\r\n\r\n",
        get(b"/absproxy/{p}/api"),
        get(b"/", host=b"{p}.example.test"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_non_navigation_without_session_gets_401_json(
    upstream, secured, request_bytes: bytes
) -> None:
    up = upstream(rec := Recorder())
    raw = await raw_request(secured.port, request_bytes.replace(b"{p}", b"%d" % up.port))
    status, headers, body = parse_response(raw)
    assert status == 401
    assert json.loads(body) == {"error": "Unauthorized"}
    assert rec.requests == []


@pytest.mark.parametrize(
    "cookie",
    [
        b"portproxy-session=1.1700000000.1700000001.AAAA",
        b"portproxy-session=garbage",
        b"portproxy-session=",
        b"portproxy-session=1.99999999999.99999999999." + b"A" * 43,
    ],
)
@pytest_twisted.ensureDeferred
async def test_forged_or_expired_cookie_gets_401(upstream, secured, cookie: bytes) -> None:
    up = upstream(rec := Recorder())
    raw = await raw_request(
        secured.port, get(b"/proxy/%d/" % up.port, headers=b"Cookie: " + cookie + b"\r\n")
    )
    assert parse_response(raw)[0] == 401
    assert rec.requests == []


async def _signed_in_cookie(port: int) -> bytes:
    _, headers, _ = parse_response(
        await raw_request(port, _post_login(b"/login", "/", PASSWORD))
    )
    return _cookie(headers)


@pytest_twisted.ensureDeferred
async def test_session_cookie_is_stripped_and_others_pass_byte_for_byte(
    upstream, secured
) -> None:
    up = upstream(rec := Recorder())
    ours = await _signed_in_cookie(secured.port)
    others = [b"a=1", b'b="q x"', b"c=%20y", b"d=1=2", b"e="]
    for position in range(6):
        cookies = others[:position] + [ours] + others[position:]
        raw = await raw_request(
            secured.port,
            get(
                b"/proxy/%d/" % up.port, headers=b"Cookie: " + b"; ".join(cookies) + b"\r\n"
            ),
        )
        assert parse_response(raw)[0] == 200
        assert rec.header(position, b"cookie") == [b"; ".join(others)]
    await raw_request(
        secured.port, get(b"/proxy/%d/" % up.port, headers=b"Cookie: " + ours + b"\r\n")
    )
    assert rec.header(6, b"cookie") == []  # no empty Cookie header left behind


@pytest.mark.parametrize("flag", [True, False])
@pytest_twisted.ensureDeferred
async def test_preflight_passes_only_with_the_flag(
    upstream, make_proxy, tmp_path: Path, flag: bool
) -> None:
    proxy = make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        skip_auth_preflight=flag,
        proxy_domains=("example.test",),
    )
    up = upstream(rec := Recorder())
    preflight = (
        b"OPTIONS /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nOrigin: http://a.test\r\n"
        b"Access-Control-Request-Method: PUT\r\n\r\n"
    )
    for path_host in (
        (b"/proxy/%d/x" % up.port, b"h"),
        (b"/x", b"%d.example.test" % up.port),
    ):
        raw = await raw_request(
            proxy.port,
            preflight.replace(b"/x", path_host[0], 1) % path_host[1],
        )
        assert parse_response(raw)[0] == (200 if flag else 401)
    # A plain GET never passes, flag or not.
    raw = await raw_request(proxy.port, get(b"/proxy/%d/x" % up.port))
    assert parse_response(raw)[0] == 401
    assert len(rec.requests) == (2 if flag else 0)


@pytest.mark.parametrize(
    "to",
    [
        "https://evil.com/",
        "//evil.com",
        "/\\evil.com",
        "javascript:alert(1)",
        "http://127.0.0.1.evil.com/",
    ],
)
@pytest_twisted.ensureDeferred
async def test_open_redirects_after_sign_in_are_refused(secured, to: str) -> None:
    _, headers, _ = parse_response(
        await raw_request(secured.port, _post_login(b"/login", to, PASSWORD))
    )
    assert headers[b"location"] == [b"./"]


@pytest_twisted.ensureDeferred
async def test_rate_limit_gives_429_after_14_failures_per_address(secured) -> None:
    for _ in range(14):
        raw = await raw_request(secured.port, _post_login(b"/login", "/", "nope"))
        assert parse_response(raw)[0] == 401
    status, headers, _ = parse_response(
        await raw_request(secured.port, _post_login(b"/login", "/", PASSWORD))
    )
    assert status == 429
    assert int(headers[b"retry-after"][0]) > 0
    # Showing the form is never limited.
    assert parse_response(await raw_request(secured.port, get(b"/login")))[0] == 200


def test_print_auth_cookie_is_accepted_by_the_server(tmp_path: Path) -> None:
    env = {
        "PASSWORD": PASSWORD,
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "twisted",
            "portproxy",
            "--print-auth-cookie",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    line = out.stdout.decode().strip()
    assert line.startswith("portproxy-session=") and "\n" not in line
    from twisted.logger import Logger
    from twisted.web.test.requesthelper import DummyRequest

    from portproxy.auth import build_authenticator
    from portproxy.config import Config

    auth = build_authenticator(
        Config(data_dir=str(tmp_path)),
        environ={"PASSWORD": PASSWORD},
        clock=_WallClock(),
        log=Logger(),
    )
    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"cookie", [line.encode()])
    assert auth.is_signed_in(request)
    other = build_authenticator(
        Config(data_dir=str(tmp_path)),
        environ={"PASSWORD": "another"},
        clock=_WallClock(),
        log=Logger(),
    )
    assert not other.is_signed_in(request)


class _WallClock:
    def seconds(self) -> float:
        import time

        return time.time()

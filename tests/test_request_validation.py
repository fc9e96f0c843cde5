"""What a client may send and where it may be sent: Host, forwarded headers, preflights
and sign-in redirects (SPEC 6, 8, 9). Each rule has the request that must be refused.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted

from portproxy.http.headers import (
    BadRequest,
    ClientView,
    forward_request_headers,
    forward_websocket_headers,
    request_authority,
)
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.hosts import Authority, parse_authority
from tests import test_tls_live as _tls
from tests import test_websocket_relay as _ws
from tests.support import Recorder, get, parse_response, raw_request
from tests.test_websocket_relay import exchange, header_lines, upgrade

# The WebSocket relay's fixtures: a raw upstream that records the handshake it gets.
live = _ws.live
raw_app = _ws.raw_app
# A TLS (HTTP/2) portproxy built as `twist portproxy` builds it.
tls_proxy = _tls.tls_proxy

PASSWORD = "correct horse battery staple"
HTML = b"Accept: text/html\r\n"

# -- the host parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"example.com", Authority("example.com", None)),
        (b"Example.COM:8080", Authority("Example.COM", 8080)),
        (b"5173.dev_box.test.", Authority("5173.dev_box.test.", None)),
        (b"127.0.0.1:65535", Authority("127.0.0.1", 65535)),
        (b"[::1]", Authority("[::1]", None)),
        (b"[2001:db8::1]:443", Authority("[2001:db8::1]", 443)),
        (b" localhost:1 ", Authority("localhost", 1)),
        ("h.test:0", Authority("h.test", 0)),
    ],
)
def test_well_formed_hosts_are_accepted(value: bytes | str, expected: Authority) -> None:
    assert parse_authority(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b":80",
        b"evil.example/<x> @y",
        b"a b",
        b"user@host",
        b"host:",
        b"host:80:80",
        b"host:65536",
        b"host:123456",
        b"host:+80",
        b"host:\xd9\xa3",
        b"h%41.test",
        b"h~.test",
        b"a,b",
        b"[::1",
        b"[::1]x",
        b"[::1]:",
        b"[fe80::1%25eth0]",
        b"[v1.x]",
        b"[1.2.3.4]",
        b"::1",
        b"h\x00.test",
        b"\xe2\x84\xaa.test",
        b"a" * 254,
        "k\u212a.test",
    ],
)
def test_malformed_hosts_are_refused(value: bytes | str) -> None:
    assert parse_authority(value) is None


@pytest.mark.parametrize(
    "value",
    [b"   ", b" localhost", b"localhost\t", b" [::1]:1 "],
)
def test_surrounding_blanks_are_malformed_where_no_field_value_allows_them(
    value: bytes,
) -> None:
    assert parse_authority(value, blanks=False) is None


# Hosts on which the copies of the host rule used to disagree (the TLS redirect took
# '~', '%' and any hex in brackets; HTTP/2's :authority took sub-delims), beside plain ones.
AUTHORITIES = [
    b"localhost",
    b"localhost:8443",
    b"3000.dev.test",
    b"a_b.test.",
    b"127.0.0.1:80",
    b"[::1]:8080",
    b"[2001:db8::1]",
    b"h.test:0",
    b"a~b.test",
    b"a%41.test",
    b"a!b.test",
    b"a,b.test",
    b"[::1::]",
    b"[1.2.3.4]",
    b"[fe80::1%25eth0]",
    b"h.test:99999",
    b"h.test:",
    b"h.test:port",
    b"user@h.test",
    b"h.test/x",
    b"a b",
    b"",
    b"a" * 254,
    b"a" * 253,
]


@pytest.mark.parametrize("value", AUTHORITIES)
def test_the_host_checks_of_plain_http_tls_redirect_and_http2_agree(value: bytes) -> None:
    from portproxy.http.h2rules import request_head_refusal
    from portproxy.runtime.tls import https_location

    try:
        request_authority([value], b"/", version=b"HTTP/1.1")
    except BadRequest:
        host_ok = False
    else:
        host_ok = True
    h2_head = [(b":method", b"GET"), (b":path", b"/"), (b":authority", value)]
    assert host_ok == (parse_authority(value) is not None)
    assert (https_location(value, b"/") is not None) == host_ok
    assert (request_head_refusal(h2_head) is None) == host_ok


def test_a_request_without_host_or_with_two_is_bad() -> None:
    with pytest.raises(BadRequest, match="Missing"):
        request_authority([], b"/", version=b"HTTP/1.1")
    with pytest.raises(BadRequest, match="More than one"):
        request_authority([b"a.test", b"a.test"], b"/", version=b"HTTP/1.1")
    with pytest.raises(BadRequest, match="More than one"):
        request_authority([b"a.test", b"b.test"], b"/", version=b"HTTP/2")
    with pytest.raises(BadRequest, match="Malformed Host"):
        request_authority([b"a.test/x"], b"/", version=b"HTTP/1.1")
    # HTTP/1.0 may omit Host; HTTP/2 may repeat :authority as an equal Host.
    assert request_authority([], b"/", version=b"HTTP/1.0") is None
    assert request_authority([b"a.test", b"a.test"], b"/", version=b"HTTP/2") == b"a.test"


def test_absolute_form_takes_the_targets_authority() -> None:
    assert (
        request_authority([b"other.test"], b"http://5173.a.test:8/x", version=b"HTTP/1.1")
        == b"5173.a.test:8"
    )
    assert request_authority([], b"http://a.test/x", version=b"HTTP/1.0") == b"a.test"
    for target in (b"http://user@a.test/x", b"http:///x", b"https://a.test:99999/"):
        with pytest.raises(BadRequest, match="request target"):
            request_authority([b"a.test"], target, version=b"HTTP/1.1")
    # The Host field must still be there and well formed (RFC 9112 3.2).
    with pytest.raises(BadRequest):
        request_authority([], b"http://a.test/x", version=b"HTTP/1.1")


# -- underscores and X-Real-IP --------------------------------------------------------

_UNTRUSTED = ClientView("203.0.113.9", False, "http", "h.test")
_TRUSTED = ClientView("10.0.0.1", True, "http", "h.test")


@pytest.mark.parametrize("forward", [forward_request_headers, forward_websocket_headers])
def test_underscore_names_and_untrusted_x_real_ip_are_dropped(forward: Any) -> None:
    headers = [
        (b"Host", [b"h.test"]),
        (b"X_Forwarded_For", [b"6.6.6.6"]),
        (b"X-Real-IP", [b"6.6.6.6"]),
        (b"x_real_ip", [b"6.6.6.6"]),
        (b"My_App", [b"1"]),
        (b"My-App", [b"2"]),
    ]
    out = dict(forward(headers, view=_UNTRUSTED, session_cookie=None, prefix=None))
    assert b"My-App" in out
    assert not [name for name in out if b"_" in name]
    assert b"X-Real-IP" not in out
    trusted = dict(forward(headers, view=_TRUSTED, session_cookie=None, prefix=None))
    assert trusted[b"X-Real-IP"] == [b"6.6.6.6"]  # a trusted proxy's is kept
    assert not [name for name in trusted if b"_" in name]


# -- redirect targets under {{host}} patterns -----------------------------------------


@pytest.mark.parametrize(
    ("target", "request_host", "allowed"),
    [
        ("5173.myhost.test", "myhost.test", True),
        ("5173.myhost.test:8443", "myhost.test:8443", True),
        ("80.myhost.test", "5173.myhost.test", True),
        ("5173.attacker.test", "myhost.test", False),
        ("5173.attacker.test", "5173.myhost.test", False),
        ("80.5173.myhost.test", "5173.myhost.test", False),
        ("5173.myhost.test.attacker.test", "myhost.test", False),
        ("5173.fixed.example", "anything.test", True),
        ("5173.fixed.example.evil", "anything.test", False),
    ],
)
def test_host_pattern_redirects_stay_on_the_request_host(
    target: str, request_host: str, allowed: bool
) -> None:
    matcher = DomainMatcher(["{{port}}.fixed.example", "{{port}}.{{host}}"])
    assert matcher.redirect_allowed(target, request_host) is allowed


# -- end to end: Host -----------------------------------------------------------------


def _head(
    method: bytes, target: bytes, lines: bytes, version: bytes = b"HTTP/1.1"
) -> bytes:
    return b"%s %s %s\r\n%sConnection: close\r\n\r\n" % (method, target, version, lines)


@pytest.mark.parametrize(
    "lines",
    [
        b"",
        b"Host: a.test\r\nHost: a.test\r\n",
        b"Host: a.test\r\nHost: b.test\r\n",
        b"Host: evil.example/<x> @y\r\n",
        b"Host: user@a.test\r\n",
        b"Host: a.test:99999\r\n",
        b"Host: a.test, b.test\r\n",
    ],
)
@pytest.mark.parametrize("route", [b"/proxy/{p}/x", b"/absproxy/{p}/x", b"/healthz", b"/"])
@pytest_twisted.ensureDeferred
async def test_missing_repeated_or_malformed_host_gets_400_on_every_route(
    upstream: Any, make_proxy: Any, lines: bytes, route: bytes
) -> None:
    proxy = make_proxy()
    up = upstream(rec := Recorder())
    target = route.replace(b"{p}", b"%d" % up.port)
    status, _, body = parse_response(
        await raw_request(proxy.port, _head(b"GET", target, lines))
    )
    assert status == 400, body
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_malformed_host_gets_400_on_a_domain_route_and_a_websocket_upgrade(
    upstream: Any, make_proxy: Any, raw_app: Any
) -> None:
    proxy = make_proxy(proxy_domains=("example.test",))
    up = upstream(rec := Recorder())
    ws = raw_app()
    host = b"%d.example.test" % up.port
    raw = await raw_request(
        proxy.port, _head(b"GET", b"/x", b"Host: %s\r\nHost: %s\r\n" % (host, host))
    )
    assert parse_response(raw)[0] == 400
    for head in (
        upgrade(b"/proxy/%d/ws" % ws.port, b"h.test\r\nHost: h.test"),
        upgrade(b"/proxy/%d/ws" % ws.port, b"h.test/<x>"),
        upgrade(b"/ws", b"%d.example.test\r\nHost: other.test" % ws.port),
    ):
        assert parse_response(await exchange(proxy.port, head))[0] == 400
    assert rec.requests == [] and ws.heads == []


@pytest_twisted.ensureDeferred
async def test_http10_without_host_is_served_on_the_main_host(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy()
    up = upstream(rec := Recorder())
    raw = await raw_request(
        proxy.port, _head(b"GET", b"/proxy/%d/x" % up.port, b"", b"HTTP/1.0")
    )
    assert parse_response(raw)[0] == 200
    assert rec.requests[0]["uri"] == b"/x"


@pytest_twisted.ensureDeferred
async def test_absolute_form_routes_and_forwards_by_the_targets_authority(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(proxy_domains=("example.test",))
    up = upstream(rec := Recorder())
    host = b"%d.example.test:8443" % up.port
    # The Host field names the main host; the target's authority is a proxy host.
    raw = await raw_request(
        proxy.port, _head(b"GET", b"http://%s/a%%2Fb?q=1" % host, b"Host: main.test\r\n")
    )
    assert parse_response(raw)[0] == 200
    assert rec.requests[0]["uri"] == b"/a%2Fb?q=1"  # origin-form upstream
    assert rec.header(0, b"host") == [host]
    assert rec.header(0, b"x-forwarded-host") == [host]
    # The other way round: a proxy host in Host, the main host in the target.
    raw = await raw_request(
        proxy.port,
        _head(b"GET", b"http://main.test/proxy/%d/y" % up.port, b"Host: %s\r\n" % host),
    )
    assert parse_response(raw)[0] == 200
    assert rec.requests[1]["uri"] == b"/y"
    assert rec.header(1, b"host") == [b"main.test"]


@pytest_twisted.ensureDeferred
async def test_absolute_form_websocket_upgrade_carries_the_targets_host(
    make_proxy: Any, raw_app: Any
) -> None:
    proxy = make_proxy(proxy_domains=("example.test",))
    ws = raw_app()
    head = upgrade(b"http://%d.example.test/ws?a=1" % ws.port, b"main.test")
    status, _, _ = parse_response(await exchange(proxy.port, head))
    assert status == 101
    (up_head,) = ws.heads
    assert up_head.split(b"\r\n")[0] == b"GET /ws?a=1 HTTP/1.1"
    assert header_lines(up_head, b"host") == [b"%d.example.test" % ws.port]


@pytest_twisted.ensureDeferred
async def test_absolute_form_cannot_reach_a_proxy_hosts_own_pages_unnoticed(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    proxy = make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        proxy_domains=("example.test",),
    )
    up = upstream(rec := Recorder())
    raw = await raw_request(
        proxy.port,
        _head(b"GET", b"http://%d.example.test/.portproxy/login" % up.port, b"Host: a\r\n"),
    )
    status, _, body = parse_response(raw)
    assert status == 200 and b'type="password"' in body  # portproxy's page, not the app's
    assert rec.requests == []


# -- end to end: underscores and X-Real-IP --------------------------------------------


@pytest_twisted.ensureDeferred
async def test_underscore_headers_and_x_real_ip_never_reach_the_app(
    upstream: Any, make_proxy: Any, raw_app: Any
) -> None:
    proxy = make_proxy()
    up = upstream(rec := Recorder())
    ws = raw_app()
    extra = b"X_Forwarded_For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-App: yes\r\n"
    raw = await raw_request(proxy.port, get(b"/proxy/%d/x" % up.port, headers=extra))
    assert parse_response(raw)[0] == 200
    names = [name.lower() for name, _ in rec.requests[0]["headers"]]
    assert b"x-app" in names
    assert b"x-real-ip" not in names and not [n for n in names if b"_" in n]
    raw = await exchange(proxy.port, upgrade(b"/proxy/%d/ws" % ws.port, extra=extra))
    assert parse_response(raw)[0] == 101
    head = ws.heads[0].lower()
    assert b"x-app: yes" in head
    assert b"x-real-ip" not in head and b"x_forwarded_for" not in head


@pytest_twisted.ensureDeferred
async def test_x_real_ip_from_a_trusted_proxy_reaches_the_app(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    up = upstream(rec := Recorder())
    raw = await raw_request(
        proxy.port, get(b"/proxy/%d/x" % up.port, headers=b"X-Real-IP: 198.51.100.7\r\n")
    )
    assert parse_response(raw)[0] == 200
    assert rec.header(0, b"x-real-ip") == [b"198.51.100.7"]


# -- end to end: preflights -----------------------------------------------------------

_PREFLIGHT = (
    b"OPTIONS /proxy/%d/x HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n"
    b"Origin: http://a.test\r\nAccess-Control-Request-Method: PUT\r\n"
)


@pytest.fixture
def preflight_proxy(make_proxy: Any, tmp_path: Path) -> Any:
    return make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        skip_auth_preflight=True,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"Content-Length: 100000\r\n\r\n" + b"x" * 100000,  # streams: decided before
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # declared, even if empty
    ],
    ids=["small", "chunked", "streamed", "empty-chunked"],
)
@pytest_twisted.ensureDeferred
async def test_a_preflight_with_a_body_needs_a_session(
    upstream: Any, preflight_proxy: Any, body: bytes
) -> None:
    up = upstream(rec := Recorder())
    raw = await raw_request(preflight_proxy.port, _PREFLIGHT % up.port + body)
    assert parse_response(raw)[0] == 401
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_a_bodiless_preflight_still_passes(
    upstream: Any, preflight_proxy: Any
) -> None:
    up = upstream(rec := Recorder())
    for end in (b"\r\n", b"Content-Length: 0\r\n\r\n"):
        raw = await raw_request(preflight_proxy.port, _PREFLIGHT % up.port + end)
        assert parse_response(raw)[0] == 200
    assert [r["method"] for r in rec.requests] == [b"OPTIONS", b"OPTIONS"]


def _h2_preflights(
    port: int, cafile: str, path: bytes, bodies: list[bytes | None]
) -> list[int]:
    """Send one OPTIONS preflight per entry over one h2 connection; their statuses.

    C{None}: the HEADERS frame ends the stream; bytes: DATA follows, with no
    content-length (HTTP/2 needs none).
    """
    import socket
    import ssl

    import h2.config
    import h2.connection
    import h2.events

    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_connection()
        statuses: dict[int, int] = {}
        for body in bodies:
            stream = conn.get_next_available_stream_id()
            statuses[stream] = 0
            head = [
                (b":method", b"OPTIONS"),
                (b":path", path),
                (b":scheme", b"https"),
                (b":authority", b"localhost:%d" % port),
                (b"origin", b"https://a.test"),
                (b"access-control-request-method", b"PUT"),
            ]
            conn.send_headers(stream, head, end_stream=body is None)
            if body is not None:
                conn.send_data(stream, body, end_stream=True)
        tls.sendall(conn.data_to_send())
        open_streams = set(statuses)
        while open_streams:
            data = tls.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    open_streams.discard(event.stream_id)
            tls.sendall(conn.data_to_send())
        return [statuses[s] for s in sorted(statuses)]


@pytest_twisted.ensureDeferred
async def test_an_h2_preflight_whose_stream_carries_data_needs_a_session(
    upstream: Any, tls_proxy: Any, tmp_path: Path
) -> None:
    from twisted.internet.threads import deferToThread

    from tests.test_tls import write_pair

    up = upstream(rec := Recorder())
    cert, key, ca = write_pair(tmp_path)
    proxy = tls_proxy(
        {"PASSWORD": PASSWORD},
        auth="password",
        cert=cert,
        cert_key=key,
        skip_auth_preflight=True,
    )
    statuses = await deferToThread(
        _h2_preflights, proxy.port, ca, b"/proxy/%d/x" % up.port, [b"hello", None]
    )
    assert statuses == [401, 200]
    assert [(r["method"], r["body"]) for r in rec.requests] == [(b"OPTIONS", b"")]


# -- end to end: sign-in redirects under {{host}} -------------------------------------


@pytest.fixture
def host_pattern_proxy(make_proxy: Any, tmp_path: Path) -> Any:
    return make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        proxy_domains=("{{port}}.{{host}}",),
    )


def _login(to: str, password: str, host: bytes, path: bytes = b"/login") -> bytes:
    body = f"password={quote(password)}&to={quote(to, safe='')}".encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (path, host, len(body), body)
    )


_FOREIGN = ["http://5173.attacker.test/", "https://5173.attacker.test:8443/x?y=1"]


@pytest.mark.parametrize("to", _FOREIGN)
@pytest.mark.parametrize(
    ("host", "path"),
    [(b"myhost.test", b"/login"), (b"5173.myhost.test", b"/.portproxy/login")],
)
@pytest_twisted.ensureDeferred
async def test_login_never_redirects_to_another_host_value(
    host_pattern_proxy: Any, to: str, host: bytes, path: bytes
) -> None:
    port = host_pattern_proxy.port
    # The form (GET) does not carry the foreign target.
    status, _, page = parse_response(
        await raw_request(
            port, get(path + b"?to=" + quote(to).encode(), host=host, headers=HTML)
        )
    )
    assert status == 200
    assert b"attacker" not in page
    # A failed attempt shows the form again, without it.
    status, _, page = parse_response(
        await raw_request(port, _login(to, "wrong", host, path))
    )
    assert status == 401 and b"attacker" not in page
    # A successful one lands on this host's root instead.
    status, headers, _ = parse_response(
        await raw_request(port, _login(to, PASSWORD, host, path))
    )
    assert status == 302 and _lands_on_root(path, headers[b"location"])


def _lands_on_root(path: bytes, location: list[bytes]) -> bool:
    """The (relative) Location resolves to this host's root, seen from C{path}."""
    from urllib.parse import urljoin

    [value] = location
    return urljoin("http://h" + path.decode(), value.decode()) == "http://h/"


@pytest.mark.parametrize("to", _FOREIGN)
@pytest_twisted.ensureDeferred
async def test_logout_never_redirects_to_another_host_value(
    host_pattern_proxy: Any, to: str
) -> None:
    for host, path in (
        (b"myhost.test", b"/logout"),
        (b"5173.myhost.test", b"/.portproxy/logout"),
    ):
        raw = await raw_request(
            host_pattern_proxy.port, get(path + b"?to=" + quote(to).encode(), host=host)
        )
        status, headers, _ = parse_response(raw)
        assert status == 302 and _lands_on_root(path, headers[b"location"])


@pytest_twisted.ensureDeferred
async def test_login_still_returns_to_proxy_hosts_of_the_same_host(
    host_pattern_proxy: Any,
) -> None:
    port = host_pattern_proxy.port
    for host, path, to in (
        (b"myhost.test", b"/login", "http://5173.myhost.test/deep?x=1"),
        (b"5173.myhost.test", b"/.portproxy/login", "http://5173.myhost.test/deep"),
        (b"5173.myhost.test", b"/.portproxy/login", "http://3000.myhost.test/"),
    ):
        status, headers, _ = parse_response(
            await raw_request(port, _login(to, PASSWORD, host, path))
        )
        assert status == 302 and headers[b"location"] == [to.encode()]
    raw = await raw_request(
        port,
        get(
            b"/logout?to=" + quote("http://5173.myhost.test/").encode(), host=b"myhost.test"
        ),
    )
    assert parse_response(raw)[1][b"location"] == [b"http://5173.myhost.test/"]

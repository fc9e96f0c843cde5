"""C{--rewrite-host}: apps see C{Host: localhost:<port>} and a matching Origin.

End to end over real sockets: a Twisted upstream records what reaches it over HTTP, and
a WebSocket app that, like Vite and Jupyter, accepts only its own host and an Origin
equal to it, shows what the option is for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from portproxy.http.hostrewrite import (
    HostRewrite,
    KnownHosts,
    public_origin,
    rewrite_host_and_origin,
    rewrite_origin,
)
from tests.support import Recorder, get, get_reactor, listen, parse_response, raw_request

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
DOMAIN = "{{port}}.example.test"
PUBLIC = b"pub.test:8443"
#: Names pub.test as this instance's own host: with --auth none only known hosts are
#: rewritten (see test_an_unknown_host_without_sign_in_reaches_the_app_as_sent).
PUBLIC_URL = "http://pub.test:8443"


def _route(route: str, port: int) -> tuple[bytes, bytes]:
    """The request path and the public Host of C{port} on one kind of route."""
    if route == "domain":
        return b"/x?q=1", b"%d.example.test:8443" % port
    return b"/%s/%d/x?q=1" % (route.encode(), port), PUBLIC


# -- the pure rule --------------------------------------------------------------------


def test_host_becomes_local_and_every_other_field_keeps_its_place() -> None:
    headers = [
        (b"Accept", [b"*/*"]),
        (b"Host", [b"pub.test:8443"]),
        (b"Origin", [b"http://pub.test:8443"]),
        (b"Referer", [b"http://pub.test:8443/page"]),
        (b"X-Forwarded-Host", [b"pub.test:8443"]),
    ]
    assert rewrite_host_and_origin(
        headers, port=5173, scheme="http", host="pub.test:8443"
    ) == [
        (b"Accept", [b"*/*"]),
        (b"Host", [b"localhost:5173"]),
        (b"Origin", [b"http://localhost:5173"]),
        (b"Referer", [b"http://pub.test:8443/page"]),
        (b"X-Forwarded-Host", [b"pub.test:8443"]),
    ]


def test_no_host_and_no_origin_adds_neither() -> None:
    headers = [(b"Accept", [b"*/*"])]
    assert rewrite_host_and_origin(headers, port=1, scheme="http", host=None) == headers


def test_with_no_known_public_host_no_origin_is_same_origin() -> None:
    public = public_origin("http", None)
    assert rewrite_origin(b"http://localhost:80", port=80, public=public) == (
        b"http://localhost:80"
    )
    assert public_origin("http", "bad host") is None


@pytest.mark.parametrize(
    "origin",
    [
        b"null",
        b"http://pub.test:8443, http://pub.test:8443",
        b"http://pub.test:8443/",
        b"http://user@pub.test:8443",
        b"http:// pub.test:8443",
        b"ws://pub.test:8443",
        b"http://pub.test:8443.",
        b"http://pub.test.:8443",
        b"http://pub.test:08443x",
        b"\xff://pub.test:8443",
        b"",
    ],
)
def test_anything_but_exactly_the_public_origin_passes_unchanged(origin: bytes) -> None:
    public = public_origin("http", "pub.test:8443")
    assert rewrite_origin(origin, port=9, public=public) == origin


_hosts = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True)
_ports = st.integers(min_value=1, max_value=65535)


def _spell(host: str, port: int | None, upper: bool) -> str:
    text = host.upper() if upper else host
    return f"{text}:{port}" if port is not None else text


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_hosts,
    port=st.none() | _ports,
    origin_port_written=st.booleans(),
    upper_origin=st.booleans(),
    upper_scheme=st.booleans(),
)
def test_an_origin_is_same_origin_whatever_the_case_and_default_port_spelling(
    scheme: str,
    host: str,
    port: int | None,
    origin_port_written: bool,
    upper_origin: bool,
    upper_scheme: bool,
) -> None:
    default = {"http": 80, "https": 443}[scheme]
    effective = default if port is None else port
    # The origin writes the port or leaves it out when it is the default one.
    written = effective if origin_port_written or effective != default else None
    origin_scheme = scheme.upper() if upper_scheme else scheme
    origin = f"{origin_scheme}://{_spell(host, written, upper_origin)}"
    public = public_origin(scheme, _spell(host, port, False))
    assert rewrite_origin(origin.encode(), port=3000, public=public) == (
        b"http://localhost:3000"
    )


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_hosts,
    port=_ports,
    other_scheme=st.sampled_from(["http", "https"]),
    other_host=_hosts,
    other_port=_ports,
)
def test_an_origin_that_differs_in_scheme_host_or_port_is_never_rewritten(
    scheme: str,
    host: str,
    port: int,
    other_scheme: str,
    other_host: str,
    other_port: int,
) -> None:
    public = public_origin(scheme, f"{host}:{port}")
    origin = f"{other_scheme}://{other_host}:{other_port}".encode()
    same = (other_scheme, other_host, other_port) == (scheme, host, port)
    rewritten = rewrite_origin(origin, port=3000, public=public)
    assert (rewritten == b"http://localhost:3000") is same
    if not same:
        assert rewritten == origin


@given(st.binary(max_size=60))
def test_any_origin_bytes_are_either_kept_or_made_local(value: bytes) -> None:
    public = public_origin("https", "pub.test")
    assert rewrite_origin(value, port=3000, public=public) in (
        value,
        b"http://localhost:3000",
    )


# -- HTTP ---------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["proxy", "absproxy", "domain"])
@pytest_twisted.ensureDeferred
async def test_the_app_sees_localhost_and_the_public_host_in_x_forwarded_host(
    route: str, upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL, proxy_domains=(DOMAIN,))
    up = upstream(rec := Recorder())
    path, host = _route(route, up.port)
    status, _, _ = parse_response(await raw_request(proxy.port, get(path, host=host)))
    assert status == 200
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]
    assert rec.header(0, b"x-forwarded-host") == [host]
    assert rec.header(0, b"origin") == []  # none sent, none added


@pytest.mark.parametrize("route", ["proxy", "absproxy", "domain"])
@pytest.mark.parametrize(
    "origin",
    [
        b"http://{host}",
        b"HTTP://{HOST}",  # scheme and host compare without case
    ],
)
@pytest_twisted.ensureDeferred
async def test_an_origin_equal_to_the_public_origin_becomes_the_apps_local_origin(
    route: str, origin: bytes, upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL, proxy_domains=(DOMAIN,))
    up = upstream(rec := Recorder())
    path, host = _route(route, up.port)
    origin = origin.replace(b"{host}", host).replace(b"{HOST}", host.upper())
    await raw_request(
        proxy.port, get(path, host=host, headers=b"Origin: " + origin + b"\r\n")
    )
    assert rec.header(0, b"origin") == [b"http://localhost:%d" % up.port]
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (b"pub.test", b"http://pub.test:80"),  # default ports are normalised
        (b"pub.test:80", b"http://pub.test"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_default_ports_are_normalised_when_comparing_origins(
    host: bytes, origin: bytes, upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL)
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        get(b"/proxy/%d/" % up.port, host=host, headers=b"Origin: " + origin + b"\r\n"),
    )
    assert rec.header(0, b"origin") == [b"http://localhost:%d" % up.port]


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.example",  # another site
        b"http://pub.test:9000",  # another port of the same host
        b"https://pub.test:8443",  # another scheme (the client spoke plain HTTP)
        b"http://sub.pub.test:8443",  # a subdomain is another origin
        b"null",  # an opaque origin (sandboxed iframe, file://)
        b"http://pub.test:8443/path",  # not an origin at all
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_foreign_origin_reaches_the_app_as_it_was_sent(
    origin: bytes, upstream: Any, make_proxy: Any
) -> None:
    """A cross-site request must still look cross-site to the app's CSRF check."""
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL)
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        get(b"/proxy/%d/" % up.port, host=PUBLIC, headers=b"Origin: " + origin + b"\r\n"),
    )
    assert rec.header(0, b"origin") == [origin]
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]


_FRONT = (
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: pub.example\r\n"
    b"Origin: https://pub.example\r\n"
)


@pytest_twisted.ensureDeferred
async def test_a_trusted_front_proxy_defines_the_public_origin(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(
        rewrite_host=True, public_url="https://pub.example", trusted_proxies=LOOPBACK
    )
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port, get(b"/proxy/%d/" % up.port, host=b"internal:8080", headers=_FRONT)
    )
    assert rec.header(0, b"origin") == [b"http://localhost:%d" % up.port]
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]
    assert rec.header(0, b"x-forwarded-host") == [b"pub.example"]
    assert rec.header(0, b"x-forwarded-proto") == [b"https"]


@pytest_twisted.ensureDeferred
async def test_an_untrusted_peer_cannot_claim_a_public_origin_with_forwarded_headers(
    upstream: Any, make_proxy: Any
) -> None:
    # 127.0.0.1 is not a trusted proxy; the host it reached is this instance's own.
    proxy = make_proxy(rewrite_host=True, public_url="http://internal:8080")
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port, get(b"/proxy/%d/" % up.port, host=b"internal:8080", headers=_FRONT)
    )
    # The public origin is http://internal:8080: the claimed one passes unchanged.
    assert rec.header(0, b"origin") == [b"https://pub.example"]
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]
    assert rec.header(0, b"x-forwarded-host") == [b"internal:8080"]
    assert rec.header(0, b"x-forwarded-proto") == [b"http"]


@pytest_twisted.ensureDeferred
async def test_without_the_option_host_and_origin_pass_unchanged(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy()
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        get(
            b"/proxy/%d/" % up.port,
            host=PUBLIC,
            headers=b"Origin: http://pub.test:8443\r\n",
        ),
    )
    assert rec.header(0, b"host") == [PUBLIC]
    assert rec.header(0, b"origin") == [b"http://pub.test:8443"]


@pytest_twisted.ensureDeferred
async def test_an_http_10_request_without_host_gets_the_local_host(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL)
    up = upstream(rec := Recorder())
    await raw_request(proxy.port, b"GET /proxy/%d/ HTTP/1.0\r\n\r\n" % up.port)
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("proxy", b"/proxy/{p}/next?a=1"),
        ("absproxy", b"/absproxy/{p}/next?a=1"),
        ("domain", b"http://{p}.example.test:8443/next?a=1"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_redirect_to_the_local_host_comes_back_as_the_public_url(
    route: str, expected: bytes, upstream: Any, make_proxy: Any
) -> None:
    """The app only knows localhost now: its absolute redirects must still work."""
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL, proxy_domains=(DOMAIN,))

    def redirect(request: Any) -> bytes:
        host = request.getHeader(b"host")
        target = b"/absproxy/%d/next" % up.port if route == "absproxy" else b"/next"
        request.setResponseCode(302)
        request.setHeader(b"location", b"http://" + host + target + b"?a=1")
        return b""

    up = upstream(Recorder(redirect))
    path, host = _route(route, up.port)
    status, headers, _ = parse_response(await raw_request(proxy.port, get(path, host=host)))
    assert status == 302
    assert headers[b"location"] == [expected.replace(b"{p}", b"%d" % up.port)]


def test_the_rewrite_host_option_sets_the_flag() -> None:
    from portproxy.tap import Options

    on = Options()
    on.environ = {}
    on.parseOptions(["--auth", "none", "--rewrite-host"])
    assert on.config.rewrite_host is True
    off = Options()
    off.environ = {}
    off.parseOptions(["--auth", "none"])
    assert off.config.rewrite_host is False


# -- WebSocket ------------------------------------------------------------------------


class StrictApp(WebSocketServerProtocol):
    """Accepts only its own host and an Origin on that host, as Vite 6 and Jupyter do.

    Vite's default C{allowedHosts} lets C{localhost} in and nothing else; Jupyter (and
    Vite's WebSocket) compare the Origin's host with Host. Echoes messages.
    """

    factory: Any

    def onConnect(self, request: Any) -> None:
        self.factory.requests.append(request)
        host = request.headers.get("host", "")
        if host != f"localhost:{self.factory.port}":
            raise ConnectionDeny(403, "Host not allowed")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            raise ConnectionDeny(403, "Origin does not match Host")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


@pytest.fixture
def strict_app() -> Iterator[Any]:
    factory: Any = WebSocketServerFactory(reactor=get_reactor())
    factory.protocol = StrictApp
    factory.requests = []
    factory.tracked = []
    build = factory.buildProtocol

    def tracked(addr: Any) -> Any:
        protocol = build(addr)
        factory.tracked.append(protocol)
        return protocol

    factory.buildProtocol = tracked
    port = listen(factory)
    factory.port = port.getHost().port
    yield factory
    pytest_twisted.blockon(port.stopListening())
    for protocol in factory.tracked:
        if protocol.transport is not None:
            protocol.transport.abortConnection()
    _settle()


def _settle(seconds: float = 0.01) -> None:
    pytest_twisted.blockon(deferLater(get_reactor(), seconds, lambda: None))


class _Head(Protocol):
    """Sends an upgrade and returns the response head, then drops the connection."""

    transport: Any

    def __init__(self, request: bytes, done: Deferred[bytes]) -> None:
        self.request, self.done, self.data = request, done, b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and not self.done.called:
            self.done.callback(self.data.split(b"\r\n\r\n")[0])
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(self.data)


async def upgrade_status(port: int, path: bytes, host: bytes, origin: bytes) -> int:
    """The status portproxy answers a browser's upgrade with."""
    request = (
        b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: %s\r\n\r\n"
    ) % (path, host, origin)
    done: Deferred[bytes] = Deferred()
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: _Head(request, done)))
    head = await done.addTimeout(5, get_reactor())
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("route", ["proxy", "absproxy", "domain"])
@pytest_twisted.ensureDeferred
async def test_a_host_checking_websocket_app_accepts_the_browser_with_the_option(
    route: str, strict_app: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL, proxy_domains=(DOMAIN,))
    path, host = _route(route, strict_app.port)
    status = await upgrade_status(proxy.port, path, host, b"http://" + host)
    assert status == 101
    seen = strict_app.requests[0].headers
    assert seen["host"] == f"localhost:{strict_app.port}"
    assert seen["origin"] == f"http://localhost:{strict_app.port}"
    assert seen["x-forwarded-host"] == host.decode()


@pytest_twisted.ensureDeferred
async def test_without_the_option_the_host_checking_app_refuses_the_browser(
    strict_app: Any, make_proxy: Any
) -> None:
    proxy = make_proxy()
    path, host = _route("proxy", strict_app.port)
    status = await upgrade_status(proxy.port, path, host, b"http://" + host)
    assert status == 403
    seen = strict_app.requests[0].headers
    assert seen["host"] == host.decode()  # byte for byte, as before
    assert seen["origin"] == "http://" + host.decode()


@pytest_twisted.ensureDeferred
async def test_a_trusted_foreign_origin_still_reaches_the_app_unchanged(
    strict_app: Any, make_proxy: Any
) -> None:
    """--trusted-origins lets portproxy pass it; the app still sees it is foreign."""
    proxy = make_proxy(
        rewrite_host=True, public_url=PUBLIC_URL, trusted_origins=("other.example",)
    )
    path, host = _route("proxy", strict_app.port)
    status = await upgrade_status(proxy.port, path, host, b"http://other.example")
    assert status == 403  # the app's own refusal, passed on
    seen = strict_app.requests[0].headers
    assert seen["origin"] == "http://other.example"
    assert seen["host"] == f"localhost:{strict_app.port}"


@pytest_twisted.ensureDeferred
async def test_portproxys_own_origin_check_still_runs_on_the_public_values(
    strict_app: Any, make_proxy: Any
) -> None:
    """Rewriting comes after the check: a cross-site upgrade never reaches the app."""
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL)
    path, host = _route("proxy", strict_app.port)
    local = b"http://localhost:%d" % strict_app.port
    assert await upgrade_status(proxy.port, path, host, b"http://evil.example") == 403
    # Nor does an Origin that is already the app's local one, from a public host.
    assert await upgrade_status(proxy.port, path, host, local) == 403
    assert strict_app.requests == []


class _Browser(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[None] = Deferred()
        self.echo: Deferred[bytes] = Deferred()

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.echo.callback(payload)


@pytest_twisted.ensureDeferred
async def test_messages_flow_through_a_rewritten_upgrade(
    strict_app: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True, public_url=PUBLIC_URL)
    url = f"ws://pub.test:8443/proxy/{strict_app.port}/ws"
    factory = WebSocketClientFactory(
        url=url, origin="http://pub.test:8443", reactor=get_reactor()
    )
    factory.protocol = _Browser
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", proxy.port)
    browser: Any = await endpoint.connect(factory)
    try:
        await browser.opened.addTimeout(5, get_reactor())
        browser.sendMessage(b"hello")
        assert await browser.echo.addTimeout(5, get_reactor()) == b"hello"
    finally:
        browser.transport.abortConnection()
        await deferLater(get_reactor(), 0.01, lambda: None)


@pytest.mark.parametrize(
    ("rewrite", "says"),
    [
        (True, "(apps see Host: localhost:<port>)"),
        (False, "(Host header passes unchanged to the app)"),
    ],
)
def test_the_startup_log_says_which_host_apps_see(rewrite: bool, says: str) -> None:
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import ILogObserver, formatEvent, globalLogPublisher

    from portproxy.config import Config
    from portproxy.net.reactor import IInstanceReactor
    from portproxy.runtime.app import build_service

    lines: list[str] = []

    def observer(event: Any) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    try:
        build_service(
            Config(auth="none", rewrite_host=rewrite),
            environ={},
            reactor=cast(IInstanceReactor, MemoryReactorClock()),
        )
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observer))
    opened = [line for line in lines if line.startswith("apps open at")]
    assert len(opened) == 1 and opened[0].endswith(says)


# -- HTTP/2 ---------------------------------------------------------------------------


def _h2_get(port: int, cafile: str, headers: list[tuple[bytes, bytes]]) -> int:
    """One HTTP/2 request over TLS (ALPN h2), as a browser sends it; its status."""
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
        assert tls.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=True)
        tls.sendall(conn.data_to_send())
        status = 0
        while True:
            data = tls.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    conn.close_connection()
                    tls.sendall(conn.data_to_send())
                    return status
            tls.sendall(conn.data_to_send())


@pytest.fixture
def tls_proxy(tmp_path: Any) -> Iterator[Any]:
    from tests.test_tls_live import tls_services

    with tls_services(tmp_path) as start:
        yield start


@pytest_twisted.ensureDeferred
async def test_an_http2_request_is_rewritten_like_an_http11_one(
    tmp_path: Any, upstream: Any, tls_proxy: Any
) -> None:
    from twisted.internet.threads import deferToThread

    from tests.test_tls import write_pair

    cert, key, ca = write_pair(tmp_path)
    up = upstream(rec := Recorder())
    proxy = tls_proxy(
        cert=cert, cert_key=key, rewrite_host=True, public_url="https://pub.test:8443"
    )
    status = await deferToThread(
        _h2_get,
        proxy.port,
        ca,
        [
            (b":method", b"GET"),
            (b":path", b"/proxy/%d/h2" % up.port),
            (b":scheme", b"https"),
            (b":authority", b"pub.test:8443"),
            (b"origin", b"https://pub.test:8443"),
        ],
    )
    assert status == 200
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]
    assert rec.header(0, b"origin") == [b"http://localhost:%d" % up.port]
    assert rec.header(0, b"x-forwarded-host") == [b"pub.test:8443"]
    assert rec.header(0, b"x-forwarded-proto") == [b"https"]


# -- DNS rebinding: without a sign-in only known hosts are rewritten -------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost:5173",
        "LOCALHOST.:8080",  # case and one trailing dot do not matter
        "app.localhost",  # RFC 6761: browsers resolve *.localhost to loopback
        "127.0.0.1:8080",
        "127.9.9.9",
        "[::1]:8080",
        "192.168.1.5:8080",  # any IP literal: DNS rebinding needs a name
        "[2001:db8::5]",
        "pub.test:8443",  # the --public-url host
        "PUB.TEST",  # ... on any port, in any case
        "5173.example.test:8443",  # a --proxy-domain host
        "example.test",  # the fixed domain of a --proxy-domain pattern
        "5173.dev.pub.test",  # {{port}}.dev.{{host}} filled with a known name
        "5173.dev.localhost",
    ],
)
def test_loopback_public_url_and_proxy_domain_hosts_are_known(host: str) -> None:
    known = KnownHosts(
        proxy_domains=(DOMAIN, "{{port}}.dev.{{host}}"), public_url="http://pub.test:8443"
    )
    assert known(host)


@pytest.mark.parametrize(
    "host",
    [
        "rebind.attacker.example:5173",  # the repro's host
        "localhost.attacker.example",  # "localhost" must be the whole name or its end
        "attackerlocalhost",
        "pub.test.attacker.example",
        "sub.example.test",  # not a port's host under the pattern
        "5173.dev.attacker.example",  # {{host}} filled with the attacker's name
        "5173.example.test.attacker.example",
        "bad host",  # malformed
        "",
    ],
)
def test_any_other_host_is_unknown(host: str) -> None:
    known = KnownHosts(
        proxy_domains=(DOMAIN, "{{port}}.dev.{{host}}"), public_url="http://pub.test:8443"
    )
    assert not known(host)


def test_with_no_host_at_all_the_rewrite_applies() -> None:
    """No Host is never a browser (HTTP/1.0): the app just gets the local default."""
    assert KnownHosts()(None)


def test_answers_are_cached_per_host_and_the_cache_stays_bounded() -> None:
    known = KnownHosts(max_cached=4)
    for i in range(10):
        assert not known(f"h{i}.attacker.example")
        assert len(known._cache) <= 4
    assert known("localhost") and known._cache["localhost"] is True


def test_the_sign_in_is_asked_only_for_an_unknown_host() -> None:
    asked: list[str] = []

    def signed_in(request: str) -> bool:
        asked.append(request)
        return request == "with session"

    rule = HostRewrite(KnownHosts(), signed_in)
    assert rule.applies("no session", "localhost:5173")
    assert asked == []
    assert not rule.applies("no session", "rebind.attacker.example")
    assert rule.applies("with session", "rebind.attacker.example")
    assert asked == ["no session", "with session"]


REBIND = b"rebind.attacker.example"


@pytest.mark.parametrize("route", ["proxy", "absproxy"])
@pytest_twisted.ensureDeferred
async def test_an_unknown_host_without_sign_in_reaches_the_app_as_sent(
    route: str, upstream: Any, make_proxy: Any
) -> None:
    """The repro: a page on a rebound domain must not pass the app's host check."""
    proxy = make_proxy(rewrite_host=True, proxy_domains=(DOMAIN,))  # --auth none
    up = upstream(rec := Recorder())
    host = REBIND + b":%d" % proxy.port
    origin = b"http://" + host
    path = b"/%s/%d/src/main.js" % (route.encode(), up.port)
    await raw_request(
        proxy.port, get(path, host=host, headers=b"Origin: " + origin + b"\r\n")
    )
    assert rec.header(0, b"host") == [host]
    assert rec.header(0, b"origin") == [origin]


@pytest.mark.parametrize(
    "host", [b"localhost:{p}", b"127.0.0.1:{p}", b"app.localhost:{p}", b"[::1]:{p}"]
)
@pytest_twisted.ensureDeferred
async def test_a_loopback_host_without_sign_in_is_rewritten(
    host: bytes, upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True)  # --auth none, no public URL, no domain
    up = upstream(rec := Recorder())
    host = host.replace(b"{p}", b"%d" % proxy.port)
    await raw_request(
        proxy.port,
        get(
            b"/proxy/%d/" % up.port, host=host, headers=b"Origin: http://" + host + b"\r\n"
        ),
    )
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]
    assert rec.header(0, b"origin") == [b"http://localhost:%d" % up.port]


@pytest_twisted.ensureDeferred
async def test_a_host_checking_websocket_app_refuses_a_rebound_host(
    strict_app: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True)  # --auth none
    host = REBIND + b":%d" % proxy.port
    path = b"/proxy/%d/" % strict_app.port
    assert await upgrade_status(proxy.port, path, host, b"http://" + host) == 403
    seen = strict_app.requests[0].headers
    assert seen["host"] == host.decode()
    assert seen["origin"] == "http://" + host.decode()


@pytest_twisted.ensureDeferred
async def test_a_host_checking_websocket_app_accepts_a_loopback_host_without_sign_in(
    strict_app: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(rewrite_host=True)  # --auth none
    host = b"localhost:%d" % proxy.port
    path = b"/proxy/%d/" % strict_app.port
    assert await upgrade_status(proxy.port, path, host, b"http://" + host) == 101
    assert strict_app.requests[0].headers["host"] == f"localhost:{strict_app.port}"


PASSWORD = "rewrite-host-test-password"


@pytest.fixture
def signed_in_proxy(make_proxy: Any, tmp_path: Any) -> Any:
    return make_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        data_dir=str(tmp_path),
        rewrite_host=True,
        skip_auth_preflight=True,
    )


async def _session(port: int) -> bytes:
    body = b"password=" + PASSWORD.encode() + b"&to=%2F"
    raw = await raw_request(
        port,
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    _, headers, _ = parse_response(raw)
    (cookie,) = [c for c in headers[b"set-cookie"] if c.startswith(b"portproxy-session=")]
    return cookie.split(b";")[0]


@pytest_twisted.ensureDeferred
async def test_with_a_password_a_signed_in_request_is_rewritten_on_any_host(
    upstream: Any, signed_in_proxy: Any
) -> None:
    up = upstream(rec := Recorder())
    cookie = await _session(signed_in_proxy.port)
    host = b"code.unknown.example"
    await raw_request(
        signed_in_proxy.port,
        get(
            b"/proxy/%d/" % up.port,
            host=host,
            headers=b"Cookie: " + cookie + b"\r\nOrigin: http://" + host + b"\r\n",
        ),
    )
    assert rec.header(0, b"host") == [b"localhost:%d" % up.port]
    assert rec.header(0, b"origin") == [b"http://localhost:%d" % up.port]


@pytest_twisted.ensureDeferred
async def test_with_a_password_an_unauthenticated_preflight_keeps_an_unknown_host(
    upstream: Any, signed_in_proxy: Any
) -> None:
    """--skip-auth-preflight lets it through without sign-in: only known hosts count."""
    up = upstream(rec := Recorder())
    host = REBIND + b":%d" % signed_in_proxy.port
    preflight = (
        b"OPTIONS /proxy/%d/api HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s\r\n"
        b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    ) % (up.port, host, host)
    await raw_request(signed_in_proxy.port, preflight)
    assert rec.header(0, b"host") == [host]
    assert rec.header(0, b"origin") == [b"http://" + host]

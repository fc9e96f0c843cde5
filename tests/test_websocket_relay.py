"""End-to-end WebSocket relay: real sockets, Autobahn apps upstream, Autobahn browsers."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from portproxy.auth import print_auth_cookie
from portproxy.config import Config
from tests.support import get_reactor, listen, parse_response, rss_bytes

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
MiB = 1024 * 1024


# -- the app upstream ---------------------------------------------------------------


class App(WebSocketServerProtocol):
    """An Autobahn app: echoes, closes with 4002 on request, floods on /flood."""

    transport: Any
    factory: Any

    def onConnect(self, request: Any) -> Any:
        self.factory.requests.append(request)
        if request.path == "/deny":
            raise ConnectionDeny(403, "Forbidden")
        return "chat.v2" if "chat.v2" in request.protocols else None

    def onOpen(self) -> None:
        if self.http_request_path == "/flood":
            self.transport.registerProducer(_Flood(self), False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.append((payload, isBinary))
        if payload == b"bye please":
            self.sendClose(4002, "bye")
        elif payload == b"fragments please":
            self.sendMessage(b"0123456789" * 1000, False, fragmentSize=1000)
        else:
            self.sendMessage(payload, isBinary)

    def onPing(self, payload: bytes) -> None:
        self.factory.pings.append(payload)
        super().onPing(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closes.append((code, reason))


class _Flood:
    """A pull producer: one 1 MiB message each time the app's socket has room."""

    def __init__(self, app: App, limit: int = 512) -> None:
        self.app = app
        self.left = limit

    def resumeProducing(self) -> None:
        if self.left and self.app.state == App.STATE_OPEN:
            self.left -= 1
            self.app.sendMessage(b"\xab" * MiB, True)

    def stopProducing(self) -> None:
        self.left = 0


class RawApp(Protocol):
    """Records the exact request head, answers 101 (plus C{after}) or stays silent."""

    transport: Any
    factory: Any

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.buffer = b""
        self.reply = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.factory.silent or b"\r\n\r\n" not in self.buffer:
            return
        head = self.buffer.split(b"\r\n\r\n")[0]
        self.factory.heads.append(head)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        self.reply = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + base64.b64encode(hashlib.sha1(key + _GUID).digest())
            + b"\r\n\r\n"
            + self.factory.after
        )
        if not self.factory.heard.called:
            self.factory.heard.callback(self)
        if not self.factory.hold:
            self.answer()

    def answer(self) -> None:
        if self.reply:
            self.transport.write(self.reply)
            self.reply = b""
            if self.factory.close:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost.callback(None)


class Browser(WebSocketClientProtocol):
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[Browser] = Deferred()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.messages: DeferredQueue[tuple[bytes, bool]] = DeferredQueue()
        self.pongs: DeferredQueue[bytes] = DeferredQueue()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put((payload, isBinary))

    def onPong(self, payload: bytes) -> None:
        self.pongs.put(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(Exception(f"handshake failed: {reason}"))
        self.closed.callback((code, reason))


# -- fixtures ------------------------------------------------------------------------


def _settle(seconds: float = 0.01) -> None:
    pytest_twisted.blockon(deferLater(get_reactor(), seconds, lambda: None))


@pytest.fixture
def live() -> Iterator[Callable[[Any], int]]:
    """Listen with any factory on 127.0.0.1; connections are aborted at teardown."""
    ports: list[Any] = []
    factories: list[Any] = []

    def start(factory: Any, interface: str = "127.0.0.1") -> int:
        factory.tracked = []
        build = factory.buildProtocol

        def tracked(addr: Any) -> Any:
            protocol = build(addr)
            factory.tracked.append(protocol)
            return protocol

        factory.buildProtocol = tracked
        port = listen(factory, interface)
        ports.append(port)
        factories.append(factory)
        return int(port.getHost().port)

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())
    for factory in factories:
        for protocol in factory.tracked:
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()
    _settle()


@pytest.fixture
def app(live: Callable[[Any], int]) -> Any:
    factory: Any = WebSocketServerFactory(reactor=get_reactor())
    factory.protocol = App
    factory.requests, factory.messages, factory.pings, factory.closes = [], [], [], []
    factory.port = live(factory)
    return factory


@pytest.fixture
def raw_app(live: Callable[[Any], int]) -> Callable[..., Any]:
    def start(
        *, after: bytes = b"", close: bool = True, silent: bool = False, hold: bool = False
    ) -> Any:
        factory: Any = Factory.forProtocol(RawApp)
        factory.heads, factory.connections, factory.heard = [], [], Deferred()
        factory.after, factory.close, factory.silent, factory.hold = (
            after,
            close,
            silent,
            hold,
        )
        factory.port = live(factory)
        return factory

    return start


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    opened: list[Browser] = []
    yield opened
    for browser in opened:
        if browser.transport is not None and browser.transport.connected:
            browser.transport.abortConnection()
    _settle()


async def open_ws(
    browsers: list[Browser],
    port: int,
    resource: str,
    *,
    host: str = "127.0.0.1",
    protocols: list[str] | None = None,
    origin: str | None = None,
    headers: dict[str, str] | None = None,
) -> Browser:
    """Open an Autobahn browser through portproxy; C{host} names the URL's host."""
    factory = WebSocketClientFactory(
        url=f"ws://{host}:{port}{resource}",
        protocols=protocols,
        origin=origin,
        headers=headers,
        reactor=get_reactor(),
    )
    factory.protocol = Browser
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port)
    browser: Any = await endpoint.connect(factory)
    browsers.append(browser)
    return await browser.opened.addTimeout(5, get_reactor())


def upgrade(path: bytes, host: bytes = b"127.0.0.1", extra: bytes = b"") -> bytes:
    return (
        b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
    ) % (path, host, _KEY, extra)


class _OneResponse(Protocol):
    """Sends a request; done at the end of the first response (or at close for a 101)."""

    transport: Any

    def __init__(self, request: bytes, done: Deferred[bytes]) -> None:
        self.request, self.done, self.data = request, done, b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        head, sep, body = self.data.partition(b"\r\n\r\n")
        lengths = header_lines(head, b"content-length")
        if sep and lengths and len(body) >= int(lengths[0]) and not self.done.called:
            self.transport.loseConnection()
            self.done.callback(self.data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(self.data)


async def exchange(port: int, request: bytes) -> bytes:
    """Send one raw request to portproxy and return its response."""
    done: Deferred[bytes] = Deferred()
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: _OneResponse(request, done)))
    return await done.addTimeout(5, get_reactor())


def header_lines(head: bytes, name: bytes) -> list[bytes]:
    prefix = name.lower() + b":"
    return [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(prefix)
    ]


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Wait (polling the reactor) until C{condition()} holds; fail after C{timeout}."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await deferLater(get_reactor(), 0.01, lambda: None)
    raise AssertionError("condition never became true")


async def next_message(browser: Browser) -> tuple[bytes, bool]:
    return await browser.messages.get().addTimeout(5, get_reactor())


# -- echo through every route -----------------------------------------------------


@pytest.mark.parametrize("route", ["proxy", "absproxy", "domain"])
@pytest_twisted.ensureDeferred
async def test_echo_keeps_text_as_text_and_binary_as_binary_on_every_route(
    route: str, app: Any, make_proxy: Any, browsers: list[Browser]
) -> None:
    proxy = make_proxy(proxy_domains=("{{port}}.example.com",))
    resource, host = {
        "proxy": (f"/proxy/{app.port}/echo?x=1", "127.0.0.1"),
        "absproxy": (f"/absproxy/{app.port}/echo?x=1", "127.0.0.1"),
        "domain": ("/echo?x=1", f"{app.port}.example.com"),
    }[route]
    browser = await open_ws(browsers, proxy.port, resource, host=host)
    browser.sendMessage("héllo".encode(), False)
    assert await next_message(browser) == ("héllo".encode(), False)
    browser.sendMessage(b"\x00\xff", True)
    assert await next_message(browser) == (b"\x00\xff", True)
    seen = app.requests[0]
    expected_path = {"proxy": "/echo", "absproxy": f"/absproxy/{app.port}/echo"}
    assert seen.path == expected_path.get(route, "/echo")
    assert seen.params == {"x": ["1"]}


@pytest_twisted.ensureDeferred
async def test_an_app_listening_on_ipv6_loopback_only_is_reached(
    live: Any, proxy: Any, browsers: list[Browser]
) -> None:
    factory: Any = WebSocketServerFactory(reactor=get_reactor())
    factory.protocol = App
    factory.requests, factory.messages, factory.pings, factory.closes = [], [], [], []
    port = live(factory, "::1")
    browser = await open_ws(browsers, proxy.port, f"/proxy/{port}/v6")
    browser.sendMessage(b"over ::1", False)
    assert await next_message(browser) == (b"over ::1", False)


@pytest.mark.parametrize(
    "host", [b"8000.example.com", b"Example.COM:8443", b"localhost:8080", b"[::1]:9000"]
)
@pytest_twisted.ensureDeferred
async def test_path_query_host_and_origin_reach_the_upstream_byte_for_byte(
    host: bytes, raw_app: Any, proxy: Any
) -> None:
    up = raw_app()
    origin = b"http://" + host
    raw = await exchange(
        proxy.port,
        upgrade(
            b"/proxy/%d/a%%2Fb//c?x=%%20&y=/z" % up.port,
            host,
            b"Origin: " + origin + b"\r\n",
        ),
    )
    assert parse_response(raw)[0] == 101
    head = up.heads[0]
    assert head.split(b"\r\n")[0] == b"GET /a%2Fb//c?x=%20&y=/z HTTP/1.1"
    assert header_lines(head, b"host") == [host]
    assert header_lines(head, b"origin") == [origin]


@pytest_twisted.ensureDeferred
async def test_no_origin_sends_no_origin_upstream(raw_app: Any, proxy: Any) -> None:
    up = raw_app()
    raw = await exchange(proxy.port, upgrade(b"/proxy/%d/" % up.port))
    assert parse_response(raw)[0] == 101
    assert header_lines(up.heads[0], b"origin") == []


@pytest_twisted.ensureDeferred
async def test_cookies_authorization_app_and_forwarded_headers_reach_the_upstream(
    raw_app: Any, proxy: Any
) -> None:
    up = raw_app()
    extra = (
        b"Cookie: a=1; portproxy-session=secret; b=2\r\nAuthorization: Bearer t0k\r\n"
        b"X-App: yes\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\n"
    )
    raw = await exchange(proxy.port, upgrade(b"/proxy/%d/ws" % up.port, b"h.test:1", extra))
    status, headers, _ = parse_response(raw)
    assert status == 101
    assert b"sec-websocket-extensions" not in headers
    head = up.heads[0]
    assert header_lines(head, b"cookie") == [b"a=1; b=2"]
    assert header_lines(head, b"authorization") == [b"Bearer t0k"]
    assert header_lines(head, b"x-app") == [b"yes"]
    assert header_lines(head, b"x-forwarded-for") == [b"127.0.0.1"]
    assert header_lines(head, b"x-forwarded-proto") == [b"http"]
    assert header_lines(head, b"x-forwarded-host") == [b"h.test:1"]
    assert header_lines(head, b"x-forwarded-prefix") == [b"/proxy/%d" % up.port]
    assert header_lines(head, b"sec-websocket-extensions") == []
    assert len(header_lines(head, b"sec-websocket-key")) == 1


@pytest_twisted.ensureDeferred
async def test_session_cookie_never_reaches_the_upstream_and_signed_out_gets_401(
    app: Any, raw_app: Any, make_proxy: Any, browsers: list[Browser]
) -> None:
    environ = {"PASSWORD": "hunter2"}
    proxy = make_proxy(auth="password", environ=environ)
    cookie = print_auth_cookie(Config(auth="password"), environ)
    up = raw_app()
    raw = await exchange(
        proxy.port,
        upgrade(
            b"/proxy/%d/" % up.port,
            extra=b"Cookie: " + cookie.encode() + b"; theme=dark\r\n",
        ),
    )
    assert parse_response(raw)[0] == 101
    assert header_lines(up.heads[0], b"cookie") == [b"theme=dark"]

    raw = await exchange(proxy.port, upgrade(b"/proxy/%d/" % up.port))
    status, _, body = parse_response(raw)
    assert status == 401
    assert json.loads(body) == {"error": "Unauthorized"}
    assert len(up.heads) == 1


@pytest_twisted.ensureDeferred
async def test_a_relayed_connection_leaves_the_http_limits_bookkeeping(
    raw_app: Any, make_proxy: Any
) -> None:
    """Once relayed, the HTTP channel never hears of its connection again: it must
    leave the limits' sets then, or every signed-in WebSocket would stay there."""
    environ = {"PASSWORD": "hunter2"}
    proxy = make_proxy(auth="password", environ=environ)
    cookie = print_auth_cookie(Config(auth="password"), environ)
    up = raw_app()
    raw = await exchange(
        proxy.port,
        upgrade(b"/proxy/%d/" % up.port, extra=b"Cookie: " + cookie.encode() + b"\r\n"),
    )
    assert parse_response(raw)[0] == 101
    limits = proxy.instance.site.limits
    (protocol,) = proxy.instance.site.tracked
    channel = getattr(protocol, "_channel", protocol)
    assert not limits.is_trusted(channel)  # trusted while HTTP, forgotten once relayed


@pytest_twisted.ensureDeferred
async def test_the_client_gets_the_subprotocol_the_upstream_chose(
    app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    browser = await open_ws(
        browsers, proxy.port, f"/proxy/{app.port}/", protocols=["chat.v1", "chat.v2"]
    )
    assert browser.websocket_protocol_in_use == "chat.v2"
    assert app.requests[0].protocols == ["chat.v1", "chat.v2"]


# -- messages ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [MiB, 16 * MiB])
@pytest.mark.parametrize("binary", [True, False])
@pytest_twisted.ensureDeferred
async def test_large_messages_pass_whole(
    size: int, binary: bool, app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    browser = await open_ws(browsers, proxy.port, f"/proxy/{app.port}/")
    payload = (b"\x01\xfe" if binary else b"ab") * (size // 2)
    browser.sendMessage(payload, binary)
    echoed, is_binary = await browser.messages.get().addTimeout(20, get_reactor())
    assert is_binary is binary
    assert echoed == payload


@pytest_twisted.ensureDeferred
async def test_fragmented_messages_are_reassembled_both_ways_with_their_frames(
    app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    browser = await open_ws(browsers, proxy.port, f"/proxy/{app.port}/")
    payload = bytes(range(256)) * 40
    browser.sendMessage(payload, True, fragmentSize=1000)
    assert await next_message(browser) == (payload, True)
    upstream_app = app.tracked[0]
    assert upstream_app.trafficStats.incomingWebSocketFrames == 11

    browser.sendMessage(b"fragments please", False)
    assert await next_message(browser) == (b"0123456789" * 1000, False)
    assert browser.trafficStats.incomingWebSocketFrames >= 10


@pytest_twisted.ensureDeferred
async def test_pings_reach_the_upstream_and_its_pong_comes_back(
    app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    browser = await open_ws(browsers, proxy.port, f"/proxy/{app.port}/")
    browser.sendPing(b"are you there")
    assert await browser.pongs.get().addTimeout(5, get_reactor()) == b"are you there"
    assert app.pings == [b"are you there"]


@pytest_twisted.ensureDeferred
async def test_upstream_close_code_and_reason_reach_the_client(
    app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    browser = await open_ws(browsers, proxy.port, f"/proxy/{app.port}/")
    browser.sendMessage(b"bye please", False)
    code, reason = await browser.closed.addTimeout(5, get_reactor())
    assert (code, reason) == (4002, "bye")


@pytest.mark.parametrize("code, reason", [(1000, None), (4000, "done")])
@pytest_twisted.ensureDeferred
async def test_client_close_code_reaches_the_upstream(
    code: int, reason: str | None, app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    browser = await open_ws(browsers, proxy.port, f"/proxy/{app.port}/")
    browser.sendClose(code, reason)
    await browser.closed.addTimeout(5, get_reactor())
    assert app.closes[0][0] == code
    assert (app.closes[0][1] or None) == reason


@pytest_twisted.ensureDeferred
async def test_frames_sent_with_the_upstreams_101_arrive_after_the_clients_101(
    raw_app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    up = raw_app(after=b"\x81\x05first\x82\x02\x00\x01", close=False)
    browser = await open_ws(browsers, proxy.port, f"/proxy/{up.port}/")
    assert await next_message(browser) == (b"first", False)
    assert await next_message(browser) == (b"\x00\x01", True)


# -- failures ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstream_refusal_gives_the_client_its_status_not_a_101(
    app: Any, proxy: Any
) -> None:
    raw = await exchange(
        proxy.port, upgrade(b"/proxy/%d/deny" % app.port, extra=b"Accept: */*\r\n")
    )
    status, headers, body = parse_response(raw)
    assert status == 403
    assert raw.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert headers[b"content-type"] == [b"application/json"]
    assert "refused" in json.loads(body)["error"]


@pytest_twisted.ensureDeferred
async def test_a_plain_http_upstream_status_is_passed_on(live: Any, proxy: Any) -> None:
    class Missing(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(404)
            return b"no websocket here"

    port = live(Site(Missing()))
    status, _, _ = parse_response(await exchange(proxy.port, upgrade(b"/proxy/%d/" % port)))
    assert status == 404


@pytest.mark.parametrize(
    "request_bytes, header",
    [
        (
            b"GET /proxy/%d/ HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            None,
        ),
        (
            b"GET /proxy/%d/ HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 8\r\n\r\n",
            b"13",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_malformed_handshake_is_refused_before_the_upstream_is_asked(
    request_bytes: bytes, header: bytes | None, raw_app: Any, proxy: Any
) -> None:
    up = raw_app()
    raw = await exchange(proxy.port, request_bytes % up.port)
    status, headers, body = parse_response(raw)
    assert status == 400
    assert json.loads(body)["error"]
    if header is not None:
        assert headers[b"sec-websocket-version"] == [header]
    assert up.connections == []


@pytest_twisted.ensureDeferred
async def test_nothing_listening_gives_502_with_a_page_that_says_so(proxy: Any) -> None:
    closed = listen(Factory.forProtocol(Protocol))
    port = closed.getHost().port
    await closed.stopListening()
    raw = await exchange(
        proxy.port, upgrade(b"/proxy/%d/" % port, extra=b"Accept: text/html\r\n")
    )
    status, headers, body = parse_response(raw)
    assert status == 502
    assert headers[b"content-type"] == [b"text/html; charset=utf-8"]
    assert b"Nothing is listening on port %d" % port in body


@pytest_twisted.ensureDeferred
async def test_an_upstream_that_never_answers_gives_504_and_is_closed(
    raw_app: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(upstream_timeout=0.2)
    up = raw_app(silent=True)
    raw = await exchange(proxy.port, upgrade(b"/proxy/%d/" % up.port))
    assert parse_response(raw)[0] == 504
    await up.connections[0].lost.addTimeout(5, get_reactor())


@pytest_twisted.ensureDeferred
async def test_a_client_leaving_during_the_handshake_closes_the_upstream_attempt(
    raw_app: Any, proxy: Any
) -> None:
    up = raw_app(silent=True)
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", proxy.port)
    client: Any = await endpoint.connect(Factory.forProtocol(Protocol))
    client.transport.write(upgrade(b"/proxy/%d/" % up.port))
    await eventually(lambda: bool(up.connections))
    client.transport.loseConnection()
    await up.connections[0].lost.addTimeout(5, get_reactor())


@pytest_twisted.ensureDeferred
async def test_either_side_closing_its_socket_closes_the_other(
    raw_app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    up = raw_app(close=False)
    browser = await open_ws(browsers, proxy.port, f"/proxy/{up.port}/")
    up.connections[0].transport.loseConnection()
    code, _ = await browser.closed.addTimeout(5, get_reactor())
    assert code == 1006

    browser = await open_ws(browsers, proxy.port, f"/proxy/{up.port}/")
    browser.transport.loseConnection()
    await up.connections[1].lost.addTimeout(5, get_reactor())


def _masked_text_frame(text: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return (
        b"\x81"
        + bytes([0x80 | len(text)])
        + mask
        + bytes(c ^ mask[i % 4] for i, c in enumerate(text))
    )


@pytest.mark.parametrize("with_request", [True, False])
@pytest_twisted.ensureDeferred
async def test_bytes_sent_before_the_101_reach_the_upstream_after_its_101_in_order(
    with_request: bool, raw_app: Any, proxy: Any
) -> None:
    """RFC 6455 says a client waits for its 101; some do not, and lose nothing."""
    up = raw_app(hold=True, close=False)
    first, second = _masked_text_frame(b"one"), _masked_text_frame(b"two")
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", proxy.port)
    client: Any = await endpoint.connect(Factory.forProtocol(Protocol))
    request = upgrade(b"/proxy/%d/" % up.port)
    client.transport.write(request + first if with_request else request)
    app_side = await up.heard.addTimeout(5, get_reactor())
    client.transport.write(second if with_request else first + second)
    await deferLater(get_reactor(), 0.05, lambda: None)
    app_side.answer()
    await eventually(lambda: app_side.buffer.endswith(second))
    assert app_side.buffer.split(b"\r\n\r\n", 1)[1] == first + second
    client.transport.abortConnection()
    await app_side.lost.addTimeout(5, get_reactor())


@pytest_twisted.ensureDeferred
async def test_a_client_pipelining_much_with_its_request_is_still_read_after_its_101(
    raw_app: Any, proxy: Any
) -> None:
    up = raw_app(close=False)
    pipelined = _masked_text_frame(b"p" * 100) * 400  # 42 KB, past HTTPChannel's 16 KiB
    after = _masked_text_frame(b"after")
    done: Deferred[bytes] = Deferred()
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", proxy.port)
    client: Any = await endpoint.connect(
        Factory.forProtocol(lambda: _OneResponse(b"", done))
    )
    client.transport.write(upgrade(b"/proxy/%d/" % up.port) + pipelined)
    app_side = await up.heard.addTimeout(5, get_reactor())
    await eventually(lambda: client.data.startswith(b"HTTP/1.1 101"))
    client.transport.write(after)
    await eventually(lambda: app_side.buffer.endswith(after))
    assert app_side.buffer.split(b"\r\n\r\n", 1)[1] == pipelined + after
    client.transport.abortConnection()
    await app_side.lost.addTimeout(5, get_reactor())


@pytest_twisted.ensureDeferred
async def test_a_client_flooding_before_its_101_is_refused(
    raw_app: Any, proxy: Any
) -> None:
    up = raw_app(hold=True)
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", proxy.port)
    done: Deferred[bytes] = Deferred()
    client: Any = await endpoint.connect(
        Factory.forProtocol(lambda: _OneResponse(b"", done))
    )
    client.transport.write(upgrade(b"/proxy/%d/" % up.port))
    app_side = await up.heard.addTimeout(5, get_reactor())
    client.transport.write(_masked_text_frame(b"x" * 100) * 1000)
    assert parse_response(await done.addTimeout(5, get_reactor()))[0] == 400
    await app_side.lost.addTimeout(5, get_reactor())


# Twisted's self-signed certificate helper and TLS options still use pyOpenSSL objects.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("listener", ["listenSSL", "TLSMemoryBIOFactory"])
@pytest_twisted.ensureDeferred
async def test_wss_through_a_tls_listener(
    listener: str, app: Any, make_proxy: Any, browsers: list[Browser]
) -> None:
    from twisted.internet import ssl
    from twisted.internet.endpoints import wrapClientTLS
    from twisted.protocols.tls import TLSMemoryBIOFactory

    proxy = make_proxy()
    key = ssl.KeyPair.generate(size=2048)
    options = key.selfSignedCert(1, CN="localhost").options()
    site = proxy.instance.site
    if listener == "listenSSL":
        tls_port = get_reactor().listenSSL(0, site, options, interface="127.0.0.1")
    else:
        wrapped = TLSMemoryBIOFactory(options, False, site)
        tls_port = get_reactor().listenTCP(0, wrapped, interface="127.0.0.1")
    try:
        port = tls_port.getHost().port
        factory = WebSocketClientFactory(
            url=f"wss://localhost:{port}/proxy/{app.port}/", reactor=get_reactor()
        )
        factory.protocol = Browser
        endpoint = wrapClientTLS(
            ssl.CertificateOptions(),
            TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port),
        )
        browser: Any = await endpoint.connect(factory)
        browsers.append(browser)
        await browser.opened.addTimeout(5, get_reactor())
        browser.sendMessage(b"x" * MiB, True)
        assert await browser.messages.get().addTimeout(5, get_reactor()) == (
            b"x" * MiB,
            True,
        )
        assert app.requests[0].headers["x-forwarded-proto"] == "https"
        browser.sendClose(4000, "done")
        await browser.closed.addTimeout(5, get_reactor())
        assert app.closes == [(4000, "done")]
    finally:
        await tls_port.stopListening()


def test_keepalive_is_turned_on_for_the_clients_socket() -> None:
    import socket

    from portproxy.websocket.bridge import KEEPALIVE, _keepalive

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()

    class Transport:
        def getHandle(self) -> socket.socket:
            return accepted

    try:
        _keepalive(Transport())
        assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        if hasattr(socket, "TCP_KEEPIDLE"):
            idle = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            assert idle == KEEPALIVE[0]
    finally:
        for sock in (server, client, accepted):
            sock.close()


class _FakeSocket:
    def __init__(self) -> None:
        self.closing = self.aborted = False

    def loseConnection(self) -> None:
        self.closing = True

    def abortConnection(self) -> None:
        self.aborted = True


@pytest.mark.parametrize("other_closes_in_time", [True, False])
def test_the_other_leg_gets_the_close_timeout_to_flush_then_is_aborted(
    other_closes_in_time: bool,
) -> None:
    from twisted.internet.task import Clock

    from portproxy.websocket.bridge import CLOSE_TIMEOUT, Bridge, Phase

    clock = Clock()
    bridge = Bridge.__new__(Bridge)
    bridge.relay = type("Relay", (), {"reactor": clock})()
    bridge.phase, bridge.timer = Phase.OPEN, None
    upstream_socket = _FakeSocket()
    bridge.upstream = type("Leg", (), {"transport": upstream_socket})()

    bridge.client_lost()
    assert upstream_socket.closing and not upstream_socket.aborted
    clock.advance(CLOSE_TIMEOUT - 0.1)
    if other_closes_in_time:
        bridge.upstream_lost(bridge.upstream)
    clock.advance(0.2)
    assert upstream_socket.aborted is not other_closes_in_time
    assert clock.getDelayedCalls() == []


# -- origin --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trusted, host, origin, status",
    [
        ((), b"127.0.0.1:8080", None, 101),
        ((), b"127.0.0.1:8080", b"http://127.0.0.1:8080", 101),
        ((), b"app.test", b"https://app.test", 101),
        ((), b"app.test:80", b"http://app.test", 101),
        ((), b"127.0.0.1:8080", b"http://127.0.0.1:9999", 403),
        ((), b"127.0.0.1:8080", b"https://evil.example", 403),
        ((), b"127.0.0.1:8080", b"null", 403),
        (("*.example.org",), b"127.0.0.1:8080", b"https://app.example.org", 101),
        (("*.example.org",), b"127.0.0.1:8080", b"https://example.org.evil", 403),
        (("*",), b"127.0.0.1:8080", b"https://anything.example", 101),
        (("*",), b"127.0.0.1:8080", b"null", 403),
    ],
)
@pytest_twisted.ensureDeferred
async def test_origin_rules_guard_the_upstream(
    trusted: tuple[str, ...],
    host: bytes,
    origin: bytes | None,
    status: int,
    raw_app: Any,
    make_proxy: Any,
) -> None:
    proxy = make_proxy(trusted_origins=trusted)
    up = raw_app()
    extra = b"Origin: " + origin + b"\r\n" if origin is not None else b""
    raw = await exchange(proxy.port, upgrade(b"/proxy/%d/" % up.port, host, extra))
    assert parse_response(raw)[0] == status
    assert len(up.heads) == (1 if status == 101 else 0)


# -- memory --------------------------------------------------------------------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_flooding_upstream_and_a_client_that_does_not_read_keep_memory_bounded(
    app: Any, proxy: Any, browsers: list[Browser]
) -> None:
    browser = await open_ws(browsers, proxy.port, f"/proxy/{app.port}/flood")
    assert await next_message(browser) == (b"\xab" * MiB, True)
    browser.transport.pauseProducing()
    before = rss_bytes()
    await deferLater(get_reactor(), 3, lambda: None)
    grown = rss_bytes() - before
    assert grown < 16 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
    browser.transport.resumeProducing()
    assert await next_message(browser) == (b"\xab" * MiB, True)

"""TLS listeners end to end: real sockets on 127.0.0.1, the instance that twist runs.

Clients verify the server against the test CA (or the self-signed certificate) with
Python's own ssl module, in a thread, so that nothing of portproxy's TLS code is on the
client side.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread

from portproxy.config import Config
from portproxy.runtime.app import build_service
from portproxy.runtime.service import ListeningService
from portproxy.runtime.tls import SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE, fingerprint
from portproxy.runtime.tlslistener import SNIFF_TIMEOUT, PlainOrTLSFactory
from tests.support import Recorder, get, get_reactor, listen, parse_response, raw_request
from tests.test_tls import write_pair

PASSWORD = "correct horse battery staple"
LISTEN = ("tcp:0:interface=127.0.0.1",)


class Running:
    """A started portproxy service and the ports its listeners got."""

    def __init__(self, service: Any) -> None:
        self.service = service
        hosts = [
            child.port.getHost()
            for child in service
            if isinstance(child, ListeningService) and child.port is not None
        ]
        self.ports = [host.port for host in hosts if hasattr(host, "port")]
        self.port = self.ports[0]


@contextmanager
def tls_services(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start C{build_service} (what C{twist portproxy} runs) in this reactor."""
    running: list[Running] = []

    def start(environ: dict[str, str] | None = None, **fields: Any) -> Running:
        fields.setdefault("auth", "none")
        fields.setdefault("access_log", "off")
        fields.setdefault("listen", LISTEN)
        fields.setdefault("data_dir", str(tmp_path / "data"))
        service = build_service(
            Config(**fields), environ=environ or {}, reactor=get_reactor()
        )
        service.privilegedStartService()
        service.startService()
        running.append(Running(service))
        return running[-1]

    try:
        yield start
    finally:
        for proxy in running:
            pytest_twisted.blockon(proxy.service.stopService())


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    with tls_services(tmp_path) as start:
        yield start


def _client_context(cafile: str | None, alpn: list[str] | None) -> ssl.SSLContext:
    if cafile is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=cafile)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def _exchange(
    port: int,
    request: bytes,
    cafile: str | None,
    server_hostname: str,
    alpn: list[str] | None,
) -> tuple[bytes, str | None]:
    context = _client_context(cafile, alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(request)
        data = bytearray()
        while chunk := tls.recv(65536):
            data += chunk
        return bytes(data), tls.selected_alpn_protocol()


async def tls_request(
    port: int,
    request: bytes,
    *,
    cafile: str | None,
    server_hostname: str = "localhost",
    alpn: list[str] | None = None,
) -> tuple[bytes, str | None]:
    """Send C{request} over TLS from a thread; return the raw answer and the ALPN pick."""
    result: tuple[bytes, str | None] = await deferToThread(
        _exchange, port, request, cafile, server_hostname, alpn
    )
    return result


@pytest_twisted.ensureDeferred
async def test_https_with_a_given_certificate_verifies_against_its_ca(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    up = upstream(rec := Recorder())
    proxy = tls_proxy(cert=cert, cert_key=key)
    path = b"/proxy/%d/x?y=1" % up.port
    # Only the root is trusted: the handshake needs the intermediate from the server.
    raw, alpn = await tls_request(
        proxy.port, get(path, host=b"localhost"), cafile=ca, alpn=["http/1.1"]
    )
    status, _, body = parse_response(raw)
    assert (status, body, alpn) == (200, b"ok /x?y=1", "http/1.1")
    assert rec.header(0, b"x-forwarded-proto") == [b"https"]
    raw, _ = await tls_request(
        proxy.port, get(b"/healthz"), cafile=ca, server_hostname="127.0.0.1"
    )
    assert parse_response(raw)[0] == 200


@pytest_twisted.ensureDeferred
async def test_a_client_checking_another_name_refuses_the_certificate(
    tmp_path: Path, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path, hosts=("localhost",))
    proxy = tls_proxy(cert=cert, cert_key=key)
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls_request(
            proxy.port, get(b"/healthz"), cafile=ca, server_hostname="other.test"
        )


@pytest_twisted.ensureDeferred
async def test_self_signed_certificate_serves_each_cert_host_and_is_reused(
    tmp_path: Path, tls_proxy: Any
) -> None:
    from cryptography import x509
    from twisted.logger import globalLogPublisher

    data = tmp_path / "data"
    hosts = ("localhost", "127.0.0.1", "dev.test")
    logged: list[object] = []

    def observer(event: dict[str, object]) -> None:
        if "fingerprint" in event:
            logged.append(event["fingerprint"])

    globalLogPublisher.addObserver(observer)
    try:
        proxy = tls_proxy(self_signed=True, cert_hosts=hosts)
    finally:
        globalLogPublisher.removeObserver(observer)
    cafile = str(data / SELF_SIGNED_CERT_FILE)
    made = x509.load_pem_x509_certificate((data / SELF_SIGNED_CERT_FILE).read_bytes())
    assert logged == [fingerprint(made)]
    for name in hosts:
        raw, _ = await tls_request(
            proxy.port, get(b"/healthz"), cafile=cafile, server_hostname=name
        )
        assert parse_response(raw)[0] == 200
    kept = (
        (data / SELF_SIGNED_CERT_FILE).read_bytes(),
        (data / SELF_SIGNED_KEY_FILE).read_bytes(),
    )
    await proxy.service.stopService()
    again = tls_proxy(self_signed=True, cert_hosts=hosts)
    assert (data / SELF_SIGNED_CERT_FILE).read_bytes() == kept[0]
    assert (data / SELF_SIGNED_KEY_FILE).read_bytes() == kept[1]
    raw, _ = await tls_request(again.port, get(b"/healthz"), cafile=cafile)
    assert parse_response(raw)[0] == 200


@pytest_twisted.ensureDeferred
async def test_every_tcp_listener_gets_tls_and_other_kinds_stay_plain(
    tmp_path: Path, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    sock = str(tmp_path / "pp.sock")
    proxy = tls_proxy(cert=cert, cert_key=key, listen=(*LISTEN, *LISTEN, f"unix:{sock}"))
    assert len(proxy.ports) == 2
    for port in proxy.ports:
        raw, _ = await tls_request(port, get(b"/healthz"), cafile=ca)
        assert parse_response(raw)[0] == 200

    def plain_over_unix() -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(get(b"/healthz"))
            data = bytearray()
            while chunk := s.recv(65536):
                data += chunk
            return bytes(data)

    assert parse_response(await deferToThread(plain_over_unix))[0] == 200


def _login(password: str) -> bytes:
    body = f"password={quote(password)}&to=%2F".encode()
    return (
        b"POST /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )


def _session_cookie(raw: bytes) -> bytes:
    _, headers, _ = parse_response(raw)
    (cookie,) = [c for c in headers[b"set-cookie"] if c.startswith(b"portproxy-session=")]
    return cookie


@pytest_twisted.ensureDeferred
async def test_session_cookie_is_secure_through_a_tls_listener(
    tmp_path: Path, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    proxy = tls_proxy(
        environ={"PASSWORD": PASSWORD}, auth="password", cert=cert, cert_key=key
    )
    raw, _ = await tls_request(proxy.port, _login(PASSWORD), cafile=ca)
    attributes = [a.strip().lower() for a in _session_cookie(raw).split(b";")]
    assert b"secure" in attributes and b"httponly" in attributes


@pytest_twisted.ensureDeferred
async def test_session_cookie_is_not_secure_over_plain_http(
    tmp_path: Path, make_proxy: Any
) -> None:
    proxy = make_proxy(
        environ={"PASSWORD": PASSWORD}, auth="password", data_dir=str(tmp_path)
    )
    raw = await raw_request(proxy.port, _login(PASSWORD))
    attributes = [a.strip().lower() for a in _session_cookie(raw).split(b";")]
    assert b"secure" not in attributes


@pytest.mark.parametrize(
    ("host", "status", "location"),
    [
        (b"localhost:{port}", 307, b"https://localhost:{port}/proxy/3000/a?b=1"),
        (b"bad host", 400, None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_plain_http_on_a_tls_port_is_redirected_to_https(
    tmp_path: Path,
    tls_proxy: Any,
    host: bytes,
    status: int,
    location: bytes | None,
) -> None:
    cert, key, _ = write_pair(tmp_path)
    proxy = tls_proxy(cert=cert, cert_key=key)
    port = b"%d" % proxy.port
    raw = await raw_request(
        proxy.port, get(b"/proxy/3000/a?b=1", host=host.replace(b"{port}", port))
    )
    got, headers, _ = parse_response(raw)
    assert got == status
    if location is not None:
        assert headers[b"location"] == [location.replace(b"{port}", port)]
    else:
        assert b"location" not in headers
    assert b"set-cookie" not in headers


def test_a_client_that_sends_nothing_is_dropped_after_the_timeout() -> None:
    clock = Clock()
    built: list[Any] = []

    class Never:
        def buildProtocol(self, addr: Any) -> Any:
            built.append(addr)

    factory = PlainOrTLSFactory(Never(), Never(), clock=clock)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    clock.advance(SNIFF_TIMEOUT - 0.1)
    assert not transport.disconnecting and not getattr(transport, "aborted", False)
    clock.advance(0.2)
    assert transport.disconnecting or getattr(transport, "aborted", False)
    assert built == []


# -- WebSocket through the TLS listener ---------------------------------------------


class _Echo(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class _Browser(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[int | None] = Deferred()
        self.messages: DeferredQueue[bytes] = DeferredQueue()

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(Exception(f"handshake failed: {reason}"))
        self.closed.callback(code)


@pytest.fixture
def echo_app() -> Iterator[int]:
    factory = WebSocketServerFactory(reactor=get_reactor())
    factory.protocol = _Echo
    port = listen(factory)
    yield port.getHost().port
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_websocket_through_the_tls_listener_works(
    tmp_path: Path, tls_proxy: Any, echo_app: int
) -> None:
    from twisted.internet.ssl import CertificateOptions

    cert, key, _ = write_pair(tmp_path)
    proxy = tls_proxy(cert=cert, cert_key=key)
    reactor = get_reactor()
    factory = WebSocketClientFactory(
        url=f"wss://localhost:{proxy.port}/proxy/{echo_app}/", reactor=reactor
    )
    factory.protocol = _Browser
    # As a browser does for WebSockets when the server offers no RFC 8441: HTTP/1.1.
    endpoint = wrapClientTLS(
        CertificateOptions(acceptableProtocols=[b"http/1.1"]),
        TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port),
    )
    browser: Any = await endpoint.connect(factory)
    await browser.opened.addTimeout(5, reactor)
    browser.sendMessage(b"hello over tls", True)
    assert await browser.messages.get().addTimeout(5, reactor) == b"hello over tls"
    browser.sendClose(1000)
    assert await browser.closed.addTimeout(5, reactor) == 1000


@pytest_twisted.ensureDeferred
async def test_without_h2_the_tls_listener_offers_only_http_1_1(
    tmp_path: Path, tls_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.web import http

    # What twisted.web decides when the h2 package is missing.
    monkeypatch.setattr(http, "H2_ENABLED", False)
    cert, key, ca = write_pair(tmp_path)
    proxy = tls_proxy(cert=cert, cert_key=key)
    raw, alpn = await tls_request(
        proxy.port, get(b"/healthz"), cafile=ca, alpn=["h2", "http/1.1"]
    )
    assert alpn == "http/1.1"
    assert parse_response(raw)[0] == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cert": "/nonexistent/cert.pem"}, "--cert: /nonexistent/cert.pem: cannot read"),
        ({"self_signed": True, "cert_hosts": ("a b",)}, "--cert-host: 'a b'"),
    ],
)
def test_a_config_built_by_hand_fails_at_start_with_the_option_named(
    fields: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # .tac files may build a Config directly: the checks of build_config are skipped,
    # and start-up is where the same message must come out.
    from twisted.internet.testing import MemoryReactorClock

    service = build_service(
        Config(auth="none", access_log="off", **fields),
        environ={},
        reactor=MemoryReactorClock(),
    )
    with pytest.raises(SystemExit) as exited:
        service.privilegedStartService()
    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith(f"portproxy: error: {message}")

"""HTTP/2 against hostile clients: crafted frames over real TLS to a real portproxy.

Each test speaks raw HTTP/2 frames (hyperframe + hpack, from a thread) so that it can
send what no well-behaved client library would. The memory tests run portproxy as a
subprocess (C{twist portproxy}) and read its resident size from /proc.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hpack
import pytest
import pytest_twisted
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from portproxy.config import Config
from portproxy.http.h2rules import FrameBudget, H2Limits, request_head_refusal
from portproxy.runtime.app import build_instance
from portproxy.runtime.tlslistener import ServerTLS
from tests.support import Recorder, free_port, get_reactor, listen
from tests.test_tls import write_pair
from tests.test_tls_live import PASSWORD, Running, tls_services

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xB
MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


# -- a raw HTTP/2 client (runs in a thread) ------------------------------------------


class RawH2:
    """One TLS connection speaking HTTP/2 frame by frame."""

    def __init__(self, port: int, *, settings: dict[int, int] | None = None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.port = port
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.closed = False
        first = SettingsFrame(0)
        first.settings = settings or {}
        self.send(PREFACE + first.serialize())
        # Settle the SETTINGS exchange first: an ACK sent later could land inside a
        # header block that a test leaves open on purpose.
        self.until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)

    def send(self, data: bytes) -> bool:
        """Send; C{False} once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
            return False
        return True

    def headers(
        self,
        stream: int,
        fields: list[tuple[bytes, bytes]],
        *,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> bytes:
        frame = HeadersFrame(stream)
        frame.data = self.encoder.encode(fields, huffman=False)
        frame.flags = {"END_STREAM"} if end_stream else set()
        if end_headers:
            frame.flags.add("END_HEADERS")
        return bytes(frame.serialize())

    def request(
        self,
        stream: int,
        method: bytes,
        path: bytes,
        *,
        end_stream: bool = True,
        authority: bytes | None = None,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> bytes:
        fields = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":path", path),
            (
                b":authority",
                b"localhost:%d" % self.port if authority is None else authority,
            ),
        ]
        return self.headers(stream, fields + list(extra), end_stream=end_stream)

    def frame(self, timeout: float = 10) -> Frame | None:
        """The next frame from the server, C{None} at end of connection."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                if len(self.buffer) >= 9 + length:
                    frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
                    self.buffer = self.buffer[9 + length :]
                    return frame
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return None
            self.buffer += data

    def until(
        self, done: Callable[[Frame], bool], timeout: float = 10
    ) -> tuple[list[Frame], Frame | None]:
        """Read frames until C{done} says so (that frame is returned) or the end."""
        deadline = time.monotonic() + timeout
        seen: list[Frame] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = self.frame(left)
            except TimeoutError:
                break
            if frame is None:
                return seen, None
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                ack = SettingsFrame(0)
                ack.flags = {"ACK"}
                self.send(ack.serialize())
            seen.append(frame)
            if done(frame):
                return seen, frame
        raise TimeoutError("the server neither answered nor closed")

    def status(self, stream: int, timeout: float = 10) -> int | str:
        """The response status of C{stream}, or C{"reset"}/C{"goaway"}/C{"closed"}."""
        _, frame = self.until(
            lambda f: (
                (isinstance(f, (HeadersFrame, RstStreamFrame)) and f.stream_id == stream)
                or isinstance(f, GoAwayFrame)
            ),
            timeout,
        )
        if frame is None:
            return "closed"
        if isinstance(frame, GoAwayFrame):
            return "goaway"
        if isinstance(frame, RstStreamFrame):
            return "reset"
        return int(dict(self.decoder.decode(bytes(frame.data), raw=True))[b":status"])

    def close(self) -> None:
        self.sock.close()


def in_thread(f: Callable[..., Any], *args: Any) -> Any:
    return deferToThread(f, *args)


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    with tls_services(tmp_path) as start:
        yield start


@pytest.fixture
def limited_proxy(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """A site (portproxy's, auth none, by default) on TLS with the given HTTP/2 limits.

    Returns the port.
    """
    ports: list[Any] = []

    def start(site: Any = None, **limits: Any) -> int:
        cert, key, _ = write_pair(tmp_path)
        if site is None:
            config = Config(auth="none", access_log="off", data_dir=str(tmp_path / "d"))
            instance = build_instance(config, environ={}, reactor=get_reactor())
            instances.append(instance)
            site = instance.site
        tls = ServerTLS(
            cert=cert,
            cert_key=key,
            self_signed=False,
            cert_hosts=(),
            data_dir=str(tmp_path / "d"),
            reactor=get_reactor(),
            redirect=Factory(),
            log=_Quiet(),
            http2_limits=H2Limits(**limits),
        )
        ports.append(listen(tls.wrap(site)))
        limits = getattr(site, "limits", None)
        if limits is not None:
            limits.watch(
                ports[-1]
            )  # as portproxy.runtime.service does: counted connections
            watched.append((limits, ports[-1]))
        return int(ports[-1].getHost().port)

    watched: list[Any] = []
    instances: list[Any] = []
    yield start
    for instance in instances:
        instance.ports.close()  # a GET / (the home page) starts the ports watcher
    for limits, port in watched:
        limits.unwatch(port)
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


class _Quiet:
    def info(self, *a: Any, **k: Any) -> None:
        pass

    warn = info


# -- the pure rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "authority", "status"),
    [
        (b"GET", b"/p?q=1", b"localhost:8080", None),
        (b"OPTIONS", b"*", b"[::1]:1", None),
        (b"GET", b"/a b", b"localhost", 400),
        (b"GET", b"/a\tb", b"localhost", 400),
        (b"GET", b"/a\r\nX: y", b"localhost", 400),
        (b"GET", b"/\xff", b"localhost", 400),
        (b"GET", b"/\x7f", b"localhost", 400),
        (b"GET", b"x", b"localhost", 400),
        (b"GET /x HTTP/1.1\r\nA:", b"/", b"localhost", 400),
        (b"G\x00T", b"/", b"localhost", 400),
        (b"", b"/", b"localhost", 400),
        (b"CONNECT", b"/", b"localhost:1", 405),
        (b"GET", b"/", b"", 400),
        (b"GET", b"/", b"user@localhost", 400),
        (b"GET", b"/", b"local host", 400),
        (b"GET", b"/", b"localhost:99999", 400),
        (b"GET", b"/", b"localhost:", 400),
    ],
)
def test_request_head_refusal_guards_the_request_line(
    method: bytes, path: bytes, authority: bytes, status: int | None
) -> None:
    head = [(b":method", method), (b":path", path), (b":authority", authority)]
    assert request_head_refusal(head) == status


@given(
    st.binary(min_size=1, max_size=40).filter(
        lambda raw: any(b <= 0x20 or b >= 0x7F for b in raw)
    )
)
def test_a_target_with_any_space_control_or_non_ascii_byte_is_refused(raw: bytes) -> None:
    head = [(b":method", b"GET"), (b":path", b"/" + raw), (b":authority", b"localhost")]
    assert request_head_refusal(head) == 400


@given(st.from_regex(rb"\A/[!-~]{0,40}\Z"))
def test_a_visible_ascii_origin_form_target_passes(path: bytes) -> None:
    head = [(b":method", b"GET"), (b":path", path), (b":authority", b"localhost")]
    assert request_head_refusal(head) is None


def test_h2_deadlines_follow_the_http11_options() -> None:
    limits = H2Limits.from_config(Config(header_timeout=5.0, send_timeout=7.0))
    assert (limits.header_timeout, limits.send_timeout) == (5.0, 7.0)


def test_frame_budget_counts_in_a_sliding_window() -> None:
    now = [0.0]
    budget = FrameBudget(3, 10.0, lambda: now[0])
    assert [budget.spend() for _ in range(3)] == [True, True, True]
    assert budget.spend() is False
    now[0] = 10.5  # the old frames have left the window
    assert budget.spend() is True


# -- memory: portproxy as a subprocess ----------------------------------------------


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[Callable[[], tuple[int, int]]]:
    """Start C{twist portproxy --self-signed}; return (port, pid) once it listens."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[int, int]:
        port = free_port()
        # The working tree's portproxy (and its twisted/plugins), not an installed copy.
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "portproxy",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--self-signed",
                "--auth",
                "none",
                "--access-log",
                "off",
                "--data-dir",
                str(tmp_path / "data"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=str(ROOT),
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, "portproxy exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port, proc.pid
            except OSError:
                time.sleep(0.1)
        raise AssertionError("portproxy did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _continuation_flood(port: int, total: int) -> tuple[int, bool]:
    """Send one header block that never ends; return (bytes sent, server closed)."""
    client = RawH2(port)
    opening = HeadersFrame(1)
    opening.data = client.encoder.encode(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")], huffman=False
    )
    opening.flags = {"END_STREAM"}
    client.send(bytes(opening.serialize()))
    piece = ContinuationFrame(1)
    piece.data = b"\x00" * 16_000  # never END_HEADERS
    blob = bytes(piece.serialize()) * 64
    sent = 0
    while sent < total and client.send(blob):
        sent += len(blob)
    closed = client.closed
    if not closed:
        try:
            client.until(lambda f: False, timeout=5)
        except TimeoutError:
            pass
        closed = client.closed
    client.close()
    return sent, closed


def test_continuation_flood_is_cut_off_and_memory_stays_flat(
    proxy_process: Callable[[], tuple[int, int]],
) -> None:
    port, pid = proxy_process()
    before = _rss(pid)
    sent, closed = _continuation_flood(port, 96 * MiB)
    grown = _rss(pid) - before
    assert closed
    assert sent < 96 * MiB, "the proxy went on reading after its GOAWAY"
    assert grown < 32 * MiB, f"RSS grew by {grown // MiB} MiB"


@implementer(IPushProducer)
class _Firehose:
    """Writes C{size} bytes into a response as fast as the connection takes them."""

    def __init__(self, request: Any, size: int) -> None:
        self.request = request
        self.left = size
        self.sent = 0
        self.paused = False
        self.chunk = b"z" * 65536

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        while not self.paused and self.left > 0:
            n = min(self.left, len(self.chunk))
            self.left -= n
            self.sent += n
            self.request.write(self.chunk[:n])
        if self.left <= 0 and not self.paused:
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused and self.left > 0:
            self.paused = False
            get_reactor().callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.left = 0
        self.paused = True


class _Download(Resource):
    isLeaf = True

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.hoses: list[_Firehose] = []

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-length", b"%d" % self.size)
        hose = _Firehose(request, self.size)
        self.hoses.append(hose)
        hose.start()
        return NOT_DONE_YET

    def sent(self) -> int:
        return sum(h.sent for h in self.hoses)


def _open_and_never_read(port: int, path: bytes, stop: list[bool]) -> None:
    client = RawH2(port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1})
    grow = WindowUpdateFrame(0)
    grow.window_increment = 2**31 - 1 - 65535
    client.send(bytes(grow.serialize()) + client.request(1, b"GET", path))
    while not stop[0]:
        time.sleep(0.1)  # the socket is never read
    client.close()


@pytest_twisted.ensureDeferred
async def test_slow_reader_with_an_open_window_does_not_fill_memory(
    upstream: Any, proxy_process: Callable[[], tuple[int, int]]
) -> None:
    size = 256 * MiB
    download = _Download(size)
    up = upstream(download)
    port, pid = await in_thread(proxy_process)
    before = _rss(pid)
    stop = [False]
    reader = in_thread(_open_and_never_read, port, b"/proxy/%d/big" % up.port, stop)
    from twisted.internet.task import deferLater

    # Wait until the app stops being able to send (or has sent everything).
    last, still = -1, 0
    for _ in range(300):
        await deferLater(get_reactor(), 0.1, lambda: None)
        now = download.sent()
        still = still + 1 if now == last else 0
        last = now
        if now >= size or still >= 15:
            break
    grown = _rss(pid) - before
    stop[0] = True
    await reader
    assert download.sent() < size, "the whole download was read from the app"
    assert grown < 32 * MiB, f"RSS grew by {grown // MiB} MiB"


# -- request bodies: sign-in first, then stream --------------------------------------


def _login(port: int) -> bytes:
    client = RawH2(port)
    form = f"password={quote(PASSWORD)}&to=%2F".encode()
    client.send(
        client.request(
            1,
            b"POST",
            b"/login",
            end_stream=False,
            extra=[
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-length", b"%d" % len(form)),
            ],
        )
    )
    body = DataFrame(1)
    body.data = form
    body.flags = {"END_STREAM"}
    client.send(bytes(body.serialize()))
    _, frame = client.until(lambda f: isinstance(f, HeadersFrame) and f.stream_id == 1)
    assert frame is not None
    fields = client.decoder.decode(bytes(frame.data), raw=True)
    client.close()
    (cookie,) = [
        v for k, v in fields if k == b"set-cookie" and v.startswith(b"portproxy-session=")
    ]
    return bytes(cookie.split(b";")[0])


def _upload_headers_then_wait(
    port: int, path: bytes, length: int, cookies: list[bytes]
) -> tuple[int | str, int]:
    """Announce a large body, send one window of it, and wait for the answer."""
    client = RawH2(port)
    extra = [(b"content-length", b"%d" % length)] + [(b"cookie", c) for c in cookies]
    client.send(client.request(1, b"POST", path, end_stream=False, extra=extra))
    chunk = DataFrame(1)
    chunk.data = b"u" * 16_000
    sent = 0
    for _ in range(4):  # within the initial 64 KiB window
        client.send(bytes(chunk.serialize()))
        sent += 16_000
    status = client.status(1, timeout=5)
    client.close()
    return status, sent


@pytest_twisted.ensureDeferred
async def test_unauthenticated_h2_upload_is_refused_at_once_without_its_body(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    cert, key, _ = write_pair(tmp_path)
    up = upstream(rec := Recorder())
    proxy = tls_proxy(
        environ={"PASSWORD": PASSWORD}, auth="password", cert=cert, cert_key=key
    )
    status, _ = await in_thread(
        _upload_headers_then_wait, proxy.port, b"/proxy/%d/up" % up.port, 300 * MiB, []
    )
    assert status in (401, 403)
    assert rec.requests == []


class _RawSink(Protocol):
    """An app that records what arrives and never answers."""

    received: list[bytes]

    def connectionMade(self) -> None:
        self.factory.received.append(b"")  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.factory.received[-1] += data  # type: ignore[attr-defined]


def _signed_in_upload(port: int, path: bytes, cookie: bytes, got: Callable[[], int]) -> int:
    """Send part of a body with split cookies; report what the app had meanwhile."""
    client = RawH2(port)
    extra = [
        (b"content-length", b"%d" % (10 * MiB)),
        (b"cookie", b"theme=dark"),  # cookies split over fields, after content-length
        (b"cookie", cookie),
    ]
    client.send(client.request(1, b"POST", path, end_stream=False, extra=extra))
    chunk = DataFrame(1)
    chunk.data = b"s" * 16_000
    for _ in range(3):
        client.send(bytes(chunk.serialize()))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and got() < 48_000:
        time.sleep(0.05)
    client.close()
    return got()


@pytest_twisted.ensureDeferred
async def test_signed_in_h2_upload_reaches_the_app_before_the_body_ends(
    tmp_path: Path, tls_proxy: Any
) -> None:
    cert, key, _ = write_pair(tmp_path)
    sink = Factory.forProtocol(_RawSink)
    sink.received = []  # type: ignore[attr-defined]
    app = listen(sink)
    try:
        proxy = tls_proxy(
            environ={"PASSWORD": PASSWORD}, auth="password", cert=cert, cert_key=key
        )
        cookie = await in_thread(_login, proxy.port)
        app_port = app.getHost().port

        def body_bytes() -> int:
            raw = b"".join(sink.received)  # type: ignore[attr-defined]
            return len(raw.partition(b"\r\n\r\n")[2])

        got = await in_thread(
            _signed_in_upload, proxy.port, b"/proxy/%d/up" % app_port, cookie, body_bytes
        )
        assert got == 48_000
        head = sink.received[0].partition(b"\r\n\r\n")[0].lower()  # type: ignore[attr-defined]
        assert b"content-length: 10485760" in head
    finally:
        await app.stopListening()


# -- request line integrity ------------------------------------------------------------


BAD_HEADS = [
    (b"GET", b"/x HTTP/1.1\r\nHost: evil\r\n\r\nGET /y", None),
    (b"GET", b"/a b", None),
    (b"GET", b"/a\tb", None),
    (b"GET", b"/\xff", None),
    (b"GET", b"/\x01", None),
    (b"GE T", b"/", None),
    (b"GET\r\nX: y", b"/", None),
    (b"GET", b"/", b""),
    (b"GET", b"/", b"a b"),
    (b"GET", b"/", b"user@localhost"),
]


def _bad_then_good(
    port: int, method: bytes, path: bytes, authority: bytes | None
) -> tuple[Any, Any]:
    client = RawH2(port)
    client.send(client.request(1, method, path, authority=authority))
    bad = client.status(1)
    client.close()
    client = RawH2(port)
    client.send(client.request(1, b"GET", b"/ok"))
    good = client.status(1)
    client.close()
    return bad, good


@pytest.mark.parametrize(("method", "path", "authority"), BAD_HEADS)
@pytest_twisted.ensureDeferred
async def test_bad_method_target_or_authority_never_reaches_the_app(
    tmp_path: Path,
    upstream: Any,
    tls_proxy: Any,
    method: bytes,
    path: bytes,
    authority: bytes | None,
) -> None:
    cert, key, _ = write_pair(tmp_path)
    up = upstream(rec := Recorder())
    proxy = tls_proxy(cert=cert, cert_key=key)
    target = b"/proxy/%d" % up.port + path if path.startswith(b"/") else path
    bad, good = await in_thread(_bad_then_good, proxy.port, method, target, authority)
    assert bad in (400, "reset", "goaway")
    assert good == 404  # the connection-level check did not break the listener
    assert rec.requests == []


@pytest.mark.parametrize(("method", "path", "authority"), BAD_HEADS)
@pytest_twisted.ensureDeferred
async def test_bad_heads_are_refused_before_any_resource_sees_them(
    limited_proxy: Any, method: bytes, path: bytes, authority: bytes | None
) -> None:
    # A bare twisted.web site: only the HTTP/2 edge stands between client and resource.
    port = limited_proxy(site=Site(rec := Recorder()))
    bad, good = await in_thread(_bad_then_good, port, method, path, authority)
    assert bad in (400, "goaway")  # goaway: h2 itself refuses CR/LF as a protocol error
    assert good == 200
    assert [r["uri"] for r in rec.requests] == [b"/ok"]


def _connect_then_get(port: int, up_port: int) -> tuple[Any, Any]:
    client = RawH2(port)
    client.send(
        client.headers(
            1, [(b":method", b"CONNECT"), (b":authority", b"127.0.0.1:%d" % up_port)]
        )
    )
    connect = client.status(1)
    client.send(client.request(3, b"GET", b"/proxy/%d/after" % up_port))
    after = client.status(3)
    client.close()
    return connect, after


@pytest_twisted.ensureDeferred
async def test_connect_with_end_stream_gets_405_and_the_connection_lives_on(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    cert, key, _ = write_pair(tmp_path)
    up = upstream(rec := Recorder())
    proxy = tls_proxy(cert=cert, cert_key=key)
    connect, after = await in_thread(_connect_then_get, proxy.port, up.port)
    assert (connect, after) == (405, 200)
    assert [r["uri"] for r in rec.requests] == [b"/after"]


# -- deadlines -----------------------------------------------------------------------


def _pings_until_closed(port: int, seconds: float) -> bool:
    """PING every 0.2 s; C{True} once the server has closed the connection."""
    client = RawH2(port)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ping = PingFrame(0)
        ping.opaque_data = b"12345678"
        if not client.send(bytes(ping.serialize())):
            return True
        try:
            client.until(lambda f: isinstance(f, PingFrame), timeout=0.2)
        except TimeoutError:
            pass
        if client.closed:
            return True
        time.sleep(0.2)
    client.close()
    return False


@pytest_twisted.ensureDeferred
async def test_a_ping_only_connection_is_closed_after_the_idle_timeout(
    limited_proxy: Any,
) -> None:
    port = limited_proxy(idle_timeout=1.0)
    assert await in_thread(_pings_until_closed, port, 8)


def _trickled_head(port: int, seconds: float) -> bool:
    client = RawH2(port)
    opening = HeadersFrame(1)
    opening.data = client.encoder.encode(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")], huffman=False
    )
    client.send(bytes(opening.serialize()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        piece = ContinuationFrame(1)
        piece.data = client.encoder.encode([(b"x-slow", b"1")], huffman=False)
        if not client.send(bytes(piece.serialize())):
            return True
        try:
            client.until(lambda f: isinstance(f, GoAwayFrame), timeout=0.4)
            return True
        except TimeoutError:
            pass
        if client.closed:
            return True
    client.close()
    return False


@pytest_twisted.ensureDeferred
async def test_a_header_block_trickled_frame_by_frame_hits_the_head_deadline(
    limited_proxy: Any,
) -> None:
    # Idle timeout far away: only the head deadline can close it.
    port = limited_proxy(header_timeout=1.0, idle_timeout=600.0)
    assert await in_thread(_trickled_head, port, 8)


def _zero_window_download(port: int, path: bytes, seconds: float) -> Any:
    client = RawH2(port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    client.send(client.request(1, b"GET", path))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ping = PingFrame(0)
        ping.opaque_data = b"keepopen"
        client.send(bytes(ping.serialize()))
        try:
            _, frame = client.until(
                lambda f: isinstance(f, (RstStreamFrame, GoAwayFrame)), timeout=0.3
            )
            client.close()
            return type(frame).__name__ if frame is not None else "closed"
        except TimeoutError:
            pass
    client.close()
    return None


@pytest_twisted.ensureDeferred
async def test_a_stream_stuck_behind_a_zero_window_is_reset_after_the_send_timeout(
    upstream: Any, limited_proxy: Any
) -> None:
    up = upstream(_Download(1 * MiB))
    port = limited_proxy(send_timeout=1.0)
    outcome = await in_thread(_zero_window_download, port, b"/proxy/%d/" % up.port, 8)
    assert outcome == "RstStreamFrame"


# -- floods ------------------------------------------------------------------------------


def _flood(port: int, kind: str, count: int) -> Any:
    client = RawH2(port)
    if kind == "data":
        client.send(client.request(1, b"POST", b"/", end_stream=False))
    frames = []
    for i in range(count):
        if kind == "ping":
            f: Frame = PingFrame(0)
            f.opaque_data = b"%08d" % (i % 10**8)
        elif kind == "priority":
            f = PriorityFrame(2 * i + 101)
            f.depends_on = 0
            f.stream_weight = 15
        elif kind == "settings":
            f = SettingsFrame(0)
        else:
            f = DataFrame(1)
        frames.append(bytes(f.serialize()))
    blob = b"".join(frames)
    client.send(blob)
    try:
        _, frame = client.until(lambda f: isinstance(f, GoAwayFrame), timeout=10)
    except TimeoutError:
        return "still open"
    client.close()
    return frame.error_code if isinstance(frame, GoAwayFrame) else "closed"


@pytest.mark.parametrize("kind", ["ping", "priority", "settings", "data"])
@pytest_twisted.ensureDeferred
async def test_a_flood_of_cheap_frames_gets_goaway_enhance_your_calm(
    kind: str, limited_proxy: Any
) -> None:
    port = limited_proxy(frame_budget=200)
    assert await in_thread(_flood, port, kind, 5000) == ENHANCE_YOUR_CALM


# -- upload backpressure ---------------------------------------------------------------


class _DeafApp(Protocol):
    """An app that accepts the connection and never reads from it."""

    def connectionMade(self) -> None:
        self.transport.pauseProducing()


def _push_until_starved(port: int, path: bytes, length: int) -> int:
    """Send a body as fast as the proxy grants window; return what it let through."""
    client = RawH2(port)
    extra = [(b"content-length", b"%d" % length)]
    client.send(client.request(1, b"POST", path, end_stream=False, extra=extra))
    windows = {0: 65535, 1: 65535}
    sent = 0
    while sent < length:
        room = min(16384, windows[0], windows[1], length - sent)
        if room > 0:
            chunk = DataFrame(1)
            chunk.data = b"b" * room
            if not client.send(bytes(chunk.serialize())):
                break
            sent += room
            windows[0] -= room
            windows[1] -= room
            continue
        try:
            # No window left: wait (a while) for the proxy to grant more.
            _, frame = client.until(lambda f: isinstance(f, WindowUpdateFrame), 2)
        except TimeoutError:
            break
        if frame is None:
            break
        windows[frame.stream_id] = windows.get(frame.stream_id, 0) + int(
            frame.window_increment  # type: ignore[attr-defined]
        )
    client.close()
    return sent


@pytest_twisted.ensureDeferred
async def test_h2_upload_to_an_app_that_stops_reading_stops_the_client(
    tls_proxy: Any, tmp_path: Path
) -> None:
    cert, key, _ = write_pair(tmp_path)
    app = listen(Factory.forProtocol(_DeafApp))
    try:
        proxy = tls_proxy(cert=cert, cert_key=key)
        path = b"/proxy/%d/upload" % app.getHost().port
        sent = await in_thread(_push_until_starved, proxy.port, path, 256 * MiB)
        # Socket buffers and one window at most, not the body: the window stopped.
        assert sent < 32 * MiB
    finally:
        await app.stopListening()

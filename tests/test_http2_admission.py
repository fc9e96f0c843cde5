"""HTTP/2 streams are admitted (or refused) at their headers, and never hold the proxy.

A second attacker's review found an h2 GET carrying DATA spooled to disk without sign-in,
a small POST whose body never came held its stream and connection forever, idle h2
connections could not make room at --max-connections, and the 101st stream killed the
whole connection. Each test speaks raw frames over real TLS to a real portproxy (or a bare
twisted.web site behind the same HTTP/2 edge).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.errors
import pytest
import pytest_twisted
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from portproxy.config import Config
from portproxy.net.limits import ConnectionLimits
from portproxy.runtime.app import build_instance
from portproxy.web.site import ProxySite
from tests import test_http2_integrity as integrity
from tests.support import Recorder, get_reactor
from tests.test_http2_integrity import RawH2, _login, in_thread
from tests.test_tls import write_pair
from tests.test_tls_live import PASSWORD

# The fixtures of the HTTP/2 integrity tests: portproxy on TLS, whole or with H2Limits.
tls_proxy = integrity.tls_proxy
limited_proxy = integrity.limited_proxy

MiB = 1024 * 1024
PROTOCOL_ERROR = int(h2.errors.ErrorCodes.PROTOCOL_ERROR)
REFUSED_STREAM = int(h2.errors.ErrorCodes.REFUSED_STREAM)
NO_ERROR = int(h2.errors.ErrorCodes.NO_ERROR)
CANCEL = int(h2.errors.ErrorCodes.CANCEL)


class Client(RawH2):
    """L{RawH2} that keeps what the server says about each stream and the connection."""

    def __init__(self, port: int, **kwargs: Any) -> None:
        self.server_settings: dict[int, int] = {}
        self.windows: dict[int, int] = {0: 65535}
        self.statuses: dict[int, int] = {}
        self.resets: dict[int, int] = {}
        self.goaway: GoAwayFrame | None = None
        super().__init__(port, **kwargs)

    def until(self, done: Any, timeout: float = 10) -> tuple[list[Frame], Frame | None]:
        seen, frame = super().until(done, timeout)
        for f in seen:
            self._note(f)
        return seen, frame

    def _note(self, f: Frame) -> None:
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.server_settings.update(f.settings)
        elif isinstance(f, WindowUpdateFrame):
            sid = f.stream_id
            self.windows[sid] = self.windows.get(sid, 65535) + int(f.window_increment)
        elif isinstance(f, HeadersFrame):
            fields = dict(self.decoder.decode(bytes(f.data), raw=True))
            if b":status" in fields:
                self.statuses[f.stream_id] = int(fields[b":status"])
        elif isinstance(f, RstStreamFrame):
            self.resets.setdefault(f.stream_id, int(f.error_code))  # the first says why
        elif isinstance(f, GoAwayFrame):
            self.goaway = f

    def poll(self, timeout: float) -> bool:
        """Read one frame if one comes within C{timeout}; C{False} if none (or closed)."""
        try:
            _, frame = self.until(lambda f: True, timeout)
        except TimeoutError:
            return False
        return frame is not None

    def data(self, stream: int, payload: bytes, *, end: bool = False) -> bool:
        frame = DataFrame(stream)
        frame.data = payload
        frame.flags = {"END_STREAM"} if end else set()
        return self.send(bytes(frame.serialize()))

    def push(self, stream: int, total: int, seconds: float = 6.0) -> int:
        """Send up to C{total} body bytes as the windows allow; stop at an answer.

        Returns what was sent. Stops once the stream is reset, the connection goes
        away, or no window comes for a while.
        """
        sent = 0
        deadline = time.monotonic() + seconds
        while sent < total and time.monotonic() < deadline:
            while self.poll(0.001):
                pass
            if stream in self.resets or self.goaway is not None or self.closed:
                break
            room = min(16384, self.windows[0], self.windows.get(stream, 65535))
            room = min(room, total - sent)
            if room <= 0:
                if not self.poll(1.0):
                    break
                continue
            if not self.data(stream, b"d" * room):
                break
            sent += room
            self.windows[0] -= room
            self.windows[stream] = self.windows.get(stream, 65535) - room
        return sent

    def wait(self, done: Any, seconds: float) -> bool:
        """Read frames until C{done()} holds (C{True}) or C{seconds} pass."""
        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return bool(done())
            self.poll(min(left, 0.5))
        return True


@pytest.fixture
def spool_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int | None]]:
    """Every call of the site's getContentFile (where a body could reach the disk)."""
    calls: list[int | None] = []
    original = ProxySite.getContentFile

    def recording(self: ProxySite, length: int | None) -> Any:
        calls.append(length)
        return original(self, length)

    monkeypatch.setattr(ProxySite, "getContentFile", recording)
    yield calls


def _password_proxy(tmp_path: Path, tls_proxy: Any, **fields: Any) -> int:
    cert, key, _ = write_pair(tmp_path)
    proxy = tls_proxy(
        environ={"PASSWORD": PASSWORD},
        auth="password",
        cert=cert,
        cert_key=key,
        **fields,
    )
    return int(proxy.port)


# -- finding 1: a body on GET/HEAD is a body ------------------------------------------


def _get_with_endless_body(port: int, path: bytes) -> tuple[Any, Any, int]:
    client = Client(port)
    client.send(client.request(1, b"GET", path, end_stream=False))
    sent = client.push(1, 64 * MiB)
    client.wait(lambda: 1 in client.resets, 5)
    client.close()
    return client.statuses.get(1), client.resets.get(1), sent


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        (b"/proxy/%d/", (401,)),  # not signed in: refused before the body
        (b"/login", (413,)),  # portproxy's own route: 64 KiB at most, in memory
        (b"/no/such/page", (413,)),
    ],
)
@pytest_twisted.ensureDeferred
async def test_an_h2_get_with_an_endless_body_is_answered_and_never_spooled(
    tmp_path: Path,
    upstream: Any,
    tls_proxy: Any,
    spool_calls: list[int | None],
    path: bytes,
    statuses: tuple[int, ...],
) -> None:
    up = upstream(rec := Recorder())
    port = _password_proxy(tmp_path, tls_proxy)
    target = path % up.port if b"%d" in path else path
    status, reset, sent = await in_thread(_get_with_endless_body, port, target)
    assert status in statuses
    assert reset in (NO_ERROR, CANCEL)
    assert sent < 2 * MiB, "the proxy kept granting window to a refused body"
    assert spool_calls == []
    assert rec.requests == []


def _signed_in_get_with_body(port: int, path: bytes, cookie: bytes) -> Any:
    client = Client(port)
    client.send(
        client.request(1, b"GET", path, end_stream=False, extra=[(b"cookie", cookie)])
    )
    client.data(1, b"abc")
    client.data(1, b"def", end=True)
    client.wait(lambda: 1 in client.statuses, 5)
    client.close()
    return client.statuses.get(1)


@pytest_twisted.ensureDeferred
async def test_a_signed_in_h2_get_with_a_body_streams_it_to_the_app(
    tmp_path: Path, upstream: Any, tls_proxy: Any, spool_calls: list[int | None]
) -> None:
    up = upstream(rec := Recorder())
    port = _password_proxy(tmp_path, tls_proxy)
    cookie = await in_thread(_login, port)
    del spool_calls[:]  # the login form is a small declared body
    status = await in_thread(
        _signed_in_get_with_body, port, b"/proxy/%d/q" % up.port, cookie
    )
    assert status == 200
    assert [r["body"] for r in rec.requests] == [b"abcdef"]
    assert spool_calls == []


def _mismatched_body(port: int, path: bytes, declared: int, body: int | None) -> Any:
    """Declare C{declared} bytes, send C{body} (C{None}: END_STREAM on HEADERS)."""
    client = Client(port)
    extra = [(b"content-length", b"%d" % declared)]
    if body is None:
        client.send(client.request(1, b"POST", path, extra=extra))
    else:
        client.send(client.request(1, b"POST", path, end_stream=False, extra=extra))
        client.data(1, b"x" * body, end=True)
    client.wait(lambda: 1 in client.resets or client.goaway is not None, 5)
    client.send(client.request(3, b"GET", path))
    client.wait(lambda: 3 in client.statuses or client.goaway is not None, 5)
    client.close()
    goaway = None if client.goaway is None else int(client.goaway.error_code)
    return client.resets.get(1), goaway, client.statuses.get(3)


@pytest.mark.parametrize(
    ("declared", "body"),
    [
        (10, 20),  # DATA beyond the declared length
        (30, 20),  # END_STREAM before it
        (5, None),  # no DATA at all
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_body_that_breaks_its_declared_length_resets_only_that_stream(
    upstream: Any, limited_proxy: Any, declared: int, body: int | None
) -> None:
    up = upstream(rec := Recorder())
    port = limited_proxy()
    path = b"/proxy/%d/x" % up.port
    reset, goaway, after = await in_thread(_mismatched_body, port, path, declared, body)
    # RFC 9113 8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
    assert (reset, goaway, after) == (PROTOCOL_ERROR, None, 200)
    assert [r["method"] for r in rec.requests] == [b"GET"]  # only the second stream


# -- finding 2: a request that will be refused is answered at its headers -------------


def _small_body_never_sent(port: int, path: bytes, seconds: float) -> Any:
    client = Client(port)
    extra = [(b"content-length", b"100")]
    client.send(client.request(1, b"POST", path, end_stream=False, extra=extra))
    client.data(1, b"0123456789")  # a tenth of it, then nothing
    started = time.monotonic()
    client.wait(lambda: 1 in client.resets or client.goaway is not None, seconds)
    took = time.monotonic() - started
    client.close()
    return client.statuses.get(1), client.resets.get(1), took


@pytest_twisted.ensureDeferred
async def test_an_unsigned_small_post_is_refused_without_waiting_for_its_body(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    up = upstream(rec := Recorder())
    port = _password_proxy(tmp_path, tls_proxy)
    path = b"/proxy/%d/form" % up.port
    status, reset, _ = await in_thread(_small_body_never_sent, port, path, 5)
    assert (status, reset) in ((401, NO_ERROR), (401, CANCEL))
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_a_login_body_that_never_arrives_gets_408_at_the_header_timeout(
    tmp_path: Path, tls_proxy: Any
) -> None:
    port = _password_proxy(tmp_path, tls_proxy, header_timeout=1.0)
    status, reset, took = await in_thread(_small_body_never_sent, port, b"/login", 8)
    assert (status, reset) in ((408, NO_ERROR), (408, CANCEL))
    assert took >= 0.5  # the deadline, not an early refusal


def _held_until_closed(port: int, scenario: str, seconds: float) -> bool:
    """Hold a connection in C{scenario}; C{True} once the server closes it."""
    if scenario == "body never sent":
        client = Client(port)
        extra = [(b"content-length", b"100")]
        client.send(client.request(1, b"POST", b"/login", end_stream=False, extra=extra))
        client.data(1, b"0123456789")
    else:  # "answer never read": the client opens no window for responses
        client = Client(port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        client.send(client.request(1, b"GET", b"/"))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ping = PingFrame(0)
        ping.opaque_data = b"stillhere"[:8]
        client.send(bytes(ping.serialize()))  # PINGs are no activity
        client.wait(lambda: client.goaway is not None or client.closed, 0.3)
        if client.goaway is not None or client.closed:
            client.close()
            return True
    client.close()
    return False


@pytest.mark.parametrize("scenario", ["body never sent", "answer never read"])
@pytest_twisted.ensureDeferred
async def test_a_connection_whose_streams_wait_only_on_the_client_is_idle(
    limited_proxy: Any, scenario: str
) -> None:
    # Head deadline and send timeout far away: only the idle timeout can close it.
    port = limited_proxy(idle_timeout=1.0, header_timeout=600.0, send_timeout=600.0)
    assert await in_thread(_held_until_closed, port, scenario, 8)


class _Slow(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> int:
        def answer() -> None:
            if not request._disconnected:
                request.write(b"late but fine")
                request.finish()

        get_reactor().callLater(2.5, answer)
        return NOT_DONE_YET


def _one_get(port: int, path: bytes) -> Any:
    client = Client(port)
    client.send(client.request(1, b"GET", path))
    client.wait(lambda: 1 in client.statuses or client.goaway is not None, 8)
    client.close()
    return client.statuses.get(1)


@pytest_twisted.ensureDeferred
async def test_a_stream_waiting_on_the_app_is_not_idle(
    upstream: Any, limited_proxy: Any
) -> None:
    up = upstream(_Slow())
    port = limited_proxy(idle_timeout=1.0)
    assert await in_thread(_one_get, port, b"/proxy/%d/" % up.port) == 200


# -- finding 3: idle h2 connections make room at the connection cap -------------------


def _preface_only(port: int, seconds: float) -> bool:
    client = Client(port)
    closed = client.wait(lambda: client.goaway is not None or client.closed, seconds)
    client.close()
    return closed


@pytest_twisted.ensureDeferred
async def test_a_preface_only_connection_is_gone_at_the_header_timeout(
    limited_proxy: Any,
) -> None:
    port = limited_proxy(header_timeout=1.0, idle_timeout=600.0)
    assert await in_thread(_preface_only, port, 8)


class _RecordingLimits(ConnectionLimits):
    """The process's limits, noting what HTTP/2 connections report (nothing more)."""

    def __init__(self) -> None:
        super().__init__(
            get_reactor(), max_connections=100, header_timeout=30.0, send_timeout=60.0
        )
        self.reports: list[tuple[str, Any]] = []

    def h2_idle(self, protocol: Any) -> None:
        self.reports.append(("idle", protocol))

    def h2_busy(self, protocol: Any) -> None:
        self.reports.append(("busy", protocol))


def _one_stream_then_evicted(port: int, limits: _RecordingLimits, path: bytes) -> Any:
    client = Client(port)
    client.wait(lambda: bool(limits.reports), 5)
    first = [kind for kind, _ in limits.reports]
    client.send(client.request(1, b"GET", path))
    client.wait(lambda: 1 in client.statuses, 5)
    client.wait(lambda: len(limits.reports) >= 3, 5)
    kinds = [kind for kind, _ in limits.reports]
    protocol = limits.reports[-1][1]
    get_reactor().callFromThread(protocol.evict)
    client.wait(lambda: client.goaway is not None, 5)
    goaway = client.goaway
    closed = client.wait(lambda: client.closed, 5)
    client.close()
    assert goaway is not None
    return first, kinds, int(goaway.error_code), int(goaway.last_stream_id), closed


@pytest_twisted.ensureDeferred
async def test_an_h2_connection_reports_idle_and_busy_and_can_be_evicted(
    tmp_path: Path, upstream: Any, limited_proxy: Any
) -> None:
    up = upstream(Recorder())
    config = Config(auth="none", access_log="off", data_dir=str(tmp_path / "d"))
    site = build_instance(config, environ={}, reactor=get_reactor()).site
    limits = site.limits = _RecordingLimits()
    port = limited_proxy(site=site)
    first, kinds, code, last, closed = await in_thread(
        _one_stream_then_evicted, port, limits, b"/proxy/%d/" % up.port
    )
    assert first == ["idle"]  # right after the preface and SETTINGS
    assert kinds == ["idle", "busy", "idle"]
    assert len({id(p) for _, p in limits.reports}) == 1
    assert (code, last, closed) == (NO_ERROR, 1, True)


# -- finding 4: MAX_CONCURRENT_STREAMS, and REFUSED_STREAM beyond it -------------------


class _Stall(Resource):
    """Never answers (until the client goes)."""

    isLeaf = True

    def render(self, request: Any) -> int:
        return NOT_DONE_YET


def _too_many_streams(port: int) -> Any:
    client = Client(port)
    advertised = client.server_settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS)
    blob = b"".join(client.request(1 + 2 * k, b"GET", b"/s%d" % k) for k in range(101))
    client.send(blob)
    client.wait(lambda: 201 in client.resets or client.goaway is not None, 5)
    ping = PingFrame(0)
    ping.opaque_data = b"alive?!!"
    client.send(bytes(ping.serialize()))
    _, pong = client.until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags, 5)
    client.send(client.request(203, b"GET", b"/again"))
    client.wait(lambda: 203 in client.resets or client.goaway is not None, 5)
    client.close()
    goaway = None if client.goaway is None else int(client.goaway.error_code)
    return advertised, dict(client.resets), goaway, pong is not None


@pytest_twisted.ensureDeferred
async def test_streams_beyond_max_concurrent_streams_are_refused_not_the_connection(
    limited_proxy: Any,
) -> None:
    port = limited_proxy(site=Site(_Stall()))
    advertised, resets, goaway, alive = await in_thread(_too_many_streams, port)
    assert advertised == 100
    assert goaway is None and alive
    # RFC 9113 5.1.2: only the streams over the limit are refused.
    assert resets == {201: REFUSED_STREAM, 203: REFUSED_STREAM}


@pytest_twisted.ensureDeferred
async def test_a_refused_stream_flood_gets_enhance_your_calm(limited_proxy: Any) -> None:
    port = limited_proxy(site=Site(_Stall()), frame_budget=50)

    def flood() -> Any:
        client = Client(port)
        blob = b"".join(client.request(1 + 2 * k, b"GET", b"/") for k in range(400))
        client.send(blob)
        client.wait(lambda: client.goaway is not None or client.closed, 5)
        client.close()
        return None if client.goaway is None else int(client.goaway.error_code)

    assert await in_thread(flood) == int(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    await deferLater(get_reactor(), 0, lambda: None)


def _crowd_then_user(port: int, crowd: int, path: bytes) -> Any:
    """Fill the cap with preface-only connections, then ask for a page."""
    idle = [Client(port) for _ in range(crowd)]
    started = time.monotonic()
    user = Client(port)  # waits in the listen queue until a place is free
    user.send(user.request(1, b"GET", path))
    user.wait(lambda: 1 in user.statuses, 8)
    took = time.monotonic() - started
    gone = 0
    for client in idle:
        client.wait(lambda c=client: c.goaway is not None or c.closed, 0.2)
        gone += client.goaway is not None or client.closed
        client.close()
    user.close()
    return user.statuses.get(1), took, gone


@pytest_twisted.ensureDeferred
async def test_idle_h2_connections_make_room_at_max_connections(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    up = upstream(Recorder())
    cert, key, _ = write_pair(tmp_path)
    # The head deadline far away: only eviction can let the user in.
    proxy = tls_proxy(cert=cert, cert_key=key, max_connections=3, header_timeout=600.0)
    status, took, gone = await in_thread(
        _crowd_then_user, proxy.port, 3, b"/proxy/%d/" % up.port
    )
    assert status == 200
    assert took < 8
    assert gone >= 1  # an idle connection got GOAWAY to make room

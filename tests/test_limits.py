"""Limits against hostile or broken clients: head deadline, send timeout, connection cap,
running out of file descriptors, bad request heads, bodies on portproxy's own routes.

Real sockets on 127.0.0.1 against an in-process portproxy and real upstream sites.
"""

from __future__ import annotations

import os
import resource
import socket
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from portproxy.net.limits import ConnectionLimits
from portproxy.net.policy import FD_RESERVE, address_key, plan_fd_limit, with_backlog
from tests.support import (
    FakeConnection,
    fake_clock_limits,
    get,
    get_reactor,
    parse_response,
    raw_request,
)

KiB = 1024
MiB = 1024 * KiB


# -- a raw client that can write at any time ----------------------------------------------


class Client(Protocol):
    """Collects what the server sends; C{closed} fires when the server closes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: Deferred[bytes] = Deferred()
        self.reading = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.closed.called:
            self.closed.callback(bytes(self.data))

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    async def wait_for(self, needle: bytes, timeout: float = 10) -> None:
        reactor = get_reactor()
        waited = 0.0
        while needle not in self.data:
            if self.closed.called or waited > timeout:
                raise AssertionError(f"{needle!r} not in {bytes(self.data)!r}")
            await sleep(0.02)
            waited += 0.02
        del reactor


async def sleep(seconds: float) -> None:
    await deferLater(get_reactor(), seconds, lambda: None)


async def connect(port: int, bind: str | None = None) -> Client:
    reactor = get_reactor()
    endpoint = TCP4ClientEndpoint(
        reactor, "127.0.0.1", port, bindAddress=(bind, 0) if bind else None
    )
    return await endpoint.connect(Factory.forProtocol(Client))


async def closed_within(client: Client, seconds: float) -> bytes:
    reactor = get_reactor()
    d = client.closed
    call = reactor.callLater(
        seconds, lambda: d.called or client.transport.abortConnection()
    )
    try:
        return await d
    finally:
        if call.active():
            call.cancel()


def _keepalive_get(path: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path


# -- upstreams ------------------------------------------------------------------------------


@implementer(IPushProducer)
class Flood:
    """Writes a large body as fast as the proxy takes it; notes pauses and the end."""

    def __init__(self, request: Any, total: int) -> None:
        self.request = request
        self.left = total
        self.paused = False
        self.pauses = 0
        self.lost = Deferred()
        request.notifyFinish().addBoth(self._gone)
        request.registerProducer(self, True)
        self._pump()

    def _gone(self, result: object) -> None:
        self.left = 0
        if not self.lost.called:
            self.lost.callback(result)

    def _pump(self) -> None:
        block = b"x" * (64 * KiB)
        while self.left > 0 and not self.paused:
            self.left -= len(block)
            self.request.write(block)
        if self.left <= 0 and not self.lost.called:
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        get_reactor().callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.left = 0


class FloodResource(Resource):
    isLeaf = True

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.floods: list[Flood] = []

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % self.total)
        self.floods.append(Flood(request, self.total))
        return NOT_DONE_YET


class EventStream(Resource):
    """Server-Sent Events: a 32 KiB event every 10 ms, for C{seconds}."""

    isLeaf = True

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.pauses = 0
        self.finished: Deferred[object] = Deferred()

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-type", b"text/event-stream")
        reactor = get_reactor()
        end = reactor.seconds() + self.seconds
        stream = self

        @implementer(IPushProducer)
        class Pauses:
            paused = False

            def pauseProducing(self) -> None:
                self.paused = True
                stream.pauses += 1

            def resumeProducing(self) -> None:
                self.paused = False

            def stopProducing(self) -> None:
                pass

        pauses = Pauses()
        request.registerProducer(pauses, True)
        gone: list[object] = []
        request.notifyFinish().addBoth(gone.append).addBoth(
            lambda _: self.finished.called or self.finished.callback(gone[0])
        )
        event = b"data: " + b"e" * (32 * KiB) + b"\n\n"

        def tick() -> None:
            if gone:
                return
            if reactor.seconds() >= end:
                request.unregisterProducer()
                request.finish()
                return
            if not pauses.paused:
                request.write(event)
            reactor.callLater(0.01, tick)

        tick()
        return NOT_DONE_YET


class Hold(Resource):
    """Answers only when C{release} is called; counts requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Any] = []

    def render_GET(self, request: Any) -> int:
        self.waiting.append(request)
        return NOT_DONE_YET

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for request in waiting:
            if not request._disconnected:
                request.setHeader(b"content-length", b"2")
                request.write(b"ok")
                request.finish()


# -- the request head deadline ---------------------------------------------------------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_head_sent_a_byte_every_half_second_gets_408_and_is_closed(
    make_proxy,
) -> None:
    proxy = make_proxy(header_timeout=2.0)
    client = await connect(proxy.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40
    reactor = get_reactor()
    started = reactor.seconds()
    for byte in head:
        if client.closed.called:
            break
        client.send(bytes([byte]))
        await sleep(0.5)
    raw = await closed_within(client, 5)
    assert raw.startswith(b"HTTP/1.1 408 "), raw
    assert b"connection: close" in raw.lower()
    assert reactor.seconds() - started < 4.5


@pytest_twisted.ensureDeferred
async def test_connection_that_sends_nothing_gets_408_after_the_head_deadline(
    make_proxy,
) -> None:
    proxy = make_proxy(header_timeout=0.5)
    client = await connect(proxy.port)
    raw = await closed_within(client, 5)
    assert raw.startswith(b"HTTP/1.1 408 "), raw


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_idle_kept_alive_connection_is_not_cut_by_the_head_deadline(
    make_proxy,
) -> None:
    proxy = make_proxy(header_timeout=1.0)
    client = await connect(proxy.port)
    client.send(_keepalive_get(b"/healthz"))
    await client.wait_for(b'"status"')
    await sleep(2.5)
    assert not client.closed.called
    client.data.clear()
    client.send(_keepalive_get(b"/healthz"))
    await client.wait_for(b'"status"')
    assert client.data.startswith(b"HTTP/1.1 200 ")
    client.transport.loseConnection()
    await client.closed


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_later_request_head_has_its_own_deadline_from_its_first_byte(
    make_proxy,
) -> None:
    proxy = make_proxy(header_timeout=1.0)
    client = await connect(proxy.port)
    client.send(_keepalive_get(b"/healthz"))
    await client.wait_for(b'"status"')
    await sleep(1.5)  # idle, longer than the head deadline: not cut
    client.data.clear()
    client.send(b"GET /healthz HTTP/1.1\r\n")  # ...and never the rest
    raw = await closed_within(client, 4)
    assert raw.startswith(b"HTTP/1.1 408 "), raw


# -- the send timeout -------------------------------------------------------------------------


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_client_that_stops_reading_is_cut_and_the_app_connection_closed(
    make_proxy, upstream
) -> None:
    app = FloodResource(200 * MiB)
    site = upstream(app)
    proxy = make_proxy(send_timeout=1.0)
    client = await connect(proxy.port)
    client.transport.pauseProducing()  # never read a byte
    client.send(_keepalive_get(b"/proxy/%d/" % site.port))
    reactor = get_reactor()
    while not app.floods:
        await sleep(0.05)
    flood = app.floods[0]
    deadline = reactor.seconds() + 15
    while not flood.lost.called and reactor.seconds() < deadline:
        await sleep(0.1)
    assert flood.lost.called, "the app's connection was not closed"
    assert isinstance(flood.lost.result, Failure)  # lost, not a finished response
    assert flood.left <= 0
    # The client side was disconnected too.
    client.transport.resumeProducing()
    await closed_within(client, 5)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_server_sent_events_read_slowly_but_steadily_are_not_cut(
    make_proxy, upstream
) -> None:
    app = EventStream(seconds=3.0)
    site = upstream(app)
    proxy = make_proxy(send_timeout=1.0)
    limits = proxy.instance.site.limits
    stalls: list[object] = []
    watch = limits.send_paused
    limits.send_paused = lambda connection: stalls.append(connection) or watch(connection)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        sock.connect(("127.0.0.1", proxy.port))
    except BlockingIOError:
        pass
    await sleep(0.05)
    sock.sendall(_keepalive_get(b"/proxy/%d/events" % site.port))
    reactor = get_reactor()
    received = bytearray()
    slow_until = reactor.seconds() + 3.5  # 3.5 send timeouts of slow, steady reading
    give_up = slow_until + 20
    while reactor.seconds() < give_up and not received.endswith(b"0\r\n\r\n"):
        slow = reactor.seconds() < slow_until
        try:
            chunk = sock.recv(4 * KiB if slow else 1 * MiB)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            break  # closed by the proxy: the assertions below say why it is wrong
        if chunk:
            received += chunk
        await sleep(0.05 if slow else 0.005)
    sock.close()
    assert stalls, "the reader was never slower than the app: nothing was tested"
    assert received.endswith(b"0\r\n\r\n"), "the stream was cut"
    result = await app.finished
    assert not isinstance(result, Failure)


# -- bad request heads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "coding",
    [
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        b"Transfer-Encoding: identity\r\nContent-Length: 40\r\n",
    ],
)
@pytest_twisted.ensureDeferred
async def test_transfer_coding_other_than_chunked_last_is_refused_and_closed(
    proxy, upstream, coding: bytes
) -> None:
    site = upstream()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    request = b"POST /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n%s" % (
        site.port,
        coding,
        smuggled,
    )
    raw = await raw_request(proxy.port, request, timeout=5)
    status = int(raw.split(b" ", 2)[1])
    assert status in (400, 501), raw
    assert raw.count(b"HTTP/1.1 ") == 1, raw
    assert [r["uri"] for r in site.resource.requests] == []


@pytest_twisted.ensureDeferred
async def test_chunked_request_body_still_works(proxy, upstream) -> None:
    site = upstream()
    request = (
        b"POST /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % site.port
    )
    raw = await raw_request(proxy.port, request, timeout=5)
    assert parse_response(raw)[0] == 200
    assert site.resource.requests[0]["body"] == b"hello"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * (20 * KiB) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
        (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
            + b"b" * (20 * KiB)
            + b"\r\n\r\n",
            431,
        ),
        (b"GET /" + b"a" * (20 * KiB), 414),  # no line end at all
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * (20 * KiB), 431),
    ],
)
@pytest_twisted.ensureDeferred
async def test_one_overlong_head_line_gets_an_answer_not_a_silent_close(
    proxy, request_bytes: bytes, status: int
) -> None:
    raw = await raw_request(proxy.port, request_bytes, timeout=5)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:200]
    assert b"connection: close" in raw.lower()


# -- bodies on portproxy's own routes -----------------------------------------------------


def _no_spooling(proxy: Any) -> list[object]:
    spooled: list[object] = []
    site = proxy.instance.site
    original = site.getContentFile
    site.getContentFile = lambda length: spooled.append(length) or original(length)
    return spooled


@pytest.mark.parametrize(
    "path", [b"/login", b"/", b"/healthz", b"/.portproxy/api/ports", b"/nope"]
)
@pytest_twisted.ensureDeferred
async def test_own_route_body_declared_over_64k_gets_413_at_once(
    make_proxy, tmp_path, path: bytes
) -> None:
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    spooled = _no_spooling(proxy)
    client = await connect(proxy.port)
    client.send(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
        % (path, 300 * MiB)
    )
    raw = await closed_within(client, 5)  # no body byte was sent
    assert raw.startswith(b"HTTP/1.1 413 "), raw
    assert spooled == []


@pytest_twisted.ensureDeferred
async def test_own_route_chunked_body_is_cut_at_64k(make_proxy, tmp_path) -> None:
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    spooled = _no_spooling(proxy)
    client = await connect(proxy.port)
    client.send(
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"a" * (8 * KiB)
    for _ in range(10):
        if client.closed.called:
            break
        client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        await sleep(0.02)
    raw = await closed_within(client, 5)
    assert raw.startswith(b"HTTP/1.1 413 "), raw
    assert spooled == []


@pytest_twisted.ensureDeferred
async def test_small_login_form_still_signs_in(make_proxy, tmp_path) -> None:
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    body = b"password=pw&to=%2F"
    raw = await raw_request(
        proxy.port,
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    status, headers, _ = parse_response(raw)
    assert status in (302, 303)
    assert any(c.startswith(b"portproxy-session=") for c in headers[b"set-cookie"])


@pytest_twisted.ensureDeferred
async def test_small_chunked_login_form_still_signs_in(make_proxy, tmp_path) -> None:
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    spooled = _no_spooling(proxy)
    body = b"password=pw&to=%2F"
    raw = await raw_request(
        proxy.port,
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
    )
    status, headers, _ = parse_response(raw)
    assert status in (302, 303), raw
    assert any(c.startswith(b"portproxy-session=") for c in headers[b"set-cookie"])
    assert spooled == []


@pytest_twisted.ensureDeferred
async def test_refused_proxy_request_chunked_body_is_not_spooled(
    make_proxy, upstream, tmp_path
) -> None:
    site = upstream()
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    spooled = _no_spooling(proxy)
    piece = b"z" * (64 * KiB)
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(32)) + b"0\r\n\r\n"
    raw = await raw_request(
        proxy.port,
        b"POST /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%s" % (site.port, body),
    )
    assert parse_response(raw)[0] == 401
    assert spooled == []
    assert site.resource.requests == []


# -- the connection cap -----------------------------------------------------------------------


def _watched(proxy: Any) -> ConnectionLimits:
    limits: ConnectionLimits = proxy.instance.site.limits
    assert limits.watch(proxy.port_obj)
    return limits


@pytest_twisted.ensureDeferred
async def test_connections_beyond_the_cap_wait_in_the_listen_queue(
    make_proxy, upstream
) -> None:
    app = Hold()
    site = upstream(app)
    proxy = make_proxy(max_connections=2)
    limits = _watched(proxy)
    busy = [await connect(proxy.port) for _ in range(2)]
    for client in busy:
        client.send(_keepalive_get(b"/proxy/%d/" % site.port))
    while len(app.waiting) < 2:
        await sleep(0.02)
    waiting = await connect(proxy.port)  # the kernel completes it; portproxy waits
    waiting.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await sleep(0.3)
    assert waiting.data == b"" and not waiting.closed.called
    assert limits.open == 2
    app.release()
    for client in busy:
        await client.wait_for(b"ok")
    await sleep(1.5)  # kept alive and just used: not closed to make room
    assert waiting.data == b"" and not any(c.closed.called for c in busy)
    busy[0].transport.loseConnection()
    raw = await closed_within(waiting, 5)
    assert raw.startswith(b"HTTP/1.1 200 "), raw
    busy[1].transport.loseConnection()
    await busy[1].closed


@pytest_twisted.ensureDeferred
async def test_at_the_cap_an_unused_kept_alive_connection_makes_room(make_proxy) -> None:
    proxy = make_proxy(max_connections=2)
    limits = _watched(proxy)
    limits.idle_reclaim_after = 0.2
    idle = [await connect(proxy.port) for _ in range(2)]
    for client in idle:
        client.send(_keepalive_get(b"/healthz"))
        await client.wait_for(b'"status"')
    await sleep(0.3)
    raw = await raw_request(proxy.port, get(b"/healthz"), timeout=5)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert idle[0].closed.called  # the one unused longest
    idle[1].transport.loseConnection()
    await idle[1].closed


@pytest_twisted.ensureDeferred
async def test_slow_heads_from_one_address_cannot_lock_out_another(make_proxy) -> None:
    proxy = make_proxy(max_connections=3, header_timeout=30.0)
    _watched(proxy)
    attackers = [await connect(proxy.port) for _ in range(3)]
    for client in attackers:
        client.send(b"GET / HTTP/1.1\r\n")
    await sleep(0.1)
    user = await connect(proxy.port, bind="127.0.0.2")
    user.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    raw = await closed_within(user, 5)
    assert raw.startswith(b"HTTP/1.1 200 "), raw
    assert attackers[0].closed.called
    assert attackers[0].closed.result.startswith(b"HTTP/1.1 408 ")
    for client in attackers[1:]:
        client.transport.abortConnection()
        await client.closed


# -- running out of file descriptors ---------------------------------------------------------


def _open_fds() -> int:
    # listdir holds one descriptor of its own while it reads the directory.
    return len(os.listdir(f"/proc/{os.getpid()}/fd")) - 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_out_of_descriptors_accepting_backs_off_then_resumes(make_proxy) -> None:
    proxy = make_proxy()
    limits = _watched(proxy)
    accepts: list[float] = []
    port_obj = proxy.port_obj
    accept = port_obj.doRead
    reactor = get_reactor()

    def counting() -> None:
        accepts.append(reactor.seconds())
        accept()

    port_obj.doRead = counting
    # Client sockets exist before the limit drops; connect() needs no new descriptor.
    clients = [socket.socket() for _ in range(6)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_open_fds() + 2, hard))
        for s in clients:
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", proxy.port))
            except BlockingIOError:
                pass
        await sleep(1.0)
        served = limits.open
        assert 0 < served < 6  # some accepted, the rest wait in the queue
        assert len(accepts) < 20, "the listening socket is polled in a busy loop"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await sleep(1.0)
    assert limits.open == 6  # accepted again once descriptors were free
    for s in clients:
        s.close()
    await sleep(0.1)


@pytest_twisted.ensureDeferred
async def test_app_connection_failing_for_lack_of_descriptors_gives_502(
    make_proxy, upstream
) -> None:
    site = upstream()
    proxy = make_proxy()
    client = await connect(proxy.port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_open_fds(), hard))
        client.send(
            b"GET /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            % site.port
        )
        raw = await closed_within(client, 5)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raw.split(b" ", 2)[1] in (b"502", b"503"), raw


# -- pure parts ----------------------------------------------------------------------------


def test_file_limit_is_raised_to_fit_the_cap() -> None:
    plan = plan_fd_limit(1000, 1024, 4096)
    assert plan.soft == 2000 + FD_RESERVE and plan.max_connections == 1000 and plan.fits


def test_file_limit_already_large_enough_is_left_alone() -> None:
    plan = plan_fd_limit(100, 1024, 4096)
    assert plan.soft == 1024 and plan.max_connections == 100


def test_cap_is_lowered_when_the_hard_limit_is_too_small() -> None:
    plan = plan_fd_limit(10000, 256, 256)
    assert plan.soft == 256 and not plan.fits
    assert plan.max_connections == (256 - FD_RESERVE) // 2


@given(
    st.integers(1, 10**6),
    st.integers(-1, 10**6),
    st.integers(-1, 10**6),
)
def test_planned_cap_never_needs_more_descriptors_than_the_limit(
    cap: int, soft: int, hard: int
) -> None:
    if (hard >= 0 and soft > hard) or soft < 0 <= hard:
        return  # not a state the kernel allows
    plan = plan_fd_limit(cap, soft, hard)
    assert 1 <= plan.max_connections <= cap
    if hard >= 0:
        assert plan.soft <= hard
    if plan.soft >= 0 and plan.soft >= 2 * 1 + FD_RESERVE:
        assert plan.max_connections * 2 + FD_RESERVE <= plan.soft
    assert plan.soft >= soft or soft < 0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("/run/pp.sock", "/run/pp.sock"),
    ],
)
def test_clients_are_grouped_by_address_and_ipv6_by_64(host: str, key: str) -> None:
    assert address_key(host) == key


# -- the limits' bookkeeping, on a fake clock -------------------------------------------


_limits = fake_clock_limits


def test_head_deadline_is_not_restarted_by_progress() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    limits = _limits(clock, header_timeout=30.0)
    slow = FakeConnection()
    limits.head_started(slow)
    for _ in range(29):
        clock.advance(1)
        limits.head_started(slow)  # more bytes of the same head change nothing
    assert slow.events == []
    clock.advance(1)
    assert slow.events == ["408"]
    assert clock.getDelayedCalls() == []


def test_completed_heads_leave_no_timer_and_no_408() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    limits = _limits(clock)
    quick = FakeConnection()
    limits.head_started(quick)
    limits.head_done(quick)
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    assert quick.events == []


def test_stalled_reader_is_cut_after_the_send_timeout_and_a_steady_one_never() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    limits = _limits(clock, send_timeout=10.0)
    stalled = FakeConnection(unsent=500_000)
    steady = FakeConnection(unsent=500_000)
    limits.send_paused(stalled)
    limits.send_paused(steady)
    for _ in range(100):  # 100 s, far beyond the timeout
        clock.advance(1)
        steady.unsent = max(0, (steady.unsent or 0) - 1000)  # 1 kB/s taken
    assert stalled.events == ["cut"]
    assert steady.events == []
    limits.send_resumed(steady)
    assert clock.getDelayedCalls() == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["start", "done", "forget", "tick"]),
            st.integers(0, 4),
        ),
        max_size=60,
    )
)
def test_head_bookkeeping_stays_consistent(steps: list[tuple[str, int]]) -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    limits = _limits(clock, header_timeout=5.0)
    connections = [FakeConnection(key=f"10.0.0.{i % 2}") for i in range(5)]
    for action, index in steps:
        connection = connections[index]
        if action == "start":
            limits.head_started(connection)
        elif action == "done":
            limits.head_done(connection)
        elif action == "forget":
            limits.forget(connection)
        else:
            clock.advance(2.0)
        heads = limits._heads
        counted: dict[str, int] = {}
        for c in heads:
            counted[c.limit_key] = counted.get(c.limit_key, 0) + 1
        assert counted == limits._head_keys
        assert bool(heads) == bool(clock.getDelayedCalls())
        assert all(d > clock.seconds() for d in heads.values())


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1:backlog=1024"),
        ("tcp6:8080:interface=\\:\\:", "tcp6:8080:interface=\\:\\::backlog=1024"),
        ("unix:/run/pp.sock:mode=660", "unix:/run/pp.sock:mode=660:backlog=1024"),
        ("tcp:8080:backlog=10", "tcp:8080:backlog=10"),
        ("systemd:domain=INET:name=http", "systemd:domain=INET:name=http"),
        ("8080", "8080"),
    ],
)
def test_listen_queue_is_lengthened_unless_the_endpoint_names_one(
    description: str, expected: str
) -> None:
    assert with_backlog(description) == expected


@pytest_twisted.ensureDeferred
async def test_listener_uses_the_longer_listen_queue() -> None:
    from portproxy.runtime.service import ListeningService

    reactor = get_reactor()
    service = ListeningService(
        reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol), lambda p: None
    )
    service.startService()
    try:
        assert service.port is not None
        assert service.port.backlog == 1024  # type: ignore[attr-defined]
    finally:
        await service.stopService()

"""Streaming, backpressure, keep-alive and failure handling of the HTTP engine."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from tests.support import (
    Recorder,
    get,
    get_reactor,
    listen,
    parse_response,
    raw_request,
    rss_bytes,
)

MiB = 1024 * 1024


@implementer(IPullProducer)
class _Chunks:
    def __init__(self, request: Any, total: int, chunk: int = 64 * 1024) -> None:
        self.request = request
        self.left = total
        self.block = b"z" * chunk
        self.stopped = False

    def resumeProducing(self) -> None:
        if self.stopped:
            return
        if self.left <= 0:
            self.request.unregisterProducer()
            self.request.finish()
            return
        data = self.block[: self.left]
        self.left -= len(data)
        self.request.write(data)

    def stopProducing(self) -> None:
        self.stopped = True


class BigBody(Resource):
    """Streams C{size} bytes with backpressure; records when the client went away."""

    isLeaf = True

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lost: Deferred[float] = Deferred()

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-length", b"%d" % self.size)
        producer = _Chunks(request, self.size)
        request.registerProducer(producer, False)
        reactor = get_reactor()

        def lost(_: Any) -> None:
            producer.stopped = True
            if not self.lost.called:
                self.lost.callback(reactor.seconds())

        request.notifyFinish().addErrback(lost)
        return NOT_DONE_YET


class CountingSite(Site):
    connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


class SlowReader(Protocol):
    """Sends a GET, then stops reading after the first bytes until told to drain."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = 0
        self.first: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if not self.first.called:
            self.transport.pauseProducing()
            self.first.callback(None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed.callback(None)


async def _sleep(seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(get_reactor(), seconds, lambda: None)


async def _connect(port: int, protocol: Protocol) -> Protocol:
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port)
    return await endpoint.connect(Factory.forProtocol(lambda: protocol))


@pytest_twisted.ensureDeferred
async def test_keep_alive_requests_reuse_upstream_connections(upstream, proxy) -> None:
    from twisted.web.client import Agent, HTTPConnectionPool, readBody

    up = upstream(site=CountingSite(Recorder()))
    reactor = get_reactor()
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 1
    client = CountingSite(Resource())
    agent = Agent(reactor, pool=pool)
    try:
        for i in range(20):
            response = await agent.request(
                b"GET", b"http://127.0.0.1:%d/proxy/%d/%d" % (proxy.port, up.port, i)
            )
            assert response.code == 200
            assert await readBody(response) == b"ok /%d" % i
    finally:
        await pool.closeCachedConnections()
    assert up.connections <= 2
    assert proxy.instance.engine.in_flight == 0  # every finish was noticed
    assert proxy.instance.engine.pool.opened <= 2
    assert (
        len(
            proxy.instance.site._channels
            if hasattr(proxy.instance.site, "_channels")
            else []
        )
        <= 1
    )
    del client


@pytest_twisted.ensureDeferred
async def test_slow_reader_pauses_upstream_and_memory_stays_flat(upstream, proxy) -> None:
    size = 256 * MiB
    up = upstream(BigBody(size))
    before = rss_bytes()
    reader = SlowReader(
        b"GET /proxy/%d/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % up.port
    )
    await _connect(proxy.port, reader)
    await reader.first
    await _sleep(1.5)
    grown = rss_bytes() - before
    assert grown < 16 * MiB, f"RSS grew by {grown / MiB:.1f} MiB while the client stalled"
    reader.transport.resumeProducing()
    await reader.closed
    assert reader.received > size  # headers + full body


@pytest_twisted.ensureDeferred
async def test_client_that_leaves_mid_download_closes_upstream(upstream, proxy) -> None:
    big = BigBody(1024 * MiB)
    up = upstream(big)
    reader = SlowReader(b"GET /proxy/%d/ HTTP/1.1\r\nHost: h\r\n\r\n" % up.port)
    await _connect(proxy.port, reader)
    await reader.first
    left_at = get_reactor().seconds()
    reader.transport.abortConnection()
    big.lost.addTimeout(5, get_reactor())
    closed_at = await big.lost
    assert closed_at - left_at < 1.0
    assert proxy.instance.engine.in_flight == 0


class _RawUpstream(Protocol):
    """Answers any request with fixed bytes, then optionally closes."""

    def __init__(self, answer: bytes, close: bool) -> None:
        self.answer = answer
        self.close = close

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data and self.answer is not None:
            self.transport.write(self.answer)
            if self.close:
                self.transport.loseConnection()


async def _through_raw_upstream(
    proxy: Any, answer: bytes | None, close: bool = True
) -> bytes:
    """GET through the proxy from an upstream that answers C{answer} as raw bytes."""
    port = _raw_upstream(answer, close)
    try:
        return await raw_request(proxy.port, get(b"/proxy/%d/" % port.getHost().port))
    finally:
        await port.stopListening()


def _raw_upstream(answer: bytes | None, close: bool = True) -> Any:
    factory = Factory.forProtocol(lambda: _RawUpstream(answer, close))  # type: ignore[arg-type]
    return listen(factory)


@pytest_twisted.ensureDeferred
async def test_upstream_dying_mid_body_aborts_the_client_response(proxy) -> None:
    raw = await _through_raw_upstream(
        proxy, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 100" in head.lower()
    assert body == b"0123456789"  # short of 100: the client sees the truncation


@pytest_twisted.ensureDeferred
async def test_upstream_dying_mid_chunked_body_leaves_chunked_stream_unterminated(
    proxy,
) -> None:
    raw = await _through_raw_upstream(
        proxy, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    assert b"hello" in raw
    assert not raw.endswith(b"0\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_early_hints_then_200_gives_200(proxy) -> None:
    raw = await _through_raw_upstream(
        proxy,
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    status, _, body = parse_response(raw)
    assert (status, body) == (200, b"ok")


@pytest_twisted.ensureDeferred
async def test_silent_upstream_gives_504_after_the_timeout(make_proxy) -> None:
    proxy = make_proxy(upstream_timeout=0.3)
    raw = await _through_raw_upstream(proxy, None, close=False)
    assert parse_response(raw)[0] == 504


@pytest_twisted.ensureDeferred
async def test_streamed_chunks_arrive_before_the_response_ends(upstream, proxy) -> None:
    """Server-sent events: each chunk is delivered as the upstream sends it."""
    reactor = get_reactor()
    sent: list[Any] = []

    class Events(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> int:
            request.setHeader(b"content-type", b"text/event-stream")
            request.write(b"data: one\n\n")
            sent.append(request)
            return NOT_DONE_YET

    up = upstream(Events())
    reader = SlowReader(b"GET /proxy/%d/ HTTP/1.1\r\nHost: h\r\n\r\n" % up.port)
    reader.dataReceived = lambda data: (  # type: ignore[method-assign]
        setattr(reader, "received", reader.received + len(data)),
        reader.first.called or reader.first.callback(data),
    )
    await _connect(proxy.port, reader)
    first = await reader.first
    assert b"data: one" in first  # type: ignore[operator]
    sent[0].finish()
    reader.transport.loseConnection()
    await reader.closed
    del reactor


@pytest_twisted.ensureDeferred
async def test_close_delimited_body_from_an_http10_upstream_is_complete(proxy) -> None:
    raw = await _through_raw_upstream(
        proxy, b"HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\nall of it"
    )
    status, headers, body = parse_response(raw)
    assert (status, body) == (200, b"all of it")
    assert headers[b"x-old"] == [b"1"]


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
@pytest_twisted.ensureDeferred
async def test_invalid_upstream_response_gives_502_or_an_aborted_body(
    proxy, answer: bytes
) -> None:
    raw = await _through_raw_upstream(proxy, answer)
    if raw.startswith(b"HTTP/1.1 200"):
        # The head was fine and already sent: the body must be visibly broken.
        assert not raw.endswith(b"0\r\n\r\n")
    else:
        assert parse_response(raw)[0] == 502


class _OneShotKeepAlive(Protocol):
    """Answers keep-alive, then closes the idle connection right after (a stale pool)."""

    served = 0

    def dataReceived(self, data: bytes) -> None:
        _OneShotKeepAlive.served += 1
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_request_on_a_connection_the_app_just_closed_is_retried(proxy) -> None:
    """The app closes idle keep-alive connections; the next request must not fail."""
    _OneShotKeepAlive.served = 0
    port = listen(Factory.forProtocol(_OneShotKeepAlive))
    try:
        for _ in range(3):
            raw = await raw_request(proxy.port, get(b"/proxy/%d/" % port.getHost().port))
            assert parse_response(raw)[0] == 200
    finally:
        await port.stopListening()
    assert _OneShotKeepAlive.served == 3


@pytest_twisted.ensureDeferred
async def test_upstream_connection_close_is_not_reused(upstream, proxy) -> None:
    def close_after(request: Any) -> bytes:
        request.setHeader(b"connection", b"close")
        return b"bye"

    up = upstream(site=CountingSite(Recorder(close_after)))
    for _ in range(3):
        raw = await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
        status, headers, body = parse_response(raw)
        assert (status, body) == (200, b"bye")
        assert b"connection" not in headers or headers[b"connection"] == [b"close"]
    assert up.connections == 3


def _read_to_the_end(port: int, request: bytes) -> tuple[bytes, str]:
    """Send C{request}; read until the server ends the connection: how it ended."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                return data, "reset"
            if not piece:
                return data, "clean"
            data += piece


@pytest_twisted.ensureDeferred
async def test_a_broken_body_framed_by_the_connection_ends_in_a_reset(proxy) -> None:
    # An HTTP/1.0 client of a compressed response (no Content-Length) can tell a
    # complete body from a broken one only by how the connection ends.
    from twisted.internet.threads import deferToThread

    upstream = _raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/javascript\r\nContent-Length: 5000\r\n\r\n"
        + b"let x = 1;\n" * 150
    )
    try:
        request = (
            b"GET /proxy/%d/app.js HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            b"Accept-Encoding: gzip\r\n\r\n" % upstream.getHost().port
        )
        data, ending = await deferToThread(_read_to_the_end, proxy.port, request)
    finally:
        await upstream.stopListening()
    assert b"content-encoding: gzip" in data.lower()
    assert ending == "reset"

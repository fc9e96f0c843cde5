# -*- test-case-name: tests.test_streaming -*-
"""Connections to local ports: 127.0.0.1 then [::1], kept alive in a pool.

Vite, Node and other dev servers that bind C{localhost} often listen on IPv6 only, so a
refused IPv4 connection is retried once on the IPv6 loopback before the port is reported
as dead.

L{UpstreamConnection} speaks HTTP/1.1 to an app: it writes one request, parses the
response with L{portproxy.http11} and hands the pieces to a L{ResponseSink}; then it
goes back to the L{UpstreamPool}. It replaces twisted.web's C{Agent} on the hot path,
whose per-request Deferreds, line-by-line parser and header objects cost more than the
proxying itself.
"""

from __future__ import annotations

from typing import IO, Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from zope.interface import implementer

from portproxy.http11 import (
    MAX_HEAD_SIZE,
    BodyKind,
    ChunkedDecoder,
    ProtocolError,
    ResponseHead,
    body_framing,
    parse_response_head,
)
from portproxy.splice import send_eagerly
from portproxy.uploads import StreamingUpload

__all__ = [
    "LoopbackEndpoint",
    "ResponseSink",
    "UpstreamConnection",
    "UpstreamPool",
]

CONNECT_TIMEOUT = 10
#: Bodies up to this size are written with the head in one call.
INLINE_BODY = 64 * 1024


@implementer(IStreamClientEndpoint)
class LoopbackEndpoint:
    """Connect to C{port} on 127.0.0.1, falling back to ::1 when IPv4 is refused."""

    def __init__(self, reactor: Any, port: int) -> None:
        self._reactor = reactor
        self._port = port

    def connect(self, factory: Any) -> Deferred[Any]:
        v4 = TCP4ClientEndpoint(
            self._reactor, "127.0.0.1", self._port, timeout=CONNECT_TIMEOUT
        )
        d: Deferred[Any] = v4.connect(factory)

        def try_v6(failure: Failure) -> Deferred[Any]:
            failure.trap(ConnectionRefusedError)
            v6 = TCP6ClientEndpoint(
                self._reactor, "::1", self._port, timeout=CONNECT_TIMEOUT
            )
            d6: Deferred[Any] = v6.connect(factory)
            # Report the IPv4 refusal: "nothing listens" is the useful message.
            d6.addErrback(lambda _: failure)
            return d6

        d.addErrback(try_v6)
        return d


class ResponseSink(TypingProtocol):
    """Receives one upstream response (implemented by the engine's exchange)."""

    def response_head(self, head: ResponseHead, connection: UpstreamConnection) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_done(self) -> None: ...

    def response_failed(self, reason: Failure, *, retryable: bool) -> None: ...


_IDLE, _HEAD, _BODY = range(3)


class UpstreamConnection(Protocol):
    """One persistent HTTP/1.1 connection to an app; one request at a time."""

    def __init__(self, pool: UpstreamPool, port: int) -> None:
        self.pool = pool
        self.port = port
        self.sink: ResponseSink | None = None
        self.state = _IDLE
        self.reused = False
        self.idle_since = 0.0
        self._method = b""
        self._buffer = b""
        self._kind = BodyKind.NONE
        self._remaining = 0
        self._keep_alive = False
        self._chunks: ChunkedDecoder | None = None
        self._got_bytes = False
        self.lost = False
        #: Fired by connectionLost when the pool closes this connection at shutdown.
        self.closed: Deferred[None] | None = None

    def connectionMade(self) -> None:
        # Request heads and streamed uploads must not wait for Nagle's algorithm, nor
        # for the next reactor turn.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        send_eagerly(self.transport)

    # -- sending --------------------------------------------------------------------

    def send(
        self,
        sink: ResponseSink,
        method: bytes,
        head: bytes,
        body: IO[bytes] | StreamingUpload | None,
        body_length: int,
    ) -> None:
        """Write a request (head already serialised) and wait for its response."""
        self.sink = sink
        self.state = _HEAD
        self._method = method
        self._buffer = b""
        self._got_bytes = False
        transport = self.transport
        assert transport is not None
        if isinstance(body, StreamingUpload):
            transport.write(head)
            body.connect(transport)
        elif body is None or body_length == 0:
            transport.write(head)
        elif body_length <= INLINE_BODY:
            body.seek(0)
            transport.write(head + body.read())
        else:
            transport.write(head)
            body.seek(0)
            # FileSender is a pull producer: it reads as the socket drains.
            FileSender().beginFileTransfer(body, transport).addErrback(lambda _: None)

    def abort(self) -> None:
        """Drop the connection now (the client went away, or the exchange failed)."""
        self.sink = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- receiving ------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.sink is None:
            # Bytes on an idle connection: the upstream is confused; do not reuse it.
            self.abort()
            return
        self._got_bytes = True
        if self.state == _HEAD:
            self._head(data)
        else:
            self._body(data)

    def _head(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_SIZE:
                    self._fail(Failure(ProtocolError("response head too large")))
                    return
                self._buffer = buffer
                return
            try:
                head = parse_response_head(buffer[:end])
                if 100 <= head.code < 200:
                    # Interim responses (100, 103) are dropped: never the final one.
                    buffer = buffer[end + 4 :]
                    continue
                kind, length, keep_alive = body_framing(self._method, head)
            except ProtocolError as e:
                self._fail(Failure(e))
                return
            break
        self._buffer = b""
        self._kind = kind
        self._remaining = length
        self._keep_alive = keep_alive
        self._chunks = ChunkedDecoder() if kind is BodyKind.CHUNKED else None
        self.state = _BODY
        sink = self.sink
        assert sink is not None
        sink.response_head(head, self)
        rest = buffer[end + 4 :]
        if self.sink is None:
            return
        if kind is BodyKind.NONE or (kind is BodyKind.LENGTH and length == 0):
            self._done(rest)
        elif rest:
            self._body(rest)

    def _body(self, data: bytes) -> None:
        sink = self.sink
        assert sink is not None
        kind = self._kind
        if kind is BodyKind.LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                sink.response_body(data)
                return
            sink.response_body(data[:remaining])
            self._remaining = 0
            if self.sink is not None:
                self._done(data[remaining:])
        elif kind is BodyKind.CHUNKED:
            assert self._chunks is not None
            try:
                pieces = self._chunks.feed(data)
            except ProtocolError as e:
                self._fail(Failure(e))
                return
            for piece in pieces:
                if self.sink is None:
                    return
                sink.response_body(piece)
            if self._chunks.done and self.sink is not None:
                self._done(self._chunks.extra)
        elif kind is BodyKind.CLOSE:
            sink.response_body(data)
        else:
            self._done(data)

    def _done(self, extra: bytes) -> None:
        sink = self.sink
        self.sink = None
        self.state = _IDLE
        if sink is not None:
            sink.response_done()
        if self._keep_alive and not extra and not self.lost:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.loseConnection()

    def _fail(self, reason: Failure) -> None:
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.response_failed(reason, retryable=False)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        self.pool.forget(self)
        if self.closed is not None:
            self.closed.callback(None)
        sink = self.sink
        self.sink = None
        if sink is None:
            return
        if self.state == _BODY and self._kind is BodyKind.CLOSE:
            sink.response_done()
            return
        # A reused connection that died before answering was most likely closed by
        # the app's idle timeout as we wrote: the request can be sent again.
        retryable = self.reused and self.state == _HEAD and not self._got_bytes
        if reason is None or reason.check(ConnectionDone):
            reason = Failure(ProtocolError("the app closed the connection"))
        sink.response_failed(reason, retryable=retryable)


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: UpstreamPool, port: int) -> None:
        self.pool = pool
        self.port = port

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        return UpstreamConnection(self.pool, self.port)


class UpstreamPool:
    """Idle keep-alive connections per port, closed after C{idle_timeout} seconds.

    The timeout is shorter than Node's 5 s keep-alive default so that a request is
    rarely written to a connection the app is closing (and a failed reuse is retried).
    """

    def __init__(
        self, reactor: Any, *, idle_timeout: float = 4.0, max_idle: int = 128
    ) -> None:
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._idle: dict[int, list[UpstreamConnection]] = {}
        self._sweeper: Any = None
        self.opened = 0

    def take(self, port: int) -> UpstreamConnection | None:
        """An idle connection to C{port}, most recently used first, or C{None}."""
        idle = self._idle.get(port)
        while idle:
            connection = idle.pop()
            if not connection.lost:
                connection.reused = True
                return connection
        return None

    def connect(self, port: int) -> Deferred[UpstreamConnection]:
        """Open a new connection to C{port}."""
        self.opened += 1
        endpoint = LoopbackEndpoint(self.reactor, port)
        return endpoint.connect(_ConnectionFactory(self, port))

    def release(self, connection: UpstreamConnection) -> None:
        idle = self._idle.setdefault(connection.port, [])
        if len(idle) >= self.max_idle:
            connection.transport.loseConnection()  # type: ignore[union-attr]
            return
        connection.reused = False
        connection.idle_since = self.reactor.seconds()
        # The client may have paused this socket through the response's producer.
        connection.transport.resumeProducing()  # type: ignore[union-attr]
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(1.0, self._sweep)

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.port)
        if idle and connection in idle:
            idle.remove(connection)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.reactor.seconds() - self.idle_timeout
        remaining = 0
        for port, idle in list(self._idle.items()):
            for connection in [c for c in idle if c.idle_since <= cutoff]:
                idle.remove(connection)
                connection.transport.loseConnection()  # type: ignore[union-attr]
            if idle:
                remaining += len(idle)
            else:
                del self._idle[port]
        if remaining:
            self._sweeper = self.reactor.callLater(1.0, self._sweep)

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def close(self) -> Deferred[None]:
        """Close every idle connection (at shutdown); fires when they are gone."""
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        waits: list[Deferred[None]] = []
        for idle in self._idle.values():
            for connection in idle:
                done: Deferred[None] = Deferred()
                connection.closed = done
                connection.transport.loseConnection()  # type: ignore[union-attr]
                waits.append(done)
        self._idle.clear()
        d: Deferred[None] = gatherResults(waits).addCallback(lambda _: None)
        return d

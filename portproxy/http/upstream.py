# -*- test-case-name: tests.test_streaming -*-
"""Connections to local ports: 127.0.0.1 then [::1], kept alive in a pool.

Vite, Node and other dev servers that bind C{localhost} often listen on IPv6 only, so a
refused IPv4 connection is retried once on the IPv6 loopback before the port is reported
as dead.

L{UpstreamConnection} speaks HTTP/1.1 to an app: it writes one request, feeds the
response bytes to a L{portproxy.http.response_reader.ResponseReader}, hands the events to a
L{ResponseSink}, and goes back to the L{UpstreamPool} when both sides are complete. It
replaces twisted.web's C{Agent} on the hot path, whose per-request Deferreds,
line-by-line parser and header objects cost more than the proxying itself.
"""

from __future__ import annotations

import enum
from typing import IO, cast
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from zope.interface import implementer

from portproxy.http.response_reader import DATA, HEAD, ReaderState, ResponseReader
from portproxy.http.uploads import StreamingUpload
from portproxy.http.wire import ProtocolError, ResponseHead
from portproxy.net.eager import send_eagerly
from portproxy.net.reactor import IClientReactor, ITCPConnection

__all__ = [
    "IDEMPOTENT",
    "LoopbackEndpoint",
    "RequestState",
    "ResponseSink",
    "TooManyUpstreams",
    "UpstreamConnection",
    "UpstreamPool",
]

CONNECT_TIMEOUT = 10
#: Bodies up to this size are written with the head in one call.
INLINE_BODY = 64 * 1024


@implementer(IStreamClientEndpoint)
class LoopbackEndpoint:
    """Connect to C{port} on 127.0.0.1, falling back to ::1 when IPv4 is refused."""

    def __init__(self, reactor: IReactorTCP, port: int) -> None:
        self._reactor = reactor
        self._port = port

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        v4 = TCP4ClientEndpoint(
            self._reactor, "127.0.0.1", self._port, timeout=CONNECT_TIMEOUT
        )
        d: Deferred[IProtocol] = v4.connect(factory)

        def try_v6(failure: Failure) -> Deferred[IProtocol]:
            failure.trap(ConnectionRefusedError)
            v6 = TCP6ClientEndpoint(
                self._reactor, "::1", self._port, timeout=CONNECT_TIMEOUT
            )
            d6: Deferred[IProtocol] = v6.connect(factory)
            # Report the IPv4 refusal: "nothing listens" is the useful message.
            d6.addErrback(lambda _: failure)
            return d6

        d.addErrback(try_v6)
        return d


class TooManyUpstreams(Exception):
    """The budget of open upstream connections (L{UpstreamPool.max_open}) is spent."""


class ResponseSink(TypingProtocol):
    """Receives one upstream response (implemented by the engine's exchange)."""

    def response_head(self, head: ResponseHead, connection: UpstreamConnection) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_done(self) -> None: ...

    def response_failed(self, reason: Failure, *, retryable: bool) -> None: ...


#: Methods that may be sent again after a reused connection died before answering
#: (RFC 9110 9.2.2: a proxy must not retry a non-idempotent request by itself).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))


class RequestState(enum.Enum):
    """Where the request side of a connection's current exchange stands."""

    IDLE = "idle"
    SENDING = "sending"  # the head is out, the body may still be on its way
    DONE = "done"  # the whole request, body included, has been written
    BROKEN = "broken"  # the body will never be complete (abandoned, connection lost)


class UpstreamConnection(Protocol):
    """One persistent HTTP/1.1 connection to an app; one request at a time.

    The two sides of the exchange are tracked apart: the connection goes back to the
    pool only when the request (body included) and the response are both DONE and the
    response allows keep-alive, as in nginx (C{request_body_sent}) and h11 (both sides
    DONE). An app that answers before it has read the whole upload would otherwise read
    the rest of that upload as the next client's request.
    """

    transport: ITCPConnection | None

    def __init__(self, pool: UpstreamPool, port: int) -> None:
        self.pool = pool
        self.port = port
        self.sink: ResponseSink | None = None
        #: The exchange this connection serves until it is back in the pool.
        self.owner: object | None = None
        self.request_state = RequestState.IDLE
        #: Reads the response; its state is the response side of the exchange.
        self.reader = ResponseReader()
        self.reused = False
        self.idle_since = 0.0
        self._method = b""
        self._upload: StreamingUpload | None = None
        #: Whether the request carried a body (see L{_response_end}).
        self._had_body = False
        self._got_bytes = False
        #: Closed, or being closed by L{abort}: never to be handed out again.
        self.lost = False
        #: Fired by connectionLost when the pool closes this connection at shutdown.
        self.closed: Deferred[None] | None = None
        #: Whether this connection counts in the pool's budget (until it is lost).
        self.holds_slot = False

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
        self.owner = sink
        self._method = method
        self._got_bytes = False
        self.request_state = RequestState.SENDING
        self._had_body = body is not None and (
            isinstance(body, StreamingUpload) or body_length > 0
        )
        self.reader.start(method)
        transport = self.transport
        assert transport is not None
        if isinstance(body, StreamingUpload):
            self._upload = body
            transport.write(head)
            body.connect(transport, self.request_sent)
        elif body is None or body_length == 0:
            transport.write(head)
            self.request_state = RequestState.DONE
        elif body_length <= INLINE_BODY:
            body.seek(0)
            transport.write(head + body.read())
            self.request_state = RequestState.DONE
        else:
            transport.write(head)
            body.seek(0)
            # FileSender is a pull producer: it reads as the socket drains.
            d = FileSender().beginFileTransfer(body, transport)
            d.addCallbacks(self.request_sent, lambda _: None)

    def request_sent(self, _: object = None) -> None:
        """The last byte of the request body has been written."""
        if self.request_state is RequestState.SENDING:
            self.request_state = RequestState.DONE
            self._upload = None

    def abort(self) -> None:
        """Drop the connection now (the client went away, or the exchange failed)."""
        self.sink = None
        if self.request_state is RequestState.SENDING:
            self.request_state = RequestState.BROKEN
        upload, self._upload = self._upload, None
        if upload is not None:
            # The rest of the body has nowhere to go: let the client finish sending it.
            upload.abandon()
        if self.lost:
            return
        # connectionLost (and its pool.forget) only runs on the next reactor turn;
        # until then a request in this same turn could still take() this connection.
        self.lost = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abortConnection()

    # -- receiving ------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # Bytes on an idle connection: the upstream is confused; do not reuse it.
            self.abort()
            return
        self._got_bytes = True
        try:
            events = self.reader.feed(data)
        except ProtocolError as e:
            self._fail(Failure(e))
            return
        for kind, value in events:
            if kind == DATA:
                sink.response_body(value)  # type: ignore[arg-type]
            elif kind == HEAD:
                sink.response_head(value, self)  # type: ignore[arg-type]
            else:
                self._response_end()
                return
            if self.sink is not sink:
                return  # the exchange let go (its client left)

    def _response_end(self) -> None:
        sink = self.sink
        self.sink = None
        if sink is not None:
            sink.response_done()
        if self.lost:
            return
        if self.request_state is not RequestState.DONE:
            # The app answered before the request body was all written (an early
            # 401/413). Whatever it does with the rest, that rest must never be read
            # as another request: close, and let the client's upload be read and
            # dropped.
            self.abort()
        elif self.reader.keep_alive and not self._had_body:
            self.pool.release(self)
        elif self.transport is not None:
            # A request body may have been left unread by an app that answered
            # without consuming it (Python's http.server and many dev servers do, on
            # a 401 or 404); it would then parse that body as the next request, which
            # could be another client's. Whether the app read it cannot be seen from
            # here, so a connection that carried a body is never reused.
            self.transport.loseConnection()

    def _fail(self, reason: Failure) -> None:
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.response_failed(reason, retryable=False)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        self.pool.forget(self)
        if self.holds_slot:
            self.holds_slot = False
            self.pool.release_slot()
        if self.request_state is RequestState.SENDING:
            self.request_state = RequestState.BROKEN
        if self.closed is not None:
            self.closed.callback(None)
        sink = self.sink
        self.sink = None
        if sink is None:
            return
        if reason is None or reason.check(ConnectionDone):
            # Only a clean close may end a close-delimited body (RFC 9112 8); a reset
            # must reach the client as a broken response, not a complete one.
            try:
                if self.reader.eof():
                    sink.response_done()
                    return
            except ProtocolError as e:
                reason = Failure(e)
        else:
            self.reader.state = ReaderState.BROKEN
        # A reused connection that died before answering was most likely closed by
        # the app's idle timeout as we wrote: an idempotent request can be sent again.
        retryable = self.reused and not self._got_bytes and self._method in IDEMPOTENT
        sink.response_failed(reason, retryable=retryable)


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: UpstreamPool, port: int) -> None:
        self.pool = pool
        self.port = port

    def buildProtocol(self, addr: IAddress | None) -> UpstreamConnection:
        return UpstreamConnection(self.pool, self.port)


class UpstreamPool:
    """Idle keep-alive connections per port, closed after C{idle_timeout} seconds.

    The timeout is shorter than Node's 5 s keep-alive default so that a request is
    rarely written to a connection the app is closing (and a failed reuse is retried).

    At most C{max_open} upstream connections (active, idle and connecting, WebSocket
    legs included through L{acquire_slot}) are open at once, so that client
    connections always keep their file descriptors
    (L{portproxy.net.policy.upstream_budget}); at the budget idle ones are closed first,
    then a new one is refused
    (L{TooManyUpstreams}). C{None}: no budget.
    """

    def __init__(
        self,
        reactor: IClientReactor,
        *,
        idle_timeout: float = 4.0,
        max_idle: int = 128,
        max_open: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.max_open = max_open
        #: Upstream connections open or being opened now.
        self.open_count = 0
        self._idle: dict[int, list[UpstreamConnection]] = {}
        self._sweeper: IDelayedCall | None = None
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
        """Open a new connection to C{port} (L{TooManyUpstreams} over the budget)."""
        if not self.acquire_slot():
            return fail(TooManyUpstreams())
        self.opened += 1
        endpoint = LoopbackEndpoint(self.reactor, port)
        # The factory builds UpstreamConnections; the endpoint's type says IProtocol.
        d = cast(
            Deferred[UpstreamConnection], endpoint.connect(_ConnectionFactory(self, port))
        )

        def connected(connection: UpstreamConnection) -> UpstreamConnection:
            connection.holds_slot = True  # given back in its connectionLost
            if connection.lost:
                connection.holds_slot = False
                self.release_slot()
            return connection

        def failed(reason: Failure) -> Failure:
            self.release_slot()
            return reason

        d.addCallbacks(connected, failed)
        return d

    def acquire_slot(self) -> bool:
        """Count one more upstream connection, closing an idle one if the budget is spent.

        C{False}: the budget is spent by connections in use. Each C{True} must be
        matched by one L{release_slot} when that connection is gone.
        """
        if self.max_open is not None and self.open_count >= self.max_open:
            if not self._close_one_idle():
                return False
        self.open_count += 1
        return True

    def release_slot(self) -> None:
        """An upstream connection counted by L{acquire_slot} is gone."""
        self.open_count -= 1

    def _close_one_idle(self) -> bool:
        """Close the idle connection unused longest (any port); its slot is free now."""
        oldest: UpstreamConnection | None = None
        for idle in self._idle.values():
            for connection in idle:
                if oldest is None or connection.idle_since < oldest.idle_since:
                    oldest = connection
        if oldest is None:
            return False
        # Its descriptor is released on the next reactor turn; the slot at once.
        if oldest.holds_slot:
            oldest.holds_slot = False
            self.release_slot()
        oldest.abort()
        return True

    def release(self, connection: UpstreamConnection) -> None:
        """Keep C{connection} for the next request to its port, if it is reusable."""
        if not (
            connection.request_state is RequestState.DONE
            and connection.reader.state is ReaderState.DONE
        ):
            # Never pool a connection mid-exchange: its next bytes belong to this one.
            connection.abort()
            return
        idle = self._idle.setdefault(connection.port, [])
        if len(idle) >= self.max_idle:
            connection.transport.loseConnection()  # type: ignore[union-attr]
            return
        connection.reused = False
        connection.owner = None
        connection.request_state = RequestState.IDLE
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

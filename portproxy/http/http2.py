# -*- test-case-name: tests.test_http2_integrity -*-
"""HTTP/2 on TLS listeners, hardened against hostile clients.

twisted.web speaks HTTP/2 through C{H2Connection} once ALPN picks C{h2}. Stock, it
keeps parsing after its own GOAWAY, buffers a whole response for a reader that never
reads, spools request bodies before anyone checked the sender, forwards any bytes as
method and target, lets PINGs and trickled header blocks hold a connection forever, and
counts no cheap frames (docs/upstream-twisted-bugs.rst has each with a reproduction).
L{HardenedH2Connection} and L{HardenedH2Stream} fix these in subclasses;
L{portproxy.http.h2install.HTTP2Site} puts them on a listener
(L{portproxy.runtime.tlslistener.ServerTLS.wrap} is the one place).

The rules themselves (L{portproxy.http.h2rules}: the request-head check, the frame
budget, the limits) are plain code with no reactor; the classes only wire them to
Twisted. Twisted's HTTP/2 classes live in a private module: what they rely on of it is
listed in L{portproxy.net.internals}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import h2.errors
import h2.events
import h2.exceptions
import priority
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request

from portproxy.http.h2rules import (
    CONTROL_EVENTS,
    FrameBudget,
    H2Limits,
    ServerH2,
    declared_length,
    request_head_refusal,
)
from portproxy.net.internals import (
    H2Connection,
    H2Stream,
    arm_abort_timer,
    h2_header_block_pending,
    h2_reactor,
    h2_register_stream,
    h2_socket_full,
    h2_stream_connection,
    h2_stream_request,
    h2_wake_sender,
    pause_stream_producer,
)
from portproxy.net.reactor import ITCPConnection

if TYPE_CHECKING:
    from portproxy.net.limits import ConnectionLimits

__all__ = ["HardenedH2Connection", "HardenedH2Stream"]

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.http2")


def _cancel(owner: object, name: str) -> None:
    """Cancel the timer in C{owner}'s attribute C{name}, if one is pending, and clear it."""
    timer: IDelayedCall | None = getattr(owner, name)
    if timer is not None:
        if timer.active():
            timer.cancel()
        setattr(owner, name, None)


class HardenedH2Stream(H2Stream):
    """An C{H2Stream} that reads its head only once registered, in a safe order.

    Twisted converts the head in the constructor, calling C{gotLength} at the
    content-length field, before later fields (the cookies of a sign-in) are in, and
    before the stream can write. Here L{start} adds every field, joins the split
    C{cookie} fields (RFC 9113 8.2.3), and only then announces the length, so
    L{portproxy.web.request.ProxyRequest} can check sign-in and stream or refuse the body.

    A body whose request is not authorized to reach an app (portproxy's own routes, or
    a site that does not say: C{body_authorized} on the request) must arrive whole
    within the head deadline, else 408.
    """

    #: The request line, in the fields where HTTPChannel keeps it while the head is
    #: read (portproxy.net.internals.channel_request_line reads both alike).
    _version = b"HTTP/2"
    _answered_early = False
    _client_ended = False
    _head_ended = False
    _admitted = False
    _response_done = False
    _stall: IDelayedCall | None = None
    _body_timer: IDelayedCall | None = None

    def _convertHeaders(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._head = headers

    @property
    def connection(self) -> HardenedH2Connection:
        """The connection this stream belongs to."""
        return h2_stream_connection(self)  # type: ignore[no-any-return]

    @property
    def upload_client(self) -> HardenedH2Stream:
        """What a streamed upload pauses: this stream (it stops granting window)."""
        return self

    def start(self) -> None:
        """Hand the head to the request (the stream is registered by now)."""
        request = h2_stream_request(self)
        cookies: list[bytes] = []
        length: int | None = None
        raw = request.requestHeaders
        for name, value in self._head:
            if name == b":method":
                self.command = value
            elif name == b":path":
                self.path = value
            elif name == b":authority":
                raw.addRawHeader(b"host", value)
            elif name.startswith(b":"):
                continue
            elif name == b"cookie":
                cookies.append(value)
            else:
                raw.addRawHeader(name, value)
                if name == b"content-length":
                    length = int(value)  # h2 has checked it is a number
        if cookies:
            raw.setRawHeaders(b"cookie", [b"; ".join(cookies)])
        self._command, self._path = self.command, self.path
        if self._head_ended:
            length = 0  # END_STREAM on HEADERS: no body follows
        # Otherwise DATA may follow whatever the method (a GET too): its length is
        # unknown unless content-length gave it (h2 holds the DATA to that).
        request.gotLength(length)
        request.parseCookies()
        # portproxy.web.request.ProxyRequest says whether sign-in and the route let the
        # request through to an app; until then its body is under the head deadline.
        self._admitted = bool(getattr(request, "body_authorized", False))
        self.connection._report()  # at work for an app, or waiting on the client
        if not (self._head_ended or self._answered_early or self._admitted):
            self._body_timer = self.connection.later(
                self.connection.limits.header_timeout, self._body_too_slow
            )
        expect = raw.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and not self._answered_early:
            self._send100Continue()

    @property
    def holds_connection(self) -> bool:
        """Whether this stream is work in progress that the idle timeout must wait for.

        A finished response waiting for the client to read it, and a body that has
        not been let through to an app, wait on the client only: they do not count.
        """
        return not self._response_done and (self._client_ended or self._admitted)

    def _body_too_slow(self) -> None:
        self._body_timer = None
        conn = self.connection
        if self._client_ended or self._answered_early:
            return
        if conn.streams.get(self.streamID) is not self:
            return
        _log.info("HTTP/2 stream {id}: request body too slow", id=self.streamID)
        conn.answer(
            self.streamID,
            408,
            b'{"error": "Request body took too long"}',
            ended=False,
            content_type=b"application/json",
        )
        self.connectionLost(Failure(ConnectionLost("request body too slow")))
        conn._requestDone(self.streamID)

    def answer_early(self, request: Request) -> None:
        """Render C{request} now, before its body; the body is then dropped.

        Used for a refused request (sign-in, 413): the client gets its answer at once
        and the stream is reset once the answer is out (RFC 9113 8.1).
        """
        self._answered_early = True
        _cancel(self, "_body_timer")  # answered: only the send timeout is left
        request.requestReceived(self.command, self.path, self._version)

    def receiveDataChunk(self, data: bytes, flowControlledLength: int) -> None:
        if self._answered_early:
            # Dropped: the connection's window is given back (other streams need
            # it), this stream's is not (the client is to stop sending).
            self.connection.reopen_connection_window(flowControlledLength)
            return
        super().receiveDataChunk(data, flowControlledLength)

    def requestComplete(self) -> None:
        self._client_ended = True
        _cancel(self, "_body_timer")
        if not self._answered_early:
            super().requestComplete()
        self.connection._report()

    def requestDone(self, request: Request) -> None:
        self._response_done = True
        super().requestDone(request)
        self.connection._report()  # the rest waits on the client reading the answer

    def trust(self) -> None:
        """A request on this stream was signed in: trust the connection."""
        self.connection.trust()

    def connectionLost(self, reason: Failure) -> None:
        _cancel(self, "_body_timer")
        super().connectionLost(reason)

    # -- sending: the connection's pause reaches every stream ---------------------------

    def windowUpdated(self) -> None:
        if h2_socket_full(self.connection):
            return  # the socket is full: stay paused whatever the window says
        if self.connection.remainingOutboundWindow(self.streamID) > 0:
            _cancel(self, "_stall")
        super().windowUpdated()

    def flowControlBlocked(self) -> None:
        super().flowControlBlocked()
        if self.connection.remainingOutboundWindow(self.streamID) <= 0:
            # Twisted leaves the stream schedulable and retries it every reactor turn
            # (a busy loop) while the window stays shut; park it until WINDOW_UPDATE.
            self.connection.priority.block(self.streamID)
            if self._stall is None:
                self._stall = self.connection.later(
                    self.connection.limits.send_timeout, self._stalled
                )

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        if h2_socket_full(self.connection):
            self.pause_sending()

    def pause_sending(self) -> None:
        """Pause the response's producer (the connection's socket is full)."""
        pause_stream_producer(self)

    def _stalled(self) -> None:
        self._stall = None
        if self.connection._streamIsActive(self.streamID):
            _log.info("HTTP/2 stream {id}: window shut for too long", id=self.streamID)
            self.connectionLost(Failure(ConnectionLost("send timeout")))
            self.connection.abortRequest(self.streamID)


class HardenedH2Connection(H2Connection):
    """Twisted's C{H2Connection} with the fixes listed in the module docstring.

    @ivar connection_limits: the process's L{portproxy.net.limits.ConnectionLimits} (or
        C{None}): told when the connection has no open stream (L{evict} may then
        close it to make room at C{--max-connections}) and when it has one again.
    """

    streams: dict[int, HardenedH2Stream]
    transport: ITCPConnection | None  # TLS, which passes what it lacks to the socket
    connection_limits: ConnectionLimits | None = None

    def __init__(self, reactor: IReactorTime, limits: H2Limits) -> None:
        super().__init__(reactor)
        self._h2 = ServerH2(self.conn.config, limits.max_concurrent_streams)
        self.conn = self._h2
        self.limits = limits
        self.timeOut = limits.idle_timeout  # type: ignore[assignment]
        self._closing = False
        self._budget = FrameBudget(
            limits.frame_budget, limits.frame_window, reactor.seconds
        )
        self._head_timer: IDelayedCall | None = None
        self._send_timer: IDelayedCall | None = None
        self._first_timer: IDelayedCall | None = None
        self._preface_in = False
        self._reported_idle = False
        #: Whether a request on this connection was signed in (L{trust}).
        self._trusted = False

    def later(self, delay: float, f: Callable[[], object]) -> IDelayedCall:
        """Schedule C{f} on the connection's reactor (for portproxy's own deadlines)."""
        return h2_reactor(self).callLater(delay, f)

    def connectionMade(self) -> None:
        super().connectionMade()
        # The head deadline of an h2 connection: its first request must come in time.
        self._first_timer = self.later(self.limits.header_timeout, self._no_request)

    def _no_request(self) -> None:
        self._first_timer = None
        self._shut(h2.errors.ErrorCodes.NO_ERROR, "no request within the head deadline")

    # -- the connection cap ------------------------------------------------------------

    def evict(self) -> None:
        """Close this connection (it has no open stream) to make room for another.

        GOAWAY NO_ERROR names the last stream processed: every request so far got its
        answer, and the client may simply reconnect.
        """
        self._shut(h2.errors.ErrorCodes.NO_ERROR, "evicted at --max-connections")

    def trust(self) -> None:
        """A request on this connection was signed in: it is the last to make room."""
        if self._trusted:
            return
        self._trusted = True
        limits = self.connection_limits
        if limits is not None and not self._closing:
            limits.h2_trusted(self)
        self._report()

    def _report(self) -> None:
        """Tell the limits whether this connection has a stream at work now.

        A trusted connection is at work while any stream is open; an untrusted one only
        while a stream holds an app connection or a request being served
        (L{HardenedH2Stream.holds_connection}): answers it does not read and bodies it
        does not send wait on the client alone, and must not hold a place at the cap.
        """
        limits = self.connection_limits
        if limits is None or self._closing or not self._preface_in:
            return
        if self._trusted or limits.trust_all:
            idle = not self.streams
        else:
            idle = not any(s.holds_connection for s in self.streams.values())
        if idle == self._reported_idle:
            return
        self._reported_idle = idle
        if idle:
            limits.h2_idle(self)
        else:
            limits.h2_busy(self)

    # -- reading -----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # after GOAWAY nothing more is parsed (or buffered by h2)
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._shut(h2.errors.ErrorCodes.PROTOCOL_ERROR, "protocol error")
            return
        self._watch_head()
        for _ in range(self._h2.take_refused()):
            if not self._budget.spend():
                self._shut(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "refused stream flood")
                return
        for event in events:
            if self._closing:
                return
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self._preface_in = True  # h2 checked the preface: SETTINGS comes first
            if isinstance(event, CONTROL_EVENTS) or (
                isinstance(event, h2.events.DataReceived)
                and not event.data
                and event.stream_ended is None
            ):
                if not self._budget.spend():
                    self._shut(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "frame flood")
                    return
            if isinstance(event, h2.events.RequestReceived):
                self.resetTimeout()
                self._requestReceived(event)
            elif isinstance(event, h2.events.DataReceived):
                self._requestDataReceived(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._requestEnded(event)
            elif isinstance(event, h2.events.StreamReset):
                self._requestAborted(event)
            elif isinstance(event, h2.events.WindowUpdated):
                self._handleWindowUpdate(event)
            elif isinstance(event, h2.events.PriorityUpdated):
                self._handlePriorityUpdate(event)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._shut(None, "client sent GOAWAY")
                return
        self._tryToWriteControlData()
        self._report()

    def _watch_head(self) -> None:
        """Start the head deadline while a header block is incomplete, stop it after."""
        if h2_header_block_pending(self.conn):
            if self._head_timer is None:
                self._head_timer = self.later(
                    self.limits.header_timeout, self._head_too_slow
                )
        elif self._head_timer is not None:
            _cancel(self, "_head_timer")

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self._shut(h2.errors.ErrorCodes.PROTOCOL_ERROR, "header block too slow")

    def _requestReceived(self, event: h2.events.RequestReceived) -> None:
        _cancel(self, "_first_timer")
        status = request_head_refusal(event.headers)
        if status is not None:
            self._refuse(event.stream_id, status, ended=event.stream_ended is not None)
            return
        if event.stream_ended is not None and declared_length(event.headers):
            # RFC 9113 8.1.1: content-length must match the DATA, and none can follow.
            self.conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self._tryToWriteControlData()
            return
        stream = HardenedH2Stream(
            event.stream_id,
            self,
            event.headers,
            self.requestFactory,  # type: ignore[attr-defined]
            self.site,
            self.factory,
        )
        h2_register_stream(self, event.stream_id, stream)
        try:
            self.priority.insert_stream(event.stream_id)
        except priority.DuplicateStreamError:
            pass  # a PRIORITY frame named the stream first
        else:
            self.priority.block(event.stream_id)
        stream._head_ended = event.stream_ended is not None  # END_STREAM on HEADERS
        limits = self.connection_limits
        if limits is not None and not self._closing and self._preface_in:
            # From now on the streams' own deadlines hold, not the connection's head's.
            limits.h2_opened(self)
        self._report()  # a stream is open (at work once start() says so)
        stream.start()

    def _refuse(self, stream_id: int, status: int, *, ended: bool) -> None:
        """Answer a bad head with C{status} and drop the stream; no resource sees it."""
        body = b"Bad request\n" if status == 400 else b"Method not allowed\n"
        self.answer(stream_id, status, body, ended=ended)

    def answer(
        self,
        stream_id: int,
        status: int,
        body: bytes,
        *,
        ended: bool,
        content_type: bytes = b"text/plain; charset=utf-8",
    ) -> None:
        """Send a whole small response on C{stream_id} past Twisted's queues.

        For a stream no request will answer. When the client has not ended its side,
        RST_STREAM NO_ERROR follows: it may stop sending the body (RFC 9113 8.1). A
        body that does not fit the stream's window is left out.
        """
        fits = len(body) <= self.conn.local_flow_control_window(stream_id)
        fields = [(b":status", b"%d" % status)]
        if fits:
            fields += [
                (b"content-type", content_type),
                (b"content-length", b"%d" % len(body)),
            ]
        self.conn.send_headers(stream_id, fields, end_stream=not fits)
        if fits:
            self.conn.send_data(stream_id, body, end_stream=True)
        if not ended:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        self._tryToWriteControlData()

    def reopen_connection_window(self, size: int) -> None:
        """Give back C{size} bytes of the connection's window (not of any stream's)."""
        if size > 0:
            self.conn.increment_flow_control_window(size)
            self._tryToWriteControlData()

    def _requestDataReceived(self, event: h2.events.DataReceived) -> None:
        if event.stream_id not in self.streams:
            # Answered and gone (or refused): keep the connection's window open.
            self.conn.acknowledge_received_data(
                event.flow_controlled_length, event.stream_id
            )
            return
        if event.data and self.streams[event.stream_id]._admitted:
            self.resetTimeout()  # bytes on their way to an app are activity
        super()._requestDataReceived(event)

    def _requestEnded(self, event: h2.events.StreamEnded) -> None:
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestAborted(self, event: h2.events.StreamReset) -> None:
        if event.stream_id not in self.streams:
            if not self._budget.spend():
                self._shut(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "reset flood")
        elif not event.remote_reset:
            # Reset by us (a malformed body, see ServerH2): not the client's flood.
            stream = self.streams[event.stream_id]
            stream.connectionLost(Failure(ConnectionLost("malformed request body")))
            self._requestDone(event.stream_id)
        else:
            super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        stream = self.streams.get(streamID)
        if stream is not None:
            _cancel(stream, "_stall")
            _cancel(stream, "_body_timer")
            if stream._answered_early and not stream._client_ended:
                # The answer is out; ask the client to stop sending the body.
                try:
                    self.conn.reset_stream(streamID, h2.errors.ErrorCodes.NO_ERROR)
                except h2.exceptions.StreamClosedError:
                    pass
                self._tryToWriteControlData()
        super()._requestDone(streamID)
        self._report()  # idle again once the last open stream is done

    def _handleWindowUpdate(self, event: h2.events.WindowUpdated) -> None:
        super()._handleWindowUpdate(event)
        # Streams parked on a shut window are schedulable again: wake the sender.
        h2_wake_sender(self)

    # -- writing: the socket's pause reaches every stream ------------------------------

    def pauseProducing(self) -> None:
        super().pauseProducing()
        for stream in list(self.streams.values()):
            stream.pause_sending()
        if self._send_timer is None and not self._closing:
            self._send_timer = self.later(self.limits.send_timeout, self._send_too_slow)

    def resumeProducing(self) -> None:
        _cancel(self, "_send_timer")
        super().resumeProducing()
        for stream in list(self.streams.values()):
            if h2_socket_full(self):
                break
            stream.windowUpdated()

    def _send_too_slow(self) -> None:
        self._send_timer = None
        _log.info("HTTP/2 client {peer} read nothing for too long", peer=self.getPeer())
        self._closing = True
        transport = cast(ITCPConnection, self.transport)
        transport.abortConnection()

    # -- closing -----------------------------------------------------------------------

    def timeoutConnection(self) -> None:
        # Only streams at work (for an app, or on a whole request) keep the
        # connection. One that waits on the client alone (a body never sent, an
        # answer never read) would otherwise hold it forever; such streams have
        # their own deadlines (head, send) and go with the connection.
        if any(stream.holds_connection for stream in self.streams.values()):
            self.resetTimeout()
            return
        self._shut(h2.errors.ErrorCodes.NO_ERROR, "idle")

    def _terminate(self, reason: Failure) -> None:
        self._shut(None, str(reason.value))

    def _shut(self, error: h2.errors.ErrorCodes | None, why: str) -> None:
        """Send GOAWAY (unless C{error} is None), stop reading and close.

        Twisted's C{loseConnection} here never completes while the connection is the
        TLS transport's producer, and the socket goes on being read into h2 (which
        buffers what it cannot parse): reading stops now, and the socket closes once
        the GOAWAY is flushed (or after C{abortTimeout}).
        """
        if self._closing:
            return
        self._closing = True
        _log.debug("closing HTTP/2 connection: {why}", why=why)
        if error is not None:
            try:
                self.conn.close_connection(error_code=error)
            except h2.exceptions.ProtocolError:
                pass
        transport = cast(ITCPConnection, self.transport)
        pending = self.conn.data_to_send()
        if pending:
            transport.write(pending)
        transport.pauseProducing()  # the TLS wrapper passes this to the socket
        transport.unregisterProducer()
        transport.loseConnection()
        lower = getattr(transport, "transport", None)
        if lower is not None:
            lower.loseConnection()  # the client's close_notify will not be read
        arm_abort_timer(self)
        self.connectionLost(Failure(ConnectionLost(why)), _cancelTimeouts=False)

    def connectionLost(  # type: ignore[override]
        self, reason: Failure, _cancelTimeouts: bool = True
    ) -> None:
        self._closing = True
        _cancel(self, "_head_timer")
        _cancel(self, "_send_timer")
        _cancel(self, "_first_timer")
        for stream in list(self.streams.values()):
            _cancel(stream, "_stall")
        self.connection_limits = None  # they see the socket close
        super().connectionLost(reason, _cancelTimeouts=_cancelTimeouts)

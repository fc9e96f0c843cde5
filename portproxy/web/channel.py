# -*- test-case-name: tests.test_pipelining -*-
"""The HTTP/1.1 channel portproxy serves with: twisted.web's, with portproxy's limits.

L{ProxyChannel} adds a deadline for each request head, the send timeout, answers
instead of silent closes, a bound on pipelined bytes, and answering a refused request
before its body (see its docstring). L{channel_protocol} is the site's protocol: the
same channel, or HTTP/2 once ALPN chose it. A connection's first request swaps in
L{_CachingChannel} (L{portproxy.web.request.ProxyRequest}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from portproxy.http.request_head import split_request_head
from portproxy.net.internals import (
    GenericHTTPChannelProtocol,
    arm_abort_timer,
    at_request_boundary,
    begin_parsed_request,
    channel_network_producer,
    channel_request_line,
    current_channel,
    is_handling_request,
    negotiated_protocol,
    pending_client_bytes,
    unparsed_line_bytes,
)
from portproxy.net.limits import ConnectionLimits, unsent_bytes
from portproxy.net.policy import peer_key
from portproxy.net.reactor import ITCPConnection

if TYPE_CHECKING:
    from portproxy.web.request import ProxyRequest

__all__ = ["PIPELINE_BUFFER_LIMIT", "ProxyChannel", "channel_protocol"]

#: Bytes of pipelined requests held while a response is under way: once this many have
#: arrived, the client's socket is not read again until the current request is answered.
PIPELINE_BUFFER_LIMIT = 64 * 1024

# Phases of an HTTP/1.1 connection, for the request-head deadline. _BODY: the body of a
# request not authorized to reach an app, still under the head's deadline.
_BUSY, _HEAD, _IDLE, _BETWEEN, _BODY = 0, 1, 2, 3, 4


def _close_with(status: bytes, message: bytes) -> bytes:
    """A whole JSON error response that closes the connection (no request object)."""
    body = b'{"error": "%s"}' % message
    return (
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (status, len(body), body)
    )


class ProxyChannel(HTTPChannel):
    """twisted.web's HTTP/1.1 channel with portproxy's limits (L{portproxy.net.limits}).

    Adds a deadline for each request head (HTTPChannel's idle timer restarts on every
    byte, so a byte every 20 s kept a connection forever) that also covers the body of
    a request not authorized to reach an app, the send timeout, answers instead of a
    silent close for an overlong head line, answers a refused request before its body
    (L{answer_early}), and refuses transfer codings it cannot frame instead of reading
    the body as the next request.
    """

    transport: ITCPConnection | None
    _limits: ConnectionLimits | None = None
    _phase = _BUSY
    #: Named after the class, as HTTPChannel's own (private) logger would be.
    _send_log = Logger()
    #: HTTPChannel's buffer of pipelined bytes last counted, and its size.
    _counted: list[bytes] | None = None
    _counted_size = 0
    limit_key = ""

    def connectionMade(self) -> None:
        super().connectionMade()
        limits = getattr(getattr(self, "site", None), "limits", None)
        if limits is not None:
            self._limits = limits
            transport = cast(ITCPConnection, self.transport)  # connected by now
            self.limit_key = peer_key(transport.getPeer())
            self._phase = _HEAD
            limits.head_started(self)

    def leave_http11(self) -> ConnectionLimits | None:
        """The connection now speaks another protocol (HTTP/2): stop its HTTP/1.1 limits.

        Returns the limits it reported to, for the HTTP/2 connection to report to.
        """
        limits, self._limits = self._limits, None
        self._phase = _BUSY
        if limits is not None:
            limits.forget(self)
        self._stop_idle_timer()  # nor the idle timeout: it is not HTTP/1.1 any more
        return limits

    def dataReceived(self, data: bytes) -> None:
        head = None
        if data[-4:] == b"\r\n\r\n" and at_request_boundary(self):
            # The common case: one read holds one whole head without a body. It is
            # split in one pass instead of line by line (portproxy.http.request_head).
            head = split_request_head(data)
        if self._phase == _IDLE:
            self._phase = _HEAD
            limits = self._limits
            assert limits is not None
            limits.idle_ended(self)
            if head is None:
                # A head deadline only for a head that is still to come: a whole one
                # is done before any timer could matter.
                limits.head_started(self)
        if head is not None:
            self.resetTimeout()
            begin_parsed_request(self, *head)
            return
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if not is_handling_request(self):
            super().rawDataReceived(data)  # a request body
            return
        # Bytes of later (pipelined) requests, kept until this one is answered.
        # HTTPChannel pauses reading past 16 KiB only when the client is not
        # behind with the response; while it is, its pauseProducing skips the
        # socket (a request is in progress) and every byte piled up here. Pausing
        # the socket is always safe: requestDone and resumeProducing resume it.
        buffered = pending_client_bytes(self)
        if buffered is not self._counted:
            # HTTPChannel starts a new list for each request (and may have put the
            # rest of a request body in it): count it once, then keep count.
            self._counted = buffered
            self._counted_size = sum(map(len, buffered))
        buffered.append(data)
        self._counted_size += len(data)
        if self._counted_size >= PIPELINE_BUFFER_LIMIT:
            channel_network_producer(self).pauseProducing()

    def allHeadersReceived(self) -> None:
        heading = self._phase == _HEAD
        self._phase = _BUSY
        super().allHeadersReceived()  # the request's gotLength decides about the body
        limits = self._limits
        if not heading or limits is None:
            return
        transport = self.transport
        request = self.requests[-1] if self.requests else None
        if (
            self.length != 0
            and request is not None
            and not getattr(request, "body_authorized", True)
            and transport is not None
            and not transport.disconnecting
        ):
            # Not going to an app (portproxy's own routes): the whole request must be
            # in by the head's deadline, and it may still make room at the cap.
            self._phase = _BODY
        else:
            limits.head_done(self)

    def allContentReceived(self) -> None:
        if self._phase == _BODY:
            self._phase = _BUSY
            self._limits.head_done(self)  # type: ignore[union-attr]
        super().allContentReceived()

    def answer_early(self, request: ProxyRequest) -> None:
        """Answer C{request} now, before its body, and close without reading the body.

        For a request that will be refused (not signed in, proxy disabled, bad port):
        reading its body first would let anyone hold a connection by sending it slowly.
        """
        self._forget_limits()
        self.persistent = False
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        line = channel_request_line(self)
        assert line is not None  # _route_body read it before asking for this
        request.requestReceived(*line)
        request.answered_early = True  # the body, if it comes, is dropped

    def _send100Continue(self) -> None:
        transport = self.transport
        if transport is None or transport.disconnecting:
            return  # answered already (answer_early, an early 413)
        super()._send100Continue()  # type: ignore[misc]

    def requestDone(self, request: Request) -> None:
        limits = self._limits
        if limits is None:
            super().requestDone(request)
            return
        self._phase = _BETWEEN
        super().requestDone(request)
        transport = self.transport
        if self._phase != _BETWEEN or transport is None or transport.disconnecting:
            return
        if not self.persistent:
            self._phase = _BUSY
        elif unparsed_line_bytes(self) or self.requests:
            # A pipelined request has started arriving already.
            self._phase = _HEAD
            limits.head_started(self)
        else:
            self._phase = _IDLE
            limits.idle_started(self)

    def headerReceived(self, line: bytes) -> bool:
        # RFC 9112 6.1: only chunked (once, last) can frame a request body. Twisted
        # ignores "identity", and the body would then be read as the next request.
        if line[:18].lower() == b"transfer-encoding:":
            coding = line[18:].strip(b" \t").lower()
            if coding != b"chunked":
                codings = [c.strip() for c in coding.split(b",")]
                if b"chunked" in codings:
                    self._refuse_head(b"400 Bad Request", b"Bad Transfer-Encoding")
                else:
                    self._refuse_head(
                        b"501 Not Implemented", b"Unsupported Transfer-Encoding"
                    )
                return False
        return bool(super().headerReceived(line))

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver would just close; say which part was too long. No request
        # object exists until the request line has been read.
        if self.requests:
            self._refuse_head(
                b"431 Request Header Fields Too Large", b"Header line too long"
            )
        else:
            self._refuse_head(b"414 URI Too Long", b"Request line too long")

    def _refuse_head(self, status: bytes, message: bytes) -> None:
        self._forget_limits()
        transport = cast(ITCPConnection, self.transport)  # a head is being read on it
        transport.write(_close_with(status, message))
        self._stop_reading_requests()
        self.loseConnection()

    def trust(self) -> None:
        """A request on this connection was signed in: it is the last to make room."""
        if self._limits is not None:
            self._limits.trusted(self)

    def head_timed_out(self) -> None:
        """The head did not arrive in time (or room was needed): 408 and close."""
        body, self._phase = self._phase == _BODY, _BUSY
        transport = self.transport
        if transport is None or transport.disconnecting:
            return
        message = b"Request took too long" if body else b"Request head took too long"
        transport.write(_close_with(b"408 Request Timeout", message))
        self._stop_reading_requests()
        self.loseConnection()
        # A client that does not read even the 408 is dropped (as Twisted's timeout does).
        arm_abort_timer(self)

    def reclaim(self) -> None:
        """Close this idle kept-alive connection: a new one needs its place."""
        self._phase = _BUSY
        if self.transport is not None:
            self._stop_reading_requests()
            self.loseConnection()

    def _stop_reading_requests(self) -> None:
        # Closing: whatever the client sends from now on is not a request. (TLS keeps
        # handing the channel data until the client's own close; HTTPChannel reads no
        # request on a connection that is not persistent.)
        self.persistent = False

    def send_timed_out(self) -> None:
        """The client took no byte of the response for --send-timeout: disconnect."""
        transport = self.transport
        if transport is not None:
            self._send_log.info(
                "client {peer} stopped reading: disconnected", peer=str(self.getPeer())
            )
            transport.abortConnection()

    def unsent_bytes(self) -> int | None:
        return unsent_bytes(self.transport)

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if self._limits is not None:
            self._limits.send_paused(self)

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self._limits is not None:
            self._limits.send_resumed(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._forget_limits()
        super().connectionLost(reason)
        self._stop_idle_timer()

    # -- the idle timeout, on one timer per connection ---------------------------------
    #
    # twisted.web's channel (TimeoutMixin) cancels its idle timer when a request is
    # complete and makes a new one when the response is done: a DelayedCall, a heap
    # push and a cancelled call to clean up, per request. Here the timer is made once
    # and the deadline it checks moves instead; the semantics are Twisted's: the time
    # counts from the last byte read, and not at all while a request is handled.

    #: When the connection times out (the clock's seconds), or C{None}: it may not now.
    _idle_until: float | None = None
    _idle_call: IDelayedCall | None = None

    def _idle_clock(self) -> IReactorTime | None:
        return getattr(getattr(self, "site", None), "reactor", None)

    def setTimeout(self, period: float | None) -> float | None:
        clock = self._idle_clock()
        if clock is None:
            return super().setTimeout(period)  # type: ignore[no-any-return]
        previous: float | None = self.timeOut
        self.timeOut = period  # type: ignore[assignment]  # Twisted types it as int
        if period is None:
            self._idle_until = None
            return previous
        self._idle_until = clock.seconds() + period
        if self._idle_call is None:
            self._idle_call = clock.callLater(period, self._idle_check)
        return previous

    def resetTimeout(self) -> None:
        if self._idle_until is None:
            super().resetTimeout()  # a no-op unless Twisted's own timer runs
            return
        clock = self._idle_clock()
        if clock is not None and self.timeOut is not None:
            self._idle_until = clock.seconds() + self.timeOut

    def _stop_idle_timer(self) -> None:
        self._idle_until = None
        call, self._idle_call = self._idle_call, None
        if call is not None and call.active():
            call.cancel()

    def _idle_check(self) -> None:
        self._idle_call = None
        until = self._idle_until
        clock = self._idle_clock()
        if until is None or clock is None:
            return  # a request is being handled: setTimeout arms the timer again
        left = until - clock.seconds()
        if left > 0:
            self._idle_call = clock.callLater(left, self._idle_check)
            return
        self._idle_until = None
        self.timeoutConnection()

    def _forget_limits(self) -> None:
        self._phase = _BUSY
        if self._limits is not None:
            self._limits.forget(self)


class _ChannelProtocol(GenericHTTPChannelProtocol):  # type: ignore[misc]
    """twisted.web's protocol switcher, with a L{ProxyChannel} for HTTP/1.1.

    When ALPN chose HTTP/2, the HTTP/1.1 channel is dropped without being told; it
    must leave the head deadline then.
    """

    def dataReceived(self, data: bytes) -> None:
        if negotiated_protocol(self) is not None:
            return current_channel(self).dataReceived(data)  # type: ignore[no-any-return]
        channel: ProxyChannel = current_channel(self)
        result = super().dataReceived(data)
        if current_channel(self) is not channel:
            channel.leave_http11()
        return result  # type: ignore[no-any-return]


def channel_protocol(factory: object) -> _ChannelProtocol:
    """A connection's protocol for the site: HTTP/1.1 in a L{ProxyChannel}, or HTTP/2."""
    return _ChannelProtocol(ProxyChannel())


class _CachingChannel(ProxyChannel):
    """An HTTP/1.1 channel that asks its socket for its addresses once.

    http.Request asks the channel for its local and peer addresses and whether it is
    TLS on every request: a getsockname() system call, a new address object and an
    interface check each time, for answers that never change. (The class is swapped in
    on the first request, so an idle connection costs nothing extra.)
    """

    _local: IAddress | None = None
    _peer: IAddress | None = None
    _secure: bool | None = None

    def getPeer(self) -> IAddress:
        peer = self._peer
        if peer is None:
            peer = self._peer = super().getPeer()
        return peer

    def getHost(self) -> IAddress:
        local = self._local
        if local is None:
            local = self._local = super().getHost()
        return local

    def isSecure(self) -> bool:
        secure = self._secure
        if secure is None:
            secure = self._secure = super().isSecure()
        return secure

# -*- test-case-name: tests.test_site -*-
"""The twisted.web C{Site} and C{Request} that portproxy serves with.

What changes from stock twisted.web, and why:
 - request bodies are never parsed as forms (the upstream owns them) and are kept in
   memory only while small, spilling to a temporary file beyond that;
 - an optional body size limit answers 413 before the body is read, and a request
   that will be refused (not signed in, proxy disabled, bad port) is answered as soon
   as its head is in, its body never read;
 - the access log can be the combined format, JSON lines, or off.
"""

from __future__ import annotations

import io
import json
import tempfile
from typing import IO, Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from portproxy.errors import write_error
from portproxy.headers import ClientView
from portproxy.limits import ConnectionLimits, address_key, unsent_bytes
from portproxy.splice import send_eagerly
from portproxy.uploads import StreamingUpload

__all__ = [
    "OWN_BODY_LIMIT",
    "PIPELINE_BUFFER_LIMIT",
    "SPOOL_MEMORY_LIMIT",
    "ProxyChannel",
    "ProxyRequest",
    "ProxySite",
]

#: Request bodies up to this size stay in memory; larger ones go to a temporary file.
SPOOL_MEMORY_LIMIT = 1024 * 1024
#: Bodies larger than this (or of unknown length) stream to the app as they arrive;
#: smaller ones are buffered, which lets a request be retried on a fresh connection.
STREAM_THRESHOLD = 64 * 1024
#: The largest body portproxy's own routes take (login form, API calls): a larger one
#: gets 413 as soon as it is declared, or once a chunked one grows past it.
OWN_BODY_LIMIT = 64 * 1024
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
    """twisted.web's HTTP/1.1 channel with portproxy's limits (L{portproxy.limits}).

    Adds a deadline for each request head (HTTPChannel's idle timer restarts on every
    byte, so a byte every 20 s kept a connection forever) that also covers the body of
    a request not authorized to reach an app, the send timeout, answers instead of a
    silent close for an overlong head line, answers a refused request before its body
    (L{answer_early}), and refuses transfer codings it cannot frame instead of reading
    the body as the next request.
    """

    _limits: ConnectionLimits | None = None
    _phase = _BUSY
    #: HTTPChannel's buffer of pipelined bytes last counted, and its size.
    _counted: list[bytes] | None = None
    _counted_size = 0
    limit_key = ""

    def connectionMade(self) -> None:
        super().connectionMade()
        limits = getattr(getattr(self, "site", None), "limits", None)
        if limits is not None:
            self._limits = limits
            transport: Any = self.transport
            peer = transport.getPeer()
            self.limit_key = address_key(str(getattr(peer, "host", None) or peer))
            self._phase = _HEAD
            limits.head_started(self)

    def leave_http11(self) -> None:
        """The connection now speaks another protocol (HTTP/2): stop its HTTP/1.1 limits."""
        limits, self._limits = self._limits, None
        self._phase = _BUSY
        if limits is not None:
            limits.forget(self)

    def dataReceived(self, data: bytes) -> None:
        if self._phase == _IDLE:
            self._phase = _HEAD
            limits = self._limits
            assert limits is not None
            limits.idle_ended(self)
            limits.head_started(self)
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._handlingRequest:  # type: ignore[attr-defined]
            super().rawDataReceived(data)  # a request body
            return
        # Bytes of later (pipelined) requests, kept until this one is answered.
        # HTTPChannel pauses reading past 16 KiB only when the client is not
        # behind with the response; while it is, its pauseProducing skips the
        # socket (a request is in progress) and every byte piled up here. Pausing
        # the socket is always safe: requestDone and resumeProducing resume it.
        buffered: list[bytes] = self._dataBuffer  # type: ignore[attr-defined]
        if buffered is not self._counted:
            # HTTPChannel starts a new list for each request (and may have put the
            # rest of a request body in it): count it once, then keep count.
            self._counted = buffered
            self._counted_size = sum(map(len, buffered))
        buffered.append(data)
        self._counted_size += len(data)
        if self._counted_size >= PIPELINE_BUFFER_LIMIT:
            self._networkProducer.pauseProducing()  # type: ignore[attr-defined]

    def allHeadersReceived(self) -> None:
        heading = self._phase == _HEAD
        self._phase = _BUSY
        super().allHeadersReceived()  # the request's gotLength decides about the body
        limits = self._limits
        if not heading or limits is None:
            return
        transport: Any = self.transport
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

    def answer_early(self, request: Any) -> None:
        """Answer C{request} now, before its body, and close without reading the body.

        For a request that will be refused (not signed in, proxy disabled, bad port):
        reading its body first would let anyone hold a connection by sending it slowly.
        """
        self._forget_limits()
        self.persistent = False
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        request.requestReceived(self._command, self._path, self._version)
        request.answered_early = True  # the body, if it comes, is dropped

    def _send100Continue(self) -> None:
        transport: Any = self.transport
        if transport is None or transport.disconnecting:
            return  # answered already (answer_early, an early 413)
        super()._send100Continue()  # type: ignore[misc]

    def requestDone(self, request: Any) -> None:
        limits = self._limits
        if limits is None:
            super().requestDone(request)
            return
        self._phase = _BETWEEN
        super().requestDone(request)
        transport: Any = self.transport
        if self._phase != _BETWEEN or transport is None or transport.disconnecting:
            return
        if not self.persistent:
            self._phase = _BUSY
        elif self._buffer or self.requests:  # type: ignore[attr-defined]
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
        transport: Any = self.transport
        transport.write(_close_with(status, message))
        self.loseConnection()

    def trust(self) -> None:
        """A request on this connection was signed in: it is the last to make room."""
        if self._limits is not None:
            self._limits.trusted(self)

    def head_timed_out(self) -> None:
        """The head did not arrive in time (or room was needed): 408 and close."""
        body, self._phase = self._phase == _BODY, _BUSY
        transport: Any = self.transport
        if transport is None or transport.disconnecting:
            return
        message = b"Request took too long" if body else b"Request head took too long"
        transport.write(_close_with(b"408 Request Timeout", message))
        self.loseConnection()
        # A client that does not read even the 408 is dropped (as Twisted's timeout does).
        if self.abortTimeout is not None and self._abortingCall is None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def reclaim(self) -> None:
        """Close this idle kept-alive connection: a new one needs its place."""
        self._phase = _BUSY
        if self.transport is not None:
            self.loseConnection()

    def send_timed_out(self) -> None:
        """The client took no byte of the response for --send-timeout: disconnect."""
        transport: Any = self.transport
        if transport is not None:
            self._log.info(
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

    def _forget_limits(self) -> None:
        self._phase = _BUSY
        if self._limits is not None:
            self._limits.forget(self)


class _ChannelProtocol(_GenericHTTPChannelProtocol):  # type: ignore[misc]
    """twisted.web's protocol switcher, with a L{ProxyChannel} for HTTP/1.1.

    When ALPN chose HTTP/2, the HTTP/1.1 channel is dropped without being told; it
    must leave the head deadline then.
    """

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is not None:
            return self._channel.dataReceived(data)  # type: ignore[no-any-return]
        channel: Any = self._channel
        result = super().dataReceived(data)
        if self._channel is not channel:
            channel.leave_http11()
        return result  # type: ignore[no-any-return]


def _channel_protocol(factory: Any) -> _ChannelProtocol:
    return _ChannelProtocol(ProxyChannel())


class _CachingChannel(ProxyChannel):
    """An HTTP/1.1 channel that asks its socket for its own address once.

    http.Request asks the channel for its local address and whether it is TLS on every
    request: a getsockname() system call and an interface check each time, for answers
    that never change. (The class is swapped in on the first request, so an idle
    connection costs nothing extra.)
    """

    _local: Any = None
    _secure: bool | None = None

    def getHost(self) -> Any:
        local = self._local
        if local is None:
            local = self._local = super().getHost()
        return local

    def isSecure(self) -> bool:
        secure = self._secure
        if secure is None:
            secure = self._secure = super().isSecure()
        return secure


class ProxyRequest(Request):
    """A request whose body is bounded and never form-parsed."""

    #: What portproxy believes about the client; set by the root before rendering.
    client_view: ClientView | None = None
    #: The body length the head announced (C{None}: unknown, chunked or HTTP/2 DATA to
    #: come); a CORS preflight must announce 0 (portproxy.auth.guard.allows_preflight).
    body_length: int | None = 0
    #: Set when the body limit was exceeded and a 413 already went out.
    _refused = False
    _received = 0
    #: Over the body limit on HTTP/2: answered with 413 once the body has ended.
    _too_large = False
    #: The body on its way to the app, when it streams (see L{_stream_body}).
    _upload: StreamingUpload | None = None
    _upload_target: Any = None
    #: The body limit of portproxy's own routes, once the route is known to be one.
    _own_limit: int | None = None
    _own_received = 0
    #: Whether the body goes to an app (checked at the head): only then may it take
    #: longer than the head deadline (L{ProxyChannel.allHeadersReceived}).
    body_authorized = False
    #: Answered before the body (refused): the body is never read.
    answered_early = False

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        # On a connection's first request: cache what never changes, and let
        # responses leave now rather than on the next reactor turn.
        if type(channel) is ProxyChannel and getattr(channel, "transport", None):
            channel.__class__ = _CachingChannel
            send_eagerly(channel.transport)
        super().__init__(channel, *args, **kwargs)

    def process(self) -> None:
        """Hand the request to the root's one-step dispatch.

        twisted.web would decode every path segment (C{postpath}) and walk the tree one
        segment at a time; portproxy routes on the raw request target instead, so the
        root is asked once and the walk is skipped.
        """
        site = self.channel.site  # type: ignore[attr-defined]
        dispatch = getattr(site.resource, "dispatch", None)
        if dispatch is None or self.path == b"*":
            super().process()
            return
        self.site = site
        self.prepath = []
        self.postpath = []
        self.sitepath: list[bytes] = []
        if self._too_large:
            self.write(write_error(self, 413, "Request body too large"))
            self.finish()
            return
        try:
            resource = self._upload_target or dispatch(self)
            if not getattr(resource, "proxied", False):
                # portproxy's own answers carry a Date (proxied ones keep the app's).
                self.setHeader(b"date", http.datetimeToString())
            self.render(resource)
        except BaseException:
            self.processingFailed(Failure())

    def gotLength(self, length: int | None) -> None:
        self.body_length = length
        limit = self.channel.site.max_body_size  # type: ignore[attr-defined]
        if limit is not None and length is not None and length > limit:
            self._refuse_body()
            # Twisted still wants somewhere to put the (ignored) bytes.
            self.content = _NullFile()
            return
        if length != 0 and self._route_body(length):
            return
        if length is None:
            self._own_route_body(None)  # not streamed: kept in memory, and bounded
            return
        if length == 0:
            # Most requests: no body, so no spooled file object to build and close.
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def _own_route_body(self, length: int | None) -> bool:
        """The body of a request portproxy answers itself: at most L{OWN_BODY_LIMIT}.

        A larger declared length gets 413 now; a chunked body is counted as it arrives
        (L{handleContentChunk}) and held in memory. Nothing reaches the disk.
        """
        if length is not None and length > OWN_BODY_LIMIT:
            self._refuse_body()
            self.content = _NullFile()
            return True
        self._own_limit = OWN_BODY_LIMIT
        self.content = io.BytesIO()
        return True

    def _route_body(self, length: int | None) -> bool:
        """Decide at the head where a body goes; C{False}: buffer it as usual.

        A refused request is answered now and its body never read; portproxy's own
        routes take a bounded body (L{_own_route_body}); a body for an app above
        L{STREAM_THRESHOLD} (or of unknown length) streams to it from now on, a smaller
        one is buffered, which lets the request be retried on a fresh connection.

        The request line is only handed to the request after the body (in
        C{requestReceived}); here it is read from the channel's private state, so a
        Twisted that changes it just loses this (tests/test_uploads.py pins it).
        """
        channel = self.channel
        command = getattr(channel, "_command", None)
        path = getattr(channel, "_path", None)
        version = getattr(channel, "_version", None)
        # An HTTP/2 stream has no socket: the stream itself is paused (portproxy.http2).
        transport = getattr(channel, "transport", None) or getattr(
            channel, "upload_client", None
        )
        site = getattr(channel, "site", None)
        dispatch = getattr(getattr(site, "resource", None), "dispatch", None)
        if not (command and path and version and transport and dispatch):
            return False
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        gate = dispatch(self)
        target_of = getattr(gate, "proxy_target", None)
        if target_of is None:
            return self._own_route_body(length)  # portproxy's own page or API
        target = target_of(self)
        if target is None:
            # Refused: answered now (HTTP/1.1 closes, HTTP/2 resets the stream); the
            # body is never read, so it cannot hold the connection.
            self.content = _NullFile()
            answer_early = getattr(channel, "answer_early", None)
            if answer_early is not None:
                answer_early(self)
            return True
        self.body_authorized = True
        streams = length is None or length > STREAM_THRESHOLD
        if not streams or (length is None and version not in (b"HTTP/1.1", b"HTTP/2")):
            return False
        # Nothing is buffered from here on: streamed, or read and dropped.
        self.content = _NullFile()
        upload = StreamingUpload(transport, chunked=length is None)
        if target.start_upload(self, upload, length):
            self._upload = upload
            self._upload_target = target
        return True

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused or self._too_large or self.answered_early:
            return
        if self._own_limit is not None:
            self._own_received += len(data)
            if self._own_received > self._own_limit:
                self._refuse_body()
                return
        limit = self.channel.site.max_body_size  # type: ignore[attr-defined]
        if limit is not None:
            self._received += len(data)
            if self._received > limit:
                self._refuse_body()
                return
        if self._upload is not None:
            self._upload.write(data)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused or self.answered_early:
            return
        if self._upload is not None:
            self._upload.finish()
        super().requestReceived(command, path, version)

    def signed_in(self) -> None:
        """The gate found a valid session on this request: trust its connection.

        At the connection cap, connections that never signed in make room first
        (L{portproxy.limits.ConnectionLimits.trusted}).
        """
        trust = getattr(self.channel, "trust", None)
        if trust is not None:
            trust()

    def connectionLost(self, reason: Failure) -> None:
        exchange = getattr(self, "upload_exchange", None)
        if exchange is not None and not exchange.attached:
            # Gone mid-upload: nothing will render this request; close the app's side.
            exchange.client_gone()
            exchange.resource.engine._ended()
            self.upload_exchange = None
        super().connectionLost(reason)

    def _refuse_body(self) -> None:
        # There is no API for answering before the body is read, so write a minimal
        # response and close, as HTTPChannel does for its own 400.
        self._refused = True
        exchange = getattr(self, "upload_exchange", None)
        if exchange is not None and not exchange.attached:
            exchange.client_gone()
            exchange.resource.engine._ended()
            self.upload_exchange = None
        transport = getattr(self.channel, "transport", None)
        if transport is None:
            # An HTTP/2 stream has no socket of its own to write a 413 on: drop the
            # rest of the body and answer 413 when the stream's body has ended.
            self._refused = False
            self._too_large = True
            self.content = _NullFile()
            answer_early = getattr(self.channel, "answer_early", None)
            if answer_early is not None:
                answer_early(self)  # HTTP/2: the 413 now, the body dropped
            return
        if transport is not None:
            transport.write(
                b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n"
                b"Content-Length: 35\r\nConnection: close\r\n\r\n"
                b'{"error": "Request body too large"}'
            )
            transport.loseConnection()


class _NullFile:
    """A sink for the body of a refused request."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: object) -> int:
        return 0

    def read(self, *args: object) -> bytes:
        return b""

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


class ProxySite(Site):
    """A C{Site} with portproxy's body handling, limits and access log.

    @param limits: the process's head deadline, send timeout and connection cap (see
        L{portproxy.limits}); C{None} for none.
    """

    requestFactory = ProxyRequest
    protocol = _channel_protocol  # type: ignore[assignment]
    #: The HTTP/1.1 channel class (for wrappers that build their own protocol).
    make_channel = ProxyChannel
    _access_log = Logger(namespace="portproxy.access")

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: Any,
        access_log: str = "combined",
        max_body_size: int | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.max_body_size = max_body_size
        self.access_log = access_log
        self.limits = limits
        if access_log == "json":
            self._logFormatter = _json_log_formatter

    def close_connections(self, timeout: float) -> Deferred[None]:
        """Wait (at most C{timeout} s) until no client connection has unsent bytes.

        The reactor's own shutdown drops connections without flushing them, which
        would lose a response finished in the last moment. A connection with bytes
        still queued is registered as a writer, so no per-connection bookkeeping is
        needed to find them.
        """
        d: Deferred[None] = Deferred()
        deadline = self.reactor.seconds() + timeout

        def check() -> None:
            writers = self.reactor.getWriters()  # type: ignore[attr-defined]
            busy = [w for w in writers if isinstance(w, tcp.Server)]
            if not busy or self.reactor.seconds() >= deadline:
                d.callback(None)
            else:
                self.reactor.callLater(0.02, check)

        check()
        return d

    def getContentFile(self, length: int | None) -> IO[bytes]:
        # Stock Twisted sends every chunked or >100 kB body to disk; this keeps
        # medium bodies in memory and still bounds memory for large ones.
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_LIMIT)

    def log(self, request: http.Request) -> None:
        if self.access_log == "off":
            return
        self._access_log.info("{line}", line=self._logFormatter(self._logDateTime, request))


def _json_log_formatter(timestamp: str, request: http.Request) -> str:
    address = request.getClientAddress()
    return json.dumps(
        {
            "time": timestamp,
            "client": getattr(address, "host", "-"),
            "method": request.method.decode("latin-1"),
            "uri": request.uri.decode("latin-1"),
            "protocol": request.clientproto.decode("latin-1"),
            "status": request.code,
            "bytes": request.sentLength,
            "referrer": (request.getHeader(b"referer") or b"").decode("latin-1"),
            "agent": (request.getHeader(b"user-agent") or b"").decode("latin-1"),
        }
    )

# -*- test-case-name: tests.test_proxy_http -*-
"""The HTTP proxy engine: one request in, one upstream exchange out, streamed both ways.

L{PortProxyResource} keeps the shape of Twisted's C{ReverseProxyResource} (a resource
that names an upstream host, port and path) but replaces its engine, which speaks
HTTP/1.0, opens a connection per request, buffers without limit and keeps running after
the client left (see docs/design.rst). Requests go over persistent HTTP/1.1 connections
from L{portproxy.http.upstream.UpstreamPool}; the upstream socket is registered as the
response's push producer, so a slow client pauses the upstream and a client that leaves
closes it.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable
from typing import IO, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET, Request

from portproxy.http.compress import (
    Encoder,
    Header,
    acceptable,
    brotli_available,
    eligible,
    header_edits,
    new_encoder,
)
from portproxy.http.errorpages import RELOAD_AFTER, nothing_listening_hint, write_error
from portproxy.http.headers import (
    ClientView,
    forward_request_headers,
    response_header_pairs,
)
from portproxy.http.hostrewrite import HostRewrite, local_host, rewrite_host_and_origin
from portproxy.http.rewrite import rewrite_location, rewrite_set_cookie
from portproxy.http.setcookie import allowed_set_cookies
from portproxy.http.uploads import StreamingUpload
from portproxy.http.upstream import TooManyUpstreams, UpstreamConnection, UpstreamPool
from portproxy.http.wire import ProtocolError, ResponseHead, build_request_head
from portproxy.net.deadlines import Deadlines
from portproxy.net.internals import set_header_values
from portproxy.net.reactor import IClientReactor

with warnings.catch_warnings():
    # twisted.web.proxy imports the deprecated HTTPClient; we only use the resource base.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.proxy import ReverseProxyResource

__all__ = [
    "ExchangeState",
    "PendingExchange",
    "PortProxyResource",
    "ProxyEngine",
    "PublicURL",
]

#: Builds the public URL of C{(port, path_and_query)} for Location rewriting.
PublicURL = Callable[[int, bytes], "bytes | None"]

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.engine")

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


class ExchangeState(enum.Enum):
    """Where one exchange is, as seen from the client's side."""

    #: The upload streams to the app, but twisted.web has not rendered the request
    #: yet: response events wait in the queue (the app may answer early).
    PENDING = "pending"
    #: Rendered: waiting for the app's response head.
    WAITING = "waiting"
    #: The response head was written; the body streams to the client.
    STREAMING = "streaming"
    #: Nothing more goes to the client: answered, broken off, or the client left.
    GONE = "gone"


_PENDING = ExchangeState.PENDING
_WAITING = ExchangeState.WAITING
_STREAMING = ExchangeState.STREAMING
_GONE = ExchangeState.GONE


class PendingExchange(Protocol):
    """What the request holds of an exchange whose upload started before rendering."""

    def attach(self) -> None:
        """The request is rendered: the response may be written now."""

    def abandon(self) -> None:
        """The request will never be rendered (client gone, body refused): end it."""


class ProxyEngine:
    """Shared state of all proxied requests: the connection pool and the settings."""

    def __init__(
        self,
        reactor: IClientReactor,
        *,
        upstream_timeout: float,
        session_cookie: bytes | None = None,
        on_request: Callable[[], None] | None = None,
        rewrite_host: HostRewrite[Request] | None = None,
        compress: bool = False,
    ) -> None:
        self.reactor = reactor
        #: C{--compress on}: text responses go out in br or gzip (SPEC 14).
        self.compress = compress
        #: Whether br may be offered; asked once, not per response.
        self.brotli = compress and brotli_available()
        self.upstream_timeout = upstream_timeout
        self.session_cookie = session_cookie
        #: C{--rewrite-host}: which requests' apps see C{Host: localhost:<port>}
        #: (see hostrewrite); C{None} without the option.
        self.rewrite_host = rewrite_host
        self.on_request = on_request
        #: Each exchange's wait for the app's answer (one timer for all of them).
        self.deadlines: Deadlines[_Exchange] = Deadlines(
            reactor, upstream_timeout, _Exchange.timed_out
        )
        self.pool = UpstreamPool(reactor)
        self.in_flight = 0
        self._drained: list[Deferred[None]] = []

    def _started(self) -> None:
        self.in_flight += 1

    def _ended(self, _: object = None) -> None:
        # Only this module calls it: an exchange ends through its request's finish
        # notification, or through L{_Exchange.abandon}.
        self.in_flight -= 1
        if not self.in_flight:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """Fire when no request is in flight, or after C{timeout} seconds (shutdown)."""
        d: Deferred[None] = Deferred()
        if not self.in_flight:
            d.callback(None)
            return d
        self._drained.append(d)

        def give_up() -> None:
            if not d.called:
                d.callback(None)

        call = self.reactor.callLater(timeout, give_up)

        def cancel_timer(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        d.addBoth(cancel_timer)
        return d

    def close(self) -> Deferred[None]:
        """Close idle upstream connections (at shutdown)."""
        return self.pool.close()


class PortProxyResource(ReverseProxyResource):
    """Proxy one request to C{127.0.0.1:port} (or C{[::1]:port}) at C{path}.

    Built per request by the routing layer once the port is validated and the client
    authorised. C{path} is the upstream request target, byte for byte.
    """

    isLeaf = True
    #: Tells the request not to add its own Date: the app's response has one, or none.
    #: A streamed upload renders this resource directly, without the routing gate.
    proxied = True

    def __init__(
        self,
        engine: ProxyEngine,
        port: int,
        path: bytes,
        *,
        view: ClientView,
        prefix: bytes | None,
        public_url: PublicURL,
        main_origin: bool = False,
    ) -> None:
        # ReverseProxyResource.__init__ only stores these (and builds a children dict).
        self.host = "127.0.0.1"
        self.port = port
        self.path = path
        self.reactor = engine.reactor
        self.engine = engine
        self.view = view
        self.prefix = prefix
        self.public_url = public_url
        #: Served on a path route, same origin as the main host (not a proxy host).
        self.main_origin = main_origin

    #: The exchange L{start_upload} began, which L{render} attaches.
    _upload: _Exchange | None = None

    def render(self, request: Request) -> bytes | int:
        exchange = self._upload
        if exchange is not None:
            # The upload already streams to the app (see start_upload).
            self._upload = None
            exchange.attach()
            return NOT_DONE_YET
        body, length = _request_body(request)
        head = self._head(request, body_length=length)
        if head is None:
            return write_error(request, 400, "Malformed request header")
        exchange = _Exchange(self, request, head, body, length or 0, _WAITING)
        exchange.begin()
        exchange.attach()
        return NOT_DONE_YET

    def start_upload(
        self, request: Request, upload: StreamingUpload, length: int | None
    ) -> PendingExchange | None:
        """Start the exchange as soon as the request head is in, streaming the body.

        Called by the request before its body is read; rendering this resource later
        attaches the response side. The request keeps the returned exchange, to
        L{PendingExchange.abandon} it if it is never rendered. C{None} (nothing
        started) for a malformed head.
        """
        head = self._head(request, body_length=length, chunked=length is None)
        if head is None:
            return None
        exchange = _Exchange(self, request, head, upload, 0, _PENDING)
        self._upload = exchange
        exchange.begin()
        return exchange

    def _head(
        self, request: Request, *, body_length: int | None, chunked: bool = False
    ) -> bytes | None:
        engine = self.engine
        view = self.view
        headers = forward_request_headers(
            request.requestHeaders.getAllRawHeaders(),
            view=view,
            session_cookie=engine.session_cookie,
            prefix=self.prefix,
        )
        rewrite = engine.rewrite_host
        if rewrite is not None and rewrite.applies(request, view.host):
            headers = rewrite_host_and_origin(
                headers, port=self.port, scheme=view.scheme, host=view.host
            )
            default_host = local_host(self.port)
        else:
            default_host = b"127.0.0.1:%d" % self.port
        try:
            return build_request_head(
                request.method,
                self.path,
                headers,
                body_length=body_length,
                default_host=default_host,
                chunked=chunked,
            )
        except ProtocolError:
            return None


def _request_body(request: Request) -> tuple[IO[bytes] | None, int | None]:
    """The buffered body and the Content-Length to send (C{None}: send no framing)."""
    content = request.content
    size = 0
    if content is not None:
        content.seek(0, 2)
        size = content.tell()
    if size:
        return content, size
    headers = request.requestHeaders
    if (
        request.method in _BODY_METHODS
        or headers.hasHeader(b"content-length")
        or headers.hasHeader(b"transfer-encoding")
    ):
        return None, 0
    return None, None


class _FinishWatch:
    """Stands in the request's notification list for one exchange."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    def callback(self, result: object) -> None:
        self.exchange.resource.engine._ended()

    def errback(self, reason: Failure) -> None:
        self.exchange.client_gone(reason)
        self.exchange.resource.engine._ended()


class _Exchange:
    """One request's journey: connect, wait for the head, stream the body."""

    __slots__ = (
        "body",
        "connecting",
        "connection",
        "encoder",
        "head",
        "held",
        "length",
        "queued",
        "request",
        "resource",
        "retried",
        "state",
    )

    def __init__(
        self,
        resource: PortProxyResource,
        request: Request,
        head: bytes,
        body: IO[bytes] | StreamingUpload | None,
        length: int,
        state: ExchangeState,
    ) -> None:
        self.resource = resource
        self.request = request
        self.head = head
        self.body = body
        self.length = length
        #: L{ExchangeState.PENDING} for an upload started before rendering, else
        #: L{ExchangeState.WAITING}.
        self.state = state
        #: Whether the one retry on a fresh connection has been used.
        self.retried = False
        self.connection: UpstreamConnection | None = None
        self.connecting: Deferred[UpstreamConnection] | None = None
        #: Response events that came while PENDING (see L{_defer}).
        self.queued: list[Callable[[], None]] = []
        #: Whether the upstream socket is paused until the request is attached.
        self.held = False
        #: Compresses the response body on its way out (SPEC 14), if it is.
        self.encoder: Encoder | None = None

    def begin(self) -> None:
        """Count the request as in flight and start talking to the app."""
        engine = self.resource.engine
        if engine.on_request is not None:
            engine.on_request()
        engine._started()
        self.start()

    def attach(self) -> None:
        """The request is rendered: responses may be written; play what waited."""
        request = self.request
        # No default Content-Type for upstream responses that have none.
        request.defaultContentType = None
        notifications = getattr(request, "notifications", None)
        if type(notifications) is list:
            # What notifyFinish() does, without two Deferreds and their callback
            # chains per request: http.Request calls callback() when the response is
            # done and errback() when the client has gone.
            notifications.append(_FinishWatch(self))
        else:
            finished = request.notifyFinish()
            finished.addErrback(self.client_gone)
            finished.addBoth(self.resource.engine._ended)
        if self.state is _PENDING:
            self.state = _WAITING
        deadlines = self.resource.engine.deadlines
        if not self.queued and self.state is not _GONE and self not in deadlines:
            deadlines.watch(self)
        queued, self.queued = self.queued, []
        for event in queued:
            if self.state is _GONE:
                break
            event()
        connection = self.connection
        if self.held and connection is not None and connection.transport is not None:
            self.held = False
            connection.transport.resumeProducing()

    def abandon(self) -> None:
        """The request went away before it was rendered: close the app's side, end.

        Does nothing once attached: from then on the request's finish notification
        ends the exchange. Events still queued are dropped with it.
        """
        if self.state is not _PENDING:
            return  # attached (or abandoned already)
        self.client_gone()
        self.resource.engine._ended()

    def _defer(self, event: Callable[[], None]) -> None:
        """Keep a response event until the request is attached (L{attach} plays it)."""
        self.queued.append(event)

    def start(self) -> None:
        engine = self.resource.engine
        if self.state is not _PENDING:
            # An upload's wait for the answer starts when its last byte is in (attach).
            engine.deadlines.watch(self)
        connection = engine.pool.take(self.resource.port)
        if connection is not None:
            self.send(connection)
        else:
            self.open()

    def open(self) -> None:
        d = self.resource.engine.pool.connect(self.resource.port)
        self.connecting = d
        d.addCallbacks(self.connected, self.connect_failed)

    def connected(self, connection: UpstreamConnection) -> None:
        self.connecting = None
        if self.state is _GONE:
            connection.abort()
            return
        self.send(connection)

    def send(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        connection.send(self, self.request.method, self.head, self.body, self.length)

    # -- ResponseSink -----------------------------------------------------------------

    def response_head(self, head: ResponseHead, connection: UpstreamConnection) -> None:
        self._stop_timer()
        if self.state is _PENDING:
            # The app answered before the upload ended (an early 401 or 413, say).
            # twisted.web cannot respond yet; hold the response (and pause reading it).
            self._defer(lambda: self.response_head(head, connection))
            if connection.transport is not None:
                self.held = True
                connection.transport.pauseProducing()
            return
        request = self.request
        request.setResponseCode(head.code, head.reason)
        # ProxyRequest.process adds no Server or Date of its own to a proxied request:
        # the upstream's (or none) pass through.
        out = request.responseHeaders
        prefix = self.resource.prefix
        #: The head as it goes out, by lower-case name: what compression asks about
        #: (a dict lookup, not a name encoding per question).
        sent: dict[bytes, list[bytes]] = {}
        for name, values in response_header_pairs(head.headers):
            lower = name.lower()
            if lower == b"location":
                # Rewritten values are built here: Twisted's setRawHeaders checks them.
                public_url = self.resource.public_url
                values = [
                    rewrite_location(v, prefix=prefix, public_url=public_url)
                    for v in values
                ]
                out.setRawHeaders(name, values)
            elif lower == b"set-cookie":
                values = self._cookies(values, prefix)
                if not values:
                    continue
                out.setRawHeaders(name, values)
            elif lower == b"service-worker-allowed" and self.resource.main_origin:
                # On a path route the app shares the main host's origin: this header
                # would let its service worker control every path of it (sign-in, the
                # home page, the API, other ports). Without it, the worker's scope
                # stays under the app's own folder.
                continue
            else:
                # As read off the wire: already checked free of CR and LF.
                set_header_values(out, name, values)
            sent[lower] = values
        if head.code == 204:
            # RFC 9110 8.6: a 204 carries no Content-Length (twisted.web would send it).
            out.removeHeader(b"content-length")
            sent.pop(b"content-length", None)
        engine = self.resource.engine
        if engine.compress and eligible(head.code, sent.get):
            self._compress(request, engine.brotli, sent.get)
        self.state = _STREAMING
        # A slow client pauses the upstream socket (and a vanished one stops it).
        request.registerProducer(connection.transport, True)

    def _compress(self, request: Request, brotli: bool, header: Header) -> None:
        """Pick the coding for an eligible response and edit its head to match.

        C{header} reads the response head as it stands (lower-case names). Without
        Content-Length, twisted.web frames the body as chunked (HTTP/1.1) or by the
        stream's end (HTTP/2, or an HTTP/1.0 client's closed connection).
        """
        out = request.responseHeaders
        coding = acceptable(
            request.requestHeaders.getRawHeaders(b"accept-encoding"),
            request.method,
            header,
            brotli=brotli,
        )
        for name, values in header_edits(coding, header):
            if values is None:
                out.removeHeader(name)
            else:
                out.setRawHeaders(name, values)
        if coding is not None:
            self.encoder = new_encoder(coding)

    def response_body(self, data: bytes) -> None:
        if self.state is _PENDING:
            self._defer(lambda: self.response_body(data))
            return
        encoder = self.encoder
        if encoder is not None:
            # Flushed per piece: what the app sent is decodable at the client now.
            data = encoder.compress(data)
        self.request.write(data)

    def response_done(self) -> None:
        if self.state is _PENDING:
            self._defer(self.response_done)
            return
        request = self.request
        if self.state is _GONE:
            return
        request.unregisterProducer()
        encoder = self.encoder
        if encoder is not None:
            self.encoder = None
            request.write(encoder.finish())
        request.finish()

    def response_failed(self, reason: Failure, *, retryable: bool) -> None:
        if isinstance(self.body, StreamingUpload):
            # The rest of the upload has nowhere to go; it cannot be replayed either.
            self.body.abandon()
            retryable = False
        if self.state is _PENDING:
            self._defer(lambda: self.response_failed(reason, retryable=False))
            return
        if self.state is _GONE:
            return
        request = self.request
        if self.state is _STREAMING:
            request.unregisterProducer()
            if request.startedWriting:
                # The upstream broke off mid-body: make the client see a broken
                # response, never a clean but truncated one. An HTTP/2 stream must be
                # reset (closing it would end it cleanly); HTTP/1.1 closes the socket.
                self.state = _GONE
                abort = getattr(request.channel, "abortConnection", None)
                if abort is None and _ends_with_the_connection(request):
                    # A body framed by the connection's end (an HTTP/1.0 client, a
                    # compressed body without Content-Length) would look complete
                    # after a FIN: reset the socket instead.
                    transport = getattr(request.channel, "transport", None)
                    abort = getattr(transport, "abortConnection", None)
                if abort is not None:
                    abort()
                else:
                    request.loseConnection()
                return
            # Nothing sent yet: the client can still get a proper 502.
            request.responseHeaders = Headers()
            self.encoder = None
            retryable = False
        if retryable and not self.retried:
            self.retried = True
            self.connection = None
            self.open()
            return
        _log.info(
            "port {port} failed: {error}",
            port=self.resource.port,
            error=reason.getErrorMessage(),
        )
        self._answer(502, f"Port {self.resource.port} sent no valid response")

    # -- failures -----------------------------------------------------------------------

    def connect_failed(self, failure: Failure) -> None:
        self.connecting = None
        if isinstance(self.body, StreamingUpload):
            self.body.abandon()
        if self.state is _PENDING:
            self._defer(lambda: self.connect_failed(failure))
            return
        if self.state is _GONE:
            return
        port = self.resource.port
        if failure.check(TooManyUpstreams):
            # The file-descriptor budget of app connections is spent (HTTP/2 streams
            # to a stalled app, say): the client may try again in a moment.
            self.request.setHeader(b"retry-after", b"1")
            self._answer(503, "Too many open connections to apps")
        elif failure.check(ConnectionRefusedError):
            # A browser's page waits for the app (SPEC 9): it reloads itself until
            # the app listens. Only a GET can be repeated like that.
            waits = self.request.method in (b"GET", b"HEAD")
            self._answer(
                502,
                f"Nothing is listening on port {port}",
                hint=nothing_listening_hint(port) if waits else None,
                reload_after=RELOAD_AFTER if waits else None,
            )
        else:
            self._answer(502, f"Could not connect to port {port}")

    def timed_out(self) -> None:
        if self.state is _PENDING:
            self._defer(self.timed_out)
            return
        if self.state is _GONE or self.state is _STREAMING:
            return
        self._drop_upstream()
        self._answer(504, f"Port {self.resource.port} did not answer in time")

    def client_gone(self, failure: Failure | None = None) -> None:
        if isinstance(self.body, StreamingUpload):
            self.body.abandon()
        self.state = _GONE
        self._stop_timer()
        self._drop_upstream()

    def _drop_upstream(self) -> None:
        if self.connecting is not None:
            connecting, self.connecting = self.connecting, None
            connecting.addErrback(lambda _: None)
            connecting.cancel()
        if self.connection is not None:
            connection, self.connection = self.connection, None
            # Still ours (not back in the pool): mid-response, or mid-upload after an
            # early answer. Either way it cannot carry another request.
            if connection.owner is self:
                connection.abort()

    def _answer(
        self,
        status: int,
        message: str,
        *,
        hint: str | None = None,
        reload_after: int | None = None,
    ) -> None:
        self._stop_timer()
        self.state = _GONE
        request = self.request
        body = write_error(request, status, message, hint=hint, reload_after=reload_after)
        request.write(body)
        request.finish()

    def _stop_timer(self) -> None:
        self.resource.engine.deadlines.cancel(self)

    def _cookies(self, values: list[bytes], prefix: bytes | None) -> list[bytes]:
        # An app must not plant or shadow portproxy's own session cookie.
        values = allowed_set_cookies(values, self.resource.engine.session_cookie)
        if prefix is not None:
            values = [rewrite_set_cookie(v, prefix) for v in values]
        return values


def _ends_with_the_connection(request: Request) -> bool:
    """Whether the client can tell the response's end only by the connection closing."""
    return request.clientproto != b"HTTP/1.1" and not request.responseHeaders.hasHeader(
        b"content-length"
    )

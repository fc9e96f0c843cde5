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

import warnings
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET, Request

from portproxy.http.errorpages import write_error
from portproxy.http.headers import (
    ClientView,
    forward_request_headers,
    response_header_pairs,
)
from portproxy.http.rewrite import rewrite_location, rewrite_set_cookie
from portproxy.http.setcookie import allowed_set_cookies
from portproxy.http.uploads import StreamingUpload
from portproxy.http.upstream import TooManyUpstreams, UpstreamConnection, UpstreamPool
from portproxy.http.wire import ProtocolError, ResponseHead, build_request_head

with warnings.catch_warnings():
    # twisted.web.proxy imports the deprecated HTTPClient; we only use the resource base.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.proxy import ReverseProxyResource

__all__ = ["PortProxyResource", "ProxyEngine", "PublicURL"]

#: Builds the public URL of C{(port, path_and_query)} for Location rewriting.
PublicURL = Callable[[int, bytes], "bytes | None"]

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.engine")

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


class ProxyEngine:
    """Shared state of all proxied requests: the connection pool and the settings."""

    def __init__(
        self,
        reactor: Any,
        *,
        upstream_timeout: float,
        session_cookie: bytes | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.upstream_timeout = upstream_timeout
        self.session_cookie = session_cookie
        self.on_request = on_request
        self.pool = UpstreamPool(reactor)
        self.in_flight = 0
        self._drained: list[Deferred[None]] = []

    def _started(self) -> None:
        self.in_flight += 1

    def _ended(self, _: object = None) -> None:
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

    def render(self, request: Request) -> bytes | int:
        exchange: _Exchange | None = getattr(request, "upload_exchange", None)
        if exchange is not None:
            # The upload already streams to the app (see start_upload).
            exchange.attach()
            return NOT_DONE_YET
        body, length = _request_body(request)
        head = self._head(request, body_length=length)
        if head is None:
            return write_error(request, 400, "Malformed request header")
        exchange = _Exchange(self, request, head, body, length or 0)
        exchange.begin()
        exchange.attach()
        return NOT_DONE_YET

    def start_upload(
        self, request: Request, upload: StreamingUpload, length: int | None
    ) -> bool:
        """Start the exchange as soon as the request head is in, streaming the body.

        Called by the request before its body is read; L{render} later attaches the
        response side. Returns C{False} (nothing started) for a malformed head.
        """
        head = self._head(request, body_length=length, chunked=length is None)
        if head is None:
            return False
        exchange = _Exchange(self, request, head, upload, 0)
        exchange.attached = False
        request.upload_exchange = exchange  # type: ignore[attr-defined]
        exchange.begin()
        return True

    def _head(
        self, request: Request, *, body_length: int | None, chunked: bool = False
    ) -> bytes | None:
        engine = self.engine
        try:
            return build_request_head(
                request.method,
                self.path,
                forward_request_headers(
                    request.requestHeaders.getAllRawHeaders(),
                    view=self.view,
                    session_cookie=engine.session_cookie,
                    prefix=self.prefix,
                ),
                body_length=body_length,
                default_host=b"127.0.0.1:%d" % self.port,
                chunked=chunked,
            )
        except ProtocolError:
            return None


def _request_body(request: Request) -> tuple[Any, int | None]:
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
        "attached",
        "body",
        "connecting",
        "connection",
        "gone",
        "head",
        "held",
        "length",
        "queued",
        "request",
        "resource",
        "retried",
        "streaming",
        "timer",
    )

    def __init__(
        self,
        resource: PortProxyResource,
        request: Request,
        head: bytes,
        body: Any,
        length: int,
    ) -> None:
        self.resource = resource
        self.request = request
        self.head = head
        self.body = body
        self.length = length
        self.gone = False
        self.retried = False
        self.streaming = False
        self.connection: UpstreamConnection | None = None
        self.connecting: Deferred[UpstreamConnection] | None = None
        self.timer: Any = None
        #: Whether the response may be written (the request has been rendered).
        self.attached = True
        #: Response events that came before the request finished arriving.
        self.queued: list[Callable[[], None]] = []
        self.held = False

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
        self.attached = True
        if not self.queued and not self.gone and self.timer is None:
            engine = self.resource.engine
            self.timer = engine.reactor.callLater(engine.upstream_timeout, self.timed_out)
        queued, self.queued = self.queued, []
        for event in queued:
            if self.gone:
                break
            event()
        connection = self.connection
        if self.held and connection is not None and connection.transport is not None:
            self.held = False
            connection.transport.resumeProducing()  # type: ignore[attr-defined]

    def start(self) -> None:
        engine = self.resource.engine
        if self.attached:
            # An upload's wait for the answer starts when its last byte is in (attach).
            self.timer = engine.reactor.callLater(engine.upstream_timeout, self.timed_out)
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
        if self.gone:
            connection.abort()
            return
        self.send(connection)

    def send(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        connection.send(self, self.request.method, self.head, self.body, self.length)

    # -- ResponseSink -----------------------------------------------------------------

    def response_head(self, head: ResponseHead, connection: UpstreamConnection) -> None:
        self._stop_timer()
        if not self.attached:
            # The app answered before the upload ended (an early 401 or 413, say).
            # twisted.web cannot respond yet; hold the response (and pause reading it).
            self.queued.append(lambda: self.response_head(head, connection))
            if connection.transport is not None:
                self.held = True
                connection.transport.pauseProducing()  # type: ignore[attr-defined]
            return
        request = self.request
        request.setResponseCode(head.code, head.reason)
        # ProxyRequest.process adds no Server or Date of its own to a proxied request:
        # the upstream's (or none) pass through.
        out = request.responseHeaders
        prefix = self.resource.prefix
        for name, values in response_header_pairs(head.headers):
            lower = name.lower()
            if lower == b"location":
                values = [
                    rewrite_location(v, prefix=prefix, public_url=self.resource.public_url)
                    for v in values
                ]
            elif lower == b"set-cookie":
                values = self._cookies(values, prefix)
                if not values:
                    continue
            out.setRawHeaders(name, values)
        if head.code == 204:
            # RFC 9110 8.6: a 204 carries no Content-Length (twisted.web would send it).
            out.removeHeader(b"content-length")
        self.streaming = True
        # A slow client pauses the upstream socket (and a vanished one stops it).
        request.registerProducer(connection.transport, True)

    def response_body(self, data: bytes) -> None:
        if not self.attached:
            self.queued.append(lambda: self.response_body(data))
            return
        self.request.write(data)

    def response_done(self) -> None:
        if not self.attached:
            self.queued.append(self.response_done)
            return
        request = self.request
        if self.gone:
            return
        request.unregisterProducer()
        request.finish()

    def response_failed(self, reason: Failure, *, retryable: bool) -> None:
        if isinstance(self.body, StreamingUpload):
            # The rest of the upload has nowhere to go; it cannot be replayed either.
            self.body.abandon()
            retryable = False
        if not self.attached:
            self.queued.append(lambda: self.response_failed(reason, retryable=False))
            return
        if self.gone:
            return
        request = self.request
        if self.streaming:
            request.unregisterProducer()
            if request.startedWriting:
                # The upstream broke off mid-body: make the client see a broken
                # response, never a clean but truncated one. An HTTP/2 stream must be
                # reset (closing it would end it cleanly); HTTP/1.1 closes the socket.
                self.gone = True
                abort = getattr(request.channel, "abortConnection", None)
                if abort is not None:
                    abort()
                else:
                    request.loseConnection()
                return
            # Nothing sent yet: the client can still get a proper 502.
            request.responseHeaders = Headers()
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
        if not self.attached:
            self.queued.append(lambda: self.connect_failed(failure))
            return
        if self.gone:
            return
        port = self.resource.port
        if failure.check(TooManyUpstreams):
            # The file-descriptor budget of app connections is spent (HTTP/2 streams
            # to a stalled app, say): the client may try again in a moment.
            self.request.setHeader(b"retry-after", b"1")
            self._answer(503, "Too many open connections to apps")
        elif failure.check(ConnectionRefusedError):
            self._answer(502, f"Nothing is listening on port {port}")
        else:
            self._answer(502, f"Could not connect to port {port}")

    def timed_out(self) -> None:
        self.timer = None
        if not self.attached:
            self.queued.append(self.timed_out)
            return
        if self.gone or self.streaming:
            return
        self._drop_upstream()
        self._answer(504, f"Port {self.resource.port} did not answer in time")

    def client_gone(self, failure: Failure | None = None) -> None:
        if isinstance(self.body, StreamingUpload):
            self.body.abandon()
        self.gone = True
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

    def _answer(self, status: int, message: str) -> None:
        self._stop_timer()
        self.gone = True
        request = self.request
        body = write_error(request, status, message)
        request.write(body)
        request.finish()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def _cookies(self, values: list[bytes], prefix: bytes | None) -> list[bytes]:
        # An app must not plant or shadow portproxy's own session cookie.
        values = allowed_set_cookies(values, self.resource.engine.session_cookie)
        if prefix is not None:
            values = [rewrite_set_cookie(v, prefix) for v in values]
        return values

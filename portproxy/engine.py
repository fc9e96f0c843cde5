# -*- test-case-name: tests.test_engine -*-
"""The HTTP proxy engine: one request in, one upstream exchange out, streamed both ways.

L{PortProxyResource} keeps the shape of Twisted's C{ReverseProxyResource} (a resource
that names an upstream host, port and path) but replaces its engine, which speaks
HTTP/1.0, opens a connection per request, buffers without limit and keeps running after
the client left (see docs/design.rst). Requests go through an C{Agent} over a persistent
connection pool; the upstream socket is registered as the response's push producer, so a
slow client pauses the upstream and a client that leaves closes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import NOT_DONE_YET, Request

from portproxy.errors import write_error
from portproxy.headers import ClientView, forward_request_headers, response_headers
from portproxy.rewrite import rewrite_location, rewrite_set_cookie
from portproxy.upstream import LoopbackEndpointFactory

with warnings.catch_warnings():
    # twisted.web.proxy imports the deprecated HTTPClient; we only use the resource base.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.proxy import ReverseProxyResource

__all__ = ["PortProxyResource", "ProxyEngine", "PublicURL"]

#: Builds the public URL of C{(port, path_and_query)} for Location rewriting.
PublicURL = Callable[[int, bytes], "bytes | None"]

_log = Logger()

#: Idle upstream connections are dropped sooner than Node's 5 s keep-alive timeout, so a
#: request is never sent on a connection the upstream is closing.
CACHED_CONNECTION_TIMEOUT = 4
MAX_IDLE_PER_PORT = 16

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


def _safe_uri_bytes(target: bytes) -> bytes:
    # Agent refuses request targets outside printable ASCII. Browsers never send raw
    # bytes there; curl may. Percent-encode just those bytes.
    if all(0x21 <= b <= 0x7E for b in target):
        return target
    return b"".join(bytes((b,)) if 0x21 <= b <= 0x7E else b"%%%02X" % b for b in target)


class _QuietClientFactory(_HTTP11ClientFactory):
    # One "Starting factory" log line per upstream connection is noise.
    noisy = False


class _Pool(HTTPConnectionPool):
    _factory = _QuietClientFactory


class ProxyEngine:
    """Shared state of all proxied requests: the agent, its pool and the settings."""

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
        self.pool = _Pool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = MAX_IDLE_PER_PORT
        self.pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
        self.pool.retryAutomatically = True
        self.agent = Agent.usingEndpointFactory(
            reactor, LoopbackEndpointFactory(reactor), pool=self.pool
        )

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
        return self.pool.closeCachedConnections()


class PortProxyResource(ReverseProxyResource):
    """Proxy one request to C{127.0.0.1:port} (or C{[::1]:port}) at C{path}.

    Built per request by the routing layer once the port is validated and the client
    authorised. C{path} is the upstream request target, byte for byte.
    """

    isLeaf = True

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
        super().__init__("127.0.0.1", port, path, engine.reactor)
        self.engine = engine
        self.view = view
        self.prefix = prefix
        self.public_url = public_url

    def render(self, request: Request) -> bytes | int:
        engine = self.engine
        if engine.on_request is not None:
            engine.on_request()
        headers = Headers()
        for name, values in forward_request_headers(
            request.requestHeaders.getAllRawHeaders(),
            view=self.view,
            session_cookie=engine.session_cookie,
            prefix=self.prefix,
        ):
            headers.setRawHeaders(name, values)
        body = _body_producer(request)
        uri = b"http://127.0.0.1:%d%s" % (self.port, _safe_uri_bytes(self.path))
        try:
            d = engine.agent.request(request.method, uri, headers, body)
        except ValueError:
            return write_error(request, 400, "Malformed request")
        # No default Content-Type for upstream responses that have none.
        request.defaultContentType = None
        exchange = _Exchange(self, request, d)
        d.addTimeout(
            engine.upstream_timeout, engine.reactor, onTimeoutCancel=exchange.timed_out
        )
        d.addCallbacks(exchange.got_response, exchange.upstream_failed)
        d.addErrback(exchange.internal_error)
        engine._started()
        finished = request.notifyFinish()
        finished.addErrback(exchange.client_gone)
        finished.addBoth(engine._ended)
        return NOT_DONE_YET


def _body_producer(request: Request) -> FileBodyProducer | None:
    content = request.content
    if content is None:
        return None
    content.seek(0, 2)
    size = content.tell()
    if size == 0 and request.method not in _BODY_METHODS:
        has_body_header = request.requestHeaders.hasHeader(
            b"content-length"
        ) or request.requestHeaders.hasHeader(b"transfer-encoding")
        if not has_body_header:
            return None
    content.seek(0)
    return FileBodyProducer(content)


class _Exchange:
    """One request's journey: waiting for the upstream, then streaming its body."""

    def __init__(
        self, resource: PortProxyResource, request: Request, d: Deferred[IResponse]
    ) -> None:
        self.resource = resource
        self.request = request
        self.d = d
        self.gone = False
        self.pump: _BodyPump | None = None

    def timed_out(self, result: object, timeout: float) -> Failure:
        # Agent reports its own cancellation as ResponseNeverReceived, which
        # addTimeout does not turn into TimeoutError; say what happened here.
        return Failure(TimeoutError(f"no response head within {timeout} s"))

    def got_response(self, response: IResponse) -> None:
        request = self.request
        if self.gone:
            response.deliverBody(_Discard())
            return
        request.setResponseCode(response.code, response.phrase)
        out = request.responseHeaders
        # twisted.web set its own Server and Date: the upstream's (or none) win.
        out.removeHeader(b"server")
        out.removeHeader(b"date")
        prefix = self.resource.prefix
        for name, values in response_headers(response.headers.getAllRawHeaders()):
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
        length = response.length
        if (
            isinstance(length, int)
            and request.method != b"HEAD"
            and response.code not in (204, 304)
        ):
            out.setRawHeaders(b"content-length", [b"%d" % length])
        self.pump = _BodyPump(self)
        response.deliverBody(self.pump)

    def _cookies(self, values: list[bytes], prefix: bytes | None) -> list[bytes]:
        # An app must not plant or shadow portproxy's own session cookie.
        ours = self.resource.engine.session_cookie
        if ours is not None:
            values = [v for v in values if v.split(b"=", 1)[0].strip() != ours]
        if prefix is not None:
            values = [rewrite_set_cookie(v, prefix) for v in values]
        return values

    def upstream_failed(self, failure: Failure) -> None:
        if self.gone:
            return
        request = self.request
        port = self.resource.port
        if failure.check(TimeoutError, CancelledError):
            body = write_error(request, 504, f"Port {port} did not answer in time")
        elif failure.check(ConnectionRefusedError):
            body = write_error(request, 502, f"Nothing is listening on port {port}")
        elif failure.check(ConnectError):
            body = write_error(request, 502, f"Could not connect to port {port}")
        else:
            _log.info(
                "upstream port {port} failed: {error}",
                port=port,
                error=failure.getErrorMessage(),
            )
            body = write_error(
                request, 502, f"Port {port} closed the connection without an answer"
            )
        request.write(body)
        request.finish()

    def internal_error(self, failure: Failure) -> None:
        _log.failure("proxying failed", failure)
        if not self.gone and self.request.channel is not None:
            self.request.loseConnection()

    def client_gone(self, failure: Failure) -> None:
        self.gone = True
        if self.pump is None:
            self.d.cancel()
        else:
            self.pump.stop()


class _BodyPump(Protocol):
    """Receives the upstream body and writes it to the client, with backpressure."""

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    def connectionMade(self) -> None:
        # The transport is Agent's TransportProxyProducer around the upstream socket:
        # registered as a push producer, the client's slowness pauses the upstream.
        self.exchange.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.exchange.request.write(data)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        exchange = self.exchange
        if exchange.gone:
            return
        request = exchange.request
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
        else:
            # The upstream broke off mid-body: make the client see a broken response,
            # never a clean but truncated one.
            exchange.gone = True
            request.loseConnection()


class _Discard(Protocol):
    """Swallows (and stops) the body of a response nobody waits for any more."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

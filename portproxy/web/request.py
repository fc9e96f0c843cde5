# -*- test-case-name: tests.test_uploads -*-
"""The twisted.web C{Request} portproxy serves with, and what it needs from the tree.

What changes from stock twisted.web, and why:
 - request bodies are never parsed as forms (the upstream owns them) and are kept in
   memory only while small, spilling to a temporary file beyond that;
 - an optional body size limit answers 413 before the body is read, and a request
   that will be refused (not signed in, proxy disabled, bad port) is answered as soon
   as its head is in, its body never read;
 - the root is asked once for the leaf (L{Router}) instead of walking the tree.

L{Router}, L{Gate} and L{UploadTarget} are the seams to the resource tree
(L{portproxy.web.root}) and the engine (L{portproxy.http.engine}).
"""

from __future__ import annotations

import io
from typing import Any, Protocol, TypeGuard, runtime_checkable

from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request

from portproxy.http.engine import PendingExchange
from portproxy.http.errorpages import write_error
from portproxy.http.headers import ClientView
from portproxy.http.uploads import StreamingUpload
from portproxy.net.eager import send_eagerly
from portproxy.net.internals import channel_request_line, swap_class
from portproxy.web.channel import ProxyChannel, _CachingChannel, _close_with

__all__ = [
    "OWN_BODY_LIMIT",
    "STREAM_THRESHOLD",
    "Gate",
    "ProxyRequest",
    "Router",
    "UploadTarget",
]

#: Bodies larger than this (or of unknown length) stream to the app as they arrive;
#: smaller ones are buffered, which lets a request be retried on a fresh connection.
STREAM_THRESHOLD = 64 * 1024
#: The largest body portproxy's own routes take (login form, API calls): a larger one
#: gets 413 as soon as it is declared, or once a chunked one grows past it.
OWN_BODY_LIMIT = 64 * 1024
#: The 413 written straight to the socket when an HTTP/1.1 body is over the limit.
_TOO_LARGE = _close_with(b"413 Content Too Large", b"Request body too large")


@runtime_checkable
class Router(Protocol):
    """What the site needs from its root resource (L{portproxy.web.root.PortProxyRoot}).

    A root that has it is asked once per request for the leaf; a plain twisted.web
    resource is walked segment by segment as usual.
    """

    def dispatch(self, request: ProxyRequest) -> IResource:
        """The leaf that answers C{request}, chosen from its Host and raw target."""


class UploadTarget(Protocol):
    """What the request needs from the engine's resource to stream a body to an app."""

    def start_upload(
        self, request: ProxyRequest, upload: StreamingUpload, length: int | None
    ) -> PendingExchange | None:
        """Start the exchange before the body arrives; C{None} if nothing started."""

    def render(self, request: ProxyRequest) -> bytes | int:
        """Attach the response side once the body is in."""


@runtime_checkable
class Gate(Protocol):
    """What the request needs from a leaf that guards an app (the root's proxy gate)."""

    def proxy_target(self, request: ProxyRequest) -> UploadTarget | None:
        """Where the request would go if every check passed, or C{None} (refused)."""


class ProxyRequest(Request):
    """A request whose body is bounded and never form-parsed."""

    #: What portproxy believes about the client; set by the root's dispatch.
    client_view: ClientView | None = None
    #: The exchange an upload started before rendering (L{_route_body}), abandoned if
    #: the request never gets rendered.
    upload_exchange: PendingExchange | None = None
    #: The body length the head announced (C{None}: unknown, chunked or HTTP/2 DATA to
    #: come); a CORS preflight must announce 0 (portproxy.auth.guard.allows_preflight).
    body_length: int | None = 0
    #: Set when the body limit was exceeded and a 413 already went out.
    _refused = False
    _received = 0
    #: Over the body limit on HTTP/2: answered with 413 once the body has ended.
    _too_large = False

    #: The body on its way to the app, when it streams (see L{_route_body}).
    _upload: StreamingUpload | None = None
    _upload_target: UploadTarget | None = None
    #: The leaf dispatched at the head (L{_route_body}), rendered without a second
    #: dispatch.
    _leaf: IResource | None = None
    #: The body limit of portproxy's own routes, once the route is known to be one.
    _own_limit: int | None = None
    _own_received = 0
    #: Whether the body goes to an app (checked at the head): only then may it take
    #: longer than the head deadline (L{ProxyChannel.allHeadersReceived}).
    body_authorized = False
    #: Answered before the body (refused): the body is never read.
    answered_early = False

    # Any: the rest of twisted.web's Request arguments, passed on as they are.
    def __init__(self, channel: http.HTTPChannel, *args: Any, **kwargs: Any) -> None:
        # On a connection's first request: cache what never changes, and let
        # responses leave now rather than on the next reactor turn.
        if type(channel) is ProxyChannel and getattr(channel, "transport", None):
            swap_class(channel, _CachingChannel)
            send_eagerly(channel.transport)
        super().__init__(channel, *args, **kwargs)

    def process(self) -> None:
        """Hand the request to the root's one-step dispatch.

        twisted.web would decode every path segment (C{postpath}) and walk the tree one
        segment at a time; portproxy routes on the raw request target instead, so the
        root is asked once and the walk is skipped.
        """
        site = self.channel.site  # type: ignore[attr-defined]
        router = _router(site)
        if router is None or self.path == b"*":
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
            resource = self._upload_target or self._leaf or router.dispatch(self)
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
        C{requestReceived}); here it is read from the channel's private state
        (L{portproxy.net.internals.channel_request_line}, pinned by a test).
        """
        channel = self.channel
        line = channel_request_line(channel)
        # An HTTP/2 stream has no socket: the stream itself is paused
        # (portproxy.http.http2).
        transport = getattr(channel, "transport", None) or getattr(
            channel, "upload_client", None
        )
        router = _router(getattr(channel, "site", None))
        if not (line and all(line) and transport and router):
            return False
        command, path, version = line
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        gate = self._leaf = router.dispatch(self)
        if not _is_gate(gate):
            return self._own_route_body(length)  # portproxy's own page or API
        target = gate.proxy_target(self)
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
        exchange = target.start_upload(self, upload, length)
        if exchange is not None:
            self.upload_exchange = exchange
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
        (L{portproxy.net.limits.ConnectionLimits.trusted}).
        """
        trust = getattr(self.channel, "trust", None)
        if trust is not None:
            trust()

    def connectionLost(self, reason: Failure) -> None:
        # Gone mid-upload: nothing will render this request; close the app's side.
        self._abandon_upload()
        super().connectionLost(reason)

    def _abandon_upload(self) -> None:
        exchange, self.upload_exchange = self.upload_exchange, None
        if exchange is not None:
            exchange.abandon()  # a no-op once rendered

    def _refuse_body(self) -> None:
        # There is no API for answering before the body is read, so write a minimal
        # response and close, as HTTPChannel does for its own 400.
        self._refused = True
        self._abandon_upload()
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
        transport.write(_TOO_LARGE)
        transport.loseConnection()


def _router(site: object) -> Router | None:
    """The site's root if it dispatches in one step (L{Router}), else C{None}."""
    resource = getattr(site, "resource", None)
    return resource if _is_router(resource) else None


def _is_router(resource: object) -> TypeGuard[Router]:
    return _conforms(resource, Router)


def _is_gate(resource: object) -> TypeGuard[Gate]:
    return _conforms(resource, Gate)


#: Whether a class has what a Protocol asks, by class and Protocol: isinstance() with a
#: runtime-checkable Protocol takes microseconds, and it is asked on every request.
_CONFORMS: dict[tuple[type, object], bool] = {}


def _conforms(value: object, protocol: type) -> bool:
    key = (type(value), protocol)
    known = _CONFORMS.get(key)
    if known is None:
        known = _CONFORMS[key] = isinstance(value, protocol)
    return known


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

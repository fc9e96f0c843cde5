# -*- test-case-name: tests.test_site -*-
"""The twisted.web C{Site} and C{Request} that portproxy serves with.

What changes from stock twisted.web, and why:
 - request bodies are never parsed as forms (the upstream owns them) and are kept in
   memory only while small, spilling to a temporary file beyond that;
 - an optional body size limit answers 413 before the body is read;
 - the access log can be the combined format, JSON lines, or off.
"""

from __future__ import annotations

import json
import tempfile
from typing import IO, Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from portproxy.errors import write_error
from portproxy.headers import ClientView
from portproxy.splice import send_eagerly
from portproxy.uploads import StreamingUpload

__all__ = ["SPOOL_MEMORY_LIMIT", "ProxyRequest", "ProxySite"]

#: Request bodies up to this size stay in memory; larger ones go to a temporary file.
SPOOL_MEMORY_LIMIT = 1024 * 1024
#: Bodies larger than this (or of unknown length) stream to the app as they arrive;
#: smaller ones are buffered, which lets a request be retried on a fresh connection.
STREAM_THRESHOLD = 64 * 1024


class _CachingChannel(HTTPChannel):
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
    #: Set when the body limit was exceeded and a 413 already went out.
    _refused = False
    _received = 0
    #: Over the body limit on HTTP/2: answered with 413 once the body has ended.
    _too_large = False
    #: The body on its way to the app, when it streams (see L{_stream_body}).
    _upload: StreamingUpload | None = None
    _upload_target: Any = None

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        # On a connection's first request: cache what never changes, and let
        # responses leave now rather than on the next reactor turn.
        if type(channel) is HTTPChannel and getattr(channel, "transport", None):
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
        limit = self.channel.site.max_body_size  # type: ignore[attr-defined]
        if limit is not None and length is not None and length > limit:
            self._refuse_body()
            # Twisted still wants somewhere to put the (ignored) bytes.
            self.content = _NullFile()
            return
        if (length is None or length > STREAM_THRESHOLD) and self._stream_body(length):
            return
        super().gotLength(length)

    def _stream_body(self, length: int | None) -> bool:
        """Start proxying now, before the body arrives, when the request may proceed.

        The request line is only handed to the request after the body (in
        C{requestReceived}); here it is read from the channel's private state, so a
        Twisted that changes it just loses streaming (tests/test_uploads.py pins it).
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
        if length is None and version not in (b"HTTP/1.1", b"HTTP/2"):
            return False
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        gate = dispatch(self)
        target_of = getattr(gate, "proxy_target", None)
        if target_of is None:
            return False
        # Nothing is buffered from here on: streamed, or read and dropped.
        self.content = _NullFile()
        target = target_of(self)
        if target is None:
            # Refused. HTTP/2 answers now and drops the body (portproxy.http2);
            # HTTP/1.1 reads the body and render() answers after it.
            answer_early = getattr(channel, "answer_early", None)
            if answer_early is not None:
                answer_early(self)
            return True
        upload = StreamingUpload(transport, chunked=length is None)
        if target.start_upload(self, upload, length):
            self._upload = upload
            self._upload_target = target
        return True

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused or self._too_large:
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
        if self._refused:
            return
        if self._upload is not None:
            self._upload.finish()
        super().requestReceived(command, path, version)

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
    """A C{Site} with portproxy's body handling and access log."""

    requestFactory = ProxyRequest
    _access_log = Logger(namespace="portproxy.access")

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: Any,
        access_log: str = "combined",
        max_body_size: int | None = None,
    ) -> None:
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.max_body_size = max_body_size
        self.access_log = access_log
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

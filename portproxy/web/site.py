# -*- test-case-name: tests.test_pipelining -*-
"""The twisted.web C{Site} that portproxy serves with.

What changes from stock twisted.web, and why: its requests (L{portproxy.web.request})
bound and route their bodies, its HTTP/1.1 channels (L{portproxy.web.channel}) enforce
the connection limits, request bodies spill to a temporary file only past
L{SPOOL_MEMORY_LIMIT}, shutdown waits for unsent responses, and the access log (the
combined format, JSON lines, or off) is formatted and written by
L{portproxy.web.accesslog}, not by twisted.web's formatter and log file.
"""

from __future__ import annotations

import tempfile
from typing import IO

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Site

from portproxy.net.limits import ConnectionLimits
from portproxy.net.reactor import ISiteReactor
from portproxy.web.accesslog import LogClock, Sink, TwistedLogSink, combined_line, json_line
from portproxy.web.channel import channel_protocol
from portproxy.web.request import ProxyRequest

__all__ = ["ACCESS_LOG_NAMESPACE", "SPOOL_MEMORY_LIMIT", "ProxySite"]

#: The access log's namespace (docs/troubleshooting.rst quotes it): the name the site
#: class had before the package was split into folders, so log filters keep working.
ACCESS_LOG_NAMESPACE = "portproxy.site.ProxySite"
#: Request bodies up to this size stay in memory; larger ones go to a temporary file.
SPOOL_MEMORY_LIMIT = 1024 * 1024


class ProxySite(Site):
    """A C{Site} with portproxy's body handling, limits and access log.

    @param limits: the process's head deadline, send timeout and connection cap (see
        L{portproxy.net.limits}); C{None} for none.
    @param access_log_sink: where access-log lines go; C{None}: the Twisted log, in
        the L{ACCESS_LOG_NAMESPACE} namespace.
    """

    requestFactory = ProxyRequest
    protocol = channel_protocol  # type: ignore[assignment]
    reactor: ISiteReactor

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: ISiteReactor,
        access_log: str = "combined",
        max_body_size: int | None = None,
        limits: ConnectionLimits | None = None,
        access_log_sink: Sink | None = None,
    ) -> None:
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.max_body_size = max_body_size
        self.access_log = access_log
        self._access_line = {"combined": combined_line, "json": json_line}.get(access_log)
        self._access_log: Sink = (
            access_log_sink
            if access_log_sink is not None
            else TwistedLogSink(ACCESS_LOG_NAMESPACE, reactor=self.reactor)
        )
        self._log_time = LogClock(self.reactor.seconds)
        self.limits = limits

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
            writers = self.reactor.getWriters()
            busy = [w for w in writers if isinstance(w, tcp.Server)]
            if not busy or self.reactor.seconds() >= deadline:
                d.callback(None)
            else:
                self.reactor.callLater(0.02, check)

        check()
        return d

    def close_access_log(self) -> None:
        """Write out the access log's buffered lines and close its file (shutdown)."""
        self._access_log.close()

    def getContentFile(self, length: int | None) -> IO[bytes]:
        # Stock Twisted sends every chunked or >100 kB body to disk; this keeps
        # medium bodies in memory and still bounds memory for large ones.
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_LIMIT)

    def log(self, request: http.Request) -> None:
        line = self._access_line
        if line is None:
            return
        host = getattr(request.getClientAddress(), "host", None)
        self._access_log.write(
            line(
                host if isinstance(host, str) else None,
                self._log_time(),
                request.method,
                request.uri,
                request.clientproto,
                request.code,
                request.sentLength,
                request.getHeader(b"referer"),
                request.getHeader(b"user-agent"),
            )
        )

# -*- test-case-name: tests.test_pipelining -*-
"""The twisted.web C{Site} that portproxy serves with.

What changes from stock twisted.web, and why: its requests (L{portproxy.web.request})
bound and route their bodies, its HTTP/1.1 channels (L{portproxy.web.channel}) enforce
the connection limits, request bodies spill to a temporary file only past
L{SPOOL_MEMORY_LIMIT}, shutdown waits for unsent responses, and the access log can be
the combined format, JSON lines, or off.
"""

from __future__ import annotations

import json
import tempfile
from typing import IO

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Site

from portproxy.net.internals import access_log_line
from portproxy.net.limits import ConnectionLimits
from portproxy.net.reactor import ISiteReactor
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
    ) -> None:
        super().__init__(
            resource,
            reactor=reactor,
            parsePOSTFormSubmission=False,
            logFormatter=_json_log_formatter if access_log == "json" else None,
        )
        self.max_body_size = max_body_size
        self.access_log = access_log
        # A Logger stored on the class would name itself after the class, module
        # included; the access log's namespace is pinned so it does not move with it.
        self._access_log = Logger(namespace=ACCESS_LOG_NAMESPACE, source=self)
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

    def getContentFile(self, length: int | None) -> IO[bytes]:
        # Stock Twisted sends every chunked or >100 kB body to disk; this keeps
        # medium bodies in memory and still bounds memory for large ones.
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_LIMIT)

    def log(self, request: http.Request) -> None:
        if self.access_log == "off":
            return
        self._access_log.info("{line}", line=access_log_line(self, request))


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

# -*- test-case-name: tests.test_uploads -*-
"""Forwarding a request body to the app while it is still arriving.

twisted.web reads the whole body before a resource renders. For uploads that is a
temporary file the size of the upload and a wait before the app sees the first byte, so
large and chunked bodies are sent on as they arrive instead: L{StreamingUpload} sits
between the client's socket and the upstream connection, frames the bytes for the
upstream, and is the upstream transport's producer, so a slow app slows the client down
(its socket stops being read) and memory stays flat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

if TYPE_CHECKING:
    from portproxy.net.reactor import ITCPConnection

__all__ = ["PENDING_LIMIT", "StreamingUpload"]

#: Bytes held while the upstream connection is being opened, before the client is paused.
PENDING_LIMIT = 256 * 1024


@implementer(IPushProducer)
class StreamingUpload:
    """The body of one request on its way to the app.

    @param client: the client connection's transport (paused and resumed directly:
        during the body twisted.web itself does not pause it).
    @param chunked: frame the body with chunked transfer coding (the client's length
        is unknown); otherwise it is passed as is under the client's Content-Length.
    """

    def __init__(self, client: IPushProducer, *, chunked: bool) -> None:
        self.client = client
        self.chunked = chunked
        self.upstream: ITCPConnection | None = None
        #: Told when the last byte has been written to the upstream (see L{connect}).
        self.on_sent: Callable[[], None] | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.sent = 0
        self.complete = False
        self.abandoned = False
        self._client_paused = False
        self._upstream_paused = False

    # -- from the client side ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """A piece of the body arrived from the client."""
        if self.abandoned or not data:
            return
        framed = b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data
        if self.upstream is None:
            self.pending.append(framed)
            self.pending_size += len(framed)
            if self.pending_size > PENDING_LIMIT:
                self._pause_client()
            return
        self.sent += len(data)
        self.upstream.write(framed)

    def finish(self) -> None:
        """The whole body has arrived."""
        self.complete = True
        if self.abandoned:
            return
        if self.upstream is None:
            if self.chunked:
                self.pending.append(b"0\r\n\r\n")
            return
        if self.chunked:
            self.upstream.write(b"0\r\n\r\n")
        self._detach()
        self._sent()

    # -- from the upstream side --------------------------------------------------------

    def connect(
        self, upstream: ITCPConnection, on_sent: Callable[[], None] | None = None
    ) -> None:
        """The request head went out on C{upstream}: send what waited, then stream.

        C{on_sent} is called once the whole body has been written, and never if it is
        abandoned: until then the upstream connection is mid-request.
        """
        if self.abandoned:
            return
        self.upstream = upstream
        self.on_sent = on_sent
        pending, self.pending, self.pending_size = self.pending, [], 0
        if pending:
            upstream.writeSequence(pending)
            self.sent += sum(len(p) for p in pending)
        if self.complete:
            self.upstream = None
            self._resume_client()
            self._sent()
            return
        upstream.registerProducer(self, True)
        self._resume_client()

    def _sent(self) -> None:
        on_sent, self.on_sent = self.on_sent, None
        if on_sent is not None:
            on_sent()

    def abandon(self) -> None:
        """The upstream is gone: drop the rest of the body, let the client finish."""
        self.abandoned = True
        self.on_sent = None
        self.pending = []
        self.pending_size = 0
        self._detach()
        self._resume_client()

    def _detach(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None and getattr(upstream, "producer", None) is self:
            upstream.unregisterProducer()
        # Whatever the upstream said last, the client must be read again: twisted.web
        # needs the end of this request and the start of the next.
        self._upstream_paused = False
        self._resume_client()

    # -- IPushProducer: the upstream socket's buffer drives the client socket ----------

    def pauseProducing(self) -> None:
        self._upstream_paused = True
        self._pause_client()

    def resumeProducing(self) -> None:
        self._upstream_paused = False
        self._resume_client()

    def stopProducing(self) -> None:
        self.abandon()

    def _pause_client(self) -> None:
        if not self._client_paused and self.client is not None:
            self._client_paused = True
            self.client.pauseProducing()

    def _resume_client(self) -> None:
        if self._client_paused and not self._upstream_paused and self.client is not None:
            self._client_paused = False
            self.client.resumeProducing()

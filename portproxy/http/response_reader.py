# -*- test-case-name: tests.test_response_reader -*-
"""Reading one HTTP/1.1 response from an app, without I/O.

L{ResponseReader} is fed the bytes of an upstream connection and returns events: the
final response head, pieces of the body, and the end of the response. It skips interim
1xx responses, frames the body by HEAD/204/304, Content-Length, chunked coding or the end
of the connection, enforces the head and chunk-line limits, and raises L{ProtocolError}
for anything a client could read differently (RFC 9112 6.3, 11.2). The connection in
L{portproxy.http.upstream} only feeds it and acts on the events. Events are plain tuples
C{(kind, value)} so that the hot path allocates nothing heavier.
"""

from __future__ import annotations

import enum

from portproxy.http.wire import (
    MAX_HEAD_SIZE,
    BodyKind,
    ChunkedDecoder,
    ProtocolError,
    ResponseHead,
    framing_from_fields,
    read_response_head,
)

__all__ = ["DATA", "END", "HEAD", "Event", "ReaderState", "ResponseReader"]

#: Event kinds: C{(HEAD, ResponseHead)}, C{(DATA, bytes)}, C{(END, None)}.
HEAD, DATA, END = range(3)

Event = tuple[int, "ResponseHead | bytes | None"]


class ReaderState(enum.Enum):
    """What the reader expects next."""

    IDLE = "idle"  # no request sent, nothing expected
    HEAD = "head"  # waiting for the final response head
    BODY = "body"  # reading the body
    DONE = "done"  # the response has ended
    BROKEN = "broken"  # a protocol error: the connection is unusable


# The members the per-response path reads, as module globals: on Python 3.11 reading
# an enum member off its class costs about three times a global lookup.
_IDLE, _AWAITING_HEAD, _IN_BODY, _DONE = (
    ReaderState.IDLE,
    ReaderState.HEAD,
    ReaderState.BODY,
    ReaderState.DONE,
)
_NO_BODY, _BY_LENGTH, _BY_CHUNKS = BodyKind.NONE, BodyKind.LENGTH, BodyKind.CHUNKED


class ResponseReader:
    """Turns upstream bytes into response events for one request at a time.

    After C{END}, L{keep_alive} says whether the connection may carry another request
    (the response allows it and nothing followed it).
    """

    __slots__ = (
        "_buffer",
        "_chunks",
        "_kind",
        "_method",
        "_remaining",
        "keep_alive",
        "state",
    )

    def __init__(self) -> None:
        self.state = _IDLE
        self.keep_alive = False
        self._method = b""
        self._buffer = b""
        self._kind = _NO_BODY
        self._remaining = 0
        self._chunks: ChunkedDecoder | None = None

    def start(self, method: bytes) -> None:
        """A request went out: expect its response (C{method} decides HEAD framing)."""
        self.state = _AWAITING_HEAD
        self._method = method
        self._buffer = b""
        self.keep_alive = False

    def feed(self, data: bytes) -> list[Event]:
        """Take bytes from the connection; return the events they complete.

        Raises L{ProtocolError} (and stays broken) for a malformed or oversized response
        or bytes where no response is expected.
        """
        state = self.state
        try:
            if state is _IN_BODY:
                events: list[Event] = []
                self._body(data, events)
                return events
            if state is _AWAITING_HEAD:
                return self._head(data)
        except ProtocolError:
            self.state = ReaderState.BROKEN
            raise
        if state is ReaderState.DONE:
            # Bytes after a complete response: the app pipelines or is confused.
            self.keep_alive = False
            return []
        self.state = ReaderState.BROKEN
        raise ProtocolError("bytes from the app while no response was expected")

    def eof(self) -> list[Event]:
        """The app closed the connection cleanly: end a close-delimited body.

        Raises L{ProtocolError} when that leaves the response incomplete.
        """
        state = self.state
        if state is ReaderState.BODY and self._kind is BodyKind.CLOSE:
            self.state = ReaderState.DONE
            self.keep_alive = False
            return [(END, None)]
        if state is ReaderState.DONE or state is ReaderState.IDLE:
            return []
        self.state = ReaderState.BROKEN
        if state is ReaderState.HEAD:
            raise ProtocolError("the app closed the connection without answering")
        raise ProtocolError("the app closed the connection in the middle of the body")

    # -- internals ----------------------------------------------------------------------

    def _head(self, data: bytes) -> list[Event]:
        held = self._buffer
        if held:
            buffer = held + data
            # The held bytes hold no blank line: search from the last three of them,
            # so that a head trickling in is not searched from its start every time.
            start = len(held) - 3 if len(held) > 3 else 0
        else:
            buffer = data
            start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            start = 0
            if end < 0:
                if len(buffer) > MAX_HEAD_SIZE:
                    raise ProtocolError("response head too large")
                self._buffer = buffer
                return []
            if end > MAX_HEAD_SIZE:
                raise ProtocolError("response head too large")
            # The head with the CRLF of its last line, as read_response_head takes it.
            head, fields = read_response_head(buffer[: end + 2])
            buffer = buffer[end + 4 :]
            code = head.code
            if code >= 200:
                break
            if code == 101:
                # Only the WebSocket relay asks for an upgrade; here it is a stray one.
                raise ProtocolError("unrequested 101 Switching Protocols")
            # Interim responses (100, 103) are dropped: never taken for the final one.
        kind, length, keep_alive = framing_from_fields(self._method, head, fields)
        self._buffer = b""
        self._kind = kind
        if kind is _BY_LENGTH and len(buffer) >= length:
            # The usual small response, its whole body in the read with its head: the
            # same events as _body and _end give, without the steps between.
            self._remaining = 0
            self.state = _DONE
            # Bytes after the body: the app pipelines or is confused.
            self.keep_alive = keep_alive and len(buffer) == length
            if not length:
                return [(HEAD, head), (END, None)]
            body = buffer[:length] if len(buffer) > length else buffer
            return [(HEAD, head), (DATA, body), (END, None)]
        self._remaining = length
        self.keep_alive = keep_alive
        events: list[Event] = [(HEAD, head)]
        if kind is _NO_BODY or (kind is _BY_LENGTH and length == 0):
            self._end(buffer, events)
            return events
        self.state = _IN_BODY
        if kind is _BY_CHUNKS:
            self._chunks = ChunkedDecoder()
        if buffer:
            self._body(buffer, events)
        return events

    def _body(self, data: bytes, events: list[Event]) -> None:
        kind = self._kind
        if kind is _BY_LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                events.append((DATA, data))
                return
            if remaining:
                events.append((DATA, data[:remaining] if len(data) > remaining else data))
            self._remaining = 0
            self._end(data[remaining:], events)
        elif kind is _BY_CHUNKS:
            chunks = self._chunks
            assert chunks is not None
            for piece in chunks.feed(data):
                events.append((DATA, piece))
            if chunks.done:
                self._chunks = None
                self._end(chunks.extra, events)
        elif data:  # CLOSE
            events.append((DATA, data))

    def _end(self, extra: bytes, events: list[Event]) -> None:
        self.state = _DONE
        if extra:
            self.keep_alive = False
        events.append((END, None))

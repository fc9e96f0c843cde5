# -*- test-case-name: tests.test_http2_integrity -*-
"""The rules of portproxy's HTTP/2 server side, with no reactor.

What a request head may be (L{request_head_refusal}), which frames count against a
connection's budget (L{CONTROL_EVENTS}, L{FrameBudget}), the deadlines and budget
themselves (L{H2Limits}), and h2's connection state machine with stream errors where
RFC 9113 asks for them (L{ServerH2}). L{portproxy.http.http2} wires them to Twisted.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from portproxy.routing.hosts import parse_authority

if TYPE_CHECKING:
    from h2.config import H2Configuration
    from hyperframe.frame import DataFrame, Frame, HeadersFrame

__all__ = [
    "CONTROL_EVENTS",
    "FrameBudget",
    "H2Limits",
    "ServerH2",
    "declared_length",
    "request_head_refusal",
]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 9112 origin-form (and the query): visible ASCII only, no spaces or controls.
_ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*\Z")


@dataclass(frozen=True)
class H2Limits:
    """The deadlines and frame budget of HTTP/2 connections.

    @ivar header_timeout: seconds a header block may take to arrive in full.
    @ivar send_timeout: seconds a connection may stay unwritable, or a stream's
        response stay stuck behind a closed flow-control window.
    @ivar idle_timeout: seconds a connection with no open stream stays open (PINGs
        do not count as activity).
    @ivar frame_budget: control frames (PING, SETTINGS, PRIORITY, empty DATA,
        unknown types, refused streams) allowed per C{frame_window} seconds before
        GOAWAY.
    @ivar max_concurrent_streams: the SETTINGS_MAX_CONCURRENT_STREAMS advertised; a
        stream beyond it is refused (REFUSED_STREAM), the connection lives on.
    """

    header_timeout: float = 30.0
    send_timeout: float = 60.0
    idle_timeout: float = 60.0
    frame_budget: int = 1000
    frame_window: float = 10.0
    max_concurrent_streams: int = 100

    @classmethod
    def from_config(cls, config: object) -> H2Limits:
        """The limits for a L{portproxy.config.Config}: the HTTP/1.1 deadlines apply."""
        return cls(
            header_timeout=getattr(config, "header_timeout", None) or cls.header_timeout,
            send_timeout=getattr(config, "send_timeout", None) or cls.send_timeout,
        )


def request_head_refusal(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The status that refuses this request head at the HTTP/2 edge, or C{None}.

    Method and target become the app's HTTP/1.1 request line, so anything that could
    split or bend it is refused here (400), before any header reaches a resource;
    CONNECT is not proxied (405). h2 has already checked which pseudo-headers appear.
    """
    method = path = authority = None
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
        elif name == b":authority":
            authority = value
    if method is None or not _TOKEN.match(method):
        return 400
    if method == b"CONNECT":
        return 405
    if path is None or not (
        _ORIGIN_FORM.match(path) or (path == b"*" and method == b"OPTIONS")
    ):
        return 400
    # RFC 9113 8.3.1: host[:port], no userinfo; by the one parser, so what passes
    # here is what the request's Host check (portproxy.http.headers) accepts.
    if authority is not None and parse_authority(authority, blanks=False) is None:
        return 400
    return None


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The content-length of a request head, 0 when absent (h2 checked its syntax)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0


class FrameBudget:
    """Counts frames in a sliding window of C{window} seconds; over C{limit} is abuse.

    Memory is bounded by C{limit}: only the times of the last C{limit + 1} frames are kept.
    """

    def __init__(self, limit: int, window: float, now: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.now = now
        self._times: deque[float] = deque(maxlen=limit + 1)

    def spend(self) -> bool:
        """Count one frame; C{False} once more than C{limit} fell in the window."""
        now = self.now()
        times = self._times
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        return len(times) <= self.limit


class ServerH2(h2.connection.H2Connection):
    """h2's server connection, with stream errors where RFC 9113 asks for them.

    h2 raises a connection error (GOAWAY, every stream lost) for a HEADERS frame beyond
    SETTINGS_MAX_CONCURRENT_STREAMS and for DATA that does not match content-length.
    RFC 9113 5.1.2 and 8.1.1 make both stream errors: here the one stream is reset
    (REFUSED_STREAM, PROTOCOL_ERROR) and the connection goes on.
    """

    #: Streams refused since the owner last looked (they count against its budget).
    refused = 0
    _admit_over_limit = False

    def __init__(self, config: H2Configuration, max_concurrent_streams: int) -> None:
        super().__init__(config=config)
        # Advertised in the first SETTINGS frame (initiate_connection sends them all).
        self.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: (
                    self.DEFAULT_MAX_HEADER_LIST_SIZE
                ),
            },
        )

    @property
    def open_inbound_streams(self) -> int:
        count = int(super().open_inbound_streams)  # also prunes closed streams
        return 0 if self._admit_over_limit else count

    def _receive_headers_frame(
        self, frame: HeadersFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        limit = self.local_settings.max_concurrent_streams
        if frame.stream_id in self.streams or self.open_inbound_streams < limit:
            return super()._receive_headers_frame(frame)
        # The block must still be decoded (the HPACK context is shared), so h2 opens
        # the stream as usual, and it is reset at once; the request is never seen.
        self._admit_over_limit = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._admit_over_limit = False
        self.reset_stream(frame.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        self.refused += 1
        own = [e for e in events if getattr(e, "stream_id", None) != frame.stream_id]
        return frames, own

    def _receive_data_frame(
        self, frame: DataFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            pass
        # More DATA than content-length said, or less of it by END_STREAM.
        self.reset_stream(frame.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        # The connection's window was spent on bytes nobody will read: give it back.
        self.acknowledge_received_data(frame.flow_controlled_length, frame.stream_id)
        reset = h2.events.StreamReset(
            stream_id=frame.stream_id,
            error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR,
            remote_reset=False,
        )
        return [], [reset]

    def take_refused(self) -> int:
        """How many streams were refused since the last call."""
        count, self.refused = self.refused, 0
        return count


#: Frames that cost the server work and carry nothing for a request: each counts
#: against the connection's L{FrameBudget}.
CONTROL_EVENTS = (
    h2.events.PingReceived,
    h2.events.RemoteSettingsChanged,
    h2.events.PriorityUpdated,
    h2.events.UnknownFrameReceived,
)

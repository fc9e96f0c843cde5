# -*- test-case-name: tests.test_ports -*-
"""The HTTP probe behind the home page's C{http} and C{title} (SPEC 13, to the letter).

It reaches people's apps, so it is identifiable, rare and bounded: a C{GET /} with
C{User-Agent: portproxy-probe} and no cookies, at most 16 KiB read, at most 1 s waited,
at most once a minute per port. The watcher runs it only while someone looks, never on
portproxy's own ports or another user's (whose process it may not see), and never
waits for it: a snapshot shows what is known now.

L{extract_title}, L{answers_http} and L{ProbeSchedule} are pure; L{HttpProbe} is the
thin socket part.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from portproxy.net.reactor import IClientReactor

__all__ = [
    "MAX_BYTES",
    "MIN_INTERVAL",
    "TIMEOUT",
    "USER_AGENT",
    "HttpProbe",
    "ProbeResult",
    "ProbeSchedule",
    "answers_http",
    "extract_title",
    "probe_request",
]

USER_AGENT = b"portproxy-probe"
#: At most this much of the answer is read.
MAX_BYTES = 16 * 1024
#: Seconds the probe waits, connecting included.
TIMEOUT = 1.0
#: Seconds between two probes of one port, at least.
MIN_INTERVAL = 60.0
#: Titles longer than this are cut (with an ellipsis).
MAX_TITLE = 120

_TITLE = re.compile(rb"<title\b[^>]*>(.*?)(?:</title\s*>|$)", re.IGNORECASE | re.DOTALL)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9]")


@dataclass(frozen=True)
class ProbeResult:
    """Whether the port answered HTTP, and the page title it gave (if any)."""

    http: bool
    title: str | None = None


def probe_request(port: int) -> bytes:
    """The probe's request: identifiable, cookie-free, closed after one answer."""
    return (
        b"GET / HTTP/1.1\r\nHost: localhost:%d\r\nUser-Agent: %s\r\n"
        b"Accept: text/html,*/*;q=0.8\r\nConnection: close\r\n\r\n" % (port, USER_AGENT)
    )


def answers_http(data: bytes) -> bool:
    """True when C{data} starts with an HTTP/1.x status line."""
    return _STATUS_LINE.match(data) is not None


def extract_title(data: bytes, limit: int = MAX_TITLE) -> str | None:
    """The C{<title>} in the first 16 KiB of C{data}: entities decoded, whitespace
    collapsed, at most C{limit} characters; C{None} when there is none or it is blank."""
    found = _TITLE.search(data[:MAX_BYTES])
    if found is None:
        return None
    text = html.unescape(found.group(1).decode("utf-8", "replace"))
    # Control characters (NUL included, which html.unescape may produce) are dropped.
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    if not text:
        return None
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def result_of(data: bytes) -> ProbeResult:
    """What a probe's bytes tell: HTTP or not, and the title of an HTTP answer."""
    if not answers_http(data):
        return ProbeResult(False)
    _, _, body = data.partition(b"\r\n\r\n")
    return ProbeResult(True, extract_title(body))


class ProbeSchedule:
    """Which ports are due for a probe: never more than once a minute per port.

    The time of a port's last probe is kept while the port is gone for less than a
    minute, so an app that restarts on every save is not probed on every restart.
    """

    def __init__(self, interval: float = MIN_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[int, float] = {}
        self._running: set[int] = set()

    def due(self, port: int, now: float) -> bool:
        if port in self._running:
            return False
        last = self._last.get(port)
        return last is None or now - last >= self._interval

    def started(self, port: int, now: float) -> None:
        self._last[port] = now
        self._running.add(port)

    def finished(self, port: int) -> None:
        self._running.discard(port)

    def forget_older_than(self, now: float, keep: set[int]) -> None:
        """Drop the ports not in C{keep} whose last probe is a minute old."""
        self._last = {
            port: at
            for port, at in self._last.items()
            if port in keep or now - at < self._interval
        }


class _Reader(Protocol):
    """Sends the probe and keeps the first L{MAX_BYTES} of the answer."""

    def __init__(self, request: bytes, done: Callable[[bytes], None]) -> None:
        self._request = request
        self._done = done
        self._data = bytearray()
        self._finished = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if len(self._data) >= MAX_BYTES:
            self.finish()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.finish()

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._done(bytes(self._data[:MAX_BYTES]))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class HttpProbe:
    """Probes one port on 127.0.0.1 (or ::1), within L{TIMEOUT}.

    L{probe} never fails: an app that refuses, stalls or speaks something else gives
    C{ProbeResult(False)} (or what had arrived when the time was up).
    """

    def __init__(self, reactor: IClientReactor) -> None:
        self._reactor = reactor

    def probe(self, port: int, *, ipv6: bool = False) -> Deferred[ProbeResult]:
        reactor = self._reactor
        # Cancelling ends the probe now, with what has arrived (stop() at shutdown).
        result: Deferred[ProbeResult] = Deferred(lambda _: time_up())
        reader: list[_Reader] = []
        timer: list[IDelayedCall] = []

        def done(data: bytes) -> None:
            if timer and timer[0].active():
                timer[0].cancel()
            if not result.called:
                result.callback(result_of(data))

        def build() -> _Reader:
            reader.append(_Reader(probe_request(port), done))
            return reader[0]

        endpoint: IStreamClientEndpoint
        if ipv6:
            endpoint = TCP6ClientEndpoint(reactor, "::1", port, timeout=TIMEOUT)
        else:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
        connecting = endpoint.connect(Factory.forProtocol(build))

        def failed(failure: Failure) -> None:
            # Refused, timed out, cancelled at the deadline: no HTTP on that port.
            done(b"")

        connecting.addErrback(failed)

        def time_up() -> None:
            if reader:
                reader[0].finish()
            else:
                connecting.cancel()
                done(b"")

        timer.append(reactor.callLater(TIMEOUT, time_up))
        return result

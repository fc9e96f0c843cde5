# -*- test-case-name: tests.test_ports_api -*-
"""C{GET /.portproxy/api/ports} and its Server-Sent Events stream (SPEC 13).

The API's gate (L{portproxy.web.api}) has already checked the session and the host.
C{ports} answers the list as JSON; C{ports/events} keeps the response open and sends a
C{ports} event with the whole list at once and on every change, and a comment every
L{KEEPALIVE} seconds so that front proxies do not time the stream out. Both keep the
watcher polling (it stops when nobody asks or listens).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.server import Request

from portproxy.http.headers import ClientView
from portproxy.net.reactor import IInstanceReactor
from portproxy.ports.discovery import Found
from portproxy.ports.probe import HttpProbe
from portproxy.ports.watch import Entry, PortsWatcher, with_urls
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.publicurl import PortURLs, port_urls, request_base
from portproxy.web.api import STREAMING, ApiError, ApiResource

__all__ = ["KEEPALIVE", "MAX_STREAMS", "PortsApi", "build_ports_api"]

#: Seconds between two keep-alive comments on an event stream.
KEEPALIVE = 15.0
#: Event streams one process serves at once; more get 503 (a tab per user is normal,
#: a runaway script reconnecting in a loop is not).
MAX_STREAMS = 32
#: What an EventSource waits before reconnecting after the stream broke, in ms.
RETRY_MS = 2000


class _Stream:
    """One open event stream: its request, what it sent last, and its URL maker."""

    def __init__(self, request: Request, urls_for: Callable[[int], PortURLs]) -> None:
        self.request = request
        self.urls_for = urls_for
        self.last: list[Entry] | None = None
        self.unsubscribe: Callable[[], None] = lambda: None
        self.open = True

    def send(self, entries: list[Entry]) -> None:
        if not self.open or entries == self.last:
            return
        self.last = entries
        data = json.dumps(with_urls(entries, self.urls_for), separators=(",", ":"))
        self.request.write(b"event: ports\ndata: " + data.encode("utf-8") + b"\n\n")

    def comment(self, text: bytes) -> None:
        if self.open:
            self.request.write(b": " + text + b"\n\n")


class PortsApi:
    """The two routes, their event streams and the streams' keep-alive timer."""

    def __init__(
        self,
        watcher: PortsWatcher,
        *,
        clock: IReactorTime,
        view_of: Callable[[Request], ClientView],
        domains: DomainMatcher,
        max_streams: int = MAX_STREAMS,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.watcher = watcher
        self._clock = clock
        self._view_of = view_of
        self._domains = domains
        self._max_streams = max_streams
        self._keepalive = keepalive
        self._streams: list[_Stream] = []
        self._timer: IDelayedCall | None = None

    def install(self, api: ApiResource) -> None:
        api.add("GET", r"ports", self.list_ports)
        api.add("GET", r"ports/events", self.events)

    def urls_for(self, request: Request) -> Callable[[int], PortURLs]:
        """A port's URLs as the client of C{request} reaches them (absolute)."""
        view = self._view_of(request)
        base = request_base(view.scheme, view.host)
        domains = self._domains
        return lambda port: port_urls(port, base, domains, request_host=view.host)

    @property
    def streams(self) -> int:
        return len(self._streams)

    # -- GET ports -----------------------------------------------------------------

    def list_ports(self, request: Request, fields: Mapping[str, str], body: Any) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        urls_for = self.urls_for(request)

        def answer(entries: list[Entry]) -> None:
            if gone:
                return
            payload = json.dumps(with_urls(entries, urls_for)).encode("utf-8")
            request.setResponseCode(200)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"x-content-type-options", b"nosniff")
            request.setHeader(b"content-length", b"%d" % len(payload))
            request.write(payload)  # twisted.web drops the body of a HEAD
            request.finish()

        self.watcher.snapshot().addCallback(answer)
        return STREAMING

    # -- GET ports/events ------------------------------------------------------------

    def events(self, request: Request, fields: Mapping[str, str], body: Any) -> Any:
        if len(self._streams) >= self._max_streams:
            request.setHeader(b"retry-after", b"5")
            raise ApiError(503, "Too many open event streams")
        request.setResponseCode(200)
        # text/event-stream: compression leaves it alone (SPEC 14), and so must a
        # buffering front proxy (nginx honours X-Accel-Buffering).
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.method == b"HEAD":
            return self._head_only(request)
        stream = _Stream(request, self.urls_for(request))
        self._streams.append(stream)
        request.write(b"retry: %d\n\n" % RETRY_MS)
        stream.unsubscribe = self.watcher.subscribe(stream.send)
        self.watcher.snapshot().addCallback(stream.send)
        request.notifyFinish().addBoth(lambda _: self._closed(stream))
        self._keep_alive()
        return STREAMING

    def _head_only(self, request: Request) -> Any:
        request.write(b"")
        request.finish()
        return STREAMING

    def _closed(self, stream: _Stream) -> None:
        stream.open = False
        stream.unsubscribe()
        if stream in self._streams:
            self._streams.remove(stream)
        if not self._streams and self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _keep_alive(self) -> None:
        if self._timer is None:
            self._timer = self._clock.callLater(self._keepalive, self._tick)

    def _tick(self) -> None:
        self._timer = None
        for stream in list(self._streams):
            stream.comment(b"keep-alive")
        if self._streams:
            self._keep_alive()

    def close(self) -> None:
        """End every event stream and stop the watcher (service shutdown)."""
        for stream in list(self._streams):
            request = stream.request
            self._closed(stream)
            if not request.finished and not getattr(request, "_disconnected", False):
                request.finish()
        self.watcher.stop()


def build_ports_api(
    reactor: IInstanceReactor,
    *,
    own_ports: Collection[int],
    view_of: Callable[[Request], ClientView],
    domains: DomainMatcher,
) -> PortsApi:
    """The ports API of one instance: its watcher probes with the reactor's TCP and
    looks processes up in the reactor's thread pool."""
    from twisted.internet.threads import deferToThreadPool

    def run_blocking(work: Callable[[], Found]) -> Deferred[Found]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    watcher = PortsWatcher(
        reactor,
        run_blocking=run_blocking,
        probe=HttpProbe(reactor).probe,
        own_ports=own_ports,
    )
    return PortsApi(watcher, clock=reactor, view_of=view_of, domains=domains)

# -*- test-case-name: tests.test_ports -*-
"""The ports watcher: discovery and probes while someone looks, nothing otherwise.

While an event-stream subscriber is connected, or the page or API was asked in the
last L{LINGER} seconds, the watcher reads the socket tables every L{INTERVAL} second
(so a port's arrival or departure shows within 2 s) and tells subscribers when the
list changed. When nobody looks, no timer runs at all.

An entry is the SPEC 13 JSON object without its C{urls}, which depend on the host the
client used and are added per request (L{with_urls}).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Literal, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from portproxy.ports.discovery import Discovery, Found, Listener, address_warnings
from portproxy.ports.probe import ProbeResult, ProbeSchedule
from portproxy.routing.publicurl import PortURLs

__all__ = [
    "INTERVAL",
    "LINGER",
    "Entry",
    "PortsWatcher",
    "build_entries",
    "with_urls",
]

_log = Logger(namespace="portproxy.ports")

#: Seconds between two polls while someone looks.
INTERVAL = 1.0
#: Seconds the watcher keeps polling after the last page or API request.
LINGER = 10.0

#: One port, as the API shows it (without C{urls}).
Entry = dict[str, Any]
Access = Literal["public", "private"]
T = TypeVar("T")


def _no_label(port: int) -> str | None:
    return None


def _private(port: int) -> Access:
    return "private"


def build_entries(
    found: Found,
    probes: dict[int, ProbeResult],
    *,
    own_ports: Collection[int],
    label_of: Callable[[int], str | None] = _no_label,
    access_of: Callable[[int], Access] = _private,
) -> list[Entry]:
    """One entry per listening port, sorted by port (the SPEC 13 shape, less C{urls},
    plus C{warnings} about its bind addresses)."""
    by_port: dict[int, list[Listener]] = {}
    for listener in found.listeners:
        by_port.setdefault(listener.port, []).append(listener)
    entries: list[Entry] = []
    for port in sorted(by_port):
        listeners = by_port[port]
        addresses = sorted(
            {(listener.address, listener.family) for listener in listeners},
            key=lambda pair: (pair[1], pair[0]),
        )
        owner = next((found.owners[x] for x in listeners if x in found.owners), None)
        user = next((found.users.get(x) for x in listeners if found.users.get(x)), None)
        # Only the listeners portproxy opened: an app in the same process (a test's
        # upstream, a .tac with other services) is still an app.
        is_self = port in own_ports
        probe = None if is_self else probes.get(port)
        entries.append(
            {
                "port": port,
                "addresses": [{"address": a, "family": f} for a, f in addresses],
                "pid": owner.pid if owner else None,
                "process": owner.process if owner else None,
                "command": owner.command if owner else None,
                "cwd": owner.cwd if owner else None,
                "user": owner.user if owner and owner.user else user,
                "http": probe.http if probe else None,
                "title": probe.title if probe else None,
                "label": label_of(port),
                "access": access_of(port),
                "self": is_self,
                "warnings": [] if is_self else address_warnings(addresses),
            }
        )
    return entries


def with_urls(entries: list[Entry], urls_for: Callable[[int], PortURLs]) -> list[Entry]:
    """The entries as one client sees them: each with its C{urls} (C{None} for
    portproxy's own ports, which are not linked)."""
    out = []
    for entry in entries:
        shown = dict(entry)
        shown["urls"] = None if entry["self"] else dict(urls_for(entry["port"]))
        warnings = shown.pop("warnings")
        shown["warnings"] = warnings  # last, after the SPEC fields
        out.append(shown)
    return out


class PortsWatcher:
    """Keeps the list of listening ports current while someone looks.

    @param clock: for the poll timer, the linger and the probes' once-a-minute rule.
    @param run_blocking: runs the process lookup off the reactor thread
        (C{deferToThreadPool} in production; tests run it inline).
    @param probe: C{probe(port, ipv6=...)}, the HTTP probe; C{None} disables probing.
    @param own_ports: portproxy's own listening ports (marked C{self}, never probed).
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        run_blocking: Callable[[Callable[[], Found]], Deferred[Found]],
        probe: Callable[..., Deferred[ProbeResult]] | None,
        own_ports: Collection[int],
        discovery: Discovery | None = None,
        interval: float = INTERVAL,
        linger: float = LINGER,
    ) -> None:
        self._clock = clock
        self._run_blocking = run_blocking
        self._probe = probe
        self._own_ports = own_ports
        self._discovery = discovery if discovery is not None else Discovery(netlink=True)
        self._interval = interval
        self._linger = linger
        #: Hooks of the sharing feature: a port's label and its access level.
        self.label_of: Callable[[int], str | None] = _no_label
        self.access_of: Callable[[int], Access] = _private
        self._found: Found | None = None
        self._entries: list[Entry] | None = None
        self._fresh_at: float | None = None
        self._subscribers: list[Callable[[list[Entry]], None]] = []
        self._waiters: list[Deferred[list[Entry]]] = []
        self._last_interest = float("-inf")
        self._timer: IDelayedCall | None = None
        self._polling = False
        self._stopped = False
        self._schedule = ProbeSchedule()
        self._probe_results: dict[int, ProbeResult] = {}
        self._probing: dict[int, Deferred[ProbeResult]] = {}

    # -- what the API and the page call --------------------------------------------

    @property
    def running(self) -> bool:
        """True while a poll is due or under way (someone looks)."""
        return self._timer is not None or self._polling

    @property
    def entries(self) -> list[Entry] | None:
        """The last poll's entries, or C{None} before the first one."""
        return self._entries

    def touch(self) -> None:
        """Someone asked (the page or the API): keep polling for L{LINGER} seconds."""
        self._last_interest = self._clock.seconds()
        self._ensure_running()

    def snapshot(self) -> Deferred[list[Entry]]:
        """The current entries: at once when the last poll is fresh, else after the
        poll that starts now (the socket tables, not the probe, which never waits)."""
        self.touch()
        now = self._clock.seconds()
        if (
            self._entries is not None
            and self._fresh_at is not None
            and now - self._fresh_at <= self._interval
        ) or self._stopped:
            return succeed(list(self._entries or []))
        waiter: Deferred[list[Entry]] = Deferred()
        self._waiters.append(waiter)
        if not self._polling:
            self._poll()
        return waiter

    def ports_of(self, request: object = None) -> list[Entry] | None:
        """Entries for a page rendered now, without waiting: the last poll's when it
        is fresh, else the socket tables read now with the processes known so far
        (C{urls} left C{None} for the page to fill). C{None} when the system does not
        tell which ports listen."""
        self.touch()
        now = self._clock.seconds()
        entries = self._entries
        if (
            entries is None
            or self._fresh_at is None
            or now - self._fresh_at > self._interval
        ):
            listeners = self._discovery.read_listeners()
            if listeners is not None:
                entries = build_entries(
                    self._discovery.partial(listeners),
                    self._probe_results,
                    own_ports=self._own_ports,
                    label_of=self.label_of,
                    access_of=self.access_of,
                )
        if entries is None:
            return None
        return [{**entry, "urls": None} for entry in entries]

    def subscribe(self, listener: Callable[[list[Entry]], None]) -> Callable[[], None]:
        """Call C{listener} with the entries on every change; returns the function
        that unsubscribes. Polling runs while any subscriber is left."""
        self._subscribers.append(listener)
        self._ensure_running()

        def unsubscribe() -> None:
            if listener in self._subscribers:
                self._subscribers.remove(listener)

        return unsubscribe

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def changed(self) -> None:
        """Something the entries show changed outside discovery (a label, an access
        level): rebuild them and tell the subscribers."""
        if self._found is not None:
            self._publish(self._found)

    def stop(self) -> None:
        """Stop polling and probing for good (service shutdown)."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for probing in list(self._probing.values()):
            probing.cancel()
        self._subscribers.clear()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(list(self._entries or []))

    # -- polling -------------------------------------------------------------------

    def _watched(self) -> bool:
        return bool(self._subscribers) or (
            self._clock.seconds() - self._last_interest < self._linger
        )

    def _ensure_running(self) -> None:
        if not self._stopped and self._timer is None and not self._polling:
            self._poll()

    def _poll(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._polling = True
        d = self._discover()
        d.addCallback(self._polled)
        d.addErrback(self._poll_failed)
        d.addBoth(self._next)

    def _discover(self) -> Deferred[Found]:
        discovery = self._discovery
        listeners = discovery.read_listeners()  # cheap: two small kernel tables
        if listeners is None:
            return self._run_blocking(discovery.discover)
        cached = discovery.cached(listeners)
        if cached is not None:
            return succeed(cached)
        return self._run_blocking(lambda: discovery.resolve(listeners))

    def _polled(self, found: Found) -> None:
        if self._stopped:
            return
        self._fresh_at = self._clock.seconds()
        self._publish(found)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(list(self._entries or []))
        self._start_probes()

    def _poll_failed(self, failure: Failure) -> None:
        _log.failure("Port discovery failed", failure)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(list(self._entries or []))

    def _next(self, ignored: object) -> None:
        self._polling = False
        if self._stopped or not self._watched():
            return  # nobody looks: no timer at all
        self._timer = self._clock.callLater(self._interval, self._poll)

    def _publish(self, found: Found) -> None:
        self._found = found
        entries = build_entries(
            found,
            self._probe_results,
            own_ports=self._own_ports,
            label_of=self.label_of,
            access_of=self.access_of,
        )
        if entries == self._entries:
            return
        self._entries = entries
        for listener in list(self._subscribers):
            try:
                listener(entries)
            except Exception:
                _log.failure("A ports subscriber failed")

    # -- probing -------------------------------------------------------------------

    def _start_probes(self) -> None:
        if self._probe is None or self._entries is None:
            return
        now = self._clock.seconds()
        ports = {entry["port"] for entry in self._entries}
        self._schedule.forget_older_than(now, keep=ports)
        for port in list(self._probe_results):
            if port not in ports and self._schedule.due(port, now):
                del self._probe_results[port]
        for entry in self._entries:
            port = entry["port"]
            # Only apps whose process portproxy may see (the user's own): another
            # user's service (a database, sshd) is listed, not poked every minute.
            if entry["self"] or entry["pid"] is None:
                continue
            if not self._schedule.due(port, now):
                continue
            ipv6 = all(a["family"] == "ipv6" for a in entry["addresses"])
            self._schedule.started(port, now)
            d = self._probe(port, ipv6=ipv6)
            self._probing[port] = d
            d.addBoth(self._probed, port)

    def _probed(self, result: ProbeResult | Failure, port: int) -> None:
        self._probing.pop(port, None)
        self._schedule.finished(port)
        if self._stopped or not isinstance(result, ProbeResult):
            return
        self._probe_results[port] = result
        if self._found is not None:
            self._publish(self._found)

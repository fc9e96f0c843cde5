# -*- test-case-name: tests.test_ports -*-
"""The ports watcher: discovery and probes while someone looks, nothing otherwise.

While an event-stream subscriber is connected, or the page or API was asked in the
last L{LINGER} seconds, the watcher reads the socket tables every L{INTERVAL} second
(so a port's arrival or departure shows within 2 s) and tells subscribers when the
list changed. When nobody looks, no timer runs at all.

An entry is the SPEC 13 JSON object without its C{urls}, which depend on the host the
client used and are added per request (L{with_urls}).

Its cost stays flat however many ports listen (issue 16): at most L{MAX_PROBED} ports
are probed per round (the lowest by number; the others say so in their warnings), at
most L{MAX_CONCURRENT_PROBES} at a time, and probe answers reach the entries and the
subscribers together, at most once per L{PUBLISH_DELAY}, not once per answer.
"""

from __future__ import annotations

from collections import deque
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
    "MAX_CONCURRENT_PROBES",
    "MAX_NAME",
    "MAX_PROBED",
    "MAX_TEXT",
    "PUBLISH_DELAY",
    "Entry",
    "PortsWatcher",
    "build_entries",
    "cap",
    "probe_targets",
    "with_urls",
]

_log = Logger(namespace="portproxy.ports")

#: Seconds between two polls while someone looks.
INTERVAL = 1.0
#: Seconds the watcher keeps polling after the last page or API request.
LINGER = 10.0
#: Ports probed per round at most: the lowest-numbered ones portproxy may probe.
MAX_PROBED = 256
#: Probes out at once at most; the others wait in line.
MAX_CONCURRENT_PROBES = 16
#: Seconds probe answers are gathered before the entries are rebuilt and published.
PUBLISH_DELAY = 0.25
#: Characters of a command line or working directory shown at most.
MAX_TEXT = 4096
#: Characters of a process name shown at most.
MAX_NAME = 256

#: One port, as the API shows it (without C{urls}).
Entry = dict[str, Any]
Access = Literal["public", "private"]
T = TypeVar("T")


def _no_label(port: int) -> str | None:
    return None


def _private(port: int) -> Access:
    return "private"


def cap(text: str | None, limit: int) -> str | None:
    """C{text} cut to C{limit} characters, the last one an ellipsis when it was longer
    (a command line can be megabytes; the page and every event carry it)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _probeable(entry: Entry) -> bool:
    # Only apps whose process portproxy may see (the user's own): another user's
    # service (a database, sshd) is listed, not poked every minute.
    return not entry["self"] and entry["pid"] is not None


def probe_targets(entries: list[Entry], limit: int = MAX_PROBED) -> dict[int, bool]:
    """The ports to probe this round, lowest first, each with whether to reach it
    over IPv6 (it listens on IPv6 only): at most C{limit} of them."""
    targets: dict[int, bool] = {}
    for entry in entries:
        if len(targets) >= limit:
            break
        if _probeable(entry):
            ipv6 = all(a["family"] == "ipv6" for a in entry["addresses"])
            targets[entry["port"]] = ipv6
    return targets


def _not_probed(limit: int) -> str:
    return (
        f"HTTP not probed: portproxy probes only the {limit} lowest-numbered ports "
        "of your apps, and more listen."
    )


def build_entries(
    found: Found,
    probes: dict[int, ProbeResult],
    *,
    own_ports: Collection[int],
    label_of: Callable[[int], str | None] = _no_label,
    access_of: Callable[[int], Access] = _private,
    max_probed: int | None = None,
) -> list[Entry]:
    """One entry per listening port, sorted by port (the SPEC 13 shape, less C{urls},
    plus C{warnings} about its bind addresses).

    @param max_probed: how many ports the watcher probes (L{probe_targets}); the
        probeable ports beyond them get a warning saying so. C{None}: no probing.
    """
    by_port: dict[int, list[Listener]] = {}
    for listener in found.listeners:
        by_port.setdefault(listener.port, []).append(listener)
    entries: list[Entry] = []
    probeable = 0
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
        entry: Entry = {
            "port": port,
            "addresses": [{"address": a, "family": f} for a, f in addresses],
            "pid": owner.pid if owner else None,
            "process": cap(owner.process, MAX_NAME) if owner else None,
            "command": cap(owner.command, MAX_TEXT) if owner else None,
            "cwd": cap(owner.cwd, MAX_TEXT) if owner else None,
            "user": owner.user if owner and owner.user else user,
            "http": probe.http if probe else None,
            "title": probe.title if probe else None,
            "label": label_of(port),
            "access": access_of(port),
            "self": is_self,
            "warnings": [] if is_self else address_warnings(addresses),
        }
        if max_probed is not None and _probeable(entry):
            probeable += 1
            if probeable > max_probed:
                entry["warnings"].append(_not_probed(max_probed))
        entries.append(entry)
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
        #: This round's ports to probe (port -> over IPv6), and those waiting in line.
        self._targets: dict[int, bool] = {}
        self._queue: deque[int] = deque()
        self._queued: set[int] = set()
        self._starting = False
        self._flush: IDelayedCall | None = None

    # -- what the API and the page call --------------------------------------------

    @property
    def running(self) -> bool:
        """True while a poll is due or under way (someone looks)."""
        return self._timer is not None or self._polling

    @property
    def probing(self) -> int:
        """How many probes are out now."""
        return len(self._probing)

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
                entries = self._build(self._discovery.partial(listeners))
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
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self._queue.clear()
        self._queued.clear()
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

    def _build(self, found: Found) -> list[Entry]:
        return build_entries(
            found,
            self._probe_results,
            own_ports=self._own_ports,
            label_of=self.label_of,
            access_of=self.access_of,
            max_probed=None if self._probe is None else MAX_PROBED,
        )

    def _publish(self, found: Found) -> None:
        # Whatever probe answers were waiting for a flush are in this build.
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self._found = found
        entries = self._build(found)
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
        """Queue this round's due ports (at most L{MAX_PROBED}) and start the first."""
        if self._probe is None or self._entries is None:
            return
        now = self._clock.seconds()
        ports = {entry["port"] for entry in self._entries}
        self._schedule.forget_older_than(now, keep=ports)
        for port in list(self._probe_results):
            if port not in ports and self._schedule.due(port, now):
                del self._probe_results[port]
        self._targets = probe_targets(self._entries)
        for port in self._targets:
            if port not in self._queued and self._schedule.due(port, now):
                self._queue.append(port)
                self._queued.add(port)
        self._start_queued()

    def _start_queued(self) -> None:
        """Start queued probes while fewer than L{MAX_CONCURRENT_PROBES} are out;
        drop the line when nobody looks any more."""
        if self._starting or self._probe is None:
            return  # a probe that answered at once, from inside the loop below
        if self._stopped or not self._watched():
            self._queue.clear()
            self._queued.clear()
            return
        self._starting = True
        try:
            while self._queue and len(self._probing) < MAX_CONCURRENT_PROBES:
                port = self._queue.popleft()
                self._queued.discard(port)
                ipv6 = self._targets.get(port)
                now = self._clock.seconds()
                if ipv6 is None or not self._schedule.due(port, now):
                    continue  # gone since it was queued, or probed meanwhile
                self._schedule.started(port, now)
                d = self._probe(port, ipv6=ipv6)
                self._probing[port] = d
                d.addBoth(self._probed, port)
        finally:
            self._starting = False

    def _probed(self, result: ProbeResult | Failure, port: int) -> None:
        self._probing.pop(port, None)
        self._schedule.finished(port)
        if self._stopped:
            return
        if isinstance(result, ProbeResult):
            self._probe_results[port] = result
            if self._flush is None:
                self._flush = self._clock.callLater(PUBLISH_DELAY, self._flushed)
        self._start_queued()

    def _flushed(self) -> None:
        self._flush = None
        if self._found is not None and not self._stopped:
            self._publish(self._found)

# -*- test-case-name: tests.test_limits -*-
"""Limits against hostile or broken clients (SPEC 9, options in docs/options.rst).

 - the request head must arrive within C{--header-timeout} (a deadline, not an idle
   timer that every byte restarts);
 - a client that takes no byte of a response for C{--send-timeout} is disconnected;
 - a request that is not yet authorized to reach an app (portproxy's own routes: the
   sign-in form...) must arrive whole, body included, by the same deadline;
 - at most C{--max-connections} client connections are held; when the cap is reached,
   room is made by trust first (L{ConnectionLimits.trusted}: a request on the
   connection was signed in): (a) an untrusted connection idle between requests, or
   whose HTTP/2 streams only wait on the client, at once, oldest first; (b) a
   connection still sending its head (or an unauthorized body) older than
   L{head_grace}: from an address that holds several first, else the oldest; (c) a
   trusted connection unused for 5 s, oldest first; else accepting pauses until one
   closes or a head passes its grace (the rest wait in the listen queue). A trusted
   connection with a request under way is never closed to make room;
 - when file descriptors run out, accepting backs off instead of spinning;
 - upstream connections have a budget of their own (L{upstream_budget}), so that the
   client connections always keep their descriptors.

The numbers and address rules are plain functions (L{portproxy.net.policy}); the accept
loop is L{portproxy.net.accept}. L{ConnectionLimits} is the one object per process that
the HTTP channels (L{portproxy.web.channel}, L{portproxy.http.http2}) report to and that
accepts on the listening ports; it only needs a clock.
"""

from __future__ import annotations

import fcntl
import termios
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime, ITransport
from twisted.logger import Logger

from portproxy.net.accept import ACCEPT_BACKOFF, PortAcceptor

if TYPE_CHECKING:
    from twisted.internet.tcp import Server
from portproxy.net.internals import queued_write_bytes
from portproxy.net.policy import (
    Network,
    head_grace,
    peer_key,
    plan_fd_limit,
    shared_address,
    upstream_budget,
)

__all__ = [
    "FULL_RECHECK",
    "IDLE_RECLAIM_AFTER",
    "MAX_LEAVING",
    "RECLAIM_SCAN",
    "ConnectionLimits",
    "Limited",
    "current_upstream_budget",
    "fit_fd_limit",
    "unsent_bytes",
]

#: How many of the oldest head-phase connections are looked at to make room.
RECLAIM_SCAN = 256
#: A trusted kept-alive connection unused for this long may be closed to make room at
#: the cap (an untrusted one may be closed at once).
IDLE_RECLAIM_AFTER = 5.0
#: While at the cap with clients waiting, how often to look for room again.
FULL_RECHECK = 1.0
#: Connections closed to make room whose socket is not closed yet, at most (each still
#: holds a descriptor: they come out of portproxy.net.policy.FD_RESERVE).
MAX_LEAVING = 32

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.limits")


# -- what the limits need from a connection ---------------------------------------------


class Limited(Protocol):
    """A client connection (HTTP/1.1, a TLS port's first-byte wait, an HTTP/2
    connection's L{_H2Watch}), as seen by L{ConnectionLimits}."""

    #: The L{portproxy.net.policy.address_key} of the client.
    limit_key: str

    def head_timed_out(self) -> None:
        """Answer 408 and close: the head took too long (or room is needed)."""

    def reclaim(self) -> None:
        """Close this idle kept-alive connection to make room for a new one."""

    def send_timed_out(self) -> None:
        """Disconnect: the client took no byte of the response for too long."""

    def unsent_bytes(self) -> int | None:
        """Bytes written but not yet taken by the client (C{None}: unknown)."""


# Any: a transport of any kind, followed down through TLS to the socket's.
def unsent_bytes(transport: Any) -> int | None:
    """Bytes queued for the peer: in Twisted's buffer and in the kernel's send queue.

    Follows a TLS transport down to the socket. The kernel part (C{SIOCOUTQ}) matters
    for a slow reader: it drains long before Twisted's buffer moves.
    """
    depth = 0
    while transport is not None and not hasattr(transport, "dataBuffer") and depth < 4:
        transport = getattr(transport, "transport", None)
        depth += 1
    if transport is None or not hasattr(transport, "dataBuffer"):
        return None
    queued = queued_write_bytes(transport)
    try:
        fd = transport.fileno()
        if fd >= 0:
            raw = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
            queued += int.from_bytes(raw, "little", signed=True)
    except (OSError, AttributeError, ValueError):
        pass
    return queued


def fit_fd_limit(max_connections: int, *, log: Logger = _log) -> int:
    """Raise the soft file limit to fit C{max_connections}; return the cap to use.

    When even the hard limit is too low, the cap is lowered to fit and a warning names
    C{--max-connections}. (Start-up only: it changes the whole process.)
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    plan = plan_fd_limit(max_connections, soft, hard)
    if plan.soft != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (plan.soft, hard))
        except (ValueError, OSError):
            plan = plan_fd_limit(max_connections, soft, soft)
    if plan.max_connections < max_connections:
        log.warn(
            "--max-connections {wanted}: needs {needed} file descriptors but the limit "
            "is {limit}; holding at most {cap} connections at once (raise LimitNOFILE "
            "or ulimit -n)",
            wanted=max_connections,
            needed=plan.needed,
            limit=plan.soft,
            cap=plan.max_connections,
        )
    return plan.max_connections


def current_upstream_budget(max_connections: int) -> int | None:
    """L{upstream_budget} for this process's file limit now (after L{fit_fd_limit})."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return upstream_budget(soft, max_connections=max_connections)


# -- the shell ------------------------------------------------------------------------


class ConnectionLimits(PortAcceptor):
    """Head deadlines, send timeouts and the connection cap of one process.

    Connections report their phase: L{head_started} / L{head_done} around each request
    head, L{idle_started} / L{idle_ended} while kept alive between requests,
    L{send_paused} / L{send_resumed} when the client's socket is full, and L{forget}
    when they close. HTTP/2 connections report L{h2_idle} / L{h2_busy}. A connection
    on which a request was signed in reports L{trusted} (L{h2_trusted}). Each kind is
    an insertion-ordered dict, so the oldest entry is the first: one timer serves all
    head deadlines. It accepts on the listening ports it L{watch}es
    (L{portproxy.net.accept.PortAcceptor}) and decides who makes room at the cap.

    @param trusted_proxies: the C{--trusted-proxies} networks: their connections are
        never preferred for eviction because of how many they hold (L{shared_address}).
    @param trust_all: every connection is trusted (C{--auth none}: no one signs in).
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_connections: int,
        header_timeout: float,
        send_timeout: float,
        backoff: float = ACCEPT_BACKOFF,
        trusted_proxies: Iterable[Network] = (),
        trust_all: bool = False,
    ) -> None:
        super().__init__(clock, max_connections=max_connections, backoff=backoff)
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self._heads: dict[Limited, float] = {}
        self._head_keys: dict[str, int] = {}
        self._head_timer: IDelayedCall | None = None
        #: Kept-alive connections between requests, untrusted and trusted, each in
        #: order of the time they went idle.
        self._idle: dict[Limited, float] = {}
        self._idle_trusted: dict[Limited, float] = {}
        self.idle_reclaim_after = IDLE_RECLAIM_AFTER
        self.head_grace = head_grace(header_timeout)
        self.trust_all = trust_all
        #: Connections on which a request was signed in (L{trusted}), until they close.
        self._signed_in: set[Limited] = set()
        #: Per connection: its unsent bytes when last looked at, and when that was.
        self._sending: dict[Limited, list[Any]] = {}
        self._send_timer: IDelayedCall | None = None
        self._trusted = tuple(trusted_proxies)
        self._shared: dict[str, bool] = {}
        self._h2: dict[IProtocol, _H2Watch] = {}
        #: The same, by their counted socket transport (a Server).
        self._h2_sockets: dict[object, _H2Watch] = {}

    # -- request heads ------------------------------------------------------------------

    def head_started(self, connection: Limited) -> None:
        """A request head starts (accept, or the first byte of a later request)."""
        if connection in self._heads:
            return
        self._heads[connection] = self.clock.seconds() + self.header_timeout
        key = connection.limit_key
        if not self._is_shared(key):
            self._head_keys[key] = self._head_keys.get(key, 0) + 1
        if self._head_timer is None:
            self._head_timer = self.clock.callLater(self.header_timeout, self._expire_heads)

    def head_done(self, connection: Limited) -> None:
        """The head is complete (or the connection gone): its deadline no longer holds."""
        if self._heads.pop(connection, None) is not None:
            self._uncount_head(connection.limit_key)
            if not self._heads:
                self._stop_head_timer()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            if self._head_timer.active():
                self._head_timer.cancel()
            self._head_timer = None

    def _is_shared(self, key: str) -> bool:
        shared = self._shared.get(key)
        if shared is None:
            if len(self._shared) >= 4096:
                self._shared.clear()
            shared = self._shared[key] = shared_address(key, self._trusted)
        return shared

    def _uncount_head(self, key: str) -> None:
        if self._is_shared(key):
            return
        left = self._head_keys.get(key, 0) - 1
        if left > 0:
            self._head_keys[key] = left
        else:
            self._head_keys.pop(key, None)

    def _expire_heads(self) -> None:
        self._head_timer = None
        now = self.clock.seconds()
        heads = self._heads
        while heads:
            connection, deadline = next(iter(heads.items()))
            if deadline > now:
                self._head_timer = self.clock.callLater(deadline - now, self._expire_heads)
                return
            self.head_done(connection)
            self.idle_ended(connection)
            connection.head_timed_out()

    # -- kept-alive connections -----------------------------------------------------------

    def idle_started(self, connection: Limited) -> None:
        """C{connection} waits for its next request (or, HTTP/2, only on the client)."""
        # Re-inserted, so that the dict stays in order of the time it went idle.
        self.idle_ended(connection)
        idle = self._idle_trusted if self.is_trusted(connection) else self._idle
        idle[connection] = self.clock.seconds()

    def idle_ended(self, connection: Limited) -> None:
        self._idle.pop(connection, None)
        self._idle_trusted.pop(connection, None)

    # -- trust ----------------------------------------------------------------------------

    def trusted(self, connection: Limited) -> None:
        """A request on C{connection} was signed in: it is the last to make room."""
        if self.trust_all or connection in self._signed_in:
            return
        self._signed_in.add(connection)
        since = self._idle.pop(connection, None)
        if since is not None:
            self._idle_trusted[connection] = since

    def is_trusted(self, connection: Limited) -> bool:
        """Whether a request on C{connection} was signed in (L{trusted})."""
        return self.trust_all or connection in self._signed_in

    # -- HTTP/2 connections (portproxy.http.http2 reports them) ----------------------

    def h2_idle(self, protocol: IProtocol) -> None:
        """C{protocol} (an HTTP/2 connection) has no stream at work (or just started).

        It may make room at the cap like an idle kept-alive connection; one that never
        opened a stream is a head still to come: it is closed at the head deadline and
        makes room like a head.
        """
        watch = self._h2_watch(protocol)
        if watch is None:
            return
        if not watch.opened:
            self.head_started(watch)
        self.idle_started(watch)

    def h2_opened(self, protocol: IProtocol) -> None:
        """C{protocol} opened a stream: no head still to come (the streams' deadlines
        hold from now on), whether or not the stream is at work."""
        watch = self._h2_watch(protocol)
        if watch is not None and not watch.opened:
            watch.opened = True
            self.head_done(watch)

    def h2_trusted(self, protocol: IProtocol) -> None:
        """A request on C{protocol} (an HTTP/2 connection) was signed in (L{trusted})."""
        watch = self._h2_watch(protocol)
        if watch is not None:
            self.trusted(watch)

    def h2_busy(self, protocol: IProtocol) -> None:
        """C{protocol} has a stream at work: it is never closed to make room."""
        watch = self._h2_watch(protocol)
        if watch is None:
            return
        watch.opened = True
        self.head_done(watch)
        self.idle_ended(watch)

    def _h2_watch(self, protocol: IProtocol) -> _H2Watch | None:
        watch = self._h2.get(protocol)
        if watch is None:
            transport = getattr(protocol, "transport", None)
            if transport is None or getattr(transport, "disconnecting", False):
                return None  # closing already: nothing to watch
            key = peer_key(transport.getPeer())
            watch = self._h2[protocol] = _H2Watch(protocol, key)
            socket_transport = self._socket_of(protocol)
            if socket_transport is not None:
                self._h2_sockets[socket_transport] = watch
        return watch

    def _connection_closed(self, transport: Server | None) -> None:
        if self._h2_sockets:
            self._h2_gone(transport)

    def _h2_gone(self, transport: Server | None) -> None:
        watch = self._h2_sockets.pop(transport, None)
        if watch is not None:
            self._h2.pop(watch.protocol, None)
            self.forget(watch)

    # -- responses the client does not take -----------------------------------------------

    def send_paused(self, connection: Limited) -> None:
        """The client's socket is full: watch whether it keeps taking bytes."""
        if connection in self._sending:
            return
        self._sending[connection] = [connection.unsent_bytes(), self.clock.seconds()]
        if self._send_timer is None:
            self._send_timer = self.clock.callLater(
                self._send_interval(), self._check_sends
            )

    def send_resumed(self, connection: Limited) -> None:
        self._sending.pop(connection, None)
        if not self._sending:
            self._stop_send_timer()

    def _send_interval(self) -> float:
        return max(0.05, min(1.0, self.send_timeout / 4))

    def _check_sends(self) -> None:
        self._send_timer = None
        now = self.clock.seconds()
        for connection, watch in list(self._sending.items()):
            if getattr(connection, "transport", True) is None:
                del self._sending[connection]  # handed over (a WebSocket relay)
                continue
            unsent = connection.unsent_bytes()
            if unsent is not None and watch[0] is not None and unsent < watch[0]:
                watch[1] = now  # the client took something: a slow reader, not a stall
            watch[0] = unsent
            if now - watch[1] >= self.send_timeout:
                del self._sending[connection]
                connection.send_timed_out()
        if self._sending:
            self._send_timer = self.clock.callLater(
                self._send_interval(), self._check_sends
            )

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            if self._send_timer.active():
                self._send_timer.cancel()
            self._send_timer = None

    def forget(self, connection: Limited) -> None:
        """The connection closed (or left HTTP/1.1): drop it everywhere."""
        self.head_done(connection)
        self.idle_ended(connection)
        self._signed_in.discard(connection)
        self.send_resumed(connection)

    # -- making room at the cap (portproxy.net.accept asks) ------------------------------

    def _make_room(self) -> bool:
        """Close one connection that can give its place up; C{False} if none can."""
        victim = self._room_candidate()
        if victim is None:
            return False
        self._evict(victim)
        return True

    def _room_candidate(self) -> Limited | None:
        """The connection to close for a newcomer at the cap, if any may be closed.

        Trust first, then age: (a) an untrusted connection idle between requests (or,
        HTTP/2, whose streams only wait on the client), the one idle longest; (b) a
        connection still in its head (or an unauthorized body) older than
        L{head_grace}, from an address that holds several first (the likeliest
        attacker; L{shared_address}es never count as several), else the oldest; (c) a
        trusted connection unused for L{IDLE_RECLAIM_AFTER}, the one unused longest.
        """
        if len(self._leaving) >= min(MAX_LEAVING, 1 + self.max_connections // 4):
            # Wait for those already closing to free their descriptors (and never
            # churn through the whole cap before a newcomer's head is read).
            return None
        heads = self._heads
        for index, connection in enumerate(self._idle):
            if index >= RECLAIM_SCAN:
                break
            if connection not in heads:  # an HTTP/2 preface only: a head, see (b)
                return connection
        # Heads are in order of their deadline, so of their age: stop at a young one.
        young = self.clock.seconds() - self.head_grace + self.header_timeout
        keys = self._head_keys
        oldest: Limited | None = None
        for index, (connection, deadline) in enumerate(heads.items()):
            if index >= RECLAIM_SCAN or deadline > young:
                break
            if oldest is None:
                oldest = connection
            if keys.get(connection.limit_key, 0) > 1:
                return connection
        if oldest is not None:
            return oldest
        now = self.clock.seconds()
        for connection, since in self._idle_trusted.items():
            if now - since < self.idle_reclaim_after:
                break  # the first is the one unused longest
            return connection
        return None

    def _recheck_after(self) -> float:
        """Seconds until room may be made at the cap: when the oldest head passes its
        grace, else L{FULL_RECHECK}."""
        for deadline in self._heads.values():
            left = deadline - self.header_timeout + self.head_grace - self.clock.seconds()
            return min(FULL_RECHECK, max(0.05, left))
        return FULL_RECHECK

    def _evict(self, connection: Limited) -> None:
        """Close C{connection} to make room (see L{_room_candidate})."""
        socket_transport = self._socket_of(connection)
        if socket_transport is not None:
            self._leaving.add(socket_transport)
        if connection in self._heads:
            self.head_done(connection)
            self.idle_ended(connection)
            connection.head_timed_out()
        else:
            self.idle_ended(connection)
            connection.reclaim()


class _H2Watch:
    """An HTTP/2 connection as one of L{ConnectionLimits}' heads or idle connections."""

    __slots__ = ("limit_key", "opened", "protocol")

    def __init__(self, protocol: IProtocol, limit_key: str) -> None:
        self.protocol = protocol
        self.limit_key = limit_key
        #: Whether a stream was ever opened (then it is no head still to come).
        self.opened = False

    @property
    def transport(self) -> ITransport | None:
        return getattr(self.protocol, "transport", None)

    def head_timed_out(self) -> None:
        self.reclaim()

    def reclaim(self) -> None:
        """GOAWAY and close (L{portproxy.http.http2}), or just close."""
        protocol = self.protocol
        evict = getattr(protocol, "evict", None)
        if evict is not None:
            evict()
            return
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.loseConnection()

    def send_timed_out(self) -> None:
        pass  # HTTP/2 has its own send timeout (portproxy.http.http2)

    def unsent_bytes(self) -> int | None:
        return None

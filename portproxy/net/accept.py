# -*- test-case-name: tests.test_limits -*-
"""Accepting on the listening ports, counted against the connection cap.

Twisted's own accept loop, on EMFILE, either closes the waiting connections (its
reserve descriptor) or returns with the socket still readable, which a
level-triggered reactor reports again at once: a busy loop. L{PortAcceptor} replaces
it on each watched port: it counts the connections it accepts (their transports tell
it when they close), stops accepting at the cap unless a connection can make room,
and backs off when descriptors run out. Which connection makes room is decided by
L{portproxy.net.limits.ConnectionLimits}, which is a L{PortAcceptor}.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from portproxy.net.internals import port_address

if TYPE_CHECKING:
    from twisted.internet.tcp import Port, Server

__all__ = ["ACCEPT_BACKOFF", "ACCEPT_BATCH", "PortAcceptor"]

#: Seconds accepting pauses after accept() ran out of file descriptors.
ACCEPT_BACKOFF = 0.5
#: Connections accepted per readiness event at most (the reactor gets a turn after).
ACCEPT_BATCH = 100

_OUT_OF_FILES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_TRY_NEXT = frozenset((errno.ECONNABORTED, errno.EPERM, errno.EINTR, errno.EPROTO))
_NO_MORE = frozenset((errno.EAGAIN, errno.EWOULDBLOCK))

# The namespace of the limits (docs and log filters quote it): accepting is one of them.
_log = Logger(namespace="portproxy.limits")


class PortAcceptor:
    """The accept loop of the watched ports, and the count of connections it holds.

    A subclass says which connection may make room at the cap (L{_room_candidate},
    L{_evict}, L{_recheck_after}) and hears of each counted socket that closes
    (L{_connection_closed}).

    @ivar open: client connections open now (accepted on a watched port).
    """

    def __init__(
        self, clock: IReactorTime, *, max_connections: int, backoff: float
    ) -> None:
        self.clock = clock
        self.max_connections = max_connections
        self.backoff = backoff
        self.open = 0
        self._ports: list[Port] = []  # Twisted's socket ports (UNIX ones derive from TCP's)
        self._paused = False
        self._retry: IDelayedCall | None = None
        self._out_of_files_logged = False
        self._classes: dict[type, type] = {}
        #: Socket transports of connections closed to make room, until they are gone.
        self._leaving: set[Server] = set()

    # -- what the subclass decides --------------------------------------------------

    # Any in these two: the connections are the subclass's (ConnectionLimits: Limited).
    def _room_candidate(self) -> Any:
        """The connection to close for a newcomer at the cap, or C{None}."""
        raise NotImplementedError

    def _evict(self, connection: Any) -> None:
        """Close C{connection} to make room."""
        raise NotImplementedError

    def _recheck_after(self) -> float:
        """Seconds until room may be made at the cap."""
        raise NotImplementedError

    def _connection_closed(self, transport: Server | None) -> None:
        """The counted socket C{transport} closed (after the count is updated)."""

    # -- accepting --------------------------------------------------------------------

    def watch(self, port: Any) -> bool:  # any listening port: see below
        """Accept on C{port} from now on: count its connections, pause at the cap.

        C{port} is a Twisted socket port (TCP, UNIX, adopted); anything else is left
        alone (C{False}). Twisted's own accept loop is replaced because on EMFILE it
        either closes the waiting connections (its reserve descriptor) or returns with
        the socket still readable, which a level-triggered reactor reports again at
        once: a busy loop.
        """
        if not all(hasattr(port, a) for a in ("socket", "transport", "factory")):
            return False
        self._ports.append(port)
        port.doRead = lambda: self._accept(port)
        return True

    def unwatch(self, port: object) -> None:
        """C{port} stops listening: never resume it."""
        if port in self._ports:
            self._ports.remove(port)
        if not self._ports and self._retry is not None:
            if self._retry.active():
                self._retry.cancel()
            self._retry = None

    def closed(self, transport: Server | None = None) -> None:
        """A counted connection (its socket C{transport}) closed: a place is free."""
        self.open -= 1
        left = transport in self._leaving
        if left:
            # One closed to make room is gone: more may be closed for those waiting.
            self._leaving.discard(transport)
        self._connection_closed(transport)
        if self._paused and (left or self._holding() < self.max_connections):
            self._resume()

    def _holding(self) -> int:
        """Connections that count against the cap: open and not on their way out."""
        return self.open - len(self._leaving)

    def _accept(self, port: Port) -> None:
        for _ in range(ACCEPT_BATCH):
            victim: Any = None
            if self._holding() >= self.max_connections:
                # Someone waits in the listen queue: a connection that can give its
                # place up does so once the newcomer is accepted; else look again
                # later (a kept-alive connection may have become unused).
                victim = self._room_candidate()
                if victim is None:
                    self._pause(self._recheck_after())
                    return
            try:
                skt, addr = port.socket.accept()
            except OSError as e:
                if e.errno in _NO_MORE:
                    return
                if e.errno in _TRY_NEXT:
                    continue
                if e.errno in _OUT_OF_FILES:
                    self._out_of_files(e)
                    return
                _log.failure("accept() failed on {port}", port=port)
                return
            if victim is not None:
                self._evict(victim)
            try:
                self._start(port, skt, addr)
            except Exception:
                _log.failure("could not start a connection from {addr}", addr=addr)

    # Any: accept()'s address, a tuple whose shape depends on the family (or a path);
    # the port is a listening Port, whose factory is set (Twisted types it Optional).
    def _start(self, port: Any, skt: socket.socket, addr: Any) -> None:
        if isinstance(addr, tuple) and len(addr) == 4:
            # IPv6: the numeric host with its scope, as Twisted reports it.
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            addr = (host[0], *addr[1:])
        protocol = port.factory.buildProtocol(port_address(port, addr))
        if protocol is None:
            skt.close()
            return
        session = port.sessionno
        port.sessionno = session + 1
        transport = self._counted(port.transport)(
            skt, protocol, addr, port, session, port.reactor
        )
        self.open += 1
        self._out_of_files_logged = False
        protocol.makeConnection(transport)

    def _counted(self, base: type) -> type:
        """C{base} (the port's transport class), telling us when it closes."""
        cls = self._classes.get(base)
        if cls is None:
            limits = self

            def connectionLost(self: Any, reason: Failure) -> None:
                try:
                    base.connectionLost(self, reason)  # type: ignore[attr-defined]
                finally:
                    limits.closed(self)

            cls = type(
                "Counted" + base.__name__, (base,), {"connectionLost": connectionLost}
            )
            self._classes[base] = cls
        return cls

    def _socket_of(self, connection: object) -> Any:  # a counted Server, or None
        """The counted socket transport under C{connection} (through TLS), or C{None}."""
        counted = tuple(self._classes.values())
        transport = getattr(connection, "transport", None)
        for _ in range(4):
            if transport is None or isinstance(transport, counted):
                return transport
            transport = getattr(transport, "transport", None)
        return None

    def _out_of_files(self, error: OSError) -> None:
        if not self._out_of_files_logged:
            self._out_of_files_logged = True
            _log.warn(
                "out of file descriptors ({error}) with {open} connections open: "
                "accepting again as connections close (see --max-connections)",
                error=errno.errorcode.get(error.errno or 0, str(error)),
                open=self.open,
            )
        self._pause(self.backoff)

    def _retry_accept(self) -> None:
        self._retry = None
        self._resume()

    def _pause(self, retry_after: float) -> None:
        """Stop accepting; try again after C{retry_after} s or when a connection closes."""
        if not self._paused:
            self._paused = True
            for port in self._ports:
                port.stopReading()
        if self._retry is None:
            self._retry = self.clock.callLater(retry_after, self._retry_accept)

    def _resume(self) -> None:
        if self._retry is not None:
            if self._retry.active():
                self._retry.cancel()
            self._retry = None
        if not self._paused:
            return
        self._paused = False
        for port in self._ports:
            if getattr(port, "connected", True) and not getattr(
                port, "disconnecting", False
            ):
                port.startReading()

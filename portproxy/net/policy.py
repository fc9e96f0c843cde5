# -*- test-case-name: tests.test_limits -*-
"""The numbers and address rules behind the connection limits, with no reactor.

How many file descriptors a connection cap needs (L{plan_fd_limit}) and what is left
for upstream connections (L{upstream_budget}); how long a new head is safe from being
closed to make room (L{head_grace}); the listen queue endpoints get
(L{with_backlog}); and which client addresses count as one (L{address_key},
L{peer_key}) or may stand for many users (L{shared_address}). L{portproxy.net.limits}
applies them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BACKLOG",
    "FDS_PER_CONNECTION",
    "FD_RESERVE",
    "HEAD_GRACE",
    "FdPlan",
    "Network",
    "address_key",
    "head_grace",
    "peer_key",
    "plan_fd_limit",
    "shared_address",
    "upstream_budget",
    "with_backlog",
]

#: File descriptors kept aside for everything that is not a client connection and its
#: upstream: listening sockets, the reactor, logs, pipes, idle pooled connections.
FD_RESERVE = 64
#: Each client connection, plus room for one upstream connection per client connection
#: (HTTP/2 streams may hold more: upstream connections have their own budget, see
#: L{upstream_budget}).
FDS_PER_CONNECTION = 2
#: A request head younger than this (at most a quarter of --header-timeout, see
#: L{head_grace}) is never closed to make room: a distant client, or one just through
#: a TLS handshake, has this long to send its head even while connections churn.
HEAD_GRACE = 1.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FdPlan:
    """What to do with C{RLIMIT_NOFILE} for a connection cap."""

    #: The soft limit to set (the current one when it already fits).
    soft: int
    #: The cap to use: the one asked for, or as many as the hard limit allows.
    max_connections: int
    #: File descriptors the asked-for cap needs.
    needed: int

    @property
    def fits(self) -> bool:
        return self.soft >= self.needed


def plan_fd_limit(max_connections: int, soft: int, hard: int) -> FdPlan:
    """Fit C{max_connections} into the file limit, raising the soft limit if needed.

    C{soft} and C{hard} are C{getrlimit} values; a negative one means unlimited
    (C{RLIM_INFINITY}). Each connection counts for L{FDS_PER_CONNECTION} descriptors
    plus L{FD_RESERVE} for the rest of the process.
    """
    needed = max_connections * FDS_PER_CONNECTION + FD_RESERVE
    if soft < 0 or needed <= soft:
        return FdPlan(soft, max_connections, needed)
    if hard < 0 or needed <= hard:
        return FdPlan(needed, max_connections, needed)
    cap = max(1, (hard - FD_RESERVE) // FDS_PER_CONNECTION)
    return FdPlan(hard, min(cap, max_connections), needed)


def head_grace(header_timeout: float) -> float:
    """How long a new request head is safe from being closed to make room.

    L{HEAD_GRACE}, or a quarter of C{header_timeout} when that is shorter, so that the
    head deadline itself still ends a slow head long before a grace would.
    """
    return min(HEAD_GRACE, header_timeout / 4)


def upstream_budget(soft: int, *, max_connections: int) -> int | None:
    """How many upstream connections (active and idle) may be open at once.

    What the file limit C{soft} leaves once every client connection has its descriptor
    and L{FD_RESERVE} is kept aside; C{None} when the limit is unlimited. An HTTP/2
    connection holds an upstream per stream, so "one upstream per client" cannot be
    assumed; with the planned limit (L{plan_fd_limit}) the budget is still at least one
    upstream per client connection.
    """
    if soft < 0:
        return None
    return max(1, soft - max_connections - FD_RESERVE)


#: Listen queue for endpoints that do not name one (Twisted's default is 50): where
#: clients wait while portproxy is at --max-connections. The kernel may cap it
#: (net.core.somaxconn).
DEFAULT_BACKLOG = 1024
_BACKLOG_TYPES = frozenset(("tcp", "tcp6", "ssl", "unix"))


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """C{description} with C{:backlog=N} added when it is a listening socket without one.

    Endpoint strings separate fields with unescaped colons (C{\\:} is a literal one).
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind not in _BACKLOG_TYPES or description.endswith("\\"):
        return description
    fields = re.split(r"(?<!\\):", description)
    if any(f.strip().lower().startswith("backlog=") for f in fields[1:]):
        return description
    return f"{description}:backlog={backlog}"


def address_key(host: str) -> str:
    """The group a client address counts in: itself, or its /64 for IPv6.

    One IPv6 user usually holds a whole /64, so it counts as one address.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


def peer_key(address: object) -> str:
    """The L{address_key} of a peer address (its C{host}, or the whole address)."""
    return address_key(str(getattr(address, "host", None) or address))


def shared_address(key: str, trusted: Iterable[Network]) -> bool:
    """Whether the address group C{key} may stand for many users.

    A C{--trusted-proxies} peer (a front proxy) and anything that is not an IP address
    (a UNIX socket) carry every user's connections, so holding several of them says
    nothing about an attacker.
    """
    try:
        network = ipaddress.ip_network(key, strict=False)
    except ValueError:
        return True
    return any(
        network.version == t.version and network.overlaps(t)  # type: ignore[arg-type]
        for t in trusted
    )

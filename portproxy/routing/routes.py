# -*- test-case-name: tests.test_routes -*-
"""Parse the raw request target into a route, without touching the network.

Routing works on the request line's bytes exactly as the client sent them: the upstream
must see the same path (no re-quoting, no C{//} collapsing, C{%2F} kept), which
twisted.web's decoded C{postpath} cannot give back.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

__all__ = [
    "Route",
    "RouteKind",
    "absolute_form",
    "absproxy_upstream_path",
    "origin_form",
    "parse_port",
    "parse_route",
    "split_target",
]


class RouteKind(enum.Enum):
    """What the main host does with a request."""

    PROXY = "proxy"  # /proxy/<port>/...: prefix stripped
    ABSPROXY = "absproxy"  # /absproxy/<port>/...: full path kept
    LOGIN = "login"
    LOGOUT = "logout"
    HEALTHZ = "healthz"
    INDEX = "index"
    NOT_FOUND = "not-found"


class Route(NamedTuple):
    """One parsed request target.

    @ivar port_label: the port segment as sent (unvalidated: see L{parse_port}).
    @ivar prefix: C{/proxy/<port>} or C{/absproxy/<port>} as typed, case kept.
    @ivar rest: for PROXY, the path after the prefix (may be empty) plus C{?query};
        for ABSPROXY, the whole path and query.
    @ivar needs_slash: C{/proxy/<port>} without the slash, which redirects to add it.
    """

    kind: RouteKind
    port_label: bytes = b""
    prefix: bytes = b""
    rest: bytes = b""
    needs_slash: bool = False


_WORDS = {
    b"login": RouteKind.LOGIN,
    b"logout": RouteKind.LOGOUT,
    b"healthz": RouteKind.HEALTHZ,
}


_ABSOLUTE_SCHEMES = (b"http", b"https", b"ws", b"wss")


def absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    """Split an absolute-form target (RFC 9112 3.2.2) into its authority and path.

    C{http://h:8080/x?y} -> C{(b"h:8080", b"/x?y")}; an empty path becomes C{/}. The
    authority is not validated here (see L{portproxy.routing.hosts.parse_authority}).
    C{None} for an origin-form target or anything else.
    """
    if target[:1] == b"/":
        return None
    scheme, sep, after = target.partition(b"://")
    if not sep or scheme.lower() not in _ABSOLUTE_SCHEMES:
        return None
    end = len(after)
    for mark in (b"/", b"?"):
        at = after.find(mark)
        if at != -1 and at < end:
            end = at
    rest = after[end:]
    return after[:end], rest if rest[:1] == b"/" else b"/" + rest


def origin_form(target: bytes) -> bytes:
    """The target as an origin server sees it: an absolute-form target's path and query."""
    if target[:1] == b"/":  # origin-form already, as nearly every request
        return target
    absolute = absolute_form(target)
    return target if absolute is None else absolute[1]


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into path and query (the query keeps its C{?}).

    An absolute-form target (C{http://host/path}, RFC 9112 3.2.2) is reduced to its path.
    """
    path, sep, query = origin_form(target).partition(b"?")
    return path, sep + query


# Routes without a port: one each, as a Route is immutable.
_NOT_FOUND = Route(RouteKind.NOT_FOUND)
_INDEX = Route(RouteKind.INDEX)
# A port route at the start of an origin-form target, the route word in any case (ASCII
# only, as bytes.lower()): group 1 is set for /proxy, group 2 is the port label, which
# runs to the next "/" or "?".
_PORT_ROUTE = re.compile(rb"/(?:(proxy)|absproxy)/([^/?]+)", re.IGNORECASE)
# Route's own constructor without the keyword handling of the NamedTuple's __new__,
# and the kinds it is called with (an Enum member lookup costs ~50 ns in 3.11).
_new_route = tuple.__new__
_PROXY = RouteKind.PROXY
_ABSPROXY = RouteKind.ABSPROXY


def parse_route(target: bytes) -> Route:
    """Classify a raw request target for the main host.

    Only an origin-form target (or an absolute-form one, reduced to it) can be a
    route: C{x/proxy/80/a} or C{*} is not found.
    """
    if target[:1] != b"/":
        target = origin_form(target)
        if target[:1] != b"/":
            return _NOT_FOUND
    match = _PORT_ROUTE.match(target)
    if match is not None:
        end = match.end()
        prefix = target[:end]
        if match[1] is None:
            return _new_route(Route, (_ABSPROXY, match[2], prefix, target, False))
        # What follows the prefix: "/path?query", or "?query" or nothing (no slash).
        rest = target[end:]
        return _new_route(Route, (_PROXY, match[2], prefix, rest, rest[:1] != b"/"))
    path = target.partition(b"?")[0]
    # path starts with "/", so parts[0] is empty and parts[1] exists; route words
    # ignore case as in code-server. /proxy and /absproxy without a port label, the
    # rest of the port routes, are not found.
    parts = path.split(b"/", 3)
    if len(parts) == 2:
        word = parts[1].lower()
        if not word:
            return _INDEX
        kind = _WORDS.get(word)
        if kind is not None:
            return Route(kind, rest=target[len(path) :])
    return _NOT_FOUND


def parse_port(label: bytes | str) -> int | None:
    """Return the port for a canonical decimal label C{1}-C{65535}, else C{None}.

    Only ASCII digits without a leading zero count: C{"08080"}, C{"+80"}, C{"８０"} and
    C{"%38080"} are refused, so one port has exactly one spelling.
    """
    if isinstance(label, str):
        try:
            label = label.encode("ascii")
        except UnicodeEncodeError:
            return None
    if not label or len(label) > 5 or not label.isdigit() or label[:1] == b"0":
        return None
    port = int(label)
    return port if port <= 65535 else None


def absproxy_upstream_path(rest: bytes, base_path: bytes) -> bytes:
    """The upstream target of an C{/absproxy} request: the base path, then the full path."""
    return base_path + rest

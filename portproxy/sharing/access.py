# -*- test-case-name: tests.test_sharing_pure -*-
"""What a share grant or a token allows: the scope rules, and checking what is granted.

Pure: no reactor, no files. A scope is a port (or ports), a path prefix and optionally a
set of methods. The path a scope is checked against is the path below the port's own URL
as the request spelled it: for C{/proxy/3000/webhook/x} and C{/absproxy/3000/webhook/x}
that is C{/webhook/x}, on the proxy host C{3000.example.com/webhook/x} it is the whole
path. So one grant for C{/webhook} means the same resource on every route.

A prefix covers a path on segment boundaries only: C{/api} covers C{/api}, C{/api/} and
C{/api/x}, never C{/apix}. Nothing is normalised, since the app might not normalise it
the same way: under a prefix other than C{/}, a path holding a dot segment (C{/./},
C{/../}), a backslash or an encoded dot, slash or backslash (C{%2e}, C{%2f}, C{%5c}) is
refused, so that C{/webhook/%2e%2e/admin} cannot escape C{/webhook}. So are, below the
prefix, a C{;} (Tomcat, Jetty and Spring drop C{;params} from a segment and read
C{/webhook/..;/admin} as C{/admin}), a C{%25} (decoded twice, C{%252e} is a dot) and a
percent escape of a byte above 127 (overlong UTF-8 such as C{%c0%ae} is a dot to some
decoders): an app that means such a path can be shared whole (prefix C{/}).

A scope limited to some methods never allows a WebSocket upgrade: a WebSocket is
opened by a GET, but its messages carry writes (a Jupyter kernel, a terminal).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

__all__ = [
    "METHOD_OVERRIDES",
    "Verdict",
    "check_methods",
    "check_path_prefix",
    "check_port",
    "check_ports",
    "method_allowed",
    "path_in_scope",
]


class Verdict(enum.Enum):
    """What a presented grant or token says about one request."""

    #: Valid and in scope: the request may reach the app.
    ALLOW = "allow"
    #: Valid and in scope, for a scope limited to some methods: the request may reach
    #: the app, without the headers that override its method.
    ALLOW_LIMITED = "allow-limited"
    #: Valid but out of scope (another port, path or method): 403.
    FORBIDDEN = "forbidden"
    #: Not valid (unknown, revoked, expired, forged): as if nothing had been presented.
    INVALID = "invalid"

    @property
    def allowed(self) -> bool:
        """Whether the request may reach the app."""
        return self is Verdict.ALLOW or self is Verdict.ALLOW_LIMITED


#: Headers some frameworks (Rails, Express method-override, Symfony, ASP.NET) read as
#: the request's real method: removed when a scope limits methods, so that a GET-only
#: link cannot DELETE. (A C{?_method=} query cannot be removed: see docs/sharing.rst.)
METHOD_OVERRIDES = (b"x-http-method-override", b"x-http-method", b"x-method-override")

# RFC 9110 5.6.2 token characters, for method names.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
# What a prefix may hold: the RFC 3986 path characters, no dot segment, no encoded
# dot, slash or backslash (see the module docstring).
_PREFIX_CHARS = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_ENCODED_TRICK = re.compile(rb"%(?:2e|2f|5c)", re.IGNORECASE)
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Below a prefix: a ;param, an encoded percent, an escape of a byte above 127.
_BELOW_PREFIX_TRICK = re.compile(rb";|%25|%[89a-fA-F][0-9a-fA-F]")
MAX_PREFIX = 1024


def check_port(value: object, field: str = "port") -> int:
    """C{value} as a port number, else C{ValueError("<field>: ...")}."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{field}: {value!r} is not a port (1-65535)")
    return value


def check_ports(values: object) -> tuple[int, ...]:
    """A non-empty list of ports, sorted and without repeats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError("ports: give at least one port")
    return tuple(sorted({check_port(v, "ports") for v in values}))


def check_path_prefix(value: object) -> str:
    """C{value} as a path prefix: C{/}, or C{/x/y} (a trailing slash is dropped)."""
    if not isinstance(value, str) or not value:
        raise ValueError("path: give a path starting with /")
    if len(value) > MAX_PREFIX:
        raise ValueError(f"path: longer than {MAX_PREFIX} characters")
    if not _PREFIX_CHARS.fullmatch(value):
        raise ValueError(
            f"path: {value!r} must start with / and hold only URL path characters"
        )
    if _PERCENT.search(value) or _ENCODED_TRICK.search(value.encode("ascii")):
        raise ValueError(f"path: {value!r} holds a bad or encoded dot, slash or backslash")
    segments = value.split("/")
    if any(s in (".", "..") for s in segments) or "//" in value:
        raise ValueError(f"path: {value!r} holds a dot segment or an empty segment")
    return value.rstrip("/") or "/"


def check_methods(values: object) -> tuple[str, ...] | None:
    """C{None} (every method) or a non-empty list of method names, upper-cased.

    C{GET} brings C{HEAD} with it, as a server's GET handler answers HEAD too.
    """
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError("methods: give a list of methods, or null for all")
    methods: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not _METHOD.fullmatch(value):
            raise ValueError(f"methods: {value!r} is not a method name")
        methods.add(value.upper())
    if "GET" in methods:
        methods.add("HEAD")
    return tuple(sorted(methods))


def path_in_scope(prefix: str, path: bytes) -> bool:
    """Tell whether C{path} (below the port's URL, query included or not) is under
    C{prefix} on a segment boundary, with no dot or encoded-separator trick."""
    path = path.split(b"?", 1)[0]
    if prefix == "/":
        return True
    raw = prefix.encode("ascii")
    if path == raw:
        return True
    if not path.startswith(raw + b"/"):
        return False
    if b"\\" in path or _ENCODED_TRICK.search(path):
        return False
    if _BELOW_PREFIX_TRICK.search(path, len(raw)):
        return False
    return not any(s in (b".", b"..") for s in path.split(b"/"))


def method_allowed(
    methods: tuple[str, ...] | None, method: bytes, *, upgrade: bool = False
) -> bool:
    """Tell whether C{method} is one of C{methods} (C{None}: all).

    A WebSocket upgrade (C{upgrade}) needs every method: see the module docstring.
    """
    if methods is None:
        return True
    if upgrade:
        return False
    return method.decode("ascii", "replace") in methods

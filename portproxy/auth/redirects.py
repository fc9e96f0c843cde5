# -*- test-case-name: tests.test_auth_redirects -*-
"""Decide whether a login page's C{to} may be followed (no open redirect).

Only two forms pass: a root-relative path on this server (C{/proxy/3000/x?y}), and an
absolute C{http(s)://} URL whose authority is this server or one of its proxy hosts.
Everything else becomes C{/}. The rules are strict rather than clever, because browsers
repair URLs in surprising ways: they treat C{\\} as C{/}, drop tabs and newlines, and
resolve C{//host} against the current scheme.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from portproxy.routing.hosts import parse_authority
from portproxy.routing.relative import relative_reference

__all__ = [
    "MAX_TARGET_LENGTH",
    "forwarded_prefix",
    "mounted_location",
    "safe_path_target",
    "safe_redirect_target",
]

#: Longer targets are refused rather than put in a C{Location} header.
MAX_TARGET_LENGTH = 8192

# Printable ASCII only: no space, no control characters, no DEL, no backslash.
_PRINTABLE = re.compile(r"[!-\[\]-~]*")
_ABSOLUTE = re.compile(r"(?i)(https?)://([^/?#]*)(.*)")
# On top of portproxy.routing.hosts: no empty label, none that starts or ends with '-'.
_NAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*"
)


def safe_redirect_target(to: str, *, allowed_host: Callable[[str], bool]) -> str:
    """Return C{to} when it is safe to redirect to after login, else C{"/"}.

    @param to: the C{to} value as received (already form- or query-decoded once).
    @param allowed_host: called with the lower-cased authority of an absolute URL
        (C{host} or C{host:port}, IPv6 in brackets); true when it is this server or one
        of its proxy hosts.
    """
    if not to or len(to) > MAX_TARGET_LENGTH or not _PRINTABLE.fullmatch(to):
        return "/"
    if to.startswith("/"):
        return to if _safe_path(to) else "/"
    match = _ABSOLUTE.fullmatch(to)
    if match is None:
        return "/"
    authority, rest = match.group(2).lower(), match.group(3)
    if not _valid_authority(authority) or not (rest == "" or rest[0] in "/?#"):
        return "/"
    if rest.startswith("/") and not _safe_path(rest):
        return "/"
    return to if allowed_host(authority) else "/"


def safe_path_target(to: str) -> str:
    """C{to} when it is a safe root-relative path (C{/x?y}), else C{"/"}: absolute URLs
    and everything L{safe_redirect_target} refuses become C{/}."""
    return safe_redirect_target(to, allowed_host=lambda authority: False)


# A path prefix as a trusted front proxy may announce it: '/'-separated non-empty
# segments of URL path characters, so that it can never start with '//' (another host).
_PREFIX = re.compile(rb"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+")


def forwarded_prefix(value: bytes | None) -> bytes | None:
    """The mount prefix in an C{X-Forwarded-Prefix} value (C{/pp}), or C{None}.

    One trailing slash is dropped; C{/}, an empty value, and anything that is not a
    plain path (C{//host}, C{\\}, blanks, a scheme) give C{None}. Only read it from a
    trusted proxy.
    """
    if value is None:
        return None
    value = value.strip(b" \t").rstrip(b"/")
    if not value or _PREFIX.fullmatch(value) is None or len(value) > 1024:
        return None
    if any(segment in (b".", b"..") for segment in value.split(b"/")):
        return None
    return value


def mounted_location(request_path: bytes, target: bytes, prefix: bytes | None) -> bytes:
    """The C{Location} (or form action) for C{target} as seen from C{request_path}.

    An absolute URL (already checked) is kept. A root-relative path gets the trusted
    front proxy's C{prefix} when there is one, else becomes relative to the request's
    path, so that it stays under a front proxy's mount nobody announced.
    """
    if not target.startswith(b"/"):
        return target
    if prefix is not None:
        return prefix + target
    return relative_reference(request_path, target)


def _valid_authority(authority: str) -> bool:
    # host[:port] by the one parser (no userinfo), and a name made of clean labels.
    parsed = parse_authority(authority)
    if parsed is None:
        return False
    return parsed.host.startswith("[") or _NAME.fullmatch(parsed.host) is not None


def _safe_path(path: str) -> bool:
    # '//host' is another site. Percent-encoded slashes are decoded by some servers and
    # frameworks that may redirect again, so '/%2F' and '/%5C' at the start are refused
    # too: no real deep link starts with an encoded slash.
    decoded = unquote(path[:16])
    return not decoded.startswith(("//", "/\\"))

# -*- test-case-name: tests.test_rewrite -*-
"""Rewriting an app's C{Location} and C{Set-Cookie} so they work behind the proxy.

An app behind C{/proxy/<port>} believes it lives at C{/}; its redirects and cookie paths
must get the prefix back, and redirects to C{localhost} (which would send a remote
browser to its own machine) must point at the app's public URL instead. Values are
rewritten byte for byte around the part that changes, and odd input is returned
unchanged rather than raising.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from portproxy.routing.hosts import parse_authority

__all__ = ["is_loopback_host", "rewrite_location", "rewrite_set_cookie"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_SCHEME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789+.-")
_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.-_")
# WHATWG URL parsing ends a special URL's authority at any of these ('\' counts as '/').
_AUTHORITY_END = b"/\\?#"


def is_loopback_host(host: bytes) -> bool:
    """Whether C{host} (no port; IPv6 in brackets or bare) names this machine.

    C{localhost} and every C{*.localhost} name (RFC 6761: browsers resolve them to
    loopback), C{127.0.0.0/8}, C{0.0.0.0}, C{::1} and C{::}; one trailing dot allowed.
    Only canonical spellings count: anything unusual is "not loopback", the safe answer
    for a rewrite that only ever redirects I{to} our own public URL.
    """
    host = host.lower()
    if host[:1] == b"[" and host[-1:] == b"]":
        host = host[1:-1]
    elif host[-1:] == b".":
        host = host[:-1]
    if not host or any(c >= 0x7F or c <= 0x20 or c == 0x25 for c in host):  # 0x25 '%'
        return False
    if b":" in host:
        try:
            ip6 = ipaddress.IPv6Address(host.decode("ascii"))
        except ValueError:
            return False
        mapped = ip6.ipv4_mapped
        if mapped is not None:
            return mapped.is_loopback or mapped.is_unspecified
        return ip6.is_loopback or ip6.is_unspecified
    if not all(c in _NAME_CHARS for c in host):
        return False
    if host == b"localhost" or (host.endswith(b".localhost") and host[:1] != b"."):
        return True
    if host.replace(b".", b"").isdigit() and host.count(b".") == 3:
        try:
            ip4 = ipaddress.IPv4Address(host.decode("ascii"))
        except ValueError:  # leading zeros, octets over 255
            return False
        return ip4.is_loopback or ip4.is_unspecified
    return False


def _loopback_target(authority: bytes, default_port: int | None) -> int | None:
    """The port of a loopback C{authority} (userinfo allowed), else C{None}."""
    # The host follows the last '@', as in browsers: 'localhost:1@evil.com' is evil.com.
    hostport = authority.rpartition(b"@")[2]
    if hostport[-1:] == b":":
        hostport = hostport[:-1]  # RFC 3986 3.2.3: an empty port is the default one
    parsed = parse_authority(hostport)
    if parsed is None or not is_loopback_host(parsed.host.encode("ascii")):
        return None
    port = default_port if parsed.port is None else parsed.port
    return port if port is not None and 1 <= port <= 65535 else None


def _split_authority(after_slashes: bytes) -> tuple[bytes, bytes]:
    """Split C{host/path?q#f} into the authority and a path that starts with C{/}."""
    end = len(after_slashes)
    for i, c in enumerate(after_slashes):
        if c in _AUTHORITY_END:
            end = i
            break
    authority, rest = after_slashes[:end], after_slashes[end:]
    if rest[:1] == b"\\":
        rest = b"/" + rest[1:]
    elif rest[:1] != b"/":
        rest = b"/" + rest
    return authority, rest


def rewrite_location(
    location: bytes,
    *,
    prefix: bytes | None,
    public_url: Callable[[int, bytes], bytes | None],
) -> bytes:
    """Rewrite an upstream C{Location} for the client.

    With C{prefix} (the C{/proxy/<port>} route, prefix as typed), a root-relative value
    gets the prefix, even C{//host/x}, which then stays on this site; a value already
    under the prefix is left alone. On every route an absolute C{http(s)} URL on a
    loopback host becomes C{public_url(port, path)} (the default port when none is
    written), unless that returns C{None}. Anything else is returned unchanged.

    @param public_url: maps an upstream port and a path (with query and fragment,
        starting with C{/}) to the URL the client should use, or C{None}.
    """
    first = location[:1]
    # Browsers read a leading '\' as '/', so it is root-relative too.
    if prefix is not None and first in (b"/", b"\\"):
        after = location[len(prefix) : len(prefix) + 1]
        if after in (b"", b"/", b"?", b"#") and location.lower().startswith(prefix.lower()):
            return location  # already under the prefix: never a double prefix
        return prefix + b"/" + location[1:]
    if any(c <= 0x20 or c >= 0x7F for c in location):
        return location
    if location[:2] == b"//":
        # Scheme-relative: only an explicit port says which upstream it means.
        authority, path = _split_authority(location[2:])
        default_port = None
    else:
        scheme, colon, rest = location.partition(b":")
        scheme = scheme.lower()
        if not colon or scheme not in _DEFAULT_PORTS or rest[:2] != b"//":
            return location
        authority, path = _split_authority(rest[2:])
        default_port = _DEFAULT_PORTS[scheme]
    port = _loopback_target(authority, default_port)
    if port is None:
        return location
    public = public_url(port, path)
    return location if public is None else public


def _loopback_domain(value: bytes) -> bool:
    value = value.strip(b" \t")
    if value[:1] == b".":
        value = value[1:]
    return is_loopback_host(value)


def rewrite_set_cookie(value: bytes, prefix: bytes) -> bytes:
    """Scope an app's cookie under C{prefix} on the C{/proxy/<port>} route.

    C{Path=/x} becomes C{Path=<prefix>/x}; a cookie without a Path, or with a Path
    already under the prefix, keeps it; a loopback C{Domain} is dropped. The name=value
    part and every other byte are kept. C{__Host-} cookies keep their Path: browsers
    refuse them unless it is C{/}.
    """
    segments = value.split(b";")
    cookie_name = segments[0].partition(b"=")[0].strip(b" \t").lower()
    host_only = cookie_name.startswith(b"__host-")
    lower_prefix = prefix.lower()
    out = [segments[0]]
    for segment in segments[1:]:
        name, eq, attr = segment.partition(b"=")
        key = name.strip(b" \t").lower()
        if key == b"domain" and eq and _loopback_domain(attr):
            continue
        if key == b"path" and eq and not host_only:
            path = attr.strip(b" \t")
            lowered = path.lower()
            # Browsers ignore a Path not starting with '/' (RFC 6265 5.2.4): the default
            # path, already under the prefix, applies.
            if path[:1] == b"/" and not (
                lowered == lower_prefix or lowered.startswith(lower_prefix + b"/")
            ):
                lead = attr[: len(attr) - len(attr.lstrip(b" \t"))]
                trail = attr[len(attr.rstrip(b" \t")) :]
                segment = name + eq + lead + prefix + path + trail
        out.append(segment)
    return b";".join(out)

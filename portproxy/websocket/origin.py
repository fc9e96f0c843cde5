# -*- test-case-name: tests.test_websocket_origin -*-
"""Which browser origins may open a WebSocket through portproxy.

A page on another site can open a WebSocket to any address with the user's cookies
attached (cross-site WebSocket hijacking), so an upgrade that carries an C{Origin} must
come from the very host it is addressed to, or from one listed in C{--trusted-origins}.
The rules are code-server's, with default ports normalised the way browsers write them:

 - no C{Origin}: allowed (not a browser, or a same-origin request from an old one);
 - C{null}, several origins, or anything that is not C{scheme://host[:port]}: refused;
 - the Origin's C{host[:port]} (C{:80} dropped for http, C{:443} for https) equal to the
   request's host (same normalisation, by the request's own scheme): allowed;
 - otherwise a trusted entry must match: C{*} (anything), C{host[:port]} or
   C{*.domain[:port]} (C{domain} itself and any name ending in C{.domain}). An entry
   without a port stands for the default port of the Origin's scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from portproxy.routing.hosts import parse_authority

__all__ = [
    "DEFAULT_PORTS",
    "Authority",
    "TrustedOrigin",
    "normalize_authority",
    "origin_allowed",
    "parse_origin",
    "parse_trusted_origin",
    "parse_trusted_origins",
]

#: The port a browser leaves out of an origin, by scheme.
DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


@dataclass(frozen=True)
class Authority:
    """A parsed C{host[:port]}: lower-case host, port as a number or C{None}."""

    host: str
    port: int | None

    def normalized(self, scheme: str) -> str:
        """C{host[:port]} as a browser writes it for C{scheme} (default port left out)."""
        if self.port is None or self.port == DEFAULT_PORTS.get(scheme):
            return self.host
        return f"{self.host}:{self.port}"

    def effective_port(self, scheme: str) -> int | None:
        """The port in use: the explicit one, else the scheme's default (if known)."""
        return self.port if self.port is not None else DEFAULT_PORTS.get(scheme)


def _authority(text: str) -> Authority | None:
    # The one host[:port] parser (portproxy.routing.hosts); hosts compare without case. No
    # blank may hide inside an origin ("http:// a.test").
    parsed = parse_authority(text, blanks=False)
    if parsed is None:
        return None
    return Authority(parsed.host.lower(), parsed.port)


def normalize_authority(value: str | None, scheme: str) -> str | None:
    """Normalise a C{Host}-style C{host[:port]} for C{scheme}; C{None} if malformed."""
    if value is None:
        return None
    authority = _authority(value.strip())
    return None if authority is None else authority.normalized(scheme)


def parse_origin(value: bytes) -> tuple[str, Authority] | None:
    """Parse an C{Origin} header as browsers serialise it (RFC 6454 section 6.2).

    @return: C{(scheme, authority)}, or C{None} for C{null}, a list of origins, a path,
        user info or anything else that is not exactly C{scheme://host[:port]}.
    """
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or _SCHEME.fullmatch(scheme) is None:
        return None
    authority = _authority(rest)
    if authority is None:
        return None
    return scheme, authority


@dataclass(frozen=True)
class TrustedOrigin:
    """One C{--trusted-origins} entry, parsed.

    @ivar host: the host, or the domain of a C{*.domain} entry; empty for C{*}.
    @ivar port: the port the entry names, C{None} for the scheme's default.
    @ivar any_origin: the entry is C{*}.
    @ivar subdomains: the entry is C{*.domain}.
    """

    host: str
    port: int | None = None
    any_origin: bool = False
    subdomains: bool = False

    def matches(self, scheme: str, origin: Authority) -> bool:
        """Whether an Origin (already parsed) is covered by this entry."""
        if self.any_origin:
            return True
        if origin.effective_port(scheme) != (
            self.port if self.port is not None else DEFAULT_PORTS.get(scheme)
        ):
            return False
        if self.subdomains:
            return origin.host == self.host or origin.host.endswith("." + self.host)
        return origin.host == self.host


def parse_trusted_origin(entry: str) -> TrustedOrigin:
    """Parse one C{--trusted-origins} value: C{*}, C{host[:port]} or C{*.domain[:port]}.

    @raise ValueError: for anything else (a URL with a scheme, a path, a bare C{*.}),
        with a message that names the option.
    """
    text = entry.strip()
    if text == "*":
        return TrustedOrigin("", any_origin=True)
    subdomains = text.startswith("*.")
    authority = _authority(text[2:] if subdomains else text)
    if authority is None or (subdomains and authority.host.startswith("[")):
        raise ValueError(
            f"--trusted-origins: {entry!r} is not '*', 'host[:port]' or '*.domain[:port]'"
        )
    return TrustedOrigin(authority.host, authority.port, subdomains=subdomains)


def parse_trusted_origins(entries: Iterable[str]) -> tuple[TrustedOrigin, ...]:
    """Parse every C{--trusted-origins} value (see L{parse_trusted_origin})."""
    return tuple(parse_trusted_origin(entry) for entry in entries)


def origin_allowed(
    origins: Sequence[bytes],
    *,
    host: str | None,
    scheme: str,
    trusted: Sequence[TrustedOrigin] = (),
) -> bool:
    """Decide whether an upgrade with these C{Origin} values may proceed.

    @param origins: every C{Origin} field of the request (usually none or one).
    @param host: the request's host as the browser used it (C{Host}, or the forwarded
        host from a trusted proxy); C{None} when unknown or malformed.
    @param scheme: C{http} or C{https}, as the browser used it.
    @param trusted: the parsed C{--trusted-origins}.
    """
    if not origins:
        return True
    if len(origins) != 1:
        return False
    parsed = parse_origin(origins[0])
    if parsed is None:
        return False
    origin_scheme, authority = parsed
    if any(entry.matches(origin_scheme, authority) for entry in trusted):
        return True
    expected = normalize_authority(host, scheme)
    return expected is not None and authority.normalized(origin_scheme) == expected

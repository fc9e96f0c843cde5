# -*- test-case-name: tests.test_auth_cookiepolicy -*-
"""The session cookie's name and attributes.

The cookie is HttpOnly (scripts of proxied apps cannot read it), SameSite=Lax, scoped to
C{Path=/}, and lives for the session lifetime. Its Domain is widened to the proxy domain
when the login host lies within it, so that one login covers the main host and every
proxy host (code-server meant to do this, but its check never matches); IP addresses,
C{localhost} and single-label hosts get a host-only cookie, as browsers refuse a Domain
attribute there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from portproxy.routing.domains import base_domain, host_name

__all__ = [
    "COOKIE_BASE_NAME",
    "clear_cookie_value",
    "cookie_domain",
    "session_cookie_name",
    "set_cookie_value",
]

COOKIE_BASE_NAME = "portproxy-session"

_NOT_NAME = re.compile(r"[^A-Za-z0-9-]")
# RFC 6265 cookie-octet: printable ASCII except space, '"', ',', ';' and '\'.
_COOKIE_VALUE = re.compile(r"[!#-+\--:<-\[\]-~]*")


def session_cookie_name(suffix: str) -> str:
    """C{portproxy-session}, or C{portproxy-session-<suffix>} for C{--cookie-suffix}.

    Every character outside C{[A-Za-z0-9-]} becomes C{-}, as code-server does.
    """
    if not suffix:
        return COOKIE_BASE_NAME
    return f"{COOKIE_BASE_NAME}-{_NOT_NAME.sub('-', suffix)}"


def cookie_domain(login_host: str, proxy_patterns: Sequence[str]) -> str | None:
    """The Domain attribute for a login on C{login_host}; C{None} means host-only.

    @param login_host: the request's host, possibly with a C{:port}.
    @param proxy_patterns: normalised C{--proxy-domain} patterns.
    @return: the widest proxy domain (a fixed domain under a pattern, such as
        C{example.com} for C{{{port}}.example.com}) equal to or containing the host.
    """
    host = host_name(login_host)
    if host is None or "." not in host or _is_local(host):
        return None
    widest: str | None = None
    for pattern in proxy_patterns:
        domain = base_domain(pattern)
        # A single-label domain ('lan') is a public suffix to browsers: they would drop
        # the whole cookie.
        if not domain or "." not in domain or _is_local(domain):
            continue
        within = host == domain or host.endswith("." + domain)
        if within and (widest is None or len(domain) < len(widest)):
            widest = domain
    return widest


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # Browsers also read a name ending in a number as an IPv4 address.
        return host.rsplit(".", 1)[-1].isdigit()
    return True


def set_cookie_value(
    name: str, value: str, *, max_age: int, secure: bool, domain: str | None
) -> bytes:
    """The C{Set-Cookie} header value that stores the session cookie."""
    if not _COOKIE_VALUE.fullmatch(value):
        raise ValueError("cookie value holds characters a cookie cannot carry")
    return _attributes(f"{name}={value}; Max-Age={int(max_age)}", secure, domain)


def clear_cookie_value(name: str, *, secure: bool, domain: str | None) -> bytes:
    """The C{Set-Cookie} value that deletes the cookie set with the same Domain."""
    return _attributes(
        f"{name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT", secure, domain
    )


def _attributes(head: str, secure: bool, domain: str | None) -> bytes:
    parts = [head, "Path=/"]
    if domain is not None:
        parts.append(f"Domain={domain}")
    parts += ["HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("ascii")

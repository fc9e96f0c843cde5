# -*- test-case-name: tests.test_docs -*-
"""The validated settings of one portproxy instance.

L{portproxy.tap.Options} turns the command line into a L{Config}; everything else reads
this frozen object, so tests can build one directly without parsing arguments.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_SHARE_TTL",
    "Config",
    "StartupError",
    "env_flag",
    "normalize_base_path",
    "parse_public_url",
    "parse_trusted_proxies",
]

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
DEFAULT_SESSION_TTL = 7 * 24 * 3600
DEFAULT_UPSTREAM_TIMEOUT = 60.0
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_SEND_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS = 10000
#: C{--max-share-ttl}'s default: 30 days.
DEFAULT_MAX_SHARE_TTL = 30 * 86400.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class StartupError(ValueError):
    """Start-up cannot go on: a bad setting, a password source, a port in use.

    The message is one line meant for the user; C{portproxy.tap} prints it and exits
    with status 1. It lives here, below every layer, because sign-in (passwords),
    TLS and the listeners all raise it and the plugin catches it in one place. A
    C{ValueError}, as most of its causes are bad values: code that catches
    C{ValueError} around option checks sees it too.
    """


@dataclass(frozen=True)
class Config:
    """Everything that decides how requests are routed, checked and forwarded."""

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    proxy_domains: tuple[str, ...] = ()
    auth: str = "password"
    password_file: str | None = None
    disable_proxy: bool = False
    skip_auth_preflight: bool = False
    #: Normalised: empty, or one leading slash and no trailing slash (C{b"/base/app"}).
    abs_proxy_base_path: bytes = b""
    trusted_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    #: Largest request body accepted, in bytes; C{None} for no limit.
    max_body_size: int | None = None
    cert: str | None = None
    cert_key: str | None = None
    self_signed: bool = False
    cert_hosts: tuple[str, ...] = ("localhost",)
    data_dir: str = field(
        default_factory=lambda: os.path.join(
            os.path.expanduser("~"), ".local", "share", "portproxy"
        )
    )
    cookie_suffix: str = ""
    session_ttl: int = DEFAULT_SESSION_TTL
    #: C{"combined"}, C{"json"} or C{"off"}.
    access_log: str = "combined"
    #: Processes serving the listeners; above 1, a supervisor runs them (docs/workers.rst).
    workers: int = 1
    #: Seconds a client has to send a whole request head (see L{portproxy.net.limits}).
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    #: Seconds a client may take no byte of a response before it is disconnected.
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    #: Client connections held at once, per process; the rest wait in the listen queue.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: C{--public-url}: C{scheme://host[:port][/prefix]} as clients reach this instance
    #: (no trailing slash), for URLs built without a request; C{None}: from the listener.
    public_url: str | None = None
    #: C{--rewrite-host}: apps see C{Host: localhost:<port>} and a matching Origin.
    rewrite_host: bool = False
    #: C{--compress}: compress text responses for clients that accept it.
    compress: bool = True
    #: C{--access-log-file}: write the access log to this file instead of the log.
    access_log_file: str | None = None
    #: C{--public-port}: ports open without sign-in unless set private at run time.
    public_ports: tuple[int, ...] = ()
    #: C{--max-share-ttl}: the longest a share link may live, in seconds.
    max_share_ttl: float = DEFAULT_MAX_SHARE_TTL


def normalize_base_path(value: str) -> bytes:
    """Give C{--abs-proxy-base-path} one leading slash and no trailing slash.

    C{""} and C{"/"} mean no base path. Raises C{ValueError} for characters that cannot
    appear in a request path.
    """
    parts = [p for p in value.strip().split("/") if p]
    path = "/" + "/".join(parts) if parts else ""
    try:
        raw = path.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("must be ASCII; percent-encode other characters") from None
    if any(c <= 0x20 or c >= 0x7F or c in b"?#" for c in raw):
        raise ValueError("must not contain spaces, '?', '#' or control characters")
    return raw


def parse_public_url(value: str) -> str:
    """Check C{--public-url}: C{http(s)://host[:port]} and an optional path prefix.

    Returns it without a trailing slash. Raises C{ValueError} with the reason for
    anything else (a query, a fragment, user info, another scheme, a bad host).
    """
    from urllib.parse import urlsplit

    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} must start with http:// or https://")
    if not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"{value!r} must name a host (and no user)")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"{value!r} must not have a query or fragment")
    if any(c <= " " or c > "~" for c in text):
        raise ValueError(f"{value!r} must not contain spaces or non-ASCII characters")
    netloc = parts.netloc.lower()
    if port is not None and port == (443 if parts.scheme == "https" else 80):
        netloc = netloc.rsplit(":", 1)[0]
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{netloc}{path}"


def parse_trusted_proxies(values: list[str]) -> tuple[Network, ...]:
    """Parse C{--trusted-proxies} CIDRs (a bare address means that one host)."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return tuple(networks)


def env_flag(value: str | None) -> bool:
    """Read an on/off environment variable the way code-server does (C{1} or C{true})."""
    return (value or "").strip().lower() in ("1", "true")

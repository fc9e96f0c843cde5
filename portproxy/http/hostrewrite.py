# -*- test-case-name: tests.test_rewrite_host -*-
"""C{--rewrite-host}: the app sees C{Host: localhost:<port>} and a matching Origin.

Dev servers refuse hosts they do not know (Vite's C{allowedHosts}, Django's
C{ALLOWED_HOSTS}, Jupyter's Origin-versus-Host check). With the option, the request
reaches the app as if the browser had opened C{http://localhost:<port>} itself: Host
names the app's own address, and an Origin that is the request's own public origin
(a same-origin request) is turned into C{http://localhost:<port>} so that a CSRF or
WebSocket Origin check still sees the same origin as Host. Any other Origin passes as
sent: a cross-site request must still look cross-site to the app.

Pure functions over header values; the engine and the WebSocket relay apply them after
portproxy's own checks (the WebSocket Origin check runs on the public values).
"""

from __future__ import annotations

from collections.abc import Sequence

from portproxy.routing.hosts import parse_authority

__all__ = [
    "PublicOrigin",
    "local_host",
    "local_origin",
    "public_origin",
    "rewrite_host_and_origin",
    "rewrite_origin",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: C{(scheme, lower-case host, port)} of the origin a browser sees; the port is
#: explicit even when it is the scheme's default, so that C{:443} and none compare equal.
PublicOrigin = tuple[str, str, int]


def local_host(port: int) -> bytes:
    """The C{Host} an app on C{port} sees: C{localhost:<port>}."""
    return b"localhost:%d" % port


def local_origin(port: int) -> bytes:
    """The Origin a page served by the app at C{http://localhost:<port>} would send."""
    return b"http://localhost:%d" % port


def _origin_tuple(scheme: str, authority: bytes | str) -> PublicOrigin | None:
    default = _DEFAULT_PORTS.get(scheme)
    if default is None:
        return None
    # No blank may hide inside an origin ("http:// x.test"); hosts compare without case.
    parsed = parse_authority(authority, blanks=False)
    if parsed is None:
        return None
    return scheme, parsed.host.lower(), default if parsed.port is None else parsed.port


def public_origin(scheme: str, host: str | None) -> PublicOrigin | None:
    """The origin the client sees, from its scheme and host (C{ClientView}'s values).

    C{None} when the host is unknown or malformed: then no Origin is "same-origin".
    """
    if host is None:
        return None
    return _origin_tuple(scheme.lower(), host)


def _parse_origin(value: bytes) -> PublicOrigin | None:
    """An C{Origin} value as C{(scheme, host, port)}, or C{None} for anything but
    exactly C{http[s]://host[:port]} (C{null}, a list, a path, user info)."""
    scheme, sep, rest = value.strip(b" \t").partition(b"://")
    if not sep:
        return None
    try:
        return _origin_tuple(scheme.decode("ascii").lower(), rest)
    except UnicodeDecodeError:
        return None


def rewrite_origin(value: bytes, *, port: int, public: PublicOrigin | None) -> bytes:
    """C{value}, or the app's local origin when C{value} is the public origin."""
    if public is not None and _parse_origin(value) == public:
        return local_origin(port)
    return value


def rewrite_host_and_origin(
    headers: Sequence[tuple[bytes, list[bytes]]],
    *,
    port: int,
    scheme: str,
    host: str | None,
) -> list[tuple[bytes, list[bytes]]]:
    """The forwarded request headers with Host and a same-origin Origin made local.

    C{headers} are what L{portproxy.http.headers.forward_request_headers} chose; order
    and every other field are kept. A missing Host stays missing (the caller's default
    host, L{local_host}, fills it in).

    @param scheme: the scheme the client used (C{ClientView.scheme}).
    @param host: the host the client used (C{ClientView.host}), C{None} if unknown.
    """
    public = public_origin(scheme, host)
    out: list[tuple[bytes, list[bytes]]] = []
    for name, values in headers:
        lower = name.lower()
        if lower == b"host":
            values = [local_host(port)]
        elif lower == b"origin":
            values = [rewrite_origin(v, port=port, public=public) for v in values]
        out.append((name, values))
    return out

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

Dev servers check Host to stop DNS rebinding: a page on an attacker's domain, whose name
is made to resolve to 127.0.0.1, must not read the app. So a request that needed no
sign-in (C{--auth none}, an unauthenticated preflight) is rewritten only when its host
is one this instance answers to by name or address (L{KnownHosts}); any other host
reaches the app as sent, which then refuses it as it would without the option. A
request that proved a sign-in is rewritten on any host: the attacker's domain never
carries portproxy's session cookie.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from portproxy.routing.domains import (
    HOST,
    DomainMatcher,
    DomainPatternError,
    base_domain,
    host_name,
)
from portproxy.routing.hosts import parse_authority

__all__ = [
    "HostRewrite",
    "KnownHosts",
    "PublicOrigin",
    "is_known_host",
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


def _is_ip_literal(name: str) -> bool:
    if name[:1] == "[":
        return True  # parse_authority accepted it: a valid IPv6 address
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def is_known_host(
    host: str,
    *,
    domains: DomainMatcher,
    named: frozenset[str] = frozenset(),
) -> bool:
    """Whether C{host} (C{host[:port]}, port ignored) is one this instance answers to.

    Known: an IP literal (DNS rebinding needs a name: a browser sends an address as
    Host only to that address, which is why Vite allows every one), C{localhost} and
    C{*.localhost} (RFC 6761: browsers resolve them to loopback themselves), a name in
    C{named} (the C{--public-url} host, the fixed domains of the C{--proxy-domain}
    patterns), and a host that C{domains} routes to a port. Names compare without case
    and without one trailing dot. A malformed host is unknown.

    @param domains: the proxy-domain patterns whose hosts are this instance's own; a
        C{{{host}}} part must already be filled in (see L{KnownHosts}), since
        C{{{port}}.{{host}}} alone would match the attacker's C{5173.evil.example}.
    """
    parsed = parse_authority(host, blanks=False)
    if parsed is None:
        return False
    if _is_ip_literal(parsed.host):
        return True
    name = host_name(host)
    if name is None:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    return name in named or domains.is_proxy_host(name)


class KnownHosts:
    """L{is_known_host} for one instance's C{--proxy-domain} and C{--public-url}.

    Answers are cached per host string (a browser sends the same few on every request);
    the cache is emptied when full, so a client inventing hosts cannot grow it.

    A pattern with C{{{host}}} counts only with C{{{host}}} standing for a name already
    known (C{localhost}, the public URL's host, a pattern's fixed domain): it can be
    filled with any name, the attacker's included.
    """

    def __init__(
        self,
        *,
        proxy_domains: Sequence[str] = (),
        public_url: str | None = None,
        max_cached: int = 1024,
    ) -> None:
        own = DomainMatcher(proxy_domains).patterns
        fixed = [p for p in own if HOST not in p]
        named = {d for p in fixed if (d := base_domain(p)) is not None}
        if public_url is not None:
            public = host_name(public_url.partition("://")[2].partition("/")[0])
            if public is not None:
                named.add(public)
        anchors = sorted({"localhost", *named})
        filled = []
        for pattern in own:
            if HOST not in pattern:
                filled.append(pattern)
                continue
            for anchor in anchors:
                try:
                    filled.extend(DomainMatcher([pattern.replace(HOST, anchor)]).patterns)
                except DomainPatternError:
                    pass  # an anchor that is an IP literal cannot fill a name
        self.named = frozenset(named)
        self.domains = DomainMatcher(filled)
        self.max_cached = max_cached
        self._cache: dict[str, bool] = {}

    def __call__(self, host: str | None) -> bool:
        """Whether C{host} is known; C{None} (no Host at all, never a browser) is."""
        if host is None:
            return True
        cache = self._cache
        known = cache.get(host)
        if known is None:
            known = is_known_host(host, domains=self.domains, named=self.named)
            if len(cache) >= self.max_cached:
                cache.clear()
            cache[host] = known
        return known


_R = TypeVar("_R", contravariant=True)


class HostRewrite(Generic[_R]):
    """Decides, per request, whether C{--rewrite-host} applies to it.

    Always for a known host (L{KnownHosts}); for any other host only when the request
    proved a sign-in, which the attacker's domain cannot (the session cookie belongs
    to portproxy's own hosts). The sign-in is asked only for unknown hosts, so the
    usual request pays one dictionary lookup.

    @param signed_in: whether a request carries a valid session; C{lambda r: False}
        with C{--auth none}, where no request needs one.
    """

    def __init__(
        self, known: Callable[[str | None], bool], signed_in: Callable[[_R], bool]
    ):
        self.known = known
        self.signed_in = signed_in

    def applies(self, request: _R, host: str | None) -> bool:
        """Whether C{request}, whose public host is C{host}, gets Host made local."""
        return self.known(host) or self.signed_in(request)

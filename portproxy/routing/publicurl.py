# -*- test-case-name: tests.test_public_url -*-
"""The public URLs of a local port: one function family for every place that shows one.

Every URL portproxy shows or redirects to (the home page, C{--print-url}, C{url PORT},
the start-up log, rewritten C{Location}s) is built here from a L{PublicBase}: the
scheme, authority (C{host[:port]}) and path prefix clients use. The base comes from the
request when there is one (its client view, already through C{--trusted-proxies}),
else from C{--public-url}, else from the first C{--listen} that has an address.

Pure string work: C{--listen} descriptions are read here without Twisted (the same
fields Twisted's endpoint parsers read), so that URLs and start-up warnings can be
computed and tested without a reactor.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypedDict

from portproxy.config import Config
from portproxy.routing.domains import HOST, PORT, DomainMatcher, host_name
from portproxy.routing.hosts import parse_authority
from portproxy.routing.relative import relative_reference
from portproxy.routing.routes import parse_port

__all__ = [
    "Listener",
    "PortURLs",
    "PublicBase",
    "configured_base",
    "domain_url",
    "listener_base",
    "listener_warnings",
    "location_url",
    "parse_listener",
    "port_urls",
    "preferred_url",
    "public_url_base",
    "request_base",
    "route_in_path",
    "url_template",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Endpoint strings separate fields with unescaped colons; '\:' is a literal colon.
_FIELD_SEP = re.compile(r"(?<!\\):")
# The route words a loopback Location's path may already carry (matched like routes:
# case-insensitively), with a canonical port checked afterwards.
_ROUTE_IN_PATH = re.compile(rb"/(proxy|absproxy)/([^/?#]*)(?=[/?#]|$)", re.IGNORECASE)


class PublicBase(NamedTuple):
    """Where clients reach this instance: C{scheme://authority[prefix]}.

    @ivar scheme: C{"http"} or C{"https"}.
    @ivar authority: C{host[:port]} as a browser writes it: the default port of the
        scheme left out, an IPv6 address in brackets.
    @ivar prefix: a path prefix a front proxy mounts portproxy under (from
        C{--public-url}), C{""} or C{"/pp"}; never a trailing slash.
    """

    scheme: str
    authority: str
    prefix: str = ""

    @property
    def origin(self) -> str:
        """C{scheme://authority}, without the prefix (proxy hosts have none)."""
        return f"{self.scheme}://{self.authority}"

    @property
    def host(self) -> str:
        """The host part of the authority (brackets kept on an IPv6 address)."""
        parsed = parse_authority(self.authority)
        return self.authority if parsed is None else parsed.host

    @property
    def port_suffix(self) -> str:
        """C{":8080"}, or C{""} for the scheme's default port."""
        parsed = parse_authority(self.authority)
        return "" if parsed is None or parsed.port is None else f":{parsed.port}"

    def url(self, path: str) -> str:
        """The absolute URL of C{path} (a path on portproxy, starting with C{/})."""
        return f"{self.origin}{self.prefix}{path}"


def _authority(host: str, port: int | None, scheme: str) -> str:
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return host
    return f"{host}:{port}"


def request_base(scheme: str, host: str | None) -> PublicBase | None:
    """The base a request's client used: its view's scheme and C{Host} (port kept).

    C{None} when the host is missing or malformed; a default port written out
    (C{example.com:443} over https) is dropped, as a browser would.
    """
    if host is None or scheme not in _DEFAULT_PORTS:
        return None
    parsed = parse_authority(host)
    if parsed is None:
        return None
    return PublicBase(scheme, _authority(parsed.host.lower(), parsed.port, scheme))


def public_url_base(value: str) -> PublicBase:
    """The base of a C{--public-url} value already normalised by L{Config}."""
    scheme, _, rest = value.partition("://")
    authority, slash, path = rest.partition("/")
    parsed = parse_authority(authority)
    if parsed is not None:
        authority = _authority(parsed.host, parsed.port, scheme)
    return PublicBase(scheme, authority, (slash + path).rstrip("/"))


class Listener(NamedTuple):
    """What a C{--listen} description says about where and how it listens.

    @ivar kind: the endpoint type, lower-cased (C{tcp}, C{tcp6}, C{ssl}, C{unix}...);
        a bare port number counts as C{tcp}.
    @ivar port: the TCP port, or C{None} (not TCP, or unreadable).
    @ivar interface: the address bound, C{""} when none is given.
    """

    kind: str
    port: int | None
    interface: str
    description: str

    @property
    def is_tcp(self) -> bool:
        return self.kind in ("tcp", "tcp6", "ssl")

    @property
    def bound_address(self) -> str:
        """The address the socket is bound to: an empty interface means every one."""
        if self.interface:
            return self.interface
        return "::" if self.kind == "tcp6" else "0.0.0.0"

    def tls(self, *, tls_on_tcp: bool) -> bool:
        """Whether clients reach it over TLS (C{ssl:}, or C{--cert} on C{tcp:})."""
        return self.kind == "ssl" or (tls_on_tcp and self.kind in ("tcp", "tcp6"))


def parse_listener(description: str) -> Listener:
    """Read the type, port and interface of an endpoint string, as Twisted does.

    Positional fields follow Twisted's parsers: C{tcp:PORT:INTERFACE:BACKLOG},
    C{tcp6:PORT:BACKLOG:INTERFACE}, C{ssl:PORT:...}; C{port=} and C{interface=} may be
    given by name instead. Never raises: what cannot be read is left out.
    """
    text = description.strip()
    if text.isdigit():
        text = "tcp:" + text
    kind, *fields = [f.replace("\\:", ":") for f in _FIELD_SEP.split(text)]
    kind = kind.strip().lower()
    positional = [f for f in fields if "=" not in f]
    named = dict(f.split("=", 1) for f in fields if "=" in f)
    port_text = named.get("port", positional[0] if positional else "")
    interface = named.get("interface")
    if interface is None:
        index = {"tcp": 1, "tcp6": 2}.get(kind)
        if index is not None and len(positional) > index:
            interface = positional[index]
    port = int(port_text) if port_text.isdigit() and int(port_text) <= 65535 else None
    if kind not in ("tcp", "tcp6", "ssl"):
        port = None
    return Listener(kind, port, (interface or "").strip(), description)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if "%" in address:
        return None  # a zone (fe80::1%eth0) names nothing another machine can use
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None


def _is_local(address: str) -> bool:
    """Loopback or every interface: a browser on this machine reaches it as localhost."""
    if address.lower() == "localhost":
        return True
    ip = _ip(address)
    return ip is not None and (ip.is_loopback or ip.is_unspecified)


def _is_loopback(address: str) -> bool:
    ip = _ip(address)
    return address.lower() == "localhost" or (ip is not None and ip.is_loopback)


def listener_base(listener: Listener, *, tls_on_tcp: bool) -> PublicBase | None:
    """The base of one listener: C{localhost} for loopback and wildcard binds.

    C{None} for a listener with no TCP address to name (C{unix:}, C{systemd:}, an
    ephemeral port 0).
    """
    if not listener.is_tcp or not listener.port:
        return None
    scheme = "https" if listener.tls(tls_on_tcp=tls_on_tcp) else "http"
    address = listener.bound_address
    if _is_local(address):
        host = "localhost"
    else:
        ip = _ip(address)
        if ip is not None:
            host = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
        elif parse_authority(address) is not None:
            host = address.lower()
        else:
            return None
    return PublicBase(scheme, _authority(host, listener.port, scheme))


def configured_base(config: Config) -> PublicBase | None:
    """The base when no request is at hand: C{--public-url}, else the first listener
    that has a TCP address; C{None} (URLs stay root-relative) when none has."""
    if config.public_url is not None:
        return public_url_base(config.public_url)
    tls_on_tcp = config.cert is not None or config.self_signed
    for description in config.listen:
        base = listener_base(parse_listener(description), tls_on_tcp=tls_on_tcp)
        if base is not None:
            return base
    return None


def _fill(pattern: str, host: str | None) -> str | None:
    """Fill C{{{host}}} of a pattern with the main host's name (C{{{port}}} kept)."""
    if HOST not in pattern:
        return pattern
    name = None if host is None else host_name(host)
    return None if name is None else pattern.replace(HOST, name)


def _domain_host(matcher: DomainMatcher, port: int, host: str | None) -> str | None:
    """The proxy host of C{port}, checked to route back to it.

    The pattern the request host matched, else the first one; a C{{{host}}} pattern is
    filled with the request host (the main host of such a pattern is the C{{{host}}}
    value itself, as sign-in assumes).
    """
    found = matcher.public_host(port, host)
    if found is None and matcher.patterns:
        filled = _fill(matcher.patterns[0], host)
        found = None if filled is None else filled.replace(PORT, str(port))
    if found is None or matcher.match(found) != str(port):
        return None
    return found


def domain_url(
    port: int,
    base: PublicBase | None,
    matcher: DomainMatcher,
    request_host: str | None = None,
) -> str | None:
    """C{scheme://<port host>[:port]/} on the base's scheme and port, or C{None}.

    C{request_host} (the C{Host} of the request at hand, when it is a proxy host)
    chooses the pattern; by default the base's own host does. A path prefix of the
    base does not apply: a proxy host is served from its root.
    """
    if base is None or not matcher.patterns:
        return None
    host = _domain_host(matcher, port, request_host or base.host)
    if host is None:
        return None
    return f"{base.scheme}://{host}{base.port_suffix}/"


class PortURLs(TypedDict):
    """One port's URL on each route (the shape of the ports API's C{urls})."""

    proxy: str
    absproxy: str
    domain: str | None


def port_urls(
    port: int,
    base: PublicBase | None,
    matcher: DomainMatcher,
    *,
    relative_to: bytes | None = None,
    request_host: str | None = None,
) -> PortURLs:
    """The URLs of C{port} on C{/proxy/}, C{/absproxy/} and its proxy host.

    Path routes are absolute under C{base}; root-relative without one; relative to
    the request path C{relative_to} when given (a page's links, which then survive a
    front proxy's unannounced path prefix). portproxy serves C{/absproxy/} at its own
    root, so C{--abs-proxy-base-path} (the front proxy's mount, which the app is told)
    reaches these URLs only through C{base}: C{--public-url https://host/b}.
    """
    paths = f"/proxy/{port}/", f"/absproxy/{port}/"
    if relative_to is not None:
        proxy, absproxy = (
            relative_reference(relative_to, p.encode()).decode() for p in paths
        )
    elif base is not None:
        proxy, absproxy = (base.url(p) for p in paths)
    else:
        proxy, absproxy = paths
    return {
        "proxy": proxy,
        "absproxy": absproxy,
        "domain": domain_url(port, base, matcher, request_host),
    }


def preferred_url(urls: PortURLs) -> str:
    """The one URL to give a user: the proxy host when there is one, else C{/proxy/}."""
    return urls["domain"] or urls["proxy"]


def url_template(config: Config) -> str:
    """What the start-up log says apps open at, with C{{{port}}} for the port.

    C{http://{{port}}.localhost:8080/} with a proxy domain, else
    C{http://localhost:8080/proxy/{{port}}/} (root-relative without a TCP listener).
    """
    base = configured_base(config)
    if config.proxy_domains and base is not None:
        filled = _fill(DomainMatcher(config.proxy_domains).patterns[0], base.host)
        if filled is not None:
            return f"{base.scheme}://{filled}{base.port_suffix}/"
    path = "/proxy/{{port}}/"
    return path if base is None else base.url(path)


def route_in_path(path: bytes, base_path: bytes) -> bytes | None:
    """The public path of an app path that already names a portproxy route, else C{None}.

    C{/proxy/<port>/...} and C{/absproxy/<port>/...} stay as they are, and so does
    C{<base path>/absproxy/<port>/...}: C{--abs-proxy-base-path} is the prefix under
    which a front proxy mounts portproxy, so the browser's own URL carries it, just as
    the app's root-relative redirects (which pass unchanged) do. Used so that an app's
    absolute redirect back to its own public path never gets a second prefix.
    """
    start = 0
    if base_path and path[: len(base_path)].lower() == base_path.lower():
        after = path[len(base_path) : len(base_path) + 1]
        if after == b"/":
            start = len(base_path)
    found = _ROUTE_IN_PATH.match(path, start)
    if found is None or parse_port(found.group(2)) is None:
        return None
    if start and found.group(1).lower() != b"absproxy":
        return None  # the base path is put before /absproxy paths only
    return path


def location_url(
    port: int,
    path: bytes,
    *,
    route: str,
    here_port: int | None,
    here_prefix: bytes | None,
    base_path: bytes,
    base: PublicBase | None,
    matcher: DomainMatcher,
    request_host: str | None,
) -> bytes | None:
    """Where an app's redirect to C{http://localhost:<port><path>} should point.

    On the same kind of route as the request (C{route}: C{"proxy"}, C{"absproxy"} or
    C{"domain"}): root-relative on the path routes, absolute from the request's base on
    proxy hosts; C{None} when there is no public URL (no proxy host can be named).
    A path that already carries C{/proxy/<n>} or C{/absproxy/<n>} is not prefixed
    again (see L{route_in_path}). A root-relative result never starts with C{//} or
    C{/\\}: that would leave the site (see L{_on_this_site}).

    @param here_port: the port of the request's own route; C{here_prefix} its
        C{/proxy/<port>} as typed (the case the user wrote is kept).
    """
    path = path if path.startswith(b"/") else b"/" + path
    if route == "domain":
        url = domain_url(port, base, matcher, request_host)
        return None if url is None else url[:-1].encode("ascii") + path
    routed = route_in_path(path, base_path)
    if routed is not None:
        return _on_this_site(routed)
    if route == "proxy":
        here = here_prefix if here_port == port else None
        return _on_this_site((here or b"/proxy/%d" % port) + path)
    if here_port == port:
        return _on_this_site(path)
    return _on_this_site(base_path + b"/absproxy/%d" % port + path)


def _on_this_site(path: bytes) -> bytes:
    """C{path}, with C{/.} in front when a browser would read it as C{//host/...}.

    The app's Location named localhost; as C{//evil.com/x} or C{/\\evil.com} (browsers
    read C{\\} as C{/}) it would send the browser to another site. C{/.//evil.com/x}
    is the same path on this one. Tabs and newlines are ignored as browsers drop them.
    """
    second = path[1:2]
    if second in (b"\t", b"\n", b"\r"):
        second = path[1:].lstrip(b"\t\n\r")[:1]
    return b"/." + path if second in (b"/", b"\\") else path


def listener_warnings(
    listen: Sequence[str], *, auth: str, tls_on_tcp: bool
) -> Iterable[str]:
    """One start-up warning per exposed listener, each naming it and the way out.

    A listener on every interface without TLS sends passwords and pages over the
    network in clear; C{--auth none} on anything but loopback opens every local port to
    whoever can connect.
    """
    for description in listen:
        listener = parse_listener(description)
        if not listener.is_tcp:
            continue
        address = listener.bound_address
        ip = _ip(address)
        everywhere = ip is not None and ip.is_unspecified
        if everywhere and not listener.tls(tls_on_tcp=tls_on_tcp):
            yield (
                f"--listen {description} accepts plain HTTP on every interface "
                f"({address}): add :interface=127.0.0.1, or use TLS (--cert or "
                "--self-signed), or put a TLS front proxy before it"
            )
        if auth == "none" and not _is_loopback(address):
            yield (
                f"--auth none on --listen {description} ({address}): anyone who can "
                "reach it uses every local port without signing in; listen on "
                ":interface=127.0.0.1 or use --auth password"
            )

# -*- test-case-name: tests.test_home -*-
"""The signed-in user's start page: which local ports are listening, with links.

Ports are read from the kernel's socket tables (C{/proc/net/tcp} and C{tcp6}), so the
page needs no privileges and runs nothing; on systems without them it says so.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Collection, Iterable

from twisted.web.resource import Resource
from twisted.web.server import Request

from portproxy.http.headers import ClientView
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.publicurl import PortURLs, port_urls, preferred_url, request_base
from portproxy.routing.relative import relative_reference
from portproxy.routing.routes import origin_form, split_target

__all__ = ["IndexResource", "parse_listening_ports", "read_listening_ports", "render_index"]

_LISTEN = "0A"
# Addresses an app on this machine can be reached at through loopback: any, or loopback.
_REACHABLE_V4 = {"00000000"}
_REACHABLE_V6 = {"00000000000000000000000000000000", "00000000000000000000000001000000"}


def parse_listening_ports(table: str) -> set[int]:
    """TCP ports in LISTEN state on a loopback or wildcard address, from a proc table."""
    ports: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        address, _, port_hex = fields[1].partition(":")
        try:
            port = int(port_hex, 16)
        except ValueError:
            continue
        if (
            address in _REACHABLE_V4
            or address in _REACHABLE_V6
            or (len(address) == 8 and address.endswith("7F"))  # 127.x.x.x, little-endian
        ):
            ports.add(port)
    return ports


def read_listening_ports(
    paths: Iterable[str] = ("/proc/net/tcp", "/proc/net/tcp6"),
) -> set[int] | None:
    """Listening ports on this machine, or C{None} when the tables cannot be read."""
    found: set[int] | None = None
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        found = (found or set()) | parse_listening_ports(text)
    return found


def _links(port: int, urls: PortURLs) -> str:
    """One port's line: its number (the preferred URL), then its URL on every route."""
    routes = [
        (urls["proxy"], f"/proxy/{port}/"),
        (urls["absproxy"], f"/absproxy/{port}/"),
    ]
    if urls["domain"] is not None:
        routes.append((urls["domain"], urls["domain"]))
    links = " ".join(
        f'<a href="{html.escape(url)}">{html.escape(text)}</a>' for url, text in routes
    )
    return f'<li><a href="{html.escape(preferred_url(urls))}">{port}</a>: {links}</li>'


def render_index(
    ports: Collection[int] | None,
    urls_for: Callable[[int], PortURLs],
    *,
    logout: str = "./logout",
) -> bytes:
    """The start page: each port's links on every route (escaped), or why there is none.

    @param logout: the sign-out form's action, relative to the page so that it stays
        under a front proxy's path prefix.
    """
    if ports is None:
        items = "<p>This system does not tell which ports are listening.</p>"
    elif not ports:
        items = "<p>No app is listening on a local port yet.</p>"
    else:
        items = "<ul>" + "".join(_links(p, urls_for(p)) for p in sorted(ports)) + "</ul>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>portproxy</title><style>body{font-family:system-ui,sans-serif;"
        "max-width:40em;margin:4em auto;padding:0 1em}li{margin:.3em 0}</style></head>"
        "<body><h1>Listening ports</h1>"
        f"{items}<p>Open any port as <code>/proxy/PORT/</code>.</p>"
        f'<form method="post" action="{html.escape(logout)}"><button>Sign out</button>'
        "</form></body></html>"
    ).encode()


class IndexResource(Resource):
    """C{/} on the main host: the start page for a signed-in user.

    Path-route links and the sign-out action are relative to the page (they survive a
    front proxy's path prefix); proxy-host links are absolute, from the scheme and host
    the client used (L{portproxy.routing.publicurl}).
    """

    isLeaf = True

    def __init__(
        self,
        *,
        is_signed_in: Callable[[Request], bool],
        deny: Callable[[Request], bytes],
        own_ports: Collection[int],
        view_of: Callable[[Request], ClientView],
        domains: DomainMatcher,
        read_ports: Callable[[], set[int] | None] = read_listening_ports,
    ) -> None:
        super().__init__()
        self._is_signed_in = is_signed_in
        self._deny = deny
        self._own_ports = own_ports
        self._view_of = view_of
        self._domains = domains
        self._read_ports = read_ports

    def render_GET(self, request: Request) -> bytes:
        if not self._is_signed_in(request):
            return self._deny(request)
        ports = self._read_ports()
        if ports is not None:
            ports = ports - set(self._own_ports)
        view = self._view_of(request)
        base = request_base(view.scheme, view.host)
        here = split_target(origin_form(request.uri))[0]

        def urls_for(port: int) -> PortURLs:
            return port_urls(
                port, base, self._domains, relative_to=here, request_host=view.host
            )

        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        logout = relative_reference(here, b"/logout").decode("ascii")
        return render_index(ports, urls_for, logout=logout)

    render_HEAD = render_GET

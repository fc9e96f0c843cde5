# -*- test-case-name: tests.test_proxy_http -*-
"""The resource tree: dispatch on Host, then on the path, then guard and proxy.

The root is a single step of traversal: it reads the raw request target and the client's
host once, and returns a leaf. Proxy hosts (C{5173.example.com}) and the path routes
(C{/proxy/5173/}, C{/absproxy/5173/}) share one guard (disabled, sign-in, port, own port)
and one engine.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Protocol, cast

from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from portproxy.auth.guard import Authenticator, is_reserved_path
from portproxy.config import Config
from portproxy.http.cookies import cookie_values
from portproxy.http.engine import PortProxyResource, ProxyEngine
from portproxy.http.errorpages import write_error
from portproxy.http.headers import BadRequest, ClientView, client_view, request_authority
from portproxy.net.peer import peer_host
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.publicurl import location_url, request_base
from portproxy.routing.relative import relative_reference
from portproxy.routing.routes import (
    RouteKind,
    absproxy_upstream_path,
    origin_form,
    parse_port,
    parse_route,
    split_target,
)
from portproxy.sharing.access import METHOD_OVERRIDES, Verdict
from portproxy.sharing.state import SharingState
from portproxy.sharing.tokens import (
    TOKEN_HEADER,
    authorization_holds_token,
    presented_token,
)
from portproxy.web.health import HealthResource, Heartbeat
from portproxy.web.request import Gate, ProxyRequest, Router, UploadTarget

__all__ = ["GateKind", "PortProxyRoot", "WebSocketRelay"]


class GateKind(enum.Enum):
    """Which kind of route brought a request to an app, for prefixes and public URLs."""

    #: C{<port>.example.com}: the whole path goes to the app.
    DOMAIN = "domain"
    #: C{/proxy/<port>/...}: the prefix is stripped.
    PROXY = "proxy"
    #: C{/absproxy/<port>/...}: the full path is kept.
    ABSPROXY = "absproxy"


class WebSocketRelay(Protocol):
    """What the tree needs from the WebSocket relay (see L{portproxy.websocket})."""

    def is_upgrade(self, request: Request) -> bool: ...

    def origin_allowed(self, request: Request, view: ClientView) -> bool: ...

    def render(
        self,
        request: Request,
        *,
        port: int,
        path: bytes,
        view: ClientView,
        prefix: bytes | None,
    ) -> bytes | int: ...


class PortProxyRoot(Resource):
    """The root of portproxy's tree: one dispatch per request, then a leaf."""

    def __init__(
        self,
        config: Config,
        *,
        engine: ProxyEngine,
        authenticator: Authenticator,
        heartbeat: Heartbeat,
        own_ports: Collection[int],
        websocket: WebSocketRelay | None = None,
        pages: Mapping[RouteKind, IResource] | None = None,
        reserved: Mapping[bytes, IResource] | None = None,
        sharing: SharingState | None = None,
    ) -> None:
        super().__init__()
        #: Port access levels, share grants and tokens (SPEC 12); C{None} with
        #: C{--auth none}, where every request is signed in anyway.
        self.sharing = sharing
        self.config = config
        self.engine = engine
        self.auth = authenticator
        self.heartbeat = heartbeat
        self.own_ports = own_ports
        self.websocket = websocket
        self.domains = DomainMatcher(config.proxy_domains)
        self._has_domains = bool(config.proxy_domains)
        self.pages: dict[RouteKind, IResource] = {
            RouteKind.HEALTHZ: HealthResource(heartbeat)
        }
        if pages:
            self.pages.update(pages)
        self.reserved: Mapping[bytes, IResource] = reserved or {}

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        # Traversal stops here: every decision is made from the raw target and host.
        request.postpath = []
        # Only a site other than ProxySite walks the tree; dispatch sets client_view
        # on its request all the same.
        return self.dispatch(cast(ProxyRequest, request))

    def dispatch(self, request: ProxyRequest) -> IResource:
        """Pick the leaf for C{request} from its Host and raw request target.

        A request without a usable host (RFC 9112 3.2: HTTP/1.1 without C{Host}, two
        of them, a malformed one) gets 400 on every route. For an absolute-form target
        the target's authority replaces C{Host} (3.2.2): routing, public URLs and the
        app all see that one host.
        """
        headers = request.requestHeaders
        host_values = headers.getRawHeaders(b"host") or []
        try:
            host = request_authority(host_values, request.uri, version=request.clientproto)
        except BadRequest as e:
            return _ErrorLeaf(400, str(e))
        if host is not None and host_values != [host]:
            headers.setRawHeaders(b"host", [host])
        view = client_view(
            request.requestHeaders.getAllRawHeaders(),
            peer=peer_host(request),
            secure=request.isSecure(),
            trusted_networks=self.config.trusted_proxies,
        )
        request.client_view = view
        uri = origin_form(request.uri)
        if uri[:2] == b"/." and is_reserved_path(split_target(uri)[0]):
            # portproxy's own pages on every host (sign-in for proxy hosts).
            return self._reserved_leaf(split_target(uri)[0].lower())
        if self._has_domains and view.host:
            label = self.domains.match(view.host)
            if label is not None:
                return _ProxyGate(self, view, label, None, uri, False, GateKind.DOMAIN)
        route = parse_route(uri)
        if route.kind is RouteKind.PROXY:
            return _ProxyGate(
                self,
                view,
                route.port_label,
                route.prefix,
                route.rest,
                route.needs_slash,
                GateKind.PROXY,
            )
        if route.kind is RouteKind.ABSPROXY:
            path = absproxy_upstream_path(route.rest, self.config.abs_proxy_base_path)
            gate = _ProxyGate(
                self, view, route.port_label, route.prefix, path, False, GateKind.ABSPROXY
            )
            # A grant's path is below the port's URL on every route.
            gate.scope_path = route.rest[len(route.prefix) :] or b"/"
            return gate
        page = self.pages.get(route.kind)
        if page is not None:
            return page
        return _ErrorLeaf(404, "Not found")

    def _reserved_leaf(self, path: bytes) -> IResource:
        """The leaf of a reserved path: an exact entry, else the entry of a folder.

        An entry whose key ends with C{/} (C{/.portproxy/api/}) serves every path
        under it; the leaf reads the rest of the path itself.
        """
        leaf = self.reserved.get(path)
        if leaf is not None:
            return leaf
        for key, folder in self.reserved.items():
            if key[-1:] == b"/" and path.startswith(key):
                return folder
        return _ErrorLeaf(404, "Not found")

    def render(self, request: Request) -> bytes:
        return write_error(request, 404, "Not found")


class _ErrorLeaf(Resource):
    isLeaf = True

    def __init__(self, status: int, message: str) -> None:
        super().__init__()
        self.status = status
        self.message = message

    def render(self, request: Request) -> bytes:
        return write_error(request, self.status, self.message)


class _ProxyGate(Resource):
    """Checks a proxied request in order, then hands it to the engine or the relay.

    Order: proxy disabled (403), WebSocket Origin (403), sign-in (302/401; preflights
    may pass), port syntax (400, after sign-in as in code-server), own port (403), the
    missing slash of C{/proxy/<port>} (302). Sign-in is a session; without one, a
    public port, a token or a share grant in scope (L{_shared_access}).
    """

    isLeaf = True
    #: Tells the request not to add its own Date: the app's response has one.
    proxied = True
    #: The path below the port's URL, which share grants and tokens are scoped to
    #: (C{None}: L{path}, as on the domain and C{/proxy} routes).
    scope_path: bytes | None = None

    def __init__(
        self,
        root: PortProxyRoot,
        view: ClientView,
        label: bytes | str,
        prefix: bytes | None,
        path: bytes,
        needs_slash: bool,
        kind: GateKind,
    ) -> None:
        self.root = root
        self.view = view
        self.label = label
        self.prefix = prefix
        self.path = path
        self.needs_slash = needs_slash
        self.kind = kind

    def proxy_target(self, request: Request) -> PortProxyResource | None:
        """The engine resource this request goes to, if every check passes.

        Has no side effects: used before the body arrives to decide whether the body
        can stream to the app (a request that will be refused just has its body read
        and dropped, then gets its answer from L{render}).
        """
        websocket = self.root.websocket
        if websocket is not None and websocket.is_upgrade(request):
            return None
        refusal, port = self._check(request, upgrade=False)
        if refusal is not None or port is None:
            return None
        return self._engine_resource(port)

    def _check(
        self, request: Request, *, upgrade: bool
    ) -> tuple[Callable[[Request], bytes] | None, int | None]:
        """Run the checks in order: C{(None, port)}, or the answer that refuses.

        The one place the order of the checks lives, for L{render} and for
        L{proxy_target}; it writes nothing, the returned answer does. (A signed-in
        request marks its connection trusted, for the connection cap; a token in
        C{Authorization} is taken out of a request that passes, whoever lets it in, and
        so are method overrides under a method-limited scope: all idempotent.)
        """
        root = self.root
        if root.config.disable_proxy:
            return _error(403, "The port proxy is disabled"), None
        if upgrade and not root.websocket.origin_allowed(request, self.view):  # type: ignore[union-attr]
            return _error(403, "Origin not allowed"), None
        auth = root.auth
        if auth.is_signed_in(request):
            signed_in = getattr(request, "signed_in", None)
            if signed_in is not None:
                signed_in()  # its connection is trusted at the cap (portproxy.net.limits)
        elif (verdict := self._shared_access(request, upgrade)) is Verdict.FORBIDDEN:
            return _error(403, "Not allowed by this share link or token"), None
        elif not verdict.allowed:
            if upgrade:
                return auth.deny_unauthorized, None
            if not auth.allows_preflight(request):
                return (lambda r: auth.deny(r, original_url=self._original_url(r))), None
        port = parse_port(self.label)
        if port is None:
            return _error(400, "Invalid port"), None
        if port in root.own_ports:
            return _error(403, "portproxy does not proxy to itself"), None
        if self.needs_slash:
            return self._add_slash, None
        # Never an app's, on a public port or for a signed-in browser too: the app
        # could replay it against private ports. One lookup when there is no header.
        headers = request.requestHeaders
        if authorization_holds_token(headers.getRawHeaders(b"authorization")):
            headers.removeHeader(b"authorization")
        return None, port

    def _shared_access(self, request: Request, upgrade: bool) -> Verdict:
        """Without a session: a public port, else a token, else a share grant (SPEC 12).

        L{Verdict.INVALID} when none of them applies (the usual sign-in answer follows).
        The request remembers that it was let in, for the second run of the checks
        (L{proxy_target}, then L{render}), since L{_check} takes the token out of
        C{Authorization} after the first. A WebSocket (C{upgrade})
        needs a scope open to every method.
        """
        sharing = self.root.sharing
        port = parse_port(self.label)
        if sharing is None or port is None:
            return Verdict.INVALID
        if getattr(request, "_portproxy_shared", None) == port:
            return Verdict.ALLOW
        if sharing.access(port) == "public":
            return Verdict.ALLOW
        headers = request.requestHeaders
        path = self.path if self.scope_path is None else self.scope_path
        method = request.method
        token = presented_token(
            headers.getRawHeaders(b"authorization"), headers.getRawHeaders(TOKEN_HEADER)
        )
        if token is not None:
            verdict = sharing.check_token(token.secret, port, path, method, upgrade=upgrade)
            if verdict.allowed:
                # Authorization is cleared of it at the end of _check, with every ppt_.
                _limit_methods(headers, verdict)
                request._portproxy_shared = port  # type: ignore[attr-defined]
                return verdict
            if verdict is Verdict.FORBIDDEN:
                return verdict
        cookies = headers.getRawHeaders(b"cookie")
        if not cookies:
            return Verdict.INVALID
        result = Verdict.INVALID
        # A bound on the MACs checked, high enough that values planted by a sibling
        # host (cookies of *.example.com) cannot push the real one out; a value that
        # does not parse costs no MAC.
        for value in cookie_values(cookies, sharing.grant_cookie_name(port), _GRANTS_READ):
            verdict = sharing.check_grant(
                value.decode("ascii", "replace"), port, path, method, upgrade=upgrade
            )
            if verdict.allowed:
                _limit_methods(headers, verdict)
                return verdict
            if verdict is Verdict.FORBIDDEN:
                result = verdict
        return result

    def _add_slash(self, request: Request) -> bytes:
        # 302 would let a client turn a POST into a GET and drop its body (RFC 9110
        # 15.4.3); 308 keeps the method. The Location is relative (the port segment,
        # then the slash), so it stays under a front proxy's path prefix.
        code = 302 if request.method in (b"GET", b"HEAD") else 308
        request.setResponseCode(code)
        here = split_target(origin_form(request.uri))[0]
        target = self.prefix + b"/" + self.path  # type: ignore[operator]
        request.setHeader(b"location", relative_reference(here, target))
        request.setHeader(b"cache-control", b"no-store")
        return b""

    def _engine_resource(self, port: int) -> PortProxyResource:
        return PortProxyResource(
            self.root.engine,
            port,
            self.path,
            view=self.view,
            prefix=self.prefix if self.kind is GateKind.PROXY else None,
            public_url=self.public_url,
            main_origin=self.kind is not GateKind.DOMAIN,
        )

    def render(self, request: Request) -> bytes | int:
        websocket = self.root.websocket
        upgrade = websocket is not None and websocket.is_upgrade(request)
        refusal, port = self._check(request, upgrade=upgrade)
        if refusal is not None:
            return refusal(request)
        assert port is not None
        if upgrade:
            self.root.heartbeat.beat()
            strip_prefix = self.prefix if self.kind is GateKind.PROXY else None
            return websocket.render(  # type: ignore[union-attr]
                request, port=port, path=self.path, view=self.view, prefix=strip_prefix
            )
        return self._engine_resource(port).render(request)

    def _original_url(self, request: Request) -> bytes:
        """The URL the browser asked for, for the round trip through sign-in."""
        target = origin_form(request.uri)
        if self.kind is GateKind.DOMAIN:
            host = (self.view.host or "").encode("ascii", "replace")
            return self.view.scheme.encode() + b"://" + host + target
        return target

    def public_url(self, p: int, rest: bytes) -> bytes | None:
        """The public URL of C{rest} on port C{p}, on the same kind of route as this one.

        Used to rewrite an app's redirect to C{http://localhost:p/rest}; only called when
        such a Location comes back, so nothing is built per request. Proxy hosts get an
        absolute URL from the request's own scheme and host (see
        L{portproxy.routing.publicurl.location_url}).
        """
        view = self.view
        return location_url(
            p,
            rest,
            route=self.kind.value,
            here_port=parse_port(self.label),
            here_prefix=self.prefix,
            base_path=self.root.config.abs_proxy_base_path,
            base=request_base(view.scheme, view.host),
            matcher=self.root.domains,
            request_host=view.host,
        )


#: How many grant cookies of one port are checked at most (see L{_ProxyGate}).
_GRANTS_READ = 32


def _limit_methods(headers: Headers, verdict: Verdict) -> None:
    """Under a method-limited scope, drop the headers that would override the method."""
    if verdict is Verdict.ALLOW_LIMITED:
        for name in METHOD_OVERRIDES:
            headers.removeHeader(name)


def _error(status: int, message: str) -> Callable[[Request], bytes]:
    return lambda request: write_error(request, status, message)


if TYPE_CHECKING:

    def _seams(
        root: PortProxyRoot, gate: _ProxyGate, target: PortProxyResource
    ) -> tuple[Router, Gate, UploadTarget]:
        # mypy checks here that each side keeps the contract the site relies on.
        return root, gate, target

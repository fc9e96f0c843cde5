# -*- test-case-name: tests.test_sharing_api -*-
"""The sharing calls of the JSON API (SPEC 12): access levels, share links, tokens.

The gate (a signed-in session, the main host, JSON only, same Origin) is
L{portproxy.web.api.ApiResource}'s; this module adds the handlers. Bodies are checked
strictly and by type (C{true} is not a port, C{"3000"} is not a port) with plain
functions that raise L{ApiError} naming the field, before anything reaches the state;
the state's own C{ValueError("<field>: <reason>")} becomes a 400 the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from twisted.web.server import Request

from portproxy.http.headers import ClientView
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.publicurl import (
    PublicBase,
    domain_url,
    public_url_base,
    request_base,
)
from portproxy.routing.routes import parse_port
from portproxy.sharing import access as access_rules
from portproxy.sharing import grants
from portproxy.sharing.durations import format_duration
from portproxy.web.api import ApiError, ApiResource

__all__ = [
    "KNOWN_METHODS",
    "MAX_LABEL",
    "MAX_NAME",
    "MAX_TOKEN_TTL",
    "ROUTES",
    "SHARE_PATH",
    "SharingApi",
    "SharingStore",
    "check_label",
    "check_methods",
    "check_name",
    "check_path",
    "check_port",
    "check_ports",
    "check_route",
    "check_ttl",
    "share_link",
]

#: Where a share link is opened (on the main host, or on the port's proxy host).
SHARE_PATH = grants.SHARE_PATH.decode("ascii")
#: The methods a share or token may be limited to.
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: The routes a share link can open its port on.
ROUTES = ("proxy", "absproxy", "domain")
MAX_NAME = 64
MAX_LABEL = 64
_DEFAULT_SHARE_TTL = 86400.0
#: The longest a token may live: 100 years. "Never" is C{null}; a larger number only
#: makes dates no calendar can print.
MAX_TOKEN_TTL = 36525 * 86400.0


class _Share(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def methods(self) -> tuple[str, ...] | None: ...
    @property
    def route(self) -> str: ...
    @property
    def created(self) -> float: ...
    @property
    def expires(self) -> float: ...


class _Token(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def ports(self) -> tuple[int, ...]: ...
    @property
    def path(self) -> str: ...
    @property
    def methods(self) -> tuple[str, ...] | None: ...
    @property
    def created(self) -> float: ...
    @property
    def expires(self) -> float | None: ...
    @property
    def last_used(self) -> float | None: ...


class SharingStore(Protocol):
    """What the API needs of L{portproxy.sharing.state.SharingState}."""

    max_share_ttl: float

    def refresh(self) -> None: ...
    def access(self, port: int) -> str: ...
    def label(self, port: int) -> str | None: ...
    def set_port(
        self, port: int, *, access: str | None = ..., label: str | None = ...
    ) -> None: ...
    def create_share(
        self,
        *,
        port: int,
        path: str = ...,
        methods: Sequence[str] | None = ...,
        ttl: float = ...,
        route: str = ...,
    ) -> tuple[Any, str]: ...
    def shares(self) -> Sequence[Any]: ...
    def revoke_share(self, id: str) -> bool: ...
    def create_token(
        self,
        *,
        name: str,
        ports: Sequence[int],
        path: str = ...,
        methods: Sequence[str] | None = ...,
        ttl: float | None = ...,
    ) -> tuple[Any, str]: ...
    def tokens(self) -> Sequence[Any]: ...
    def revoke_token(self, id: str) -> bool: ...


# -- checks: pure, each raises ValueError("<field>: <reason>") ---------------------------
# Ports, ports lists and path prefixes are the state's own rules
# (L{portproxy.sharing.access}); what is added here is what a caller may ask for.


def check_port(value: object, field: str = "port") -> int:
    """A port number: a JSON integer (not C{true}, not C{"3000"}) in 1-65535."""
    return access_rules.check_port(value, field)


def check_ports(value: object) -> tuple[int, ...]:
    """A non-empty list of ports (at most 100), sorted, duplicates dropped."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("ports: must be a non-empty list of port numbers")
    if len(value) > 100:
        raise ValueError("ports: at most 100 ports")
    return access_rules.check_ports(value)


def check_path(value: object) -> str:
    """A path prefix (C{null}: C{/}); see L{access_rules.check_path_prefix}."""
    return "/" if value is None else access_rules.check_path_prefix(value)


def check_methods(value: object) -> tuple[str, ...] | None:
    """C{None} (every method) or a non-empty list of L{KNOWN_METHODS} (any case)."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("methods: must be a non-empty list of methods, or null for all")
    for item in value:
        if not isinstance(item, str) or item.upper() not in KNOWN_METHODS:
            raise ValueError(f"methods: {item!r} is not one of {', '.join(KNOWN_METHODS)}")
    return access_rules.check_methods([item.upper() for item in value])


def check_ttl(value: object, *, most: float | None, optional: bool) -> float | None:
    """A lifetime in seconds: a positive JSON number, at most C{most} (C{None}: at most
    L{MAX_TOKEN_TTL}); C{None} only when C{optional} (a token that never expires)."""
    if value is None:
        if optional:
            return None
        raise ValueError("ttl: must be a number of seconds")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("ttl: must be a number of seconds")
    # Compared before float(): a 400-digit JSON integer overflows a float.
    if (isinstance(value, float) and not math.isfinite(value)) or value <= 0:
        raise ValueError("ttl: must be a positive number of seconds")
    if most is not None and value > most:
        raise ValueError(f"ttl: at most {format_duration(most)} (--max-share-ttl)")
    if value > MAX_TOKEN_TTL:
        raise ValueError(f"ttl: at most {format_duration(MAX_TOKEN_TTL)} (100 years)")
    return float(value)


def _printable(value: str) -> bool:
    return value.isprintable()


def check_name(value: object) -> str:
    """A token's name: 1 to 64 printable characters, spaces at either end dropped."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("name: must be a non-empty string")
    name = value.strip()
    if len(name) > MAX_NAME:
        raise ValueError(f"name: at most {MAX_NAME} characters")
    if not _printable(name):
        raise ValueError("name: only printable characters")
    return name


def check_label(value: object) -> str | None:
    """A port's label: up to 64 printable characters; C{null} or C{""} removes it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("label: must be a string or null")
    label = value.strip()
    if len(label) > MAX_LABEL:
        raise ValueError(f"label: at most {MAX_LABEL} characters")
    if not _printable(label):
        raise ValueError("label: only printable characters")
    return label or None


def check_route(value: object, default: str = "proxy") -> str:
    """C{"proxy"}, C{"absproxy"} or C{"domain"}: the URL the link opens."""
    if value is None:
        return default
    if not isinstance(value, str) or value not in ROUTES:
        raise ValueError(f"route: must be one of {', '.join(ROUTES)}")
    return value


def _object(body: object, allowed: Iterable[str]) -> Mapping[str, Any]:
    """The body as a JSON object with only the C{allowed} fields."""
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    for key in body:
        if key not in allowed:
            raise ValueError(f"{key}: unknown field")
    return body


def share_link(
    token: str,
    *,
    port: int,
    route: str,
    base: PublicBase | None,
    domains: DomainMatcher,
    request_host: str | None = None,
) -> str:
    """The full URL of a share link, or C{ValueError} naming C{route}.

    A path-route link opens on the main host (C{base}, its front-proxy prefix kept);
    a domain-route link on the port's own proxy host, so that the grant cookie lands
    on the host it opens.
    """
    path = SHARE_PATH + token
    if route == "domain":
        root = domain_url(port, base, domains, request_host)
        if root is None:
            raise ValueError(f"route: no --proxy-domain names a host for port {port}")
        return root + path[1:]
    if base is None:
        return path
    return base.url(path)


def share_view(share: _Share) -> dict[str, Any]:
    """A share as the API shows it (never its link token)."""
    return {
        "id": share.id,
        "port": share.port,
        "path": share.path,
        "methods": None if share.methods is None else list(share.methods),
        "route": share.route,
        "created": share.created,
        "expires": share.expires,
    }


def token_view(token: _Token) -> dict[str, Any]:
    """A token as the API lists it: everything but the secret."""
    return {
        "id": token.id,
        "name": token.name,
        "ports": list(token.ports),
        "path": token.path,
        "methods": None if token.methods is None else list(token.methods),
        "created": token.created,
        "expires": token.expires,
        "last_used": token.last_used,
    }


# -- the handlers -------------------------------------------------------------------------


def _bad_input(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ValueError as e:
        raise ApiError(400, str(e)) from None


class SharingApi:
    """The handlers of C{ports/<port>}, C{shares} and C{tokens}.

    @param state: the process's sharing state (file-backed, shared by every worker).
    @param view_of: the client's view of a request, for the links' scheme and host.
    @param domains: the proxy domains, for domain-route links.
    @param public_url: C{--public-url}; its path prefix is kept in links made on its
        own origin (a front proxy mounts portproxy under it).
    @param on_change: called after a port's access level or label changed (the ports
        watcher republishes its entries to the home pages).
    """

    def __init__(
        self,
        state: SharingStore | None,
        *,
        view_of: Callable[[Request], ClientView],
        domains: DomainMatcher,
        public_url: str | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._sharing = state
        self._on_change = on_change
        self._view_of = view_of
        self._domains = domains
        self._public = None if public_url is None else public_url_base(public_url)

    def install(self, api: ApiResource) -> None:
        """Add the sharing routes to C{api}."""
        api.add("PATCH", r"ports/(?P<port>[0-9]{1,5})", self.patch_port)
        api.add("GET", r"shares", self.list_shares)
        api.add("POST", r"shares", self.create_share)
        api.add("DELETE", r"shares/(?P<id>[A-Za-z0-9_-]{1,64})", self.revoke_share)
        api.add("GET", r"tokens", self.list_tokens)
        api.add("POST", r"tokens", self.create_token)
        api.add("DELETE", r"tokens/(?P<id>[A-Za-z0-9_-]{1,64})", self.revoke_token)

    @property
    def _state(self) -> SharingStore:
        if self._sharing is None:
            # --auth none: every port is already open to everyone.
            raise ApiError(409, "sharing needs --auth password: every port is open")
        return self._sharing

    def _base(self, request: Request) -> PublicBase | None:
        view = self._view_of(request)
        base = request_base(view.scheme, view.host)
        public = self._public
        if public is not None and (base is None or base.origin == public.origin):
            return public
        return base

    def patch_port(
        self, request: Request, fields: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        port = parse_port(fields["port"].encode("ascii"))
        if port is None:
            raise ApiError(404, "Not found")

        def change() -> dict[str, Any]:
            changes = _object(body, ("access", "label"))
            if not changes:
                raise ValueError("body: give access, label or both")
            kwargs: dict[str, Any] = {}
            if "access" in changes:
                access = changes["access"]
                if access not in ("public", "private"):
                    raise ValueError("access: must be public or private")
                kwargs["access"] = access
            if "label" in changes:
                kwargs["label"] = check_label(changes["label"])
            self._state.set_port(port, **kwargs)
            self._on_change()
            return {
                "port": port,
                "access": self._state.access(port),
                "label": self._state.label(port),
            }

        return 200, _bad_input(change)

    def list_shares(
        self, request: Request, fields: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        self._state.refresh()
        return 200, [share_view(s) for s in self._state.shares()]

    def create_share(
        self, request: Request, fields: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        def create() -> dict[str, Any]:
            given = _object(body, ("port", "path", "methods", "ttl", "route"))
            if "port" not in given:
                raise ValueError("port: required")
            port = check_port(given["port"])
            path = check_path(given.get("path"))
            methods = check_methods(given.get("methods"))
            most = self._state.max_share_ttl
            ttl = check_ttl(
                given.get("ttl", min(_DEFAULT_SHARE_TTL, most)), most=most, optional=False
            )
            assert ttl is not None
            base = self._base(request)
            route = check_route(given.get("route"), self._default_route(port, base))
            # The link's URL is checked before the share exists: no orphan share.
            share_link("x", port=port, route=route, base=base, domains=self._domains)
            share, secret = self._state.create_share(
                port=port, path=path, methods=methods, ttl=ttl, route=route
            )
            view = share_view(share)
            view["url"] = share_link(
                secret, port=port, route=route, base=base, domains=self._domains
            )
            return view

        return 201, _bad_input(create)

    def _default_route(self, port: int, base: PublicBase | None) -> str:
        """C{domain} when a proxy domain names C{port}, else C{proxy}: a proxy host is
        an origin of its own, a path route shares the home page's (as the CLI does)."""
        try:
            share_link("x", port=port, route="domain", base=base, domains=self._domains)
        except ValueError:
            return "proxy"
        return "domain"

    def revoke_share(
        self, request: Request, fields: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        if not self._state.revoke_share(fields["id"]):
            raise ApiError(404, "No such share")
        return 204, None

    def list_tokens(
        self, request: Request, fields: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        self._state.refresh()
        return 200, [token_view(t) for t in self._state.tokens()]

    def create_token(
        self, request: Request, fields: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        def create() -> dict[str, Any]:
            given = _object(body, ("name", "ports", "path", "methods", "ttl"))
            if "name" not in given:
                raise ValueError("name: required")
            if "ports" not in given:
                raise ValueError("ports: required")
            name = check_name(given["name"])
            ports = check_ports(given["ports"])
            path = check_path(given.get("path"))
            methods = check_methods(given.get("methods"))
            ttl = check_ttl(given.get("ttl"), most=None, optional=True)
            token, secret = self._state.create_token(
                name=name, ports=ports, path=path, methods=methods, ttl=ttl
            )
            view = token_view(token)
            view["token"] = secret
            return view

        return 201, _bad_input(create)

    def revoke_token(
        self, request: Request, fields: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        if not self._state.revoke_token(fields["id"]):
            raise ApiError(404, "No such token")
        return 204, None

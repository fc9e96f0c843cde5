# -*- test-case-name: tests.test_service -*-
"""Assemble one portproxy instance from a L{Config}: engine, tree, site, listeners."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger
from twisted.web.server import Request

from portproxy.config import Config, StartupError
from portproxy.http.engine import ProxyEngine
from portproxy.http.headers import ClientView, client_address, client_view
from portproxy.http.hostrewrite import HostRewrite, KnownHosts
from portproxy.net.limits import ConnectionLimits, current_upstream_budget, fit_fd_limit
from portproxy.net.peer import peer_host
from portproxy.net.reactor import IInstanceReactor, installed_reactor
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.publicurl import listener_warnings, url_template
from portproxy.routing.routes import RouteKind, origin_form
from portproxy.runtime.handoff import WORKER_ENV
from portproxy.runtime.service import ListeningService, PortProxyService
from portproxy.sharing.state import SharingState
from portproxy.web.accesslog import FileSink, ReopenOnSignal
from portproxy.web.api import API_PREFIX, ApiResource
from portproxy.web.health import Heartbeat
from portproxy.web.home import IndexResource
from portproxy.web.portsapi import PortsApi, build_ports_api
from portproxy.web.root import PortProxyRoot
from portproxy.web.site import ProxySite

__all__ = ["Instance", "build_instance", "build_service"]

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.app")


@dataclass
class Instance:
    """The parts of a running instance that tests and the service need to reach."""

    config: Config
    reactor: IInstanceReactor
    engine: ProxyEngine
    root: PortProxyRoot
    site: ProxySite
    heartbeat: Heartbeat
    own_ports: set[int] = field(default_factory=set)
    #: The C{--access-log-file} sink, C{None} when the log goes to the Twisted log or
    #: is off.
    access_log: FileSink | None = None
    #: The JSON API under C{/.portproxy/api/}; features add their routes to it.
    api: ApiResource | None = None
    #: Port access levels, share links and tokens (SPEC 12); C{None} with
    #: C{--auth none}, where everything is open.
    sharing: SharingState | None = None
    #: The ports API and its watcher (SPEC 13); stopped with the service.
    ports: PortsApi | None = None


def build_instance(
    config: Config, *, environ: Mapping[str, str], reactor: IInstanceReactor | None = None
) -> Instance:
    """Build everything but the listeners."""
    if reactor is None:
        reactor = installed_reactor()
    from portproxy.auth import (
        RESERVED_LOGIN,
        RESERVED_LOGOUT,
        RESERVED_TICKET,
        RESERVED_TICKET_ACCEPT,
        LoginResource,
        LogoutResource,
        TicketAcceptResource,
        TicketResource,
        build_authenticator,
    )
    from portproxy.auth.redirects import forwarded_prefix

    heartbeat = Heartbeat(reactor)
    own_ports: set[int] = set()
    trusted = config.trusted_proxies

    def view_of(request: Request) -> ClientView:
        view = getattr(request, "client_view", None)
        if view is None:
            view = client_view(
                request.requestHeaders.getAllRawHeaders(),
                peer=peer_host(request),
                secure=request.isSecure(),
                trusted_networks=trusted,
            )
        return view

    def address_of(request: Request) -> str:
        return client_address(
            request.requestHeaders.getAllRawHeaders(),
            peer=peer_host(request),
            trusted_networks=trusted,
        )

    def prefix_of(request: Request) -> bytes | None:
        # Sign-in redirects honour X-Forwarded-Prefix only from a trusted proxy.
        if not view_of(request).trusted:
            return None
        return forwarded_prefix(request.getHeader(b"x-forwarded-prefix"))

    authenticator = build_authenticator(
        config,
        environ=environ,
        clock=reactor,
        log=_log,
        proxy_patterns=config.proxy_domains,
        is_https=lambda request: view_of(request).scheme == "https",
        client_address=address_of,
        request_host=lambda request: view_of(request).host or "",
        threads=reactor,
        mount_prefix=prefix_of,
        # A --workers worker runs with --workers 1: the supervisor's variable tells.
        shared_processes=config.workers > 1 or WORKER_ENV in environ,
    )
    login = LoginResource(authenticator)
    logout = LogoutResource(authenticator)
    sharing = _sharing(config, authenticator, reactor)
    ports = build_ports_api(
        reactor,
        own_ports=own_ports,
        view_of=view_of,
        domains=DomainMatcher(config.proxy_domains),
    )
    index = IndexResource(
        is_signed_in=authenticator.is_signed_in,
        deny=lambda request: authenticator.deny(
            request, original_url=origin_form(request.uri)
        ),
        ports_of=ports.watcher.ports_of,
        view_of=view_of,
        domains=DomainMatcher(config.proxy_domains),
        **_sharing_controls(sharing),
    )
    pages = {RouteKind.LOGIN: login, RouteKind.LOGOUT: logout, RouteKind.INDEX: index}
    reserved = {
        RESERVED_LOGIN: login,
        RESERVED_LOGOUT: logout,
        RESERVED_TICKET: TicketResource(authenticator),
        RESERVED_TICKET_ACCEPT: TicketAcceptResource(authenticator),
    }
    domains = DomainMatcher(config.proxy_domains)
    api = ApiResource(
        is_signed_in=authenticator.is_signed_in,
        is_proxy_host=lambda request: (
            domains.match(view_of(request).host or "") is not None
        ),
        view_of=view_of,
    )
    reserved[API_PREFIX] = api
    from portproxy.sharing.endpoint import ShareLinkResource
    from portproxy.sharing.grants import SHARE_PATH

    reserved[SHARE_PATH] = ShareLinkResource(
        sharing, view_of=view_of, domains=domains, mount_prefix=prefix_of
    )
    ports.install(api)
    from portproxy.web.shareapi import SharingApi

    SharingApi(
        sharing,
        view_of=view_of,
        domains=domains,
        public_url=config.public_url,
        on_change=ports.watcher.changed,
    ).install(api)
    if sharing is not None:
        # The home page and the ports API show each port's label and access level.
        ports.watcher.label_of = sharing.label
        ports.watcher.access_of = lambda port: (
            "public" if sharing.access(port) == "public" else "private"
        )
    rewrite_host = _host_rewrite(config, authenticator.is_signed_in)
    engine = ProxyEngine(
        reactor,
        upstream_timeout=config.upstream_timeout,
        session_cookie=authenticator.cookie_name,
        on_request=heartbeat.beat,
        rewrite_host=rewrite_host,
        compress=config.compress,
    )
    websocket = None
    try:
        from portproxy.websocket import AutobahnRelay
    except ImportError:
        pass
    else:
        websocket = AutobahnRelay(
            reactor,
            upstream_timeout=config.upstream_timeout,
            session_cookie=authenticator.cookie_name,
            trusted_origins=config.trusted_origins,
            rewrite_host=rewrite_host,
        )
        # WebSocket upstream legs count in the same budget as HTTP ones.
        websocket.upstream_slots = engine.pool
    root = PortProxyRoot(
        config,
        engine=engine,
        authenticator=authenticator,
        heartbeat=heartbeat,
        own_ports=own_ports,
        websocket=websocket,
        pages=pages,
        reserved=reserved,
        sharing=sharing,
    )
    limits = ConnectionLimits(
        reactor,
        max_connections=config.max_connections,
        header_timeout=config.header_timeout,
        send_timeout=config.send_timeout,
        trusted_proxies=config.trusted_proxies,
        trust_all=config.auth == "none",
    )
    access_log = _access_log_file(config, reactor)
    site = ProxySite(
        root,
        reactor=reactor,
        access_log=config.access_log,
        max_body_size=config.max_body_size,
        limits=limits,
        access_log_sink=access_log,
    )
    return Instance(
        config,
        reactor,
        engine,
        root,
        site,
        heartbeat,
        own_ports,
        access_log=access_log,
        api=api,
        sharing=sharing,
        ports=ports,
    )


def _sharing(
    config: Config, authenticator: object, reactor: IInstanceReactor
) -> SharingState | None:
    """The sharing state, keyed by the password; C{None} with C{--auth none}."""
    credential = getattr(authenticator, "credential", None)
    if config.auth == "none" or credential is None:
        return None
    from portproxy.sharing.build import open_sharing

    return open_sharing(config, credential, clock=reactor, log=_log)


def _sharing_controls(sharing: SharingState | None) -> dict[str, Any]:
    """The home page's sharing controls (L{portproxy.web.sharepanel}); none with
    C{--auth none}, where there is nothing to share."""
    if sharing is None:
        return {}
    from portproxy.web.sharepanel import PANEL_CSS, PANEL_SCRIPT, render_panel

    return {"sharing": render_panel, "extra_style": PANEL_CSS, "extra_script": PANEL_SCRIPT}


def _host_rewrite(
    config: Config, is_signed_in: Callable[[Request], bool]
) -> HostRewrite[Request] | None:
    """C{--rewrite-host}'s per-request rule: any host for a signed-in request, known
    hosts only for one that needed no sign-in (DNS rebinding, see hostrewrite)."""
    if not config.rewrite_host:
        return None
    known = KnownHosts(proxy_domains=config.proxy_domains, public_url=config.public_url)
    # With --auth none every request is "signed in" to the authenticator, yet none
    # proved anything: the known-host rule is the only one.
    signed_in = _never if config.auth == "none" else is_signed_in
    return HostRewrite(known, signed_in)


def _never(request: Request) -> bool:
    return False


def _access_log_file(config: Config, reactor: IInstanceReactor) -> FileSink | None:
    """The C{--access-log-file} sink, opened now so a bad path stops start-up."""
    if config.access_log_file is None or config.access_log == "off":
        return None
    try:
        return FileSink(config.access_log_file, reactor=reactor)
    except OSError as e:
        raise StartupError(
            f"--access-log-file: cannot open {config.access_log_file!r}: {e.strerror}"
        ) from None


def build_service(
    config: Config,
    *,
    environ: Mapping[str, str],
    reactor: IInstanceReactor | None = None,
    listener: Callable[..., IService] = ListeningService,
) -> PortProxyService:
    """The service that C{twist portproxy}, C{twistd} and .tac files run.

    @param listener: makes the service of one C{--listen}, with L{ListeningService}'s
        arguments; a C{--workers} worker passes one that adopts an inherited socket.
    """
    instance = build_instance(config, environ=environ, reactor=reactor)
    limits = instance.site.limits
    if limits is not None:
        # Each connection may need a descriptor for the app too: raise the file limit
        # to fit, or hold fewer connections (with a warning) when it cannot be raised.
        limits.max_connections = fit_fd_limit(config.max_connections, log=_log)
        # HTTP/2 streams each hold an upstream: bound those by what the file limit
        # leaves once every client connection has its descriptor.
        instance.engine.pool.max_open = current_upstream_budget(limits.max_connections)

    def close_then_log() -> Deferred[None]:
        # The access log is written out last, once the running requests are logged.
        if instance.ports is not None:
            instance.ports.close()  # event streams end, the watcher's timers stop
        return instance.engine.close().addBoth(
            lambda result: instance.site.close_access_log()
        )

    sink = instance.access_log
    service = PortProxyService(
        close_then_log,
        instance.engine.drain,
        close_clients=instance.site.close_connections,
    )
    if sink is not None:
        ReopenOnSignal(instance.reactor, sink.reopen).setServiceParent(service)
    wrapper = _tls_wrapper(config, instance.reactor, limits, sink)
    for description in config.listen:
        listener(
            instance.reactor,
            description,
            instance.site,
            instance.own_ports.add,
            wrap=wrapper(description),
        ).setServiceParent(service)
    _log.info(
        "apps open at {template} ({host})",
        template=url_template(config),
        host=(
            "apps see Host: localhost:<port>"
            if config.rewrite_host
            else "Host header passes unchanged to the app"
        ),
    )
    if WORKER_ENV not in environ:
        # A --workers supervisor warns once for all its workers.
        log_listener_warnings(config)
    return service


def log_listener_warnings(config: Config) -> None:
    """Warn at start-up about listeners that expose plain HTTP or an open proxy."""
    for warning in listener_warnings(
        config.listen,
        auth=config.auth,
        tls_on_tcp=config.cert is not None or config.self_signed,
    ):
        _log.warn("{warning}", warning=warning)


#: Puts a listening factory behind TLS (L{portproxy.runtime.tlslistener.ServerTLS.wrap}).
Wrap = Callable[[IProtocolFactory], IProtocolFactory]


def _tls_wrapper(
    config: Config,
    reactor: IInstanceReactor,
    limits: ConnectionLimits | None = None,
    access_log: FileSink | None = None,
) -> Callable[[str], Wrap | None]:
    """For each C{--listen} description, what puts TLS on it, or C{None} (plain).

    TLS goes on C{tcp:} and C{tcp6:} listeners only (see docs/tls.rst); nothing of
    TLS is imported or built for a plain configuration.
    """
    if config.cert is None and not config.self_signed:
        return lambda description: None
    from portproxy.runtime.tls import TLSError, wants_tls
    from portproxy.runtime.tlslistener import RedirectToHTTPS, ServerTLS

    if not any(wants_tls(d) for d in config.listen):
        _log.warn("--cert/--self-signed: no tcp: --listen to serve TLS on")
    # Plain HTTP on a TLS port gets a redirect; its body is not needed, only bounded.
    redirect = ProxySite(
        RedirectToHTTPS(),
        reactor=reactor,
        access_log=config.access_log,
        max_body_size=1024 * 1024,
        limits=limits,
        access_log_sink=access_log,
    )
    redirect.noisy = False
    tls = ServerTLS(
        cert=config.cert,
        cert_key=config.cert_key,
        self_signed=config.self_signed,
        cert_hosts=config.cert_hosts,
        data_dir=config.data_dir,
        reactor=reactor,
        redirect=redirect,
        log=_log,
        http2_limits=config,  # HTTP/2 deadlines follow --header-timeout/--send-timeout
        limits=limits,  # the wait for the first byte is part of the request head
    )

    def wrap(factory: IProtocolFactory) -> IProtocolFactory:
        try:
            return tls.wrap(factory)
        except TLSError as e:
            raise StartupError(str(e)) from None

    return lambda description: wrap if wants_tls(description) else None

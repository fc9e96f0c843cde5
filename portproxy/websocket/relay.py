# -*- test-case-name: tests.test_websocket_relay -*-
"""The WebSocket relay: Autobahn shakes hands on both legs, then bytes are spliced.

For one upgrade the request's connection is taken from twisted.web and given to an
Autobahn server protocol (the client leg). Its C{onConnect} answers with a Deferred and
opens an Autobahn client (the upstream leg) to C{127.0.0.1:<port>} (C{[::1]} when IPv4 is
refused) with the client's subprotocols, Host, Origin and application headers (with
C{--rewrite-host}, Host and a same-origin Origin name C{localhost:<port>} instead). The
client then gets the upstream's answer: its subprotocol with a 101, or its error status.

After both 101s neither leg has an extension (the client leg declines permessage-deflate
and the upstream leg offers none), so both legs speak plain RFC 6455 framing: the client's
frames are masked, as the upstream expects from a client, and the upstream's are not, as a
browser expects from a server. Autobahn's frame processing is then bypassed and bytes are
copied both ways with the two sockets registered as each other's producers, so text,
binary, fragmentation, pings and close codes pass unchanged, and a slow reader on either
side stops reading on the other (memory stays bounded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IProtocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.http import HTTPChannel
from twisted.web.server import NOT_DONE_YET, Request

from portproxy.http.errorpages import write_error
from portproxy.http.headers import ClientView, forward_websocket_headers
from portproxy.http.hostrewrite import (
    HostRewrite,
    local_host,
    public_origin,
    rewrite_origin,
)
from portproxy.net.reactor import IClientReactor
from portproxy.websocket.bridge import Bridge
from portproxy.websocket.handshake import (
    Target,
    is_upgrade,
    request_target,
    server_leg_head,
)
from portproxy.websocket.legs import ClientLeg, ClientLegFactory
from portproxy.websocket.origin import origin_allowed, parse_trusted_origins

if TYPE_CHECKING:
    from portproxy.http.upstream import UpstreamPool

__all__ = ["AutobahnRelay"]


class AutobahnRelay:
    """Relay WebSocket upgrades to local ports.

    Satisfies C{portproxy.web.root.WebSocketRelay}.

    @param upstream_timeout: seconds to wait for the upstream's handshake answer
        (connection included) before the client gets a 504.
    @param session_cookie: portproxy's cookie name, removed from the forwarded C{Cookie}.
    @param trusted_origins: C{--trusted-origins} values.
    @param rewrite_host: C{--rewrite-host}: for the requests it applies to, the
        upstream sees C{Host: localhost:<port>} and a same-origin Origin made local
        (L{portproxy.http.hostrewrite}), instead of the client's values byte for byte;
        C{None} without the option.
    @raise ValueError: for a malformed trusted origin.
    """

    #: The budget of open upstream connections the upstream legs count in (the HTTP
    #: engine's L{portproxy.http.upstream.UpstreamPool}); C{None}: not counted.
    upstream_slots: UpstreamPool | None = None

    def __init__(
        self,
        reactor: IClientReactor,
        *,
        upstream_timeout: float,
        session_cookie: bytes | None,
        trusted_origins: Sequence[str],
        rewrite_host: HostRewrite[Request] | None = None,
    ) -> None:
        self.reactor = reactor
        self.rewrite_host = rewrite_host
        self.upstream_timeout = upstream_timeout
        self.session_cookie = session_cookie
        self.trusted_origins = parse_trusted_origins(trusted_origins)
        self.factory = ClientLegFactory(reactor=reactor, server=None)
        # The tree checks Origin; one timer (upstream_timeout) governs the wait, so
        # Autobahn's 5 s opening timeout is off; RFC 6455 only (the upstream leg speaks
        # version 13) and no extension, so that bytes can be spliced.
        self.factory.setProtocolOptions(
            versions=[13],
            allowedOrigins=["*"],
            openHandshakeTimeout=0,
            autoPingInterval=0,
        )

    def is_upgrade(self, request: Request) -> bool:
        """Whether C{request} is a WebSocket upgrade (see L{handshake.is_upgrade})."""
        return is_upgrade(request.method, request.requestHeaders.getAllRawHeaders())

    def origin_allowed(self, request: Request, view: ClientView) -> bool:
        """Apply the Origin rules of L{portproxy.websocket.origin} to C{request}."""
        return origin_allowed(
            request.requestHeaders.getRawHeaders(b"origin") or (),
            host=view.host,
            scheme=view.scheme,
            trusted=self.trusted_origins,
        )

    def render(
        self,
        request: Request,
        *,
        port: int,
        path: bytes,
        view: ClientView,
        prefix: bytes | None,
    ) -> bytes | int:
        """Take the connection over and start the two handshakes.

        @param path: the upstream request target (raw path and query).
        @param prefix: the C{/proxy/<port>} prefix for X-Forwarded-Prefix, or C{None}.
        """
        channel = request.channel
        if not isinstance(channel, HTTPChannel) or channel.transport is None:
            return write_error(request, 400, "WebSocket upgrades need HTTP/1.1")
        raw = request.requestHeaders
        host = _first(raw.getRawHeaders(b"host"))
        origin = _first(raw.getRawHeaders(b"origin"))
        rewrite = self.rewrite_host
        if rewrite is not None and rewrite.applies(request, view.host):
            # After the tree's Origin check, which ran on the public values.
            host = local_host(port)
            if origin is not None:
                origin = rewrite_origin(
                    origin, port=port, public=public_origin(view.scheme, view.host)
                )
        target = Target(
            port=port,
            resource=request_target(path),
            host=host,
            origin=origin,
            headers=forward_websocket_headers(
                raw.getAllRawHeaders(),
                view=view,
                session_cookie=self.session_cookie,
                prefix=prefix,
            ),
            accept_header=request.getHeader(b"accept"),
        )
        leg = cast(ClientLeg, self.factory.buildProtocol(channel.transport.getPeer()))
        leg.bridge = Bridge(self, request, target, leg)
        _take_over(request, leg)
        leg.dataReceived(
            server_leg_head(request.method, request.uri, raw.getAllRawHeaders())
        )
        return NOT_DONE_YET


def _first(values: Sequence[bytes] | None) -> bytes | None:
    return values[0] if values else None


def _take_over(request: Request, protocol: IProtocol) -> None:
    """Move the request's connection from twisted.web to C{protocol}."""
    channel = request.channel
    # Any: the socket or its TLS wrapper, whose protocol attributes no interface names.
    transport: Any = channel.transport
    # From now on the connection is not HTTP's: the channel leaves the head deadline,
    # idle and trust bookkeeping of portproxy.limits (it never sees connectionLost).
    leave_http11 = getattr(channel, "leave_http11", None)
    if leave_http11 is not None:
        leave_http11()
    channel.transport = None
    # HTTPChannel registered itself as the socket's producer; the splice registers the
    # other leg there later, which Twisted refuses while HTTPChannel is still in place.
    transport.unregisterProducer()
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol  # TLSMemoryBIOFactory-wrapped listener
    elif isinstance(transport.protocol, ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol  # listenSSL: TLS inside the socket
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    # HTTPChannel may have paused reading while the request was handled.
    transport.resumeProducing()

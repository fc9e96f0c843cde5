# -*- test-case-name: tests.test_http2_integrity -*-
"""Putting portproxy's HTTP/2 classes on a listener.

twisted.web's generic channel builds a stock C{H2Connection} when ALPN chose C{h2},
and has no hook for another class. L{HTTP2Site} wraps a site so that each connection's
protocol (L{_HardenedSwitch}) makes that switch itself, with
L{portproxy.http.http2.HardenedH2Connection}, just before the first bytes.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.python.components import proxyForInterface
from twisted.web.server import Site
from zope.interface import implementer

from portproxy.http.h2rules import H2Limits
from portproxy.http.http2 import HardenedH2Connection
from portproxy.net.internals import (
    channel_network_producer,
    install_h2_channel,
    undecided_http11_channel,
)
from portproxy.net.reactor import ITCPConnection

__all__ = ["HTTP2Site"]


class _HardenedSwitch(proxyForInterface(IProtocol, "inner")):  # type: ignore[misc]
    """The site's own protocol, with L{HardenedH2Connection} put in after ALPN h2.

    twisted.web's generic channel would build a stock C{H2Connection} on its first
    bytes; this makes the same switch a moment earlier, with portproxy's class, and then
    hands everything to the site's protocol (which sees HTTP/2 already chosen).
    """

    def __init__(self, inner: IProtocol, limits: H2Limits, reactor: IReactorTime) -> None:
        self.inner = inner
        self.limits = limits
        self.reactor = reactor
        self._chosen = False

    def dataReceived(self, data: bytes) -> None:
        if not self._chosen:
            self._chosen = True
            self._choose()
        self.inner.dataReceived(data)

    def _choose(self) -> None:
        generic = self.inner
        old = undecided_http11_channel(generic)
        if old is None:
            return  # not twisted.web's generic channel, or already decided
        # The TLS transport (ALPN ran on it), which passes what it lacks to the socket.
        transport = cast(ITCPConnection, old.transport)
        if getattr(transport, "negotiatedProtocol", None) != b"h2":
            return
        # The HTTP/1.1 channel steps aside as in twisted.web's own switch.
        # The transport again, as the channel's producer; a consumer too.
        network = cast(ITCPConnection, channel_network_producer(old))
        network.unregisterProducer()
        old.setTimeout(None)
        # portproxy.web.channel's channel leaves its head deadline, and hands its limits
        # over (a plain HTTPChannel has none).
        leave = getattr(old, "leave_http11", None)
        connection_limits = leave() if leave is not None else None
        h2conn = HardenedH2Connection(self.reactor, self.limits)
        h2conn.connection_limits = connection_limits
        install_h2_channel(generic, h2conn, self.reactor.callLater)
        h2conn.makeConnection(transport)
        network.registerProducer(h2conn, True)


@implementer(IProtocolNegotiationFactory)
class HTTP2Site(Factory):
    """Wraps a twisted.web C{Site} so that HTTP/2 connections use the hardened classes.

    HTTP/1.1 connections are exactly the site's own; ALPN offers what the site does.
    """

    noisy = False

    def __init__(self, site: Site, limits: H2Limits, *, reactor: IReactorTime) -> None:
        self.site = site
        self.limits = limits
        self.reactor = reactor

    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def acceptableProtocols(self) -> list[bytes]:
        return list(self.site.acceptableProtocols())

    def logPrefix(self) -> str:
        return str(self.site.logPrefix())

    def buildProtocol(self, addr: IAddress | None) -> _HardenedSwitch | None:
        inner = self.site.buildProtocol(addr)
        if inner is None:
            return None
        return _HardenedSwitch(inner, self.limits, self.reactor)

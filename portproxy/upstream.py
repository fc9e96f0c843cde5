# -*- test-case-name: tests.test_engine -*-
"""Connecting to a local port: 127.0.0.1 first, then [::1].

Vite, Node and other dev servers that bind C{localhost} often listen on IPv6 only, so a
refused IPv4 connection is retried once on the IPv6 loopback before the port is reported
as dead.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

__all__ = ["LoopbackEndpoint", "LoopbackEndpointFactory"]

CONNECT_TIMEOUT = 10


@implementer(IStreamClientEndpoint)
class LoopbackEndpoint:
    """Connect to C{port} on 127.0.0.1, falling back to ::1 when IPv4 is refused."""

    def __init__(self, reactor: Any, port: int) -> None:
        self._reactor = reactor
        self._port = port

    def connect(self, factory: Any) -> Deferred[Any]:
        v4 = TCP4ClientEndpoint(
            self._reactor, "127.0.0.1", self._port, timeout=CONNECT_TIMEOUT
        )
        d: Deferred[Any] = v4.connect(factory)

        def try_v6(failure: Failure) -> Deferred[Any]:
            failure.trap(ConnectionRefusedError)
            v6 = TCP6ClientEndpoint(
                self._reactor, "::1", self._port, timeout=CONNECT_TIMEOUT
            )
            d6: Deferred[Any] = v6.connect(factory)

            def keep_v4_error(failure6: Failure) -> Failure:
                # Report the IPv4 refusal: "nothing listens" is the useful message.
                return failure

            d6.addErrback(keep_v4_error)
            return d6

        d.addErrback(try_v6)
        return d


@implementer(IAgentEndpointFactory)
class LoopbackEndpointFactory:
    """Agent endpoint factory that reaches C{uri.port} on the loopback interface."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def endpointForURI(self, uri: URI) -> LoopbackEndpoint:
        return LoopbackEndpoint(self._reactor, uri.port)

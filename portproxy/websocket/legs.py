# -*- test-case-name: tests.test_websocket_relay -*-
"""The Autobahn protocols on each side of a relayed WebSocket.

L{ClientLeg} is Autobahn's server protocol on the browser's connection, L{UpstreamLeg}
its client protocol on the connection to the app. Autobahn runs both opening handshakes;
then both copy received bytes to the other socket (see L{portproxy.websocket.bridge}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectingRequest, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from portproxy.websocket.handshake import error_response, upstream_head

if TYPE_CHECKING:
    from portproxy.websocket.bridge import Bridge

__all__ = ["ClientLeg", "ClientLegFactory", "UpstreamLeg", "UpstreamLegFactory"]


class ClientLeg(WebSocketServerProtocol):
    """Autobahn's server protocol on the browser's connection."""

    bridge: Bridge
    #: Set once spliced: writes every received byte to the upstream socket.
    splice_to: Any = None

    def dataReceived(self, data: bytes) -> None:
        splice_to = self.splice_to
        if splice_to is not None:
            splice_to(data)
        elif self.bridge.waiting:
            self.bridge.early_data(data)
        else:
            super().dataReceived(data)

    # Autobahn's annotation omits it, but onConnect may return a Deferred (txaio.as_future).
    def onConnect(self, request: ConnectionRequest) -> Deferred[Any]:  # type: ignore[override]
        return self.bridge.ask_upstream(list(request.protocols))

    def onOpen(self) -> None:
        self.bridge.client_opened()

    def sendHttpErrorResponse(
        self, code: int, reason: str, responseHeaders: Any = None
    ) -> None:
        # Autobahn writes a bare status line; portproxy's error pages have a body.
        bridge = self.bridge
        self.sendData(
            error_response(
                code,
                reason,
                phrase=bridge.phrase,
                accept=bridge.target.accept_header,
                extra=list(responseHeaders or ()),
            )
        )
        bridge.log_access(code)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.bridge.client_lost()
        super().connectionLost(reason)


class ClientLegFactory(WebSocketServerFactory):
    protocol = ClientLeg


class UpstreamLeg(WebSocketClientProtocol):
    """Autobahn's client protocol on the connection to the app."""

    bridge: Bridge
    splice_to: Any = None
    #: True until the opening request has been written (and corrected).
    _head_pending = True

    def dataReceived(self, data: bytes) -> None:
        splice_to = self.splice_to
        if splice_to is not None:
            splice_to(data)
        else:
            super().dataReceived(data)

    def onConnecting(self, transport_details: Any) -> ConnectingRequest:
        target = self.bridge.target
        return ConnectingRequest(
            host="127.0.0.1",
            port=target.port,
            resource=target.resource,
            headers={},
            useragent=None,
            origin=None,
            protocols=self.factory.protocols,
        )

    def sendData(
        self, data: bytes, sync: bool = False, chopsize: int | None = None
    ) -> None:
        if self._head_pending:
            # Autobahn writes Host from its URL; the app must see the client's Host.
            self._head_pending = False
            target = self.bridge.target
            data = upstream_head(
                data, host=target.host, origin=target.origin, headers=target.headers
            )
            self.http_request_data = data
        super().sendData(data, sync, chopsize)

    def onOpen(self) -> None:
        self.bridge.upstream_opened(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.bridge.upstream_lost(self)
        super().connectionLost(reason)


class UpstreamLegFactory(WebSocketClientFactory):
    protocol = UpstreamLeg

    def __init__(self, bridge: Bridge, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bridge = bridge

    def buildProtocol(self, addr: Any) -> UpstreamLeg:
        leg = cast(UpstreamLeg, super().buildProtocol(addr))
        leg.bridge = self.bridge
        self.bridge.upstream = leg
        return leg

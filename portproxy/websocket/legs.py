# -*- test-case-name: tests.test_websocket_relay -*-
"""The Autobahn protocols on each side of a relayed WebSocket.

L{ClientLeg} is Autobahn's server protocol on the browser's connection, L{UpstreamLeg}
its client protocol on the connection to the app. Autobahn runs both opening handshakes;
then both copy received bytes to the other socket (see L{portproxy.websocket.bridge}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.types import ConnectingRequest, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure

from portproxy.net.internals import set_opening_request
from portproxy.net.reactor import ITCPConnection
from portproxy.websocket.handshake import Target, error_response, upstream_head

__all__ = [
    "ClientLeg",
    "ClientLegFactory",
    "LegEvents",
    "UpstreamLeg",
    "UpstreamLegFactory",
]


class LegEvents(Protocol):
    """What the two legs tell, and read from, the relayed connection they belong to.

    L{portproxy.websocket.bridge.Bridge} implements it. It is declared here, by the
    code that calls it, so that the legs need not import the bridge (which imports the
    legs to build them): the coupling runs one way.
    """

    #: The upstream leg, once its factory has built it.
    upstream: UpstreamLeg | None

    @property
    def target(self) -> Target:
        """What the upgrade sends upstream."""

    @property
    def phrase(self) -> str | None:
        """The upstream's reason phrase for a refusal, passed on to the client."""

    @property
    def waiting(self) -> bool:
        """Whether the upstream is being asked (the client's bytes must wait)."""

    def ask_upstream(self, protocols: list[str]) -> Deferred[str | None]:
        """The client's handshake is valid: ask the app.

        The result is the client leg's C{onConnect} answer (the subprotocol, or a
        refusal).
        """

    def early_data(self, data: bytes) -> None:
        """Bytes from the client before it has its 101: keep them, in order."""

    def client_opened(self) -> None:
        """The client has its 101: start copying bytes both ways."""

    def client_lost(self) -> None:
        """The client's connection ended."""

    def upstream_opened(self, leg: UpstreamLeg) -> None:
        """The app switched protocols: the client leg may answer 101."""

    def upstream_lost(self, leg: UpstreamLeg) -> None:
        """The app's connection ended."""

    def log_access(self, code: int) -> None:
        """Write the upgrade's access-log line, with status C{code}."""


class ClientLeg(WebSocketServerProtocol):
    """Autobahn's server protocol on the browser's connection."""

    bridge: LegEvents
    #: A TCP connection, or a TLS wrapper that passes what it lacks on to one.
    transport: ITCPConnection | None
    #: Set once spliced: writes every received byte to the upstream socket.
    splice_to: Callable[[bytes], None] | None = None

    def dataReceived(self, data: bytes) -> None:
        splice_to = self.splice_to
        if splice_to is not None:
            splice_to(data)
        elif self.bridge.waiting:
            self.bridge.early_data(data)
        else:
            super().dataReceived(data)

    # Autobahn's annotation omits it, but onConnect may return a Deferred (txaio.as_future).
    def onConnect(self, request: ConnectionRequest) -> Deferred[str | None]:  # type: ignore[override]
        return self.bridge.ask_upstream(list(request.protocols))

    def onOpen(self) -> None:
        self.bridge.client_opened()

    def sendHttpErrorResponse(
        self,
        code: int,
        reason: str,
        responseHeaders: Sequence[tuple[str, str]] | None = None,
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

    bridge: LegEvents
    transport: ITCPConnection | None
    splice_to: Callable[[bytes], None] | None = None
    #: True until the opening request has been written (and corrected).
    _head_pending = True

    def dataReceived(self, data: bytes) -> None:
        splice_to = self.splice_to
        if splice_to is not None:
            splice_to(data)
        else:
            super().dataReceived(data)

    def onConnecting(self, transport_details: TransportDetails) -> ConnectingRequest:
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
            set_opening_request(self, data)
        super().sendData(data, sync, chopsize)

    def onOpen(self) -> None:
        self.bridge.upstream_opened(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.bridge.upstream_lost(self)
        super().connectionLost(reason)


class UpstreamLegFactory(WebSocketClientFactory):
    protocol = UpstreamLeg

    # Any: Autobahn's factory options, passed on as they are.
    def __init__(self, bridge: LegEvents, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bridge = bridge

    def buildProtocol(self, addr: IAddress | None) -> UpstreamLeg:
        leg = cast(UpstreamLeg, super().buildProtocol(addr))
        leg.bridge = self.bridge
        self.bridge.upstream = leg
        return leg

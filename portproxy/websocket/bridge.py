# -*- test-case-name: tests.test_websocket_relay -*-
"""One relayed WebSocket: asking the upstream, splicing the two sockets, ending both.

A L{Bridge} is created per upgrade by L{portproxy.websocket.relay.AutobahnRelay} and
driven by the two Autobahn protocols of L{portproxy.websocket.legs}. Its phases:
C{IDLE} (Autobahn checks the client's request), C{WAITING} (the upstream is being asked;
one timer, C{upstream_timeout}, bounds it), C{OPEN} (bytes copied both ways, each
socket the other's producer), C{CLOSING} (one side ended; the other flushes, then is
aborted after L{CLOSE_TIMEOUT}) and C{DONE}.
"""

from __future__ import annotations

import socket
from enum import Enum
from typing import Any, Protocol, cast

from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from portproxy.http.upstream import LoopbackEndpoint
from portproxy.net.eager import eager_writer
from portproxy.net.internals import (
    handshake_status_line,
    pending_client_bytes,
    take_unparsed_bytes,
)
from portproxy.net.reactor import IClientReactor, ITCPConnection
from portproxy.websocket.handshake import Target, refusal_status
from portproxy.websocket.legs import ClientLeg, UpstreamLeg, UpstreamLegFactory

__all__ = [
    "CLOSE_TIMEOUT",
    "EARLY_DATA_LIMIT",
    "KEEPALIVE",
    "USER_TIMEOUT",
    "Bridge",
    "Phase",
]

#: Once one leg has ended, the other may take this long to flush and close before it is
#: aborted (Autobahn's own close timeout, 1 s, drops queued data for slow readers).
CLOSE_TIMEOUT = 10.0
#: A client may not send more than this before it has its 101 (RFC 6455 says it must
#: wait); the relay keeps it in order for the upstream, and drops a client that floods.
EARLY_DATA_LIMIT = 64 * 1024
#: TCP keepalive on the browser's socket (idle seconds, probe interval, probe count) and
#: the longest data may stay unacknowledged: a vanished client (laptop closed, network
#: gone) is noticed in about two minutes, whether idle or being written to. A live idle
#: connection is never closed.
KEEPALIVE = (60, 10, 6)
USER_TIMEOUT = 120


class _Slots(Protocol):
    """The budget of open upstream connections (L{portproxy.http.upstream.UpstreamPool})."""

    def acquire_slot(self) -> bool: ...

    def release_slot(self) -> None: ...


class _Relay(Protocol):
    """What a bridge needs from the relay that made it."""

    reactor: IClientReactor
    upstream_timeout: float

    @property
    def upstream_slots(self) -> _Slots | None: ...


class Phase(Enum):
    """Where a relayed WebSocket stands (see the module docstring)."""

    IDLE = "idle"  # the client's request is being checked by Autobahn
    WAITING = "waiting"  # asking the upstream
    OPEN = "open"  # both 101s done, bytes spliced
    CLOSING = "closing"  # one leg ended, the other is flushing
    DONE = "done"


# Any: a TCP transport or TLS wrappers around one; one without a socket is skipped.
def _keepalive(transport: Any) -> None:
    """Detect a vanished peer: L{KEEPALIVE} and L{USER_TIMEOUT}, where the OS has them."""
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    try:
        sock = transport.getHandle()
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        options = zip(
            ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"),
            (*KEEPALIVE, USER_TIMEOUT * 1000),
        )
        for name, value in options:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except (AttributeError, OSError):
        pass


class Bridge:
    """One relayed WebSocket: its two legs and its lifecycle (see L{Phase}).

    Implements L{portproxy.websocket.legs.LegEvents}, what the legs report to.
    """

    #: The budget the upstream leg counts in, while it holds a place there.
    slots: _Slots | None = None

    def __init__(
        self, relay: _Relay, request: Request, target: Target, client: ClientLeg
    ) -> None:
        self.relay = relay
        self.request: Request | None = request
        self.channel: HTTPChannel | None = request.channel
        self.target = target
        self.client = client
        self.upstream: UpstreamLeg | None = None
        self.phase = Phase.IDLE
        self.answer: Deferred[str | None] | None = None
        self.connecting: Deferred[IProtocol] | None = None
        self.timer: IDelayedCall | None = None
        self.early: list[bytes] = []
        self.early_size = 0
        self.upstream_rest = b""
        #: The reason phrase for the client's error status (the upstream's), if any.
        self.phrase: str | None = None

    @property
    def waiting(self) -> bool:
        """Whether the upstream is being asked (the client's 101 not yet sent)."""
        return self.phase is Phase.WAITING

    # -- the handshakes ------------------------------------------------------------

    def ask_upstream(self, protocols: list[str]) -> Deferred[str | None]:
        """Open the upstream leg; the result is the client leg's C{onConnect} answer."""
        relay = self.relay
        self.phase = Phase.WAITING
        self.answer = Deferred()
        slots = relay.upstream_slots
        if slots is not None:
            if not slots.acquire_slot():
                answer = self.answer
                self._deny(503, "Too many open connections to apps")
                return answer
            self.slots = slots
        self.timer = relay.reactor.callLater(relay.upstream_timeout, self._timed_out)
        factory = UpstreamLegFactory(
            self,
            url="ws://127.0.0.1:%d" % self.target.port,
            protocols=protocols,
            reactor=relay.reactor,
        )
        factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
        connecting = LoopbackEndpoint(relay.reactor, self.target.port).connect(factory)
        self.connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed)
        return self.answer

    def _connected(self, protocol: IProtocol) -> None:
        self.connecting = None

    def _connect_failed(self, failure: Failure) -> None:
        self.connecting = None
        self._release_slot()
        if failure.check(CancelledError, ConnectingCancelledError):
            return
        port = self.target.port
        if failure.check(ConnectionRefusedError):
            self._deny(502, f"Nothing is listening on port {port}")
        else:
            self._deny(
                502, f"Could not connect to port {port}: {failure.getErrorMessage()}"
            )

    def _timed_out(self) -> None:
        self.timer = None
        self._deny(
            504, f"Port {self.target.port} did not answer the WebSocket upgrade in time"
        )

    def _deny(self, code: int, message: str, phrase: str | None = None) -> None:
        """Give the client an HTTP error instead of a 101, and drop the upstream."""
        answer, self.answer = self.answer, None
        self._cancel_timer()
        self._abort_upstream()
        if answer is not None:
            self.phase = Phase.DONE
            self.phrase = phrase
            answer.errback(ConnectionDeny(code, message))

    def upstream_opened(self, leg: UpstreamLeg) -> None:
        """The upstream switched protocols: let the client leg answer 101."""
        answer, self.answer = self.answer, None
        if answer is None:
            self._abort_upstream()
            return
        self._cancel_timer()
        # Frames the upstream sent right behind its 101 wait for the client's 101.
        self.upstream_rest = take_unparsed_bytes(leg)
        answer.callback(leg.websocket_protocol_in_use)
        if self.phase is not Phase.OPEN:
            # Autobahn refused to send the 101 (it logged why): end both legs.
            self._abort_upstream()
            self.client.dropConnection(abort=True)

    def client_opened(self) -> None:
        """The client has its 101: splice the two sockets, in order, with backpressure."""
        upstream = self.upstream
        assert upstream is not None
        # Both legs are connected by now (their 101s came through them).
        client_socket = cast(ITCPConnection, self.client.transport)
        upstream_socket = cast(ITCPConnection, upstream.transport)
        # Bytes a client sent without waiting for its 101, in arrival order: those that
        # came with the request stayed in HTTPChannel's buffer (never replayed there).
        channel = self.channel
        pipelined = pending_client_bytes(channel) if channel is not None else []
        pending = b"".join([*pipelined, take_unparsed_bytes(self.client), *self.early])
        self.channel = None
        self.early = []
        self.client.splice_to = eager_writer(upstream_socket)
        upstream.splice_to = eager_writer(client_socket)
        # Small frames must not wait for Nagle's algorithm (a 40 ms delayed-ACK stall
        # per message); Autobahn's client leg leaves the option off.
        for sock in (client_socket, upstream_socket):
            set_no_delay = getattr(sock, "setTcpNoDelay", None)
            if set_no_delay is not None:
                try:
                    set_no_delay(True)
                except OSError:
                    pass
        client_socket.registerProducer(upstream_socket, True)
        upstream_socket.registerProducer(client_socket, True)
        # HTTPChannel pauses reading when a client pipelines more than 16 KiB.
        client_socket.resumeProducing()
        self.phase = Phase.OPEN
        if pending:
            upstream_socket.write(pending)
        if self.upstream_rest:
            client_socket.write(self.upstream_rest)
            self.upstream_rest = b""
        _keepalive(client_socket)
        self.log_access(101)

    def early_data(self, data: bytes) -> None:
        """Keep what the client sent before its 101 (bounded)."""
        self.early.append(data)
        self.early_size += len(data)
        if self.early_size > EARLY_DATA_LIMIT:
            self._deny(400, "Data sent before the WebSocket handshake completed")

    # -- the end -------------------------------------------------------------------

    def client_lost(self) -> None:
        """The browser's connection is gone: stop asking, or close the app's side."""
        phase = self.phase
        if phase is Phase.WAITING:
            # The browser left while the upstream was being asked: stop asking.
            self.answer = None
            self.phase = Phase.DONE
            self._cancel_timer()
            self._abort_upstream()
        elif phase is Phase.OPEN:
            self._one_leg_ended(self.upstream)
        elif phase is Phase.CLOSING:
            self._finished()

    def upstream_lost(self, leg: UpstreamLeg) -> None:
        """The app's connection is gone: refuse the client (with the app's status, if it
        answered one), or close the client's side."""
        self._release_slot()
        phase = self.phase
        if phase is Phase.WAITING:
            self.upstream = None
            code, phrase = refusal_status(handshake_status_line(leg))
            port = self.target.port
            if code == 502:
                message = f"Port {port} did not accept the WebSocket upgrade"
            else:
                message = f"Port {port} refused the WebSocket upgrade with status {code}"
            self._deny(code, message, phrase)
        elif phase is Phase.OPEN:
            self._one_leg_ended(self.client)
        elif phase is Phase.CLOSING:
            self._finished()

    def _one_leg_ended(self, other: ClientLeg | UpstreamLeg | None) -> None:
        self.phase = Phase.CLOSING
        transport = other.transport if other is not None else None
        if transport is None:
            self._finished()
            return
        transport.loseConnection()
        self.timer = self.relay.reactor.callLater(CLOSE_TIMEOUT, transport.abortConnection)

    def _finished(self) -> None:
        self.phase = Phase.DONE
        self._cancel_timer()

    def _release_slot(self) -> None:
        slots, self.slots = self.slots, None
        if slots is not None:
            slots.release_slot()

    def _cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _abort_upstream(self) -> None:
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        transport: ITCPConnection | None = (
            self.upstream.transport if self.upstream is not None else None
        )
        if transport is not None:
            transport.abortConnection()

    def log_access(self, code: int) -> None:
        """Write the upgrade's access-log line (twisted.web never finishes it)."""
        request, self.request = self.request, None
        if request is None:
            return
        request.code = code
        site = getattr(request.channel, "site", None)
        if site is not None:
            site.log(request)

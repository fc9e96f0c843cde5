"""Every private Twisted, Autobahn and h2 internal portproxy uses still is what it was.

L{portproxy.net.internals} holds each one. These tests fail, naming the entry, when an
upgrade removes or changes one: each accessor is run against a real library object
(an C{HTTPChannel} fed a request, an C{H2Connection} fed frames, an Autobahn protocol
fed a handshake), each private hook must exist with the parameters portproxy passes,
each copied method body must still have the source it was copied from, and no module
but L{portproxy.net.internals} may reach for a library private on its own.

When one fails after an upgrade: read the entry's docstring (why the public API did
not do), adapt the function or the override, then the test.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import pytest
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame
from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from portproxy.net import internals
from portproxy.net.internals import COPIED, PRIVATE_HOOKS, Copied, PrivateHook

PACKAGE = Path(__file__).resolve().parent.parent / "portproxy"


def _resolve(path: str) -> Any:
    """The object at C{module.Name[.attr...]}, importing the longest module prefix."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for name in parts[end:]:
            found = getattr(found, name)
        return found
    raise ImportError(path)


class _Held(Request):
    """A request that is never answered: the channel stays on it."""

    def process(self) -> None:
        pass


class _Transport(StringTransport):
    """A StringTransport that, like a socket's, lets an absent producer go quietly."""

    def unregisterProducer(self) -> None:
        self.producer = None


def _http11(data: bytes = b"") -> tuple[Any, HTTPChannel, StringTransport]:
    """twisted.web's generic channel from a real Site, connected, fed C{data}."""
    site = Site(Resource(), reactor=MemoryReactorClock())
    site.requestFactory = _Held
    protocol = site.buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    if data:
        protocol.dataReceived(data)
    return protocol, internals.current_channel(protocol), transport


def _h2_client() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    return client


_HEAD = [(":method", "POST"), (":path", "/x"), (":scheme", "https"), (":authority", "h")]


def _h2_server(clock: MemoryReactorClock) -> internals.H2Connection:
    conn = internals.H2Connection(clock)
    site = Site(Resource(), reactor=clock)
    conn.requestFactory = _Held  # type: ignore[attr-defined]
    conn.site = site
    conn.factory = site
    conn.callLater = clock.callLater
    conn.makeConnection(_Transport())
    return conn


# -- the HTTP/1.1 channel ----------------------------------------------------------------


def test_channel_request_line_is_the_line_of_the_head_being_read() -> None:
    seen: list[object] = []

    class Probe(HTTPChannel):
        def allHeadersReceived(self) -> None:
            seen.append(internals.channel_request_line(self))
            super().allHeadersReceived()

    channel = Probe()
    channel.makeConnection(StringTransport())
    assert internals.channel_request_line(channel) is None, "channel_request_line"
    channel.dataReceived(b"POST /x?y HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n")
    assert seen == [(b"POST", b"/x?y", b"HTTP/1.1")], (
        "channel_request_line: HTTPChannel no longer keeps the request line in "
        "_command/_path/_version until the body is in"
    )


def test_pending_client_bytes_hold_a_pipelined_request_while_one_is_handled() -> None:
    _, channel, _ = _http11(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n")
    assert internals.is_handling_request(channel), "is_handling_request"
    pending = internals.pending_client_bytes(channel)
    assert pending == [b"GET /b HTTP/1.1\r\n"], "pending_client_bytes (_dataBuffer)"
    assert internals.pending_client_bytes(channel) is pending, (
        "pending_client_bytes must be the channel's own list (the site appends to it)"
    )


def test_pending_client_bytes_are_replayed_when_the_request_is_answered() -> None:
    _, channel, transport = _http11(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    internals.pending_client_bytes(channel).append(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    request = channel.requests[0]
    request.finish()
    assert [r.uri for r in channel.requests] == [b"/b"], (
        "pending_client_bytes: HTTPChannel no longer replays _dataBuffer after a response"
    )
    assert transport.value().startswith(b"HTTP/1.1 200")


def test_is_handling_request_is_false_between_requests() -> None:
    _, channel, _ = _http11()
    assert internals.is_handling_request(channel) is False, "is_handling_request"


def test_the_network_producer_is_the_socket_side() -> None:
    _, channel, transport = _http11()
    assert internals.channel_network_producer(channel) is transport, (
        "channel_network_producer (_networkProducer)"
    )
    assert transport.producer is channel


def test_unparsed_line_bytes_are_a_head_line_not_yet_complete() -> None:
    _, channel, _ = _http11(b"GET /a HT")
    assert internals.unparsed_line_bytes(channel) == b"GET /a HT", (
        "unparsed_line_bytes (LineReceiver._buffer)"
    )


def test_at_request_boundary_only_where_a_new_request_line_would_start() -> None:
    _, channel, _ = _http11()
    assert internals.at_request_boundary(channel), "at_request_boundary: fresh channel"
    _, partial, _ = _http11(b"GET /a HT")
    assert not internals.at_request_boundary(partial), "a partial line is pending"
    _, handling, _ = _http11(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert not internals.at_request_boundary(handling), "a request is in progress"
    handling.requests[0].finish()
    assert internals.at_request_boundary(handling), (
        "at_request_boundary: HTTPChannel's state between kept-alive requests changed"
    )
    _, body, _ = _http11(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
    assert not internals.at_request_boundary(body), "a body is being read"


def _state(channel: HTTPChannel) -> tuple[object, ...]:
    own: Any = channel
    return (
        own.line_mode,
        own._handlingRequest,
        own._HTTPChannel__first_line,
        own._receivedHeaderCount,
        own._receivedHeaderSize,
        own.length,
        own.persistent,
    )


@pytest.mark.parametrize(
    "head",
    [
        b"GET /a?b=c HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nhost: h:1\r\nX-A: 1\r\nx-a:  2 \r\nCookie: a=b\r\n"
        b"Connection: close\r\nETag: x\r\nwww-authenticate: y\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\n\r\n",
    ],
)
def test_begin_parsed_request_leaves_what_twisteds_line_parser_leaves(head: bytes) -> None:
    _, by_lines, _ = _http11(head)
    _, by_head, _ = _http11()
    request_line, _, rest = head.partition(b"\r\n")
    method, target, version = request_line.split(b" ")
    fields = [
        (name, value.strip(b" \t"))
        for name, _, value in (f.partition(b":") for f in rest.split(b"\r\n") if f)
    ]
    internals.begin_parsed_request(by_head, method, target, version, fields)
    (a,) = by_lines.requests
    (b,) = by_head.requests
    assert (b.method, b.uri, b.clientproto) == (a.method, a.uri, a.clientproto)
    assert list(b.requestHeaders.getAllRawHeaders()) == list(
        a.requestHeaders.getAllRawHeaders()
    ), "begin_parsed_request: header names or order differ from HTTPChannel's"
    assert _state(by_head) == _state(by_lines), (
        "begin_parsed_request: HTTPChannel's state after a head changed"
    )
    a.finish()
    b.finish()
    assert _state(by_head) == _state(by_lines)


@pytest.mark.parametrize("values", [[b"text/plain"], [b"a", b" b\t"], [b"x" * 300]])
def test_set_header_values_stores_what_set_raw_headers_would(values: list[bytes]) -> None:
    ours, twisteds = Headers(), Headers()
    internals.set_header_values(ours, b"content-type", list(values))
    twisteds.setRawHeaders(b"content-type", list(values))
    assert list(ours.getAllRawHeaders()) == list(twisteds.getAllRawHeaders()), (
        "set_header_values: Headers no longer keeps canonical names in _rawHeaders"
    )


def test_arm_abort_timer_aborts_once_after_the_channels_abort_timeout() -> None:
    clock = MemoryReactorClock()
    _, channel, transport = _http11()
    channel.callLater = clock.callLater
    internals.arm_abort_timer(channel)
    internals.arm_abort_timer(channel)
    calls = clock.getDelayedCalls()
    assert len(calls) == 1, "arm_abort_timer must not arm twice (_abortingCall)"
    assert channel.abortTimeout is not None
    clock.advance(channel.abortTimeout)
    assert transport.disconnecting, "arm_abort_timer: forceAbortClient did not abort"


def test_h2_connections_have_the_same_abort_timer() -> None:
    conn = _h2_server(MemoryReactorClock())
    assert conn.abortTimeout is not None and hasattr(conn, "forceAbortClient")
    assert getattr(conn, "_abortingCall", "missing") is None, (
        "arm_abort_timer: H2Connection._abortingCall"
    )


# -- the generic channel: HTTP/1.1 or HTTP/2 -------------------------------------------


def test_the_generic_channel_is_undecided_until_its_first_bytes() -> None:
    protocol, channel, _ = _http11()
    assert isinstance(protocol, internals.GenericHTTPChannelProtocol)
    assert internals.negotiated_protocol(protocol) is None, "negotiated_protocol"
    assert internals.undecided_http11_channel(protocol) is channel, (
        "undecided_http11_channel"
    )
    protocol.dataReceived(b"G")
    assert internals.negotiated_protocol(protocol) == b"http/1.1"
    assert internals.undecided_http11_channel(protocol) is None
    assert internals.undecided_http11_channel(object()) is None


def test_install_h2_channel_hands_the_generic_channels_setup_over() -> None:
    clock = MemoryReactorClock()
    protocol, _, _ = _http11()
    h2conn = internals.H2Connection(clock)
    internals.install_h2_channel(protocol, h2conn, clock.callLater)
    assert internals.current_channel(protocol) is h2conn, "install_h2_channel"
    assert internals.negotiated_protocol(protocol) == b"h2"
    assert h2conn.site is protocol.site and h2conn.factory is protocol.factory
    assert h2conn.requestFactory is _Held  # type: ignore[attr-defined]
    # The generic channel forwards to its channel from now on.
    assert protocol.site is h2conn.site


# -- TCP transports and ports ----------------------------------------------------------


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _server(skt: socket.socket, reactor: MemoryReactorClock) -> tcp.Server:
    port = tcp.Port(0, Factory.forProtocol(Protocol), reactor=reactor)
    # The accept loop (portproxy.net.limits) builds transports exactly so.
    return port.transport(skt, Protocol(), ("127.0.0.1", 5), port, 1, reactor)  # type: ignore[no-any-return]


def test_queued_writes_count_what_twisted_has_not_sent(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    transport = _server(sockets[0], MemoryReactorClock())
    assert not internals.has_queued_writes(transport), "has_queued_writes"
    assert internals.queued_write_bytes(transport) == 0, "queued_write_bytes"
    transport.write(b"abc")
    assert internals.has_queued_writes(transport), (
        "has_queued_writes: write() no longer queues in dataBuffer/_tempDataBuffer"
    )
    assert internals.queued_write_bytes(transport) == 3, (
        "queued_write_bytes: dataBuffer, offset, _tempDataLen"
    )


def test_an_eager_transport_sends_at_the_end_of_the_turn(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    from portproxy.net.eager import send_eagerly

    clock = MemoryReactorClock()
    transport = _server(sockets[0], clock)
    assert send_eagerly(transport), "swap_class on tcp.Server"
    transport.write(b"xyz")
    clock.advance(0)  # the turn's callLater(0) on the transport's reactor
    assert sockets[1].recv(10) == b"xyz"
    assert not internals.has_queued_writes(transport)
    # What the eager write reads besides the queues.
    names = ("producer", "streamingProducer", "disconnecting", "connected", "socket")
    for name in (*names, "reactor"):
        assert hasattr(transport, name), f"portproxy.net.eager reads tcp.Server.{name}"


def test_the_accept_loop_builds_connections_as_the_port_does() -> None:
    port = tcp.Port(0, Factory.forProtocol(Protocol), reactor=MemoryReactorClock())
    assert internals.port_address(port, ("127.0.0.1", 5)) == IPv4Address(
        "TCP", "127.0.0.1", 5
    ), "port_address (Port._buildAddr)"
    assert callable(getattr(unix.Port, "_buildAddr", None)), "port_address: UNIX ports"
    for name in ("socket", "transport", "factory", "sessionno", "reactor", "doRead"):
        assert hasattr(port, name) or name == "socket", (
            f"portproxy.net.limits accepts with tcp.Port.{name}"
        )
    params = list(inspect.signature(tcp.Server.__init__).parameters)[1:]
    assert params == ["sock", "protocol", "client", "server", "sessionno", "reactor"], (
        "portproxy.net.limits builds tcp.Server(sock, protocol, client, server, "
        "sessionno, reactor)"
    )


def test_swap_class_changes_only_to_a_subclass() -> None:
    class Base:
        pass

    class Sub(Base):
        pass

    obj = Base()
    assert internals.swap_class(obj, Sub) is obj and type(obj) is Sub
    with pytest.raises(TypeError):
        internals.swap_class(Base(), int)


# -- HTTP/2 -------------------------------------------------------------------------------


def _h2_request(clock: MemoryReactorClock) -> tuple[internals.H2Connection, Any]:
    conn = _h2_server(clock)
    client = _h2_client()
    client.send_headers(1, _HEAD, end_stream=False)
    conn.dataReceived(client.data_to_send())
    return conn, conn.streams[1]


def test_an_h2_stream_knows_its_connection_and_request() -> None:
    clock = MemoryReactorClock()
    conn, stream = _h2_request(clock)
    assert internals.h2_stream_connection(stream) is conn, "h2_stream_connection"
    assert isinstance(internals.h2_stream_request(stream), _Held), "h2_stream_request"
    assert internals.h2_reactor(conn) is clock, "h2_reactor"


def test_h2_register_stream_fills_what_twisted_keeps_per_stream() -> None:
    conn, _ = _h2_request(MemoryReactorClock())
    # Twisted's own _requestReceived filled these for stream 1; ours must match.
    for name in ("_streamCleanupCallbacks", "_outboundStreamQueues"):
        table = getattr(conn, name, None)
        assert isinstance(table, dict) and 1 in table, f"h2_register_stream: {name}"
    internals.h2_register_stream(conn, 3, object())  # type: ignore[arg-type]
    assert 3 in conn.streams
    assert isinstance(conn._streamCleanupCallbacks[3], Deferred)  # type: ignore[attr-defined]
    assert conn._outboundStreamQueues[3] == type(conn._outboundStreamQueues[1])()  # type: ignore[attr-defined]


def test_h2_socket_full_follows_the_transports_pause() -> None:
    conn, _ = _h2_request(MemoryReactorClock())
    assert not internals.h2_socket_full(conn), "h2_socket_full"
    conn.pauseProducing()
    assert internals.h2_socket_full(conn), "h2_socket_full (_consumerBlocked)"
    conn.resumeProducing()
    assert not internals.h2_socket_full(conn)


def test_h2_wake_sender_fires_the_send_loops_wait() -> None:
    conn, _ = _h2_request(MemoryReactorClock())
    assert getattr(conn, "_sendingDeferred", "missing") is None, (
        "h2_wake_sender: H2Connection._sendingDeferred"
    )
    waiting: Deferred[None] = Deferred()
    conn._sendingDeferred = waiting  # type: ignore[attr-defined]
    internals.h2_wake_sender(conn)
    assert waiting.called and conn._sendingDeferred is None  # type: ignore[attr-defined]
    assert "_sendingDeferred" in inspect.getsource(
        internals.H2Connection._sendPrioritisedData  # type: ignore[attr-defined]
    ), "h2_wake_sender: the send loop no longer waits on _sendingDeferred"


def test_pause_stream_producer_pauses_as_flow_control_does() -> None:
    _, stream = _h2_request(MemoryReactorClock())
    paused: list[bool] = []

    class Producer:
        def pauseProducing(self) -> None:
            paused.append(True)

        def resumeProducing(self) -> None:
            pass

        def stopProducing(self) -> None:
            pass

    stream.registerProducer(Producer(), True)
    assert stream._producerProducing is True, "pause_stream_producer: _producerProducing"
    internals.pause_stream_producer(stream)
    internals.pause_stream_producer(stream)
    assert paused == [True] and stream._producerProducing is False


def test_h2_header_block_pending_until_end_headers() -> None:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    client = _h2_client()
    server.receive_data(client.data_to_send())
    block = Encoder().encode(_HEAD)
    first = HeadersFrame(1, block[:3])  # no END_HEADERS: CONTINUATION follows
    server.receive_data(first.serialize())
    assert internals.h2_header_block_pending(server), (
        "h2_header_block_pending: h2's FrameBuffer._headers_buffer"
    )
    rest = ContinuationFrame(1, block[3:], flags=["END_HEADERS"])
    server.receive_data(rest.serialize())
    assert not internals.h2_header_block_pending(server)


def test_the_undocumented_fields_the_http2_classes_use_are_there() -> None:
    """Public names, but no documented API: pinned as the private ones are."""
    conn, stream = _h2_request(MemoryReactorClock())
    # HardenedH2Connection puts its own h2 state machine (ServerH2) in place of conn.
    assert isinstance(conn.conn, h2.connection.H2Connection), "H2Connection.conn"
    assert "self.conn.receive_data" in inspect.getsource(internals.H2Connection), (
        "H2Connection no longer reads frames through self.conn"
    )
    # Streams with a shut window are parked in the priority tree.
    for name in ("block", "unblock", "insert_stream"):
        assert hasattr(conn.priority, name), f"H2Connection.priority.{name}"
    # HardenedH2Stream sets command and path itself (its _convertHeaders does not).
    source = inspect.getsource(internals.H2Stream.requestComplete)
    assert "self.command" in source and "self.path" in source, (
        "H2Stream.requestComplete no longer reads command and path"
    )
    assert hasattr(stream, "producer"), "H2Stream.producer"
    # ServerH2 overrides these of h2's connection.
    assert isinstance(h2.connection.H2Connection.open_inbound_streams, property)
    assert isinstance(h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE, int)


# -- Autobahn -----------------------------------------------------------------------------


def test_autobahn_keeps_unparsed_bytes_in_data() -> None:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    factory = WebSocketServerFactory(reactor=MemoryReactorClock())
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
    leg = factory.buildProtocol(None)
    leg.makeConnection(_Transport())
    leg.dataReceived(b"GET / HT")
    assert internals.take_unparsed_bytes(leg) == b"GET / HT", "take_unparsed_bytes"
    assert internals.take_unparsed_bytes(leg) == b""


def test_autobahn_client_sends_its_request_through_send_data_and_reads_the_status() -> None:
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

    sent: list[bytes] = []

    class Leg(WebSocketClientProtocol):
        def sendData(
            self, data: bytes, sync: bool = False, chopsize: int | None = None
        ) -> None:
            sent.append(data)
            internals.set_opening_request(self, data.replace(b"/", b"/r", 1))
            super().sendData(data.replace(b"/", b"/r", 1), sync, chopsize)

    factory = WebSocketClientFactory(url="ws://127.0.0.1:1/", reactor=MemoryReactorClock())
    factory.protocol = Leg
    factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
    leg = factory.buildProtocol(None)
    transport = _Transport()
    leg.makeConnection(transport)
    assert sent and sent[0].startswith(b"GET / HTTP/1.1\r\n"), (
        "UpstreamLeg.sendData: Autobahn no longer writes its opening request with it"
    )
    assert transport.value().startswith(b"GET /r HTTP/1.1\r\n")
    assert leg.http_request_data.startswith(b"GET /r "), "set_opening_request"
    assert internals.handshake_status_line(leg) is None
    leg.dataReceived(b"HTTP/1.1 403 Forbidden\r\nX: y\r\n\r\n")
    assert internals.handshake_status_line(leg) == "HTTP/1.1 403 Forbidden", (
        "handshake_status_line (http_status_line)"
    )


# -- the tables ----------------------------------------------------------------------------


def _hook_id(hook: PrivateHook) -> str:
    return f"{hook.owner.rpartition('.')[2]}.{hook.name}"


@pytest.mark.parametrize("hook", PRIVATE_HOOKS, ids=_hook_id)
def test_every_private_hook_exists_with_the_parameters_portproxy_uses(
    hook: PrivateHook,
) -> None:
    owner = _resolve(hook.owner)
    found = getattr(owner, hook.name, None)
    assert found is not None, f"{hook.owner}.{hook.name} is gone (used by {hook.where})"
    if hook.params is not None:
        params = tuple(inspect.signature(found).parameters)[1:]
        assert params == hook.params, (
            f"{hook.owner}.{hook.name}{params} changed: {hook.where} expects {hook.params}"
        )


@pytest.mark.parametrize("hook", PRIVATE_HOOKS, ids=_hook_id)
def test_every_private_hook_is_used_where_the_table_says(hook: PrivateHook) -> None:
    user = _resolve(hook.where)
    source = inspect.getsource(user)
    if "override" in hook.use:
        assert issubclass(user, _resolve(hook.owner)), f"{hook.where} subclasses it"
        assert hook.name in vars(user), f"{hook.where} no longer overrides {hook.name}"
    if "call" in hook.use:
        assert f".{hook.name}(" in source, f"{hook.where} no longer calls {hook.name}"


def _fingerprint(original: str) -> str:
    source = textwrap.dedent(inspect.getsource(_resolve(original)))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@pytest.mark.parametrize("copied", COPIED, ids=lambda c: c.original)
def test_every_copied_method_is_unchanged_since_it_was_copied(copied: Copied) -> None:
    assert _fingerprint(copied.original) == copied.fingerprint, (
        f"{copied.original} changed since {copied.copy} repeated its body "
        f"({copied.change}): read both, carry the change over, then update the "
        "fingerprint in portproxy.net.internals.COPIED"
    )
    assert callable(_resolve(copied.copy)), f"{copied.copy} is gone: drop the entry"


# -- nothing private outside the module --------------------------------------------------


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


_INTERNALS = "portproxy.net.internals"


def test_only_the_internals_module_imports_library_privates() -> None:
    found = []
    for name, path in _modules():
        if name == _INTERNALS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                private = [a.name for a in node.names if a.name.startswith("_")]
                parts = node.module.split(".")
                if any(p.startswith("_") and p != "__future__" for p in parts) or (
                    parts[0] in ("twisted", "autobahn", "h2") and private
                ):
                    found.append(f"{name}: from {node.module} import {private or '...'}")
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr == "__class__":
                        found.append(f"{name}:{node.lineno}: assigns __class__")
    assert not found, "use portproxy.net.internals instead:\n" + "\n".join(found)


#: Fields of portproxy's own classes that share a library private's name on purpose.
_OWN_FIELDS = {
    # HardenedH2Stream keeps its request line where HTTPChannel does, so that
    # channel_request_line reads both alike.
    ("portproxy.http.http2.HardenedH2Stream", "_command"),
    ("portproxy.http.http2.HardenedH2Stream", "_path"),
    ("portproxy.http.http2.HardenedH2Stream", "_version"),
}


def _library_bases(cls: type) -> list[type]:
    return [
        base
        for base in cls.__mro__
        if base.__module__.split(".")[0] in ("twisted", "autobahn", "h2")
    ]


def _library_names(bases: list[type]) -> set[str]:
    """Private names the library classes define or set on themselves."""
    names: set[str] = set()
    for base in bases:
        names.update(n for n in vars(base) if n.startswith("_"))
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(textwrap.dedent(source))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                names.add(node.attr)
    return {n for n in names if not n.startswith("__")}


def test_library_privates_are_used_only_through_the_module_or_its_table() -> None:
    listed = {(hook.where, hook.name) for hook in PRIVATE_HOOKS}
    unlisted = []
    for name, path in _modules():
        if name == _INTERNALS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = importlib.import_module(name)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            cls = getattr(module, node.name, None)
            if not isinstance(cls, type):
                continue
            bases = _library_bases(cls)
            if not bases:
                continue
            private = _library_names(bases)
            where = f"{name}.{node.name}"
            for inner in ast.walk(node):
                used = None
                if isinstance(inner, ast.Attribute):
                    used = inner.attr
                elif isinstance(inner, ast.FunctionDef):
                    used = inner.name
                if (
                    used in private
                    and (where, used) not in listed
                    and (where, used) not in _OWN_FIELDS
                ):
                    unlisted.append(f"{where}:{inner.lineno}: {used}")
    assert not unlisted, (
        "library privates used outside portproxy.net.internals (add a function there, "
        "or a PRIVATE_HOOKS entry for an override):\n" + "\n".join(sorted(set(unlisted)))
    )

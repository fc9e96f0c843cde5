"""Eager sends: bytes leave at once when nothing is queued, and never out of order."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from portproxy.net.eager import eager_writer, send_eagerly
from tests.support import get_reactor, listen


class Collect(Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.data = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.data))


async def _pair(expected: int) -> tuple[Any, Collect, Any]:
    received: list[Collect] = []
    port = listen(
        Factory.forProtocol(lambda: received.append(Collect(expected)) or received[-1])
    )
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port.getHost().port)
    client = await endpoint.connect(Factory.forProtocol(Protocol))
    while not received:
        from twisted.internet.task import deferLater

        await deferLater(get_reactor(), 0.01, lambda: None)
    return client.transport, received[0], port


async def _turn() -> None:
    from twisted.internet.task import deferLater

    await deferLater(get_reactor(), 0, lambda: None)


class _CountingSocket:
    """Stands in for a transport's socket, counting the send() calls."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.sends: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sends.append(bytes(data))
        return int(self.sock.send(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest_twisted.ensureDeferred
async def test_the_writes_of_one_turn_leave_in_one_send_at_its_end() -> None:
    transport, peer, port = await _pair(11)
    try:
        send_eagerly(transport)
        counting = transport.socket = _CountingSocket(transport.socket)
        transport.write(b"head ")
        transport.writeSequence([b"bo", b"dy"])
        transport.write(b"!!")
        assert counting.sends == []  # held until the turn's events are handled
        await _turn()
        assert counting.sends == [b"head body!!"]
        assert await peer.done == b"head body!!"
    finally:
        transport.socket = counting.sock
        transport.loseConnection()
        peer.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_closing_right_after_a_write_still_delivers_it() -> None:
    for close in ("loseConnection", "loseWriteConnection"):
        transport, peer, port = await _pair(6)
        try:
            send_eagerly(transport)
            transport.write(b"bye")
            transport.write(b"-now")
            getattr(transport, close)()
            assert await peer.done == b"bye-now", close
        finally:
            transport.loseConnection()
            peer.transport.loseConnection()
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_aborted_connection_drops_what_it_held() -> None:
    transport, peer, port = await _pair(1)
    try:
        send_eagerly(transport)
        transport.write(b"never")
        transport.abortConnection()
        await _turn()
        await _turn()
        assert peer.data == b""
    finally:
        peer.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_small_write_leaves_without_queueing() -> None:
    transport, peer, port = await _pair(5)
    try:
        send_eagerly(transport)
        transport.write(b"hello")
        assert transport.dataBuffer == b"" and not transport._tempDataBuffer
        assert await peer.done == b"hello"
    finally:
        transport.loseConnection()
        peer.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_does_not_take_is_queued_and_order_is_kept() -> None:
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than a socket buffer holds
    transport, peer, port = await _pair(len(big) + 3 + 6)
    try:
        send_eagerly(transport)
        transport.write(big)
        transport.writeSequence([b"E", b"ND"])
        await _turn()
        assert transport.dataBuffer or transport._tempDataBuffer  # the rest waits
        eager_writer(transport)(b"-after")
        data = await peer.done
        assert data == big + b"END-after"
    finally:
        transport.loseConnection()
        peer.transport.loseConnection()
        await port.stopListening()


def test_non_tcp_transports_keep_their_own_write() -> None:
    from twisted.internet.testing import StringTransport

    transport = StringTransport()
    assert send_eagerly(transport) is False
    assert type(transport) is StringTransport
    assert eager_writer(transport) == transport.write
    transport.write(b"x")
    assert transport.value() == b"x"


@pytest_twisted.ensureDeferred
async def test_counted_client_connections_of_a_watched_port_still_send_eagerly(
    make_proxy: Any,
) -> None:
    """The connection cap counts connections with a subclass of Twisted's transport;
    responses on them must still leave at once (a missed case cost 15% of S1)."""
    from tests.support import raw_request

    proxy = make_proxy()
    assert proxy.instance.site.limits.watch(proxy.port_obj)
    raw = await raw_request(
        proxy.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 200")
    (protocol,) = proxy.instance.site.tracked
    transport = getattr(protocol, "_channel", protocol).transport
    assert type(transport).__name__.startswith("EagerCounted")


def test_subclasses_of_tcp_transports_get_one_eager_class_each() -> None:
    from twisted.internet import tcp

    class Counted(tcp.Server):
        pass

    first = object.__new__(Counted)
    second = object.__new__(Counted)
    assert send_eagerly(first) and send_eagerly(second)
    assert type(first) is type(second)
    assert issubclass(type(first), Counted)
    assert send_eagerly(first)  # already eager: unchanged

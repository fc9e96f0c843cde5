"""The connection limits on TLS listeners, before the first byte says TLS or plain HTTP.

A TLS port waits for the client's first byte to choose TLS or the plain-HTTP redirect
(L{portproxy.runtime.tlslistener.PlainOrTLSFactory}). That wait is part of the request head:
it ends at C{--header-timeout}, counts against C{--max-connections}, and a greedy
address's silent connections make room at the cap like slow heads do.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from portproxy.net.limits import ConnectionLimits
from portproxy.runtime.tlslistener import PlainOrTLSFactory
from tests.support import get_reactor
from tests.test_limits import closed_within, connect, sleep
from tests.test_tls import write_pair
from tests.test_tls_live import tls_services


class _Never:
    """A factory that must not be asked for a protocol (no byte ever came)."""

    def __init__(self) -> None:
        self.built: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        self.built.append(addr)


def _silent_connection(
    factory: PlainOrTLSFactory, host: str = "127.0.0.1", port: int = 40000
) -> StringTransport:
    addr = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr)
    protocol.makeConnection(transport)
    return transport


def _dropped(transport: StringTransport) -> bool:
    return bool(transport.disconnecting or getattr(transport, "aborted", False))


def test_silent_connection_on_a_tls_port_is_dropped_at_the_header_timeout() -> None:
    clock = Clock()
    limits = ConnectionLimits(
        clock, max_connections=10, header_timeout=2.0, send_timeout=60.0
    )
    tls, plain = _Never(), _Never()
    factory = PlainOrTLSFactory(tls, plain, clock=clock, limits=limits)
    transport = _silent_connection(factory)
    clock.advance(1.9)
    assert not _dropped(transport)
    clock.advance(0.2)
    assert _dropped(transport)
    assert tls.built == plain.built == []
    assert not clock.getDelayedCalls()


def test_first_byte_ends_the_wait_and_the_connection_leaves_the_limits() -> None:
    clock = Clock()
    limits = ConnectionLimits(
        clock, max_connections=10, header_timeout=2.0, send_timeout=60.0
    )

    class Inner:
        transport: Any = None
        got = b""

        def makeConnection(self, transport: Any) -> None:
            self.transport = transport

        def dataReceived(self, data: bytes) -> None:
            self.got += data

        def connectionLost(self, reason: Any) -> None:
            pass

    inner = Inner()

    class Plain:
        def buildProtocol(self, addr: Any) -> Inner:
            return inner

    factory = PlainOrTLSFactory(_Never(), Plain(), clock=clock, limits=limits)
    addr = IPv4Address("TCP", "127.0.0.1", 40000)
    sniff = factory.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr)
    sniff.makeConnection(transport)
    sniff.dataReceived(b"G")
    assert inner.got == b"G"
    clock.advance(5)  # the sniff deadline no longer holds (the inner protocol's does)
    assert not _dropped(transport)
    assert not clock.getDelayedCalls()


def test_at_the_cap_a_greedy_addresss_silent_tls_connection_makes_room() -> None:
    clock = Clock()
    limits = ConnectionLimits(
        clock, max_connections=2, header_timeout=30.0, send_timeout=60.0
    )
    factory = PlainOrTLSFactory(_Never(), _Never(), clock=clock, limits=limits)
    first = _silent_connection(factory, "127.0.0.9", 1)
    second = _silent_connection(factory, "127.0.0.9", 2)
    assert not limits._make_room()  # within the grace of a new head (HEAD_GRACE)
    clock.advance(1.0)
    assert limits._make_room()  # what accepting does when a client waits at the cap
    assert _dropped(first) and not _dropped(second)
    clock.advance(30)
    assert _dropped(second)


# -- live: the listener that twist portproxy runs -------------------------------------


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[Any]:
    with tls_services(tmp_path) as start:
        yield start


def _tls_config(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    cert, key, _ = write_pair(tmp_path)
    return {"cert": cert, "cert_key": key, **fields}


@pytest_twisted.ensureDeferred
async def test_tls_listener_drops_a_client_that_sends_nothing_at_the_header_timeout(
    tmp_path: Path, tls_proxy: Any
) -> None:
    proxy = tls_proxy(**_tls_config(tmp_path, header_timeout=0.5))
    client = await connect(proxy.port)
    started = get_reactor().seconds()
    raw = await closed_within(client, 10)
    assert raw == b""
    assert get_reactor().seconds() - started < 5  # not the 30 s first-byte wait


@pytest_twisted.ensureDeferred
async def test_silent_tls_connections_count_against_max_connections(
    tmp_path: Path, tls_proxy: Any
) -> None:
    proxy = tls_proxy(**_tls_config(tmp_path, max_connections=2, header_timeout=30.0))
    silent = [await connect(proxy.port, bind=f"127.0.0.{i}") for i in (2, 3)]
    await sleep(0.2)
    # A third client is over the cap: the oldest silent connection (from any address,
    # since the many-address review) gives its place up, and the newcomer is
    # redirected to https.
    waiting = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    waiting.setblocking(False)
    waiting.sendall(
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    answer = b""
    for _ in range(100):
        try:
            chunk = waiting.recv(4096)
        except BlockingIOError:
            await sleep(0.05)
            continue
        if not chunk:
            break
        answer += chunk
    waiting.close()
    assert answer.startswith(b"HTTP/1.1 307 "), answer
    assert (await closed_within(silent[0], 5)) == b""  # counted, and made room
    assert not silent[1].closed.called
    silent[1].transport.loseConnection()
    await silent[1].closed


@pytest_twisted.ensureDeferred
async def test_at_the_cap_silent_tls_connections_from_one_address_make_room(
    tmp_path: Path, tls_proxy: Any
) -> None:
    proxy = tls_proxy(**_tls_config(tmp_path, max_connections=2, header_timeout=30.0))
    greedy = [await connect(proxy.port, bind="127.0.0.5") for _ in range(2)]
    await sleep(0.2)
    other = await connect(proxy.port, bind="127.0.0.6")
    other.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    raw = await closed_within(other, 10)
    assert raw.startswith(b"HTTP/1.1 307 "), raw
    assert greedy[0].closed.called  # the oldest of the address's two
    greedy[1].transport.loseConnection()
    await greedy[1].closed

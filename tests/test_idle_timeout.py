"""A kept-alive HTTP/1.1 connection's idle timeout: Twisted's semantics, one timer."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from portproxy.web.site import ProxySite
from tests.support import HeldResource


class _Transport(StringTransport):
    protocol: Any


def _connect(timeout: float) -> tuple[MemoryReactorClock, HeldResource, _Transport]:
    clock = MemoryReactorClock()
    resource = HeldResource()
    site = ProxySite(resource, reactor=clock, access_log="off")
    site.timeOut = timeout
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    transport = _Transport()
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return clock, resource, transport


def _request(transport: _Transport) -> bytes:
    return b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


def _idle_timers(clock: MemoryReactorClock) -> int:
    return sum("_idle_check" in repr(call) for call in clock.getDelayedCalls())


def test_an_idle_connection_closes_after_the_timeout_counted_from_its_last_byte() -> None:
    clock, _, transport = _connect(10)
    protocol = transport.protocol
    clock.advance(9)
    protocol.dataReceived(b"GET /x HT")  # a byte resets the count
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1.5)
    assert transport.disconnecting


def test_no_timeout_while_a_request_is_handled_and_a_full_one_after_it() -> None:
    clock, resource, transport = _connect(10)
    transport.protocol.dataReceived(_request(transport))
    clock.advance(100)
    assert not transport.disconnecting  # the app may take its time
    (request,) = resource.waiting
    request.write(b"done")
    request.finish()
    clock.advance(9.5)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_kept_alive_requests_reuse_one_timer() -> None:
    clock, resource, transport = _connect(10)
    for _ in range(5):
        transport.protocol.dataReceived(_request(transport))
        resource.waiting.pop().finish()
        clock.advance(1)
    assert _idle_timers(clock) == 1
    assert not transport.disconnecting


def test_a_closed_connection_leaves_no_timer() -> None:
    clock, _, transport = _connect(10)
    assert _idle_timers(clock) == 1
    transport.protocol.connectionLost(None)
    assert _idle_timers(clock) == 0

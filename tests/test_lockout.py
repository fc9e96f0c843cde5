"""Lock-out holes at the connection cap (second review): slow request bodies, HTTP/2
connections without streams, the fd budget of upstream connections, shared addresses.

Real sockets on 127.0.0.1 against an in-process portproxy and real upstream sites; the
bookkeeping of L{ConnectionLimits} on a fake clock.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from tests.support import FakeConnection, fake_clock_limits, parse_response
from tests.test_limits import closed_within, connect, sleep

KiB = 1024


def _signed_out_proxy(make_proxy: Any, tmp_path: Any, **fields: Any) -> Any:
    return make_proxy(
        environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path), **fields
    )


def _post_head(path: bytes, length: int, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n%s\r\n" % (
        path,
        length,
        extra,
    )


# -- 1a: a refused request with a body is answered at its head ------------------------------


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"])
@pytest_twisted.ensureDeferred
async def test_signed_out_post_to_an_app_is_answered_401_before_its_body(
    make_proxy, upstream, tmp_path, expect: bytes
) -> None:
    site = upstream()
    proxy = _signed_out_proxy(make_proxy, tmp_path)
    client = await connect(proxy.port)
    # A small body (under the 64 KiB streaming threshold) and none of it sent.
    client.send(_post_head(b"/proxy/%d/" % site.port, 60000, expect))
    raw = await closed_within(client, 5)
    status, headers, body = parse_response(raw)
    assert status == 401, raw
    assert headers[b"connection"] == [b"close"]
    assert json.loads(body)["error"]
    assert b"100 Continue" not in raw
    assert raw.count(b"HTTP/1.1 ") == 1
    assert site.resource.requests == []


@pytest.mark.parametrize(
    ("fields", "path", "status"),
    [
        ({"disable_proxy": True}, b"/proxy/%d/", 403),
        ({}, b"/proxy/notaport/", 400),
        ({}, b"/proxy/%d", 308),  # the missing slash (a POST keeps its method)
    ],
)
@pytest_twisted.ensureDeferred
async def test_refused_proxied_request_with_a_body_is_answered_at_once_and_closed(
    make_proxy, upstream, fields: dict[str, Any], path: bytes, status: int
) -> None:
    site = upstream()
    proxy = make_proxy(**fields)
    client = await connect(proxy.port)
    target = path % site.port if b"%d" in path else path
    client.send(_post_head(target, 100 * KiB))
    raw = await closed_within(client, 5)
    assert parse_response(raw)[0] == status, raw
    assert site.resource.requests == []


@pytest_twisted.ensureDeferred
async def test_body_sent_with_a_refused_head_is_never_read_as_a_request(
    make_proxy, upstream, tmp_path
) -> None:
    site = upstream()
    proxy = _signed_out_proxy(make_proxy, tmp_path)
    smuggled = b"GET /proxy/%d/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % site.port
    client = await connect(proxy.port)
    client.send(_post_head(b"/proxy/%d/" % site.port, len(smuggled)) + smuggled)
    raw = await closed_within(client, 5)
    assert parse_response(raw)[0] == 401
    assert raw.count(b"HTTP/1.1 ") == 1
    assert site.resource.requests == []


# -- 1b: portproxy's own routes get their body within the head deadline ----------------------


@pytest_twisted.ensureDeferred
async def test_login_body_trickled_past_the_header_timeout_gets_408(
    make_proxy, tmp_path
) -> None:
    proxy = _signed_out_proxy(make_proxy, tmp_path, header_timeout=1.0)
    client = await connect(proxy.port)
    client.send(_post_head(b"/login", 1000))
    for _ in range(30):
        if client.closed.called:
            break
        client.send(b"a")
        await sleep(0.1)
    raw = await closed_within(client, 5)
    assert raw.startswith(b"HTTP/1.1 408 "), raw


@pytest_twisted.ensureDeferred
async def test_slow_login_bodies_from_many_addresses_make_room_for_a_user(
    make_proxy, tmp_path
) -> None:
    proxy = _signed_out_proxy(make_proxy, tmp_path, max_connections=3, header_timeout=30)
    limits = proxy.instance.site.limits
    assert limits.watch(proxy.port_obj)
    slow = []
    for i in range(3):
        client = await connect(proxy.port, bind=f"127.0.0.{i + 2}")
        client.send(_post_head(b"/login", 60000) + b"password=")
        slow.append(client)
    await sleep(0.2)
    user = await connect(proxy.port, bind="127.0.0.9")
    user.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    raw = await closed_within(user, 5)
    assert raw.startswith(b"HTTP/1.1 200 "), raw
    assert slow[0].closed.called  # the oldest made room
    for client in slow[1:]:
        client.transport.abortConnection()
        await client.closed


@pytest_twisted.ensureDeferred
async def test_signed_in_slow_upload_outlives_the_header_timeout(
    make_proxy, upstream
) -> None:
    site = upstream()
    proxy = make_proxy(header_timeout=0.5)
    client = await connect(proxy.port)
    client.send(
        _post_head(b"/proxy/%d/" % site.port, 10, b"Connection: close\r\n") + b"01234"
    )
    await sleep(1.2)
    assert not client.closed.called
    client.send(b"56789")
    raw = await closed_within(client, 5)
    assert parse_response(raw)[0] == 200, raw
    assert site.resource.requests[0]["body"] == b"0123456789"


@pytest_twisted.ensureDeferred
async def test_signed_in_upload_is_not_evicted_at_the_cap(make_proxy, upstream) -> None:
    site = upstream()
    proxy = make_proxy(max_connections=1, header_timeout=30)
    limits = proxy.instance.site.limits
    assert limits.watch(proxy.port_obj)
    uploader = await connect(proxy.port)
    uploader.send(_post_head(b"/proxy/%d/" % site.port, 10, b"Connection: close\r\n"))
    await sleep(0.2)
    waiting = await connect(proxy.port, bind="127.0.0.2")
    waiting.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await sleep(0.5)
    assert not uploader.closed.called and waiting.data == b""
    uploader.send(b"0123456789")
    assert parse_response(await closed_within(uploader, 5))[0] == 200
    assert (await closed_within(waiting, 5)).startswith(b"HTTP/1.1 200 ")


# -- 2 and 5: eviction at the cap, on a fake clock ------------------------------------------


_limits = fake_clock_limits


def test_at_the_cap_the_oldest_head_makes_room_whatever_its_address() -> None:
    clock = Clock()
    limits = _limits(clock)
    heads = [FakeConnection(f"198.51.100.{i}") for i in range(4)]
    for connection in heads:
        limits.head_started(connection)
        clock.advance(1)
    assert limits._make_room()
    assert [c.events for c in heads] == [["408"], [], [], []]


def test_a_greedy_address_is_evicted_before_older_single_heads() -> None:
    clock = Clock()
    limits = _limits(clock)
    user = FakeConnection("198.51.100.1")
    greedy = [FakeConnection("203.0.113.9") for _ in range(2)]
    for connection in (user, *greedy):
        limits.head_started(connection)
        clock.advance(1)
    assert limits._make_room()
    assert user.events == [] and greedy[0].events == ["408"]


def test_a_trusted_proxy_address_is_never_preferred_for_eviction() -> None:
    clock = Clock()
    limits = _limits(clock, trusted_proxies=(ipaddress.ip_network("10.0.0.1/32"),))
    behind_proxy = [FakeConnection("10.0.0.1") for _ in range(3)]
    attacker = [FakeConnection("203.0.113.9") for _ in range(2)]
    for connection in (*behind_proxy, *attacker):
        limits.head_started(connection)
        clock.advance(1)
    assert limits._make_room()
    assert [c.events for c in behind_proxy] == [[], [], []]
    assert attacker[0].events == ["408"]


def test_authorized_connection_is_never_evicted() -> None:
    clock = Clock()
    limits = _limits(clock)
    busy = FakeConnection("198.51.100.1")
    limits.head_started(busy)
    limits.head_done(busy)  # head complete and authorized: busy
    assert not limits._make_room()
    assert busy.events == []


# -- 3: HTTP/2 connections without a stream ---------------------------------------------------


class FakeH2:
    """An HTTP/2 connection as the limits see it (portproxy.http.http2 implements evict)."""

    def __init__(self, host: str = "198.51.100.7") -> None:
        from twisted.internet.address import IPv4Address

        self.evicted = 0
        peer = IPv4Address("TCP", host, 40000)

        class Transport:
            disconnecting = False

            def getPeer(self) -> Any:
                return peer

        self.transport = Transport()

    def evict(self) -> None:
        self.evicted += 1


def test_preface_only_h2_connection_is_evicted_at_the_header_timeout() -> None:
    clock = Clock()
    limits = _limits(clock, header_timeout=2.0)
    h2 = FakeH2()
    limits.h2_idle(h2)
    clock.advance(1.9)
    assert h2.evicted == 0
    clock.advance(0.2)
    assert h2.evicted == 1
    assert not clock.getDelayedCalls()


def test_h2_connection_with_an_open_stream_is_neither_timed_out_nor_evicted() -> None:
    clock = Clock()
    limits = _limits(clock, header_timeout=2.0)
    h2 = FakeH2()
    limits.h2_idle(h2)
    limits.h2_busy(h2)
    clock.advance(60)
    assert not limits._make_room()
    assert h2.evicted == 0


def test_h2_connection_without_streams_makes_room_at_the_cap() -> None:
    clock = Clock()
    limits = _limits(clock, header_timeout=30.0)
    fresh = FakeH2()
    limits.h2_idle(fresh)  # right after the preface: a head still to come
    assert not limits._make_room()  # not within its grace (limits.HEAD_GRACE)
    clock.advance(1.0)
    assert limits._make_room()
    assert fresh.evicted == 1
    used = FakeH2()
    limits.h2_idle(used)
    limits.h2_busy(used)
    limits.h2_idle(used)  # its streams are done: idle, no head deadline any more
    clock.advance(60)
    assert used.evicted == 0
    assert limits._make_room()  # unused long enough: reclaimed like a kept-alive one
    assert used.evicted == 1


def test_h2_connection_without_evict_is_closed_by_its_transport() -> None:
    clock = Clock()
    limits = _limits(clock, header_timeout=1.0)
    closed: list[bool] = []

    class Plain:
        class transport:
            disconnecting = False

            @staticmethod
            def getPeer() -> Any:
                return None

            @staticmethod
            def loseConnection() -> None:
                closed.append(True)

    limits.h2_idle(Plain())
    clock.advance(1.1)
    assert closed == [True]

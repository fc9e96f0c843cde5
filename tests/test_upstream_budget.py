"""The file-descriptor budget of upstream connections (second review, finding 4).

An HTTP/2 connection holds up to 100 streams, each with an upstream: "two descriptors
per client connection" no longer bounds the process. Upstream connections have a
budget of their own; over it a request gets 503 and the client connections keep
their descriptors. Real sockets on 127.0.0.1, real upstream sites.
"""

from __future__ import annotations

import json

import pytest_twisted

from portproxy.net.policy import FD_RESERVE
from tests.support import parse_response
from tests.test_limits import Hold, closed_within, connect, sleep


def test_upstream_budget_leaves_the_client_connections_their_descriptors() -> None:
    from portproxy.net.policy import upstream_budget

    assert upstream_budget(4096, max_connections=1000) == 4096 - 1000 - FD_RESERVE
    assert upstream_budget(-1, max_connections=1000) is None  # unlimited
    # The planned limit always leaves at least one upstream per client connection.
    assert upstream_budget(2 * 1000 + FD_RESERVE, max_connections=1000) == 1000


def _get(path: bytes, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (path, extra)


@pytest_twisted.ensureDeferred
async def test_over_the_upstream_budget_a_request_gets_503_and_others_are_served(
    make_proxy, upstream
) -> None:
    stalled = Hold()
    slow_site = upstream(stalled)
    fast_site = upstream()
    proxy = make_proxy()
    pool = proxy.instance.engine.pool
    pool.max_open = 2
    # An idle pooled connection to the fast app first: it gives its place up.
    first = await connect(proxy.port)
    first.send(_get(b"/proxy/%d/" % fast_site.port, close=True))
    await closed_within(first, 5)
    assert pool.idle_count() == 1
    held = []
    for _ in range(2):
        client = await connect(proxy.port)
        client.send(_get(b"/proxy/%d/" % slow_site.port))
        held.append(client)
    while len(stalled.waiting) < 2:
        await sleep(0.02)
    assert pool.idle_count() == 0
    refused = await connect(proxy.port)
    refused.send(_get(b"/proxy/%d/" % slow_site.port, close=True))
    status, headers, body = parse_response(await closed_within(refused, 5))
    assert status == 503
    assert headers[b"retry-after"] == [b"1"]
    assert json.loads(body) == {"error": "Too many open connections to apps"}
    # The proxy still accepts and serves what needs no app connection...
    health = await connect(proxy.port)
    health.send(_get(b"/healthz", close=True))
    assert parse_response(await closed_within(health, 5))[0] == 200
    # ...and an app again once the stalled ones are done.
    stalled.release()
    for client in held:
        await client.wait_for(b"ok")
        client.transport.loseConnection()
        await client.closed
    again = await connect(proxy.port)
    again.send(_get(b"/proxy/%d/" % fast_site.port, close=True))
    assert parse_response(await closed_within(again, 5))[0] == 200


@pytest_twisted.ensureDeferred
async def test_websocket_upstream_legs_count_in_the_same_budget(
    make_proxy, upstream
) -> None:
    from tests.test_websocket_relay import exchange, upgrade

    stalled = Hold()
    slow_site = upstream(stalled)
    proxy = make_proxy()
    pool = proxy.instance.engine.pool
    pool.max_open = 1
    held = await connect(proxy.port)
    held.send(_get(b"/proxy/%d/" % slow_site.port))
    while not stalled.waiting:
        await sleep(0.02)
    raw = await exchange(proxy.port, upgrade(b"/proxy/%d/" % slow_site.port))
    status, _, body = parse_response(raw)
    assert status == 503, raw
    assert json.loads(body) == {"error": "Too many open connections to apps"}
    assert stalled.waiting and len(stalled.waiting) == 1  # the app never saw it
    stalled.release()
    await held.wait_for(b"ok")
    held.transport.loseConnection()
    await held.closed
    assert pool.open_count <= 1

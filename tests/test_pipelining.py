"""Pipelined HTTP/1.1 requests: answered in order, and never buffered without bound.

twisted.web parses one request at a time and keeps the bytes of later (pipelined)
requests until the current one is answered. A client that pipelines while it does not
read a long response must not make that buffer (the proxy's memory) grow (SPEC 6).

Real sockets on 127.0.0.1 against an in-process portproxy and real upstream sites.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted

from portproxy.web.channel import PIPELINE_BUFFER_LIMIT
from tests.support import Recorder, get_reactor, raw_request
from tests.test_limits import FloodResource, KiB, MiB, closed_within, connect, sleep

#: What one network read can add on top of the limit before reading pauses.
READ_SIZE = 64 * KiB


def _held(proxy: Any) -> int:
    """Bytes of not yet parsed client input that the proxy's HTTP/1.1 channels hold."""
    held = 0
    for protocol in proxy.instance.site.tracked:
        channel = getattr(protocol, "_channel", protocol)
        buffered = getattr(channel, "_dataBuffer", None) or []
        held += sum(len(b) for b in buffered) + len(getattr(channel, "_buffer", b""))
    return held


def _slow_reader(port: int) -> socket.socket:
    """A non-blocking client socket with a tiny receive buffer (so it fills at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    try:
        sock.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    return sock


def _get(port: int, path: bytes, extra: bytes = b"") -> bytes:
    return b"GET /proxy/%d%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (port, path, extra)


async def _flood_while(
    proxy: Any, sock: socket.socket, junk: bytes, seconds: float, read: int = 0
) -> tuple[int, int, bool]:
    """Send C{junk} as fast as the proxy takes it for C{seconds}, reading C{read}
    bytes every 50 ms; return (most bytes the proxy held, bytes sent, still open)."""
    reactor = get_reactor()
    end = reactor.seconds() + seconds
    most = sent = 0
    open_ = True
    while reactor.seconds() < end:
        try:
            while True:
                sent += sock.send(junk)
        except BlockingIOError:
            pass
        except OSError:
            open_ = False
            break
        if read:
            try:
                if sock.recv(read) == b"":
                    open_ = False
                    break
            except BlockingIOError:
                pass
            except OSError:
                open_ = False
                break
        most = max(most, _held(proxy))
        await sleep(0.05)
    return most, sent, open_


async def _streaming_response_stalled(app: FloodResource) -> None:
    """Wait until the app's body has backed up to it (the client's socket is full)."""
    while not app.floods or not app.floods[0].pauses:
        await sleep(0.02)
    await sleep(0.2)


async def _app_connection_closed(app: FloodResource) -> None:
    """Wait until the proxy has closed the app's side (the client went away)."""
    lost: list[object] = []
    app.floods[0].lost.addBoth(lost.append)
    while not lost:
        await sleep(0.02)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_pipelining_client_that_never_reads_cannot_grow_the_proxys_buffer(
    make_proxy, upstream
) -> None:
    app = FloodResource(1 << 30)
    site = upstream(app)
    proxy = make_proxy(send_timeout=30.0)
    sock = _slow_reader(proxy.port)
    try:
        await sleep(0.05)
        sock.sendall(_get(site.port, b"/big"))
        await _streaming_response_stalled(app)
        junk = _get(site.port, b"/x") * 2000
        most, sent, open_ = await _flood_while(proxy, sock, junk, seconds=2.0)
    finally:
        sock.close()
    assert open_, "the proxy closed the connection: nothing was tested"
    assert most <= PIPELINE_BUFFER_LIMIT + READ_SIZE, (
        f"the proxy held {most >> 10} KiB of pipelined requests ({sent >> 10} KiB sent)"
    )
    await _app_connection_closed(app)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_pipelining_client_that_reads_a_little_now_and_then_stays_bounded(
    make_proxy, upstream
) -> None:
    # Slow but steady, so the send timeout never ends it: only the buffer cap helps.
    app = FloodResource(1 << 30)
    site = upstream(app)
    proxy = make_proxy(send_timeout=1.0)
    limits = proxy.instance.site.limits
    stalls: list[object] = []
    watch = limits.send_paused
    limits.send_paused = lambda connection: stalls.append(connection) or watch(connection)
    sock = _slow_reader(proxy.port)
    try:
        await sleep(0.05)
        sock.sendall(_get(site.port, b"/big"))
        await _streaming_response_stalled(app)
        junk = _get(site.port, b"/x") * 2000
        most, sent, open_ = await _flood_while(proxy, sock, junk, seconds=3.0, read=4 * KiB)
    finally:
        sock.close()
    assert stalls, "the reader never fell behind the app: nothing was tested"
    assert open_, "a steady reader was cut (or the proxy closed): nothing was tested"
    assert most <= PIPELINE_BUFFER_LIMIT + READ_SIZE, (
        f"the proxy held {most >> 10} KiB of pipelined requests ({sent >> 10} KiB sent)"
    )
    await _app_connection_closed(app)


def _split_responses(raw: bytes) -> list[tuple[int, bytes]]:
    """Consecutive Content-Length framed responses: (status, body) each."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((int(lines[0].split(b" ")[1]), rest[:length]))
        raw = rest[length:]
    return out


@pytest.mark.parametrize("padding", [0, 8 * KiB])
@pytest_twisted.ensureDeferred
async def test_twenty_pipelined_gets_in_one_write_are_all_answered_in_order(
    proxy, upstream, padding: int
) -> None:
    # With padding the requests add up to more than the buffer cap: reading pauses
    # and resumes on the way, and nothing may be lost or reordered.
    site = upstream(Recorder())
    pad = b"X-Pad: %s\r\n" % (b"p" * padding) if padding else b""
    requests = [_get(site.port, b"/r%d" % i, pad) for i in range(19)]
    requests.append(_get(site.port, b"/r19", pad + b"Connection: close\r\n"))
    if padding:
        assert sum(map(len, requests)) > PIPELINE_BUFFER_LIMIT + READ_SIZE
    raw = await raw_request(proxy.port, b"".join(requests), timeout=20)
    answers = _split_responses(raw)
    assert [status for status, _ in answers] == [200] * 20
    assert [body for _, body in answers] == [
        b"ok /r%d" % i for i in range(20)
    ]  # the app sees the path after /proxy/<port>
    assert [r["uri"] for r in site.resource.requests] == [b"/r%d" % i for i in range(20)]


@pytest_twisted.ensureDeferred
async def test_streamed_upload_then_pipelined_gets_in_one_write_are_answered_in_order(
    proxy, upstream
) -> None:
    site = upstream(Recorder())
    body = b"u" * (300 * KiB)  # over the streaming threshold: sent on as it arrives
    upload = b"POST /proxy/%d/up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
    pad = b"X-Pad: %s\r\n" % (b"p" * 8 * KiB)
    gets = [_get(site.port, b"/g%d" % i, pad) for i in range(9)]
    gets.append(_get(site.port, b"/g9", b"Connection: close\r\n"))
    sent = upload % (site.port, len(body)) + body + b"".join(gets)
    raw = await raw_request(proxy.port, sent, timeout=20)
    bodies = [answer for _, answer in _split_responses(raw)]
    assert bodies == [b"ok /up"] + [b"ok /g%d" % i for i in range(10)]
    assert site.resource.requests[0]["body"] == body


@pytest_twisted.ensureDeferred
async def test_pipelined_gets_behind_a_response_the_client_reads_late_are_all_answered(
    proxy, upstream
) -> None:
    # The client reads nothing until the proxy has stopped reading it (its send
    # side full and 64 KiB of later requests held); once it reads, all get answers.
    big = b"x" * (32 * MiB)  # more than the kernel's socket buffers hold

    def answer(request: Any) -> bytes:
        return big if request.uri == b"/big" else b"ok " + request.uri

    site = upstream(Recorder(handler=answer))
    client = await connect(proxy.port)
    client.transport.pauseProducing()
    pad = b"X-Pad: %s\r\n" % (b"p" * 8 * KiB)
    requests = [_get(site.port, b"/big")]
    requests += [_get(site.port, b"/r%d" % i, pad) for i in range(19)]
    requests.append(_get(site.port, b"/r19", b"Connection: close\r\n"))
    client.send(b"".join(requests))
    await sleep(1.0)
    assert _held(proxy) <= PIPELINE_BUFFER_LIMIT + READ_SIZE
    client.transport.resumeProducing()
    raw = await closed_within(client, 20)
    bodies = [answer for _, answer in _split_responses(raw)]
    assert bodies == [big] + [b"ok /r%d" % i for i in range(20)]


def test_a_kept_alive_channel_asks_its_socket_for_addresses_once() -> None:
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from portproxy.web.channel import _CachingChannel

    calls: list[str] = []

    class Counting(StringTransport):
        def getPeer(self) -> IPv4Address:
            calls.append("peer")
            return IPv4Address("TCP", "10.0.0.1", 4321)

        def getHost(self) -> IPv4Address:
            calls.append("host")
            return IPv4Address("TCP", "127.0.0.1", 8080)

    channel = _CachingChannel()
    channel.makeConnection(Counting())
    calls.clear()
    for _ in range(3):
        assert channel.getPeer() == IPv4Address("TCP", "10.0.0.1", 4321)
        assert channel.getHost() == IPv4Address("TCP", "127.0.0.1", 8080)
    assert sorted(calls) == ["host", "peer"]

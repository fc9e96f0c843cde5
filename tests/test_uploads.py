"""Request bodies stream to the app as they arrive, with backpressure both ways."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from portproxy.http.wire import ChunkedDecoder
from tests.support import get_reactor, listen, parse_response, rss_bytes

MiB = 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB of a recognisable pattern


def _expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    full, rest = divmod(size, len(BLOCK))
    for _ in range(full):
        digest.update(BLOCK)
    digest.update(BLOCK[:rest])
    return digest.hexdigest()


class SinkUpstream(Protocol):
    """Reads a request body (Content-Length or chunked), hashes it, answers the hash."""

    instances: list[SinkUpstream] = []

    def __init__(self) -> None:
        self.head = b""
        self.head_done = False
        self.remaining = 0
        self.chunks: ChunkedDecoder | None = None
        self.digest = hashlib.sha256()
        self.received = 0
        self.first_byte_at: float | None = None
        self.lost: Deferred[float] = Deferred()
        self.paused_for = 0.0
        SinkUpstream.instances.append(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.head_done:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            self.head, _, data = self.head.partition(b"\r\n\r\n")
            self.head_done = True
            lower = self.head.lower()
            if b"transfer-encoding: chunked" in lower:
                self.chunks = ChunkedDecoder()
            else:
                length = lower.split(b"content-length:")[1].split(b"\r\n")[0]
                self.remaining = int(length)
            if self.paused_for:
                self.transport.pauseProducing()
                get_reactor().callLater(self.paused_for, self.transport.resumeProducing)
        if data and self.first_byte_at is None:
            self.first_byte_at = get_reactor().seconds()
        pieces = self.chunks.feed(data) if self.chunks is not None else [data]
        for piece in pieces:
            self.digest.update(piece)
            self.received += len(piece)
        if self.chunks is not None:
            done = self.chunks.done
        else:
            self.remaining -= len(data)
            done = self.remaining <= 0
        if done:
            body = self.digest.hexdigest().encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.lost.called:
            self.lost.callback(get_reactor().seconds())


@implementer(IPullProducer)
class _BodySender:
    def __init__(self, client: UploadClient, size: int, chunked: bool) -> None:
        self.client = client
        self.left = size
        self.chunked = chunked

    def resumeProducing(self) -> None:
        transport = self.client.transport
        if self.left <= 0:
            transport.unregisterProducer()
            if self.chunked:
                transport.write(b"0\r\n\r\n")
            self.client.sent_all_at = get_reactor().seconds()
            return
        data = BLOCK[: self.left]
        self.left -= len(data)
        if self.chunked:
            transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            transport.write(data)

    def stopProducing(self) -> None:
        self.left = 0


class UploadClient(Protocol):
    def __init__(
        self, path: bytes, size: int, *, chunked: bool = False, expect: bool = False
    ) -> None:
        self.path = path
        self.size = size
        self.chunked = chunked
        self.expect = expect
        self.response = b""
        self.sent_all_at: float | None = None
        self.done: Deferred[bytes] = Deferred()
        self.started = False

    def connectionMade(self) -> None:
        framing = (
            b"Transfer-Encoding: chunked\r\n"
            if self.chunked
            else b"Content-Length: %d\r\n" % self.size
        )
        expect = b"Expect: 100-continue\r\n" if self.expect else b""
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n%s%s\r\n"
            % (self.path, framing, expect)
        )
        if not self.expect:
            self.start_body()

    def start_body(self) -> None:
        self.started = True
        self.transport.registerProducer(_BodySender(self, self.size, self.chunked), False)

    def dataReceived(self, data: bytes) -> None:
        self.response += data
        if self.expect and not self.started and self.response.startswith(b"HTTP/1.1 100"):
            if b"\r\n\r\n" in self.response:
                self.response = self.response.split(b"\r\n\r\n", 1)[1]
                self.start_body()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(self.response)


async def _upload(proxy_port: int, client: UploadClient, timeout: float = 60) -> bytes:
    reactor = get_reactor()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proxy_port)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    client.done.addTimeout(timeout, reactor)
    return await client.done


def _sink() -> Any:
    SinkUpstream.instances = []
    return listen(Factory.forProtocol(SinkUpstream))


def _deleted_files() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            count += 1
    return count


@pytest.mark.parametrize("chunked", [False, True])
@pytest_twisted.ensureDeferred
async def test_large_upload_streams_byte_exact_with_flat_memory(
    proxy, chunked: bool
) -> None:
    size = 512 * MiB if not chunked else 128 * MiB
    port = _sink()
    spooled: list[object] = []
    site = proxy.instance.site
    original = site.getContentFile
    site.getContentFile = lambda length: spooled.append(length) or original(length)
    before = rss_bytes()
    peak = [0]
    deleted_before = _deleted_files()
    deleted = [deleted_before]

    def sample() -> None:
        peak[0] = max(peak[0], rss_bytes() - before)
        deleted[0] = max(deleted[0], _deleted_files())

    sampler = LoopingCall(sample)
    sampler.start(0.05)
    try:
        client = UploadClient(
            b"/proxy/%d/sink" % port.getHost().port, size, chunked=chunked
        )
        raw = await _upload(proxy.port, client)
    finally:
        sampler.stop()
        await port.stopListening()
    status, _, body = parse_response(raw)
    assert status == 200
    assert body.decode() == _expected_digest(size)
    sink = SinkUpstream.instances[0]
    assert sink.received == size
    assert b"content-length: %d" % size in sink.head.lower() or chunked
    # The app saw the first bytes long before the client was done sending.
    assert sink.first_byte_at is not None and client.sent_all_at is not None
    assert sink.first_byte_at < client.sent_all_at
    assert peak[0] < 16 * MiB, f"RSS grew by {peak[0] / MiB:.1f} MiB"
    assert spooled == [] and deleted[0] == deleted_before  # nothing spooled to disk


@pytest_twisted.ensureDeferred
async def test_slow_app_slows_the_client_instead_of_filling_memory(proxy) -> None:
    size = 256 * MiB
    port = _sink()
    SinkUpstream.paused_for = 1.5  # the app reads nothing for 1.5 s
    before = rss_bytes()
    peak = [0]
    sampler = LoopingCall(lambda: peak.__setitem__(0, max(peak[0], rss_bytes() - before)))
    sampler.start(0.05)
    try:
        client = UploadClient(b"/proxy/%d/" % port.getHost().port, size)
        raw = await _upload(proxy.port, client)
    finally:
        SinkUpstream.paused_for = 0.0
        sampler.stop()
        await port.stopListening()
    assert parse_response(raw)[0] == 200
    assert peak[0] < 16 * MiB, f"RSS grew by {peak[0] / MiB:.1f} MiB"


@pytest_twisted.ensureDeferred
async def test_client_aborting_mid_upload_closes_the_app_request(proxy) -> None:
    port = _sink()
    try:
        client = UploadClient(b"/proxy/%d/" % port.getHost().port, 1024 * MiB)
        reactor = get_reactor()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port)
        await endpoint.connect(Factory.forProtocol(lambda: client))
        while not SinkUpstream.instances or SinkUpstream.instances[0].received < MiB:
            await deferLater(reactor, 0.01, lambda: None)
        left_at = reactor.seconds()
        client.transport.abortConnection()
        sink = SinkUpstream.instances[0]
        sink.lost.addTimeout(5, reactor)
        closed_at = await sink.lost
        assert closed_at - left_at < 1.0
        assert sink.received < 1024 * MiB
    finally:
        await port.stopListening()
    assert proxy.instance.engine.in_flight == 0


class _FailingUpstream(Protocol):
    """Reads a little of the upload, then drops the connection."""

    def __init__(self) -> None:
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > 2 * MiB:
            self.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_app_failing_mid_upload_gives_the_client_an_error(proxy) -> None:
    port = listen(Factory.forProtocol(_FailingUpstream))
    try:
        client = UploadClient(b"/proxy/%d/" % port.getHost().port, 64 * MiB)
        raw = await _upload(proxy.port, client)
    finally:
        await port.stopListening()
    assert parse_response(raw)[0] == 502


@pytest_twisted.ensureDeferred
async def test_expect_100_continue_upload_goes_through(proxy) -> None:
    port = _sink()
    try:
        client = UploadClient(b"/proxy/%d/" % port.getHost().port, 4 * MiB, expect=True)
        raw = await _upload(proxy.port, client)
    finally:
        await port.stopListening()
    status, _, body = parse_response(raw)
    assert status == 200
    assert body.decode() == _expected_digest(4 * MiB)
    assert b"expect" not in SinkUpstream.instances[0].head.lower()


@pytest_twisted.ensureDeferred
async def test_refused_upload_is_read_and_dropped_not_buffered(
    make_proxy, tmp_path
) -> None:
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    port = _sink()
    spooled: list[object] = []
    site = proxy.instance.site
    original = site.getContentFile
    site.getContentFile = lambda length: spooled.append(length) or original(length)
    try:
        client = UploadClient(b"/proxy/%d/" % port.getHost().port, 32 * MiB)
        raw = await _upload(proxy.port, client)
    finally:
        await port.stopListening()
    assert parse_response(raw)[0] == 401
    assert SinkUpstream.instances == []
    assert spooled == []


def test_twisted_still_exposes_the_request_line_before_the_body() -> None:
    """Streaming reads HTTPChannel's private request line; fail loudly if it moves."""
    from twisted.internet.testing import StringTransport
    from twisted.web.http import HTTPChannel

    seen: dict[str, object] = {}

    class Probe(HTTPChannel):
        def allHeadersReceived(self) -> None:
            for name in ("_command", "_path", "_version"):
                seen[name] = getattr(self, name, None)
            super().allHeadersReceived()

    channel = Probe()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"POST /x?y HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n")
    channel.connectionLost(Failure(Exception("done")))
    assert seen == {"_command": b"POST", "_path": b"/x?y", "_version": b"HTTP/1.1"}

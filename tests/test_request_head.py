"""The one-pass request head splitter agrees with twisted.web's line parser, or declines."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from portproxy.http.request_head import MAX_FAST_HEAD, split_request_head
from portproxy.web.site import ProxySite
from tests.support import HeldResource, Recorder, get_reactor, parse_response, raw_request


class _Held(Request):
    def process(self) -> None:
        pass


def _twisted_parse(data: bytes) -> Any:
    """What twisted.web's own channel makes of C{data}: its request, or None."""
    site = Site(Resource(), reactor=MemoryReactorClock())
    site.requestFactory = _Held
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    inner = channel._channel
    if transport.value().startswith(b"HTTP/1.1 400") or not inner.requests:
        return None
    return inner.requests[0]


_BROWSER = (
    b"GET /proxy/5173/src/main.ts?t=1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"\r\n'
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36\r\n"
    b"Accept: */*\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Referer: http://127.0.0.1:8080/proxy/5173/\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: pp-session=abc; theme=dark\r\n\r\n"
)


def test_a_browser_head_is_split_into_its_line_and_fields() -> None:
    head = split_request_head(_BROWSER)
    assert head is not None
    assert (head.method, head.target, head.version) == (
        b"GET",
        b"/proxy/5173/src/main.ts?t=1",
        b"HTTP/1.1",
    )
    assert head.fields[0] == (b"Host", b"127.0.0.1:8080")
    assert head.fields[-1] == (b"Cookie", b"pp-session=abc; theme=dark")
    assert len(head.fields) == 10


@pytest.mark.parametrize(
    "data",
    [
        # a body, or a body's framing, or 100-continue: twisted.web's parser handles it
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: h\r\nexpect: 100-continue\r\n\r\n",
        # not exactly one whole head
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nx",
        # folding, bare LF, control bytes, bad names, odd request lines
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  2\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\x00b\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\rX\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: 1\r2\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\x01b\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nX A: 1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\n: 1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        # too long, too many fields
        b"GET /" + b"a" * MAX_FAST_HEAD + b" HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",
    ],
)
def test_anything_but_one_plain_bodiless_head_is_declined(data: bytes) -> None:
    assert split_request_head(data) is None


_NAMES = st.sampled_from(
    [
        b"Host",
        b"host",
        b"X-A",
        b"x-a",
        b"Cookie",
        b"ETag",
        b"te",
        b"Connection",
        b"Content-Length",
        b"Transfer-Encoding",
        b"X_Under",
        b"X A",
        b"",
        b"\xff",
        b"A:B",
    ]
)
_VALUES = st.binary(max_size=12) | st.sampled_from(
    [
        b"",
        b" 1 ",
        b"\t2\t",
        b"a\r\nb",
        b"a\nb",
        b"a\rb",
        b"a\r",
        b"a\x00",
        b"chunked",
        b"0",
        b"close",
    ]
)
_LINES = st.sampled_from(
    [
        b"GET / HTTP/1.1",
        b"HEAD /x?y HTTP/1.1",
        b"GET http://h/ HTTP/1.1",
        b"GET / HTTP/1.0",
        b"GET /a b HTTP/1.1",
        b"G@T / HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    line=_LINES,
    fields=st.lists(st.tuples(_NAMES, _VALUES), max_size=6),
    separator=st.sampled_from([b": ", b":", b" : ", b":\t"]),
)
def test_what_is_split_is_what_twisted_parses(
    line: bytes, fields: list[tuple[bytes, bytes]], separator: bytes
) -> None:
    data = line + b"\r\n" + b"".join(n + separator + v + b"\r\n" for n, v in fields)
    data += b"\r\n"
    head = split_request_head(data)
    if head is None:
        return  # declined: twisted.web's parser takes the bytes, as before
    request = _twisted_parse(data)
    assert request is not None, "split a head that twisted.web refuses"
    assert (request.method, request.uri, request.clientproto) == (
        head.method,
        head.target,
        head.version,
    )
    expected = Headers()
    for name, value in head.fields:
        expected.addRawHeader(name, value)
    assert list(request.requestHeaders.getAllRawHeaders()) == list(
        expected.getAllRawHeaders()
    )


class _Split(Protocol):
    """Sends a request in pieces, a moment apart, and collects the answer until close."""

    def __init__(self, pieces: list[bytes], done: Deferred[bytes]) -> None:
        self.pieces = pieces
        self.done = done
        self.data = bytearray()

    def connectionMade(self) -> None:
        self._next()

    def _next(self) -> None:
        if self.pieces and self.transport is not None:
            self.transport.write(self.pieces.pop(0))
            get_reactor().callLater(0.05, self._next)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(bytes(self.data))


async def _send_in_pieces(port: int, pieces: list[bytes]) -> bytes:
    done: Deferred[bytes] = Deferred()
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: _Split(list(pieces), done)))
    return await done


@pytest_twisted.ensureDeferred
async def test_an_app_gets_the_same_request_from_a_whole_head_as_from_its_lines(
    upstream: Any, proxy: Any
) -> None:
    """One read holding the head takes the one-pass split; a head in pieces does not."""
    up = upstream(rec := Recorder())
    head = _BROWSER.replace(b"/proxy/5173/", b"/proxy/%d/" % up.port).replace(
        b"Connection: keep-alive", b"Connection: close"
    )
    whole = await raw_request(proxy.port, head)
    pieces = await _send_in_pieces(proxy.port, [head[:40], head[40:]])
    assert parse_response(whole)[0] == parse_response(pieces)[0] == 200
    first, second = rec.requests
    assert first == second
    assert (b"Cookie", [b"pp-session=abc; theme=dark"]) in first["headers"]


def test_blanks_before_a_bad_byte_cost_linear_time() -> None:
    """A run of blanks ending in a byte no value may hold is not tried at every split.

    The first field pattern backtracked: 0.3 s of CPU for one 8 KiB head, before any
    sign-in (review finding). Run in a child process with a generous limit on a 60 KB
    line (quadratic: many seconds; linear: milliseconds).
    """
    code = """
from portproxy.http.request_head import _FIELD_LINE, split_request_head
for tail in (b"\\x7f", b"\\x01", b"a\\x01", b"\\x00"):
    line = b"\\nX:" + b" " * 60000 + tail + b"\\r\\n"
    assert _FIELD_LINE.findall(line) == []
    head = b"GET / HTTP/1.1\\r\\nHost: h\\r\\nX:" + b" \\t" * 4000 + tail + b"\\r\\n\\r\\n"
    assert split_request_head(head) is None
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


@pytest.mark.parametrize("refusal", ["reclaim", "head_timed_out", "414"])
def test_no_request_is_read_once_portproxy_has_closed_the_connection(refusal: str) -> None:
    """After a 408, a 414 or a reclaim, a whole head in one read reaches no app.

    Over TLS the channel keeps getting the client's bytes until the client closes too
    (review finding: a request still reached the app after the 414).
    """
    resource = HeldResource()
    site = ProxySite(resource, reactor=MemoryReactorClock(), access_log="off")
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    transport = StringTransport()
    channel.makeConnection(transport)
    if refusal == "414":
        channel.dataReceived(b"GET /" + b"a" * 17000)
        assert transport.value().startswith(b"HTTP/1.1 414")
    else:
        getattr(channel._channel, refusal)()
    transport.disconnecting = False  # as a TLS layer still delivering would look
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    channel.dataReceived(b"GET /y HTTP/1.1\r\n")
    channel.dataReceived(b"Host: h\r\n\r\n")
    assert resource.waiting == []

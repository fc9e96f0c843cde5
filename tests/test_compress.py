"""Compression of proxied responses (SPEC 14): the pure rules, then real sockets.

The upstreams are real Twisted sites on 127.0.0.1; the client is a raw socket, so what
is checked is exactly what goes over the wire.
"""

from __future__ import annotations

import gzip
import itertools
import os
import random
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from portproxy.http.compress import (
    BrotliEncoder,
    GzipEncoder,
    accepted_codings,
    choose_encoding,
    compressible_type,
    eligible,
    header_edits,
    negotiate,
    new_encoder,
)
from tests.support import Recorder, free_port, get, get_reactor, parse_response, raw_request

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * KiB

#: Some text that compresses like source code does (not one repeated byte).
JS = b"".join(
    b"export function f%d(a, b) { return a * %d + b; } // module line %d\n" % (i, i, i)
    for i in range(400)
)


def headers(**fields: str) -> Callable[[bytes], list[bytes] | None]:
    """A header lookup as the engine passes it: lower-case name to raw values."""
    table = {k.replace("_", "-").encode(): [v.encode()] for k, v in fields.items()}
    return table.get


def apply(edits: list[tuple[bytes, list[bytes] | None]], table: dict[bytes, list[bytes]]):
    for name, values in edits:
        if values is None:
            table.pop(name, None)
        else:
            table[name] = values
    return table


# -- Accept-Encoding (RFC 9110 12.5.3) ---------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ([b"gzip, deflate, br"], "br"),
        ([b"gzip, deflate, br, zstd"], "br"),
        ([b"gzip"], "gzip"),
        ([b"x-gzip"], "gzip"),
        ([b"GZIP"], "gzip"),
        ([b"br;q=0.5, gzip;q=0.8"], "gzip"),
        ([b"br;q=0.8, gzip;q=0.8"], "br"),
        ([b"br;q=0, gzip"], "gzip"),
        ([b"gzip;q=0"], None),
        ([b"gzip;q=0.000, br;q=0"], None),
        ([b"gzip ; q=0"], None),
        ([b"deflate"], None),
        ([b"identity"], None),
        ([b""], None),
        ([], None),
        ([b"*"], "br"),
        ([b"*;q=0"], None),
        ([b"*;q=0, gzip"], "gzip"),
        ([b"*, br;q=0"], "gzip"),
        ([b"identity;q=1, gzip;q=0.5"], None),
        ([b"identity;q=0.5, gzip"], "gzip"),
        ([b"identity;q=0, gzip"], "gzip"),
        ([b"gzip", b"br"], "br"),
        ([b"gzip;q=2"], None),  # not a qvalue: the element is ignored
        ([b"gzip;q=0.5000"], None),
        ([b"gzip;q=abc, br"], "br"),
        ([b"gzip, gzip;q=0"], None),  # named twice: the refusal wins
        ([b"gzip;level=1;q=0.3"], "gzip"),
    ],
)
def test_negotiation_follows_the_quality_values(
    accept: list[bytes], expected: str | None
) -> None:
    assert negotiate(accept) == expected


def test_without_brotli_a_brotli_client_gets_gzip() -> None:
    assert negotiate([b"br, gzip"], brotli=False) == "gzip"
    assert negotiate([b"br"], brotli=False) is None


def test_accepted_codings_maps_names_to_weights() -> None:
    assert accepted_codings([b"br;q=0.9, GZip;Q=0.25", b"*;q=0"]) == {
        b"br": 0.9,
        b"gzip": 0.25,
        b"*": 0.0,
    }


_token = st.sampled_from([b"gzip", b"br", b"identity", b"*", b"deflate", b"x-gzip"])
_q = st.sampled_from([b"", b";q=0", b";q=1", b";q=0.5", b";q=0.001", b";q=1.000"])


@given(st.lists(st.tuples(_token, _q), max_size=6), st.booleans())
def test_negotiation_never_picks_a_refused_coding(
    elements: list[tuple[bytes, bytes]], with_brotli: bool
) -> None:
    value = b", ".join(t + q for t, q in elements)
    chosen = negotiate([value], brotli=with_brotli)
    weights = accepted_codings([value])
    if chosen is None:
        return
    assert chosen == "gzip" or with_brotli
    name = chosen.encode()
    weight = weights.get(name, weights.get(b"*"))
    assert weight is not None and weight > 0


# -- which responses are compressed --------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html; charset=utf-8",
        "text/css",
        "text/plain",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/json",
        "application/manifest+json",
        "application/x-ndjson",
        "application/xml",
        "application/rss+xml",
        "image/svg+xml",
        "application/wasm",
        "TEXT/HTML",
    ],
)
def test_text_like_types_are_compressible(content_type: str) -> None:
    assert compressible_type(content_type.encode())


@pytest.mark.parametrize(
    "content_type",
    [
        "text/event-stream",
        "text/event-stream; charset=utf-8",
        "image/png",
        "image/jpeg",
        "video/mp4",
        "application/octet-stream",
        "application/zip",
        "application/gzip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "font/woff2",
        "",
        "text",
    ],
)
def test_other_types_are_not(content_type: str) -> None:
    assert not compressible_type(content_type.encode())


def test_a_large_javascript_response_to_get_is_compressed() -> None:
    header = headers(content_type="text/javascript", content_length="5000")
    assert choose_encoding([b"gzip, br"], b"GET", 200, header) == "br"


@pytest.mark.parametrize(
    ("method", "status", "fields", "reason"),
    [
        (b"HEAD", 200, {}, "HEAD"),
        (b"GET", 206, {"content_range": "bytes 0-4999/9000"}, "partial"),
        (b"GET", 204, {}, "no content"),
        (b"GET", 304, {}, "not modified"),
        (b"GET", 101, {}, "interim"),
        (b"GET", 200, {"content_encoding": "gzip"}, "already encoded"),
        (b"GET", 200, {"content_encoding": "identity"}, "the app chose a coding"),
        (b"GET", 200, {"cache_control": "public, No-Transform"}, "no-transform"),
        (b"GET", 200, {"content_length": "1023"}, "small"),
        (b"GET", 200, {"content_length": "0"}, "empty"),
        (b"GET", 200, {"content_type": "text/event-stream"}, "SSE"),
        (b"GET", 200, {"content_type": "image/png"}, "not text"),
        (b"GET", 200, {"content_type": ""}, "no type"),
    ],
)
def test_responses_that_are_never_compressed(
    method: bytes, status: int, fields: dict[str, str], reason: str
) -> None:
    base = {"content_type": "application/json", "content_length": "5000"}
    base.update(fields)
    if not base["content_type"]:
        del base["content_type"]
    assert choose_encoding([b"gzip, br"], method, status, headers(**base)) is None, reason


def test_a_body_of_unknown_length_is_compressed() -> None:
    header = headers(content_type="application/x-ndjson")
    assert choose_encoding([b"gzip"], b"GET", 200, header) == "gzip"


def test_a_body_of_exactly_one_kib_is_compressed() -> None:
    header = headers(content_type="text/css", content_length="1024")
    assert choose_encoding([b"gzip"], b"POST", 404, header) == "gzip"


def test_eligibility_ignores_method_and_size_so_vary_is_the_same_for_all() -> None:
    assert eligible(200, headers(content_type="text/html", content_length="10"))
    assert not eligible(200, headers(content_type="text/html", content_encoding="br"))


_any_headers = st.dictionaries(
    st.sampled_from(
        [b"content-type", b"content-length", b"content-encoding", b"cache-control"]
    ),
    st.sampled_from(
        [
            b"text/html",
            b"text/event-stream",
            b"image/png",
            b"application/json",
            b"10",
            b"100000",
            b"gzip",
            b"no-transform",
            b"max-age=3",
        ]
    ),
)


@given(
    _any_headers,
    st.sampled_from([b"GET", b"HEAD", b"POST"]),
    st.sampled_from([200, 204, 206, 304, 404, 500]),
)
def test_every_compressed_response_satisfies_every_rule(
    fields: dict[bytes, bytes], method: bytes, status: int
) -> None:
    def header(name: bytes) -> list[bytes] | None:
        value = fields.get(name)
        return None if value is None else [value]

    chosen = choose_encoding([b"gzip, br"], method, status, header)
    if chosen is None:
        return
    assert method != b"HEAD" and status not in (204, 206, 304)
    assert b"content-encoding" not in fields
    assert fields.get(b"cache-control") != b"no-transform"
    assert compressible_type(fields[b"content-type"])
    assert fields[b"content-type"] != b"text/event-stream"
    length = fields.get(b"content-length")
    assert length is None or not length.isdigit() or int(length) >= 1024


# -- the head edits -------------------------------------------------------------------


def test_edits_drop_the_length_name_the_coding_and_add_vary() -> None:
    table = {b"content-length": [b"5000"], b"content-type": [b"text/css"]}
    apply(header_edits("gzip", table.get), table)
    assert table == {
        b"content-type": [b"text/css"],
        b"content-encoding": [b"gzip"],
        b"vary": [b"Accept-Encoding"],
    }


def test_vary_is_merged_with_the_apps_own() -> None:
    table = {b"vary": [b"Origin"]}
    assert apply(header_edits("br", table.get), table)[b"vary"] == [
        b"Origin, Accept-Encoding"
    ]


@pytest.mark.parametrize("vary", [b"accept-encoding", b"Origin, Accept-Encoding", b"*"])
def test_vary_that_already_covers_it_is_left_alone(vary: bytes) -> None:
    table = {b"vary": [vary]}
    assert apply(header_edits("br", table.get), table)[b"vary"] == [vary]


@pytest.mark.parametrize(
    ("etag", "expected"),
    [
        (b'"abc"', b'W/"abc"'),
        (b'W/"abc"', b'W/"abc"'),
        (b'""', b'W/""'),
    ],
)
def test_a_strong_etag_becomes_weak(etag: bytes, expected: bytes) -> None:
    table = {b"etag": [etag]}
    assert apply(header_edits("gzip", table.get), table)[b"etag"] == [expected]


def test_an_uncompressed_eligible_response_only_gains_vary() -> None:
    table = {b"etag": [b'"a"'], b"content-length": [b"10"], b"accept-ranges": [b"bytes"]}
    assert apply(header_edits(None, table.get), table) == {
        b"etag": [b'"a"'],
        b"content-length": [b"10"],
        b"accept-ranges": [b"bytes"],
        b"vary": [b"Accept-Encoding"],
    }


def test_accept_ranges_is_dropped_from_a_compressed_response() -> None:
    table = {b"accept-ranges": [b"bytes"]}
    assert b"accept-ranges" not in apply(header_edits("gzip", table.get), table)


# -- the encoders ---------------------------------------------------------------------


def _decode(coding: str, data: bytes) -> bytes:
    return gzip.decompress(data) if coding == "gzip" else brotli.decompress(data)


@given(
    coding=st.sampled_from(["gzip", "br"]),
    data=st.binary(max_size=20_000),
    cuts=st.lists(st.integers(0, 20_000), max_size=8),
)
def test_any_split_into_pieces_decodes_to_the_input(
    coding: str, data: bytes, cuts: list[int]
) -> None:
    encoder = new_encoder(coding)  # type: ignore[arg-type]
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    out = b"".join(encoder.compress(data[a:b]) for a, b in itertools.pairwise(bounds))
    assert _decode(coding, out + encoder.finish()) == data


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_each_piece_is_decodable_as_soon_as_it_is_compressed(coding: str) -> None:
    encoder = new_encoder(coding)  # type: ignore[arg-type]
    decoder: Any = zlib.decompressobj(31) if coding == "gzip" else brotli.Decompressor()
    feed = decoder.decompress if coding == "gzip" else decoder.process
    for i in range(5):
        piece = b'{"line": %d, "text": "%s"}\n' % (i, b"x" * i)
        assert feed(encoder.compress(piece)) == piece


def test_an_empty_piece_costs_nothing() -> None:
    assert GzipEncoder().compress(b"") == b""
    assert BrotliEncoder().compress(b"") == b""


def test_an_empty_body_still_ends_as_a_valid_stream() -> None:
    assert gzip.decompress(GzipEncoder().finish()) == b""
    assert brotli.decompress(BrotliEncoder().finish()) == b""


# -- through the proxy ----------------------------------------------------------------


def _serve(
    body: bytes = JS,
    content_type: bytes | None = b"application/javascript",
    code: int = 200,
    **extra: bytes,
) -> Recorder:
    """An upstream that answers every request with C{body} and these headers."""

    def handler(request: Any) -> bytes:
        request.setResponseCode(code)
        if content_type is not None:
            request.setHeader(b"content-type", content_type)
        for name, value in extra.items():
            request.setHeader(name.replace("_", "-").encode(), value)
        return body

    return Recorder(handler)


async def _fetch(
    port: int, path: bytes, accept: bytes | None = b"gzip, deflate, br", method=b"GET"
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    extra = b"" if accept is None else b"Accept-Encoding: " + accept + b"\r\n"
    request = get(path, headers=extra)
    if method != b"GET":
        request = method + request[3:]
    return parse_response(await raw_request(port, request))


@pytest_twisted.ensureDeferred
async def test_javascript_is_sent_with_brotli_to_a_browser(upstream, proxy) -> None:
    up = upstream(_serve())
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/app.js" % up.port)
    assert status == 200
    assert head[b"content-encoding"] == [b"br"]
    assert b"content-length" not in head
    assert head[b"transfer-encoding"] == [b"chunked"]
    assert head[b"vary"] == [b"Accept-Encoding"]
    assert brotli.decompress(body) == JS
    assert len(body) < len(JS) // 4


@pytest_twisted.ensureDeferred
async def test_gzip_when_the_client_accepts_only_gzip(upstream, proxy) -> None:
    up = upstream(_serve(content_type=b"application/json; charset=utf-8"))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port, b"gzip")
    assert head[b"content-encoding"] == [b"gzip"]
    assert gzip.decompress(body) == JS


@pytest.mark.parametrize("accept", [None, b"gzip;q=0", b"identity", b"deflate"])
@pytest_twisted.ensureDeferred
async def test_a_client_that_accepts_no_coding_gets_the_body_as_is(
    upstream, proxy, accept: bytes | None
) -> None:
    up = upstream(_serve())
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port, accept)
    assert b"content-encoding" not in head
    assert head[b"content-length"] == [b"%d" % len(JS)]
    # Another client could have had it compressed: caches must know.
    assert head[b"vary"] == [b"Accept-Encoding"]
    assert body == JS


@pytest_twisted.ensureDeferred
async def test_a_body_the_app_compressed_passes_untouched(upstream, proxy) -> None:
    packed = gzip.compress(JS)
    up = upstream(_serve(packed, content_encoding=b"gzip"))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert head[b"content-encoding"] == [b"gzip"]
    assert head[b"content-length"] == [b"%d" % len(packed)]
    assert b"vary" not in head
    assert body == packed


@pytest_twisted.ensureDeferred
async def test_a_small_body_is_not_compressed(upstream, proxy) -> None:
    up = upstream(_serve(JS[:1023]))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert b"content-encoding" not in head
    assert head[b"content-length"] == [b"1023"]
    assert body == JS[:1023]


@pytest_twisted.ensureDeferred
async def test_a_partial_response_is_not_compressed(upstream, proxy) -> None:
    part = JS[100:5100]
    up = upstream(_serve(part, code=206, content_range=b"bytes 100-5099/%d" % len(JS)))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert status == 206
    assert b"content-encoding" not in head
    assert body == part


@pytest_twisted.ensureDeferred
async def test_a_head_request_is_answered_with_the_apps_length(upstream, proxy) -> None:
    up = upstream(_serve())
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port, method=b"HEAD")
    assert status == 200
    assert b"content-encoding" not in head
    assert head[b"content-length"] == [b"%d" % len(JS)]
    assert body == b""


@pytest_twisted.ensureDeferred
async def test_no_transform_is_obeyed(upstream, proxy) -> None:
    up = upstream(_serve(cache_control=b"max-age=60, no-transform"))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert b"content-encoding" not in head
    assert body == JS


@pytest.mark.parametrize("content_type", [b"image/png", b"application/octet-stream"])
@pytest_twisted.ensureDeferred
async def test_binary_types_are_not_compressed(
    upstream, proxy, content_type: bytes
) -> None:
    up = upstream(_serve(content_type=content_type))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert b"content-encoding" not in head
    assert b"vary" not in head
    assert body == JS


@pytest_twisted.ensureDeferred
async def test_the_apps_vary_is_kept_and_extended(upstream, proxy) -> None:
    up = upstream(_serve(vary=b"Origin"))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert head[b"vary"] == [b"Origin, Accept-Encoding"]


@pytest_twisted.ensureDeferred
async def test_a_strong_etag_is_weakened_on_a_compressed_response(upstream, proxy) -> None:
    up = upstream(_serve(etag=b'"v1"'))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert head[b"etag"] == [b'W/"v1"']
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port, None)
    assert head[b"etag"] == [b'"v1"']


@pytest_twisted.ensureDeferred
async def test_compress_off_passes_the_response_as_the_app_sent_it(
    upstream, make_proxy, monkeypatch
) -> None:
    from portproxy.http import engine

    def must_not_run(*args: object, **kw: object) -> None:
        raise AssertionError("a compression decision was made with --compress off")

    monkeypatch.setattr(engine, "eligible", must_not_run)
    proxy = make_proxy(compress=False)
    up = upstream(_serve(etag=b'"v1"', vary=b"Origin"))
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert b"content-encoding" not in head
    assert head[b"content-length"] == [b"%d" % len(JS)]
    assert head[b"etag"] == [b'"v1"']
    assert head[b"vary"] == [b"Origin"]
    assert body == JS
    direct = await raw_request(up.port, get(b"/", headers=b"Accept-Encoding: br\r\n"))
    via_proxy = await raw_request(
        proxy.port, get(b"/proxy/%d/" % up.port, headers=b"Accept-Encoding: br\r\n")
    )

    def without_date(raw: bytes) -> bytes:
        return b"\r\n".join(x for x in raw.split(b"\r\n") if not x.startswith(b"Date:"))

    assert without_date(via_proxy) == without_date(direct)


@pytest_twisted.ensureDeferred
async def test_without_the_brotli_package_a_browser_gets_gzip(
    upstream, make_proxy, monkeypatch
) -> None:
    from portproxy.http import compress

    monkeypatch.setattr(compress, "_brotli", False)  # as if the import had failed
    proxy = make_proxy()
    up = upstream(_serve())
    status, head, body = await _fetch(proxy.port, b"/proxy/%d/" % up.port)
    assert head[b"content-encoding"] == [b"gzip"]
    assert gzip.decompress(body) == JS


@pytest_twisted.ensureDeferred
async def test_an_http10_client_gets_a_compressed_body_ended_by_the_close(
    upstream, proxy
) -> None:
    up = upstream(_serve())
    raw = await raw_request(
        proxy.port,
        b"GET /proxy/%d/ HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n"
        % up.port,
    )
    status, head, body = parse_response(raw)
    assert head[b"content-encoding"] == [b"gzip"]
    assert b"transfer-encoding" not in head and b"content-length" not in head
    assert gzip.decompress(body) == JS


# -- streaming ----------------------------------------------------------------------


class _Paced(Resource):
    """Writes one piece each time the test calls L{next}, then finishes on L{end}."""

    isLeaf = True

    def __init__(self, content_type: bytes) -> None:
        super().__init__()
        self.content_type = content_type
        self.request: Any = None
        self.started: Deferred[None] = Deferred()

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-type", self.content_type)
        self.request = request
        self.started.callback(None)
        return NOT_DONE_YET

    def next(self, piece: bytes) -> None:
        self.request.write(piece)

    def end(self) -> None:
        self.request.finish()


class _Stream(Protocol):
    """A client reading a chunked response as it arrives, decoding each chunk."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.raw = bytearray()
        self.head: bytes | None = None
        self.decoded = bytearray()
        self.decoder: Any = None
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        if self.head is None:
            head, sep, rest = bytes(self.raw).partition(b"\r\n\r\n")
            if not sep:
                return
            self.head = head.lower()
            self.raw = bytearray(rest)
            if b"content-encoding: gzip" in self.head:
                self.decoder = zlib.decompressobj(31)
            elif b"content-encoding: br" in self.head:
                self.decoder = brotli.Decompressor()
        while True:  # whole chunks only
            line, sep, rest = bytes(self.raw).partition(b"\r\n")
            if not sep:
                return
            size = int(line, 16)
            if len(rest) < size + 2:
                return
            chunk, self.raw = rest[:size], bytearray(rest[size + 2 :])
            if self.decoder is None:
                self.decoded += chunk
            elif isinstance(self.decoder, brotli.Decompressor):
                self.decoded += self.decoder.process(chunk)
            else:
                self.decoded += self.decoder.decompress(chunk)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.closed.called:
            self.closed.callback(None)

    async def until(self, text: bytes, timeout: float = 10) -> None:
        waited = 0.0
        while text not in self.decoded:
            assert waited < timeout, f"{text!r} never arrived: {bytes(self.decoded)!r}"
            await deferLater(get_reactor(), 0.01, lambda: None)
            waited += 0.01


async def _open_stream(port: int, path: bytes, accept: bytes) -> _Stream:
    request = get(path, headers=b"Accept-Encoding: " + accept + b"\r\n")
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port)
    return await endpoint.connect(Factory.forProtocol(lambda: _Stream(request)))


@pytest_twisted.ensureDeferred
async def test_server_sent_events_arrive_one_by_one_uncompressed(upstream, proxy) -> None:
    app = _Paced(b"text/event-stream")
    up = upstream(app)
    client = await _open_stream(proxy.port, b"/proxy/%d/events" % up.port, b"gzip, br")
    await app.started
    for i in range(3):
        event = b"id: %d\ndata: %s\n\n" % (i, b"tick " * 300)
        app.next(event)
        # The client has event i before the app sends event i + 1.
        await client.until(event)
    app.end()
    await client.closed
    assert client.head is not None
    assert b"content-encoding" not in client.head
    assert b"accept-encoding" not in client.head


@pytest.mark.parametrize("accept", [b"gzip", b"br"])
@pytest_twisted.ensureDeferred
async def test_streamed_text_is_compressed_and_flushed_piece_by_piece(
    upstream, proxy, accept: bytes
) -> None:
    app = _Paced(b"application/x-ndjson")
    up = upstream(app)
    client = await _open_stream(proxy.port, b"/proxy/%d/lines" % up.port, accept)
    await app.started
    sent = bytearray()
    for i in range(4):
        line = b'{"n": %d, "pad": "%s"}\n' % (i, b"ab" * (200 * i))
        sent += line
        app.next(line)
        # Decodable on arrival: the proxy did not wait for more before flushing.
        await client.until(line)
    app.end()
    await client.closed
    assert client.head is not None
    assert b"content-encoding: " + accept in client.head
    assert client.decoded == sent


@pytest_twisted.ensureDeferred
async def test_websocket_upgrade_is_not_touched(upstream, proxy) -> None:
    """The handshake reaches the app without portproxy's Accept-Encoding rules, and the
    101 comes back without a Content-Encoding or Vary of ours."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    up = upstream(site=factory)
    request = (
        b"GET /proxy/%d/ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Accept-Encoding: gzip, br\r\n\r\n"
    ) % (up.port, proxy.port)
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", proxy.port)
    client = await endpoint.connect(Factory.forProtocol(lambda: _Stream(request)))
    waited = 0.0
    while client.head is None and waited < 10:
        await deferLater(get_reactor(), 0.01, lambda: None)
        waited += 0.01
    client.transport.loseConnection()
    await client.closed
    assert client.head is not None
    assert client.head.startswith(b"http/1.1 101")
    assert b"content-encoding" not in client.head
    assert b"vary" not in client.head


# -- HTTP/2 ---------------------------------------------------------------------------


def _h2_get(port: int, cafile: str, path: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """One GET over h2 (TLS, ALPN) as a browser sends it; the head and the body."""
    import ssl

    import h2.config
    import h2.connection
    import h2.events

    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (b":method", b"GET"),
                (b":path", path),
                (b":scheme", b"https"),
                (b":authority", b"localhost:%d" % port),
                (b"accept-encoding", b"gzip, deflate, br, zstd"),
            ],
            end_stream=True,
        )
        tls.sendall(conn.data_to_send())
        head: list[tuple[bytes, bytes]] = []
        body = bytearray()
        while True:
            data = tls.recv(65536)
            assert data, "closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    head = [(bytes(k), bytes(v)) for k, v in event.headers]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    return head, bytes(body)
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError("stream reset")
            tls.sendall(conn.data_to_send())


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from tests.test_tls_live import tls_services

    with tls_services(tmp_path) as start:
        yield start


@pytest_twisted.ensureDeferred
async def test_an_http2_stream_is_compressed_and_ends_cleanly(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    from tests.test_tls import write_pair

    cert, key, ca = write_pair(tmp_path)
    up = upstream(_serve())
    proxy = tls_proxy(cert=cert, cert_key=key)
    head, body = await deferToThread(_h2_get, proxy.port, ca, b"/proxy/%d/app.js" % up.port)
    fields = dict(head)
    assert fields[b":status"] == b"200"
    assert fields[b"content-encoding"] == b"br"
    assert b"content-length" not in fields
    assert brotli.decompress(body) == JS


# -- memory: a 256 MiB body through portproxy in its own process ---------------------


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def proxy_process() -> Iterator[Callable[[], tuple[int, int]]]:
    """Start C{twist portproxy} (compression on, the default); return (port, pid)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[int, int]:
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "portproxy",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--auth",
                "none",
                "--access-log",
                "off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=str(ROOT),
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, "portproxy exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port, proc.pid
            except OSError:
                time.sleep(0.1)
        raise AssertionError("portproxy did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@implementer(IPushProducer)
class _TextHose:
    """Writes C{size} bytes of numbered text lines, as fast as the proxy takes them."""

    def __init__(self, request: Any, size: int) -> None:
        self.request = request
        self.left = size
        self.sent = 0
        self.paused = False
        self.block = 0
        self.crc = 0

    def piece(self) -> bytes:
        # A quarter of each piece is fresh hex, so the encoder has real work and
        # its output is a sizeable stream, not a few bytes per megabyte.
        self.block += 1
        noise = b"/* %s */\n" % random.Random(self.block).randbytes(8 * KiB).hex().encode()
        return (noise + JS + JS)[: min(self.left, 64 * KiB)]

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.pump()

    def pump(self) -> None:
        while not self.paused and self.left > 0:
            data = self.piece()
            self.left -= len(data)
            self.sent += len(data)
            self.crc = zlib.crc32(data, self.crc)
            self.request.write(data)
        if self.left == 0:
            # The last write may have paused us: finishing only queues the end.
            self.left = -1
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused and self.left > 0:
            self.paused = False
            get_reactor().callLater(0, self.pump)

    def stopProducing(self) -> None:
        self.left = -1
        self.paused = True


class _Big(Resource):
    isLeaf = True

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.hoses: list[_TextHose] = []

    def render_GET(self, request: Any) -> int:
        request.setHeader(b"content-type", b"text/javascript")
        hose = _TextHose(request, self.size)
        if request.path != b"/":
            # Only the test's own requests: a port probe elsewhere on the machine (the
            # home page's, of another test run) may GET / here too.
            self.hoses.append(hose)
        hose.start()
        return NOT_DONE_YET


def _read_compressed(port: int, path: bytes, accept: bytes) -> tuple[bytes, int, int, int]:
    """GET C{path} with a blocking socket; decode as it comes.

    Returns the head, the wire size of the body, the decoded size and its CRC-32.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(get(path, headers=b"Accept-Encoding: " + accept + b"\r\n"))
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        assert data, "closed before the head"
        buffer += data
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    decoder = brotli.Decompressor() if accept == b"br" else zlib.decompressobj(31)
    wire = size = crc = 0
    pending = bytearray(buffer)
    done = False
    while not done:
        while True:
            line_end = pending.find(b"\r\n")
            if line_end < 0:
                break
            chunk_size = int(bytes(pending[:line_end]).split(b";")[0], 16)
            if chunk_size == 0:
                done = True
                break
            if len(pending) < line_end + 2 + chunk_size + 2:
                break
            chunk = bytes(pending[line_end + 2 : line_end + 2 + chunk_size])
            del pending[: line_end + 2 + chunk_size + 2]
            wire += len(chunk)
            out = (
                decoder.process(chunk)
                if isinstance(decoder, brotli.Decompressor)
                else decoder.decompress(chunk)
            )
            size += len(out)
            crc = zlib.crc32(out, crc)
        if done:
            break
        data = sock.recv(1 << 20)
        assert data, "closed before the last chunk"
        pending += data
    sock.close()
    return head, wire, size, crc


@pytest.mark.slow
@pytest.mark.parametrize("accept", [b"br", b"gzip"])
@pytest_twisted.ensureDeferred
async def test_a_256_mib_body_is_compressed_with_flat_memory(
    upstream, proxy_process, accept: bytes
) -> None:
    size = 256 * MiB
    app = _Big(size)
    up = upstream(app)
    port, pid = await deferToThread(proxy_process)
    path = b"/proxy/%d/big.js" % up.port
    # Warm up: the first compressed response loads the codecs and sizes the buffers.
    app.size = 4 * MiB
    await deferToThread(_read_compressed, port, path, accept)
    app.size = size
    before = _rss(pid)
    peak = [before]
    reading = deferToThread(_read_compressed, port, path, accept)
    while not reading.called:
        peak[0] = max(peak[0], _rss(pid))
        await deferLater(get_reactor(), 0.05, lambda: None)
    head, wire, decoded, crc = await reading
    assert b"content-encoding: " + accept in head.lower()
    assert decoded == size
    assert crc == app.hoses[-1].crc
    assert wire < size // 4, "the body was not compressed"
    grown = peak[0] - before
    assert grown < 64 * MiB, f"RSS grew by {grown // MiB} MiB"


def _read_head_then_stall(port: int, path: bytes, stop: list[bool]) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)
    sock.connect(("127.0.0.1", port))
    sock.sendall(get(path, headers=b"Accept-Encoding: br\r\n"))
    assert sock.recv(4 * KiB)
    while not stop[0]:
        time.sleep(0.05)  # never read again
    sock.close()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_pauses_the_app_through_the_encoder(
    upstream, proxy_process
) -> None:
    size = 256 * MiB
    app = _Big(size)
    up = upstream(app)
    port, pid = await deferToThread(proxy_process)
    before = _rss(pid)
    stop = [False]
    reader = deferToThread(_read_head_then_stall, port, b"/proxy/%d/x.js" % up.port, stop)
    # Wait until the app cannot send any more (or, wrongly, has sent everything).
    last, still = -1, 0
    for _ in range(600):
        await deferLater(get_reactor(), 0.05, lambda: None)
        now = sum(hose.sent for hose in app.hoses)
        still = still + 1 if now == last else 0
        last = now
        if now >= size or still >= 30:
            break
    grown = _rss(pid) - before
    stop[0] = True
    await reader
    assert 0 < last < size, "the app was never paused by the stalled client"
    assert grown < 64 * MiB, f"RSS grew by {grown // MiB} MiB"

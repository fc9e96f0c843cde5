"""HTTP/1.1 framing for the upstream side: parsing, chunked decoding, request heads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.http.headers import response_header_pairs
from portproxy.http.wire import (
    BodyKind,
    ChunkedDecoder,
    ProtocolError,
    ResponseHead,
    body_framing,
    build_request_head,
    parse_response_head,
)


def test_parse_status_line_and_headers_in_order() -> None:
    head = parse_response_head(
        b"HTTP/1.1 404 Not Found\r\nSet-Cookie: a=1\r\nX-A:  v  \r\nSet-Cookie: b=2"
    )
    assert (head.version, head.code, head.reason) == (b"HTTP/1.1", 404, b"Not Found")
    assert head.headers == [
        (b"Set-Cookie", b"a=1"),
        (b"X-A", b"v"),
        (b"Set-Cookie", b"b=2"),
    ]


def test_reason_phrase_may_be_empty_or_have_spaces() -> None:
    assert parse_response_head(b"HTTP/1.1 200").reason == b""
    assert parse_response_head(b"HTTP/1.1 200 All Good Here").reason == b"All Good Here"


def test_obsolete_line_folding_becomes_a_space() -> None:
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b")
    assert head.headers == [(b"X-Long", b"a b")]


@pytest.mark.parametrize(
    "block",
    [
        b"HTTP/2 200 OK",
        b"ICY 200 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1 000 X",
        b"HTTP/1.1 099 X",
        b"HTTP/1.1 600 X",
        b"HTTP/1.1 999 X",
        b"HTTP/1.1 \xd9\xa1\xd9\xa0\xd9\xa0 X",
        b"HTTP/1.1 200 OK\r\nNo colon here",
        b"HTTP/1.1 200 OK\r\nBad Name: x",
        b"HTTP/1.1 200 OK\r\n: empty name",
        b"HTTP/1.1 200 OK\r\n continuation first",
        b"HTTP/1.1 200 OK\r\nX: a\x00b",
    ],
)
def test_malformed_heads_are_refused(block: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response_head(block)


def _head(
    code: int, *headers: tuple[bytes, bytes], version: bytes = b"HTTP/1.1"
) -> ResponseHead:
    return ResponseHead(version, code, b"", list(headers))


@pytest.mark.parametrize(
    ("method", "head", "expected"),
    [
        (b"GET", _head(200, (b"Content-Length", b"5")), (BodyKind.LENGTH, 5, True)),
        (b"GET", _head(200, (b"Content-Length", b"5, 5")), (BodyKind.LENGTH, 5, True)),
        (b"HEAD", _head(200, (b"Content-Length", b"5")), (BodyKind.NONE, 0, False)),
        (b"GET", _head(204), (BodyKind.NONE, 0, True)),
        (b"GET", _head(304), (BodyKind.NONE, 0, True)),
        (b"GET", _head(304, (b"Content-Length", b"9")), (BodyKind.NONE, 0, False)),
        (
            b"GET",
            _head(200, (b"Transfer-Encoding", b"chunked")),
            (BodyKind.CHUNKED, 0, True),
        ),
        (
            b"GET",
            _head(200, (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")),
            (BodyKind.CHUNKED, 0, False),
        ),
        (b"GET", _head(200, (b"Transfer-Encoding", b"gzip")), (BodyKind.CLOSE, 0, False)),
        (b"GET", _head(200), (BodyKind.CLOSE, 0, False)),
        (
            b"GET",
            _head(200, (b"Connection", b"close"), (b"Content-Length", b"1")),
            (BodyKind.LENGTH, 1, False),
        ),
        (
            b"GET",
            _head(200, (b"Content-Length", b"1"), version=b"HTTP/1.0"),
            (BodyKind.LENGTH, 1, False),
        ),
        (
            b"GET",
            _head(
                200,
                (b"Content-Length", b"1"),
                (b"Connection", b"keep-alive"),
                version=b"HTTP/1.0",
            ),
            (BodyKind.LENGTH, 1, True),
        ),
    ],
)
def test_body_framing(
    method: bytes, head: ResponseHead, expected: tuple[BodyKind, int, bool]
) -> None:
    assert body_framing(method, head) == expected


@pytest.mark.parametrize("value", [b"5, 6", b"-1", b"abc", b"1e3", b"9" * 30])
def test_unusable_content_length_is_refused(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_framing(b"GET", _head(200, (b"Content-Length", value)))


def test_chunked_decoder_handles_extensions_and_trailers() -> None:
    decoder = ChunkedDecoder()
    out = decoder.feed(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert b"".join(out) == b"hello world"
    assert decoder.done and decoder.extra == b""


@pytest.mark.parametrize(
    "data",
    [b"zz\r\n", b"5\r\nhelloXX\r\n", b"\r\n", b"1" * 20 + b"\r\n", b"5" + b" " * 5000],
)
def test_chunked_decoder_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(data)


@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20),
)
def test_chunked_decoding_is_independent_of_packet_boundaries(
    chunks: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\nNEXT"
    decoder = ChunkedDecoder()
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += decoder.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert b"".join(out) == b"".join(chunks)
    assert decoder.done
    assert decoder.extra == b"NEXT"


def test_response_fields_are_grouped_keeping_order_and_duplicates() -> None:
    pairs = [(b"A", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert response_header_pairs(pairs) == [(b"A", [b"1", b"3"]), (b"b", [b"2"])]


def test_request_head_frames_the_body_and_adds_a_missing_host() -> None:
    head = build_request_head(
        b"POST",
        b"/x?y",
        [(b"X-A", [b"1", b"2"])],
        body_length=3,
        default_host=b"127.0.0.1:80",
    )
    assert head == (
        b"POST /x?y HTTP/1.1\r\nX-A: 1\r\nX-A: 2\r\nHost: 127.0.0.1:80\r\n"
        b"Content-Length: 3\r\n\r\n"
    )
    head = build_request_head(
        b"GET", b"/", [(b"Host", [b"h"])], body_length=None, default_host=b"x"
    )
    assert head == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize("value", [b"a\r\nInjected: 1", b"a\nb", b"a\x00"])
def test_request_head_refuses_values_that_split_the_message(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        build_request_head(
            b"GET", b"/", [(b"X", [value])], body_length=None, default_host=b"h"
        )


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"/a b"),
        (b"GET", b"/a\tb"),
        (b"GET", b"/a\x7fb"),
        (b"GET", b"/a\x80b"),
        (b"GET", b"/a\xb0b"),
        (b"GET", b"/a\x00"),
        (b"GET", b"/a\r\nX: 1"),
        (b"GET", b""),
        (b"G ET", b"/"),
        (b"GET\r\n", b"/"),
        (b"", b"/"),
    ],
)
def test_request_head_refuses_a_bad_method_or_target(method: bytes, target: bytes) -> None:
    with pytest.raises(ProtocolError):
        build_request_head(method, target, [], body_length=None, default_host=b"h")


@given(st.binary(min_size=1, max_size=20))
def test_request_target_passes_only_when_it_is_visible_ascii(target: bytes) -> None:
    visible = all(0x21 <= c <= 0x7E for c in target)
    try:
        build_request_head(b"GET", target, [], body_length=None, default_host=b"h")
    except ProtocolError:
        assert not visible
    else:
        assert visible


@pytest.mark.parametrize(
    "block",
    [
        b"HTTP/1.1 200 OK\nSet-Cookie: a=1",
        b"HTTP/1.1 200 O\rK",
        b"HTTP/1.1 200 O\x01K",
        b"HTTP/1.1 200 O\x7fK",
        b"HTTP/1.1 200 OK\r\nX: a\x1bb",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\x0bc",
    ],
)
def test_control_bytes_in_the_reason_or_a_value_are_refused(block: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response_head(block)


def test_reason_may_hold_tabs_and_obs_text() -> None:
    assert parse_response_head(b"HTTP/1.1 200 A\tcaf\xc3\xa9").reason == b"A\tcaf\xc3\xa9"


def test_http10_response_with_transfer_encoding_is_never_reused() -> None:
    head = _head(
        200,
        (b"Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"keep-alive"),
        version=b"HTTP/1.0",
    )
    assert body_framing(b"GET", head) == (BodyKind.CHUNKED, 0, False)


@pytest.mark.parametrize("value", [b"chunked, chunked", b"chunked, gzip", b"chun ked"])
def test_unusable_transfer_encoding_is_refused(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_framing(b"GET", _head(200, (b"Transfer-Encoding", value)))


def test_content_length_is_dropped_when_transfer_encoding_framed_the_body() -> None:
    pairs = [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked"), (b"X", b"1")]
    assert response_header_pairs(pairs) == [(b"X", [b"1"])]
    assert response_header_pairs([(b"Content-Length", b"5")]) == [
        (b"Content-Length", [b"5"])
    ]


@pytest.mark.parametrize(
    "pairs",
    [
        [(b"Content-Length", b"5"), (b"content-length", b"5")],
        [(b"Content-Length", b"5, 5")],
        [(b"Content-Length", b"5,5"), (b"Content-Length", b"5")],
    ],
)
def test_repeated_content_length_is_passed_on_once(
    pairs: list[tuple[bytes, bytes]],
) -> None:
    """RFC 9110 8.6: body_framing has checked they agree; send the one value once."""
    assert response_header_pairs([*pairs, (b"X", b"1")]) == [
        (b"Content-Length", [b"5"]),
        (b"X", [b"1"]),
    ]


@pytest.mark.parametrize(
    ("method", "head", "reuse"),
    [
        (b"GET", _head(204, (b"Content-Length", b"0")), True),
        (b"GET", _head(204, (b"Content-Length", b"5")), False),
        (b"HEAD", _head(204, (b"Content-Length", b"5")), False),
        (b"GET", _head(204, (b"Transfer-Encoding", b"chunked")), False),
        (b"GET", _head(304, (b"Transfer-Encoding", b"chunked")), False),
        (b"GET", _head(304, (b"Content-Length", b"5")), False),
        (b"GET", _head(304, (b"Content-Length", b"0")), True),
        (b"HEAD", _head(200, (b"Transfer-Encoding", b"chunked")), False),
        (b"HEAD", _head(200, (b"Content-Length", b"5")), False),
        (b"HEAD", _head(200), False),
    ],
)
def test_bodiless_response_whose_framing_promises_a_body_is_not_reused(
    method: bytes, head: ResponseHead, reuse: bool
) -> None:
    """A 204 may have no length but 0 and no Transfer-Encoding (RFC 9110 8.6, RFC 9112
    6.1); a 304 with Transfer-Encoding is allowed but suspect. Either way the app may
    send a body later, which must not be read as the next client's response.
    """
    assert body_framing(method, head) == (BodyKind.NONE, 0, reuse)


@pytest.mark.parametrize("code", [100, 199, 200, 599])
def test_status_codes_from_100_to_599_are_accepted(code: int) -> None:
    """RFC 9110 15: three digits, 100-599; anything else is not an HTTP status."""
    assert parse_response_head(b"HTTP/1.1 %d X" % code).code == code

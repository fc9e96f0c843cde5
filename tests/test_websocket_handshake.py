"""The opening handshakes' bytes (pure): detection, what each leg is fed, error answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.websocket.handshake import (
    error_response,
    is_upgrade,
    refusal_status,
    request_target,
    server_leg_head,
    upstream_head,
)

_AUTOBAHN_HEAD = (
    b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:5173\r\nUpgrade: WebSocket\r\n"
    b"Connection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n"
    b"Sec-WebSocket-Key: AIlgzufgKuv80kXZEVo6pA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Upgrade", [b"websocket"]), (b"Connection", [b"Upgrade"])],
        [(b"Upgrade", [b"WebSocket"]), (b"Connection", [b"keep-alive, Upgrade"])],
        [(b"Upgrade", [b"h2c, websocket"]), (b"Connection", [b"keep-alive", b"upgrade"])],
        [(b"connection", [b"UPGRADE"]), (b"upgrade", [b" websocket "])],
    ],
)
def test_websocket_upgrades_are_recognised(
    headers: list[tuple[bytes, list[bytes]]],
) -> None:
    assert is_upgrade(b"GET", headers)


@pytest.mark.parametrize(
    "method, headers",
    [
        (b"POST", [(b"Upgrade", [b"websocket"]), (b"Connection", [b"Upgrade"])]),
        (b"get", [(b"Upgrade", [b"websocket"]), (b"Connection", [b"Upgrade"])]),
        (b"GET", [(b"Upgrade", [b"h2c"]), (b"Connection", [b"Upgrade"])]),
        (b"GET", [(b"Upgrade", [b"websocket"]), (b"Connection", [b"keep-alive"])]),
        (b"GET", [(b"Upgrade", [b"websocket"])]),
        (b"GET", [(b"Connection", [b"Upgrade"])]),
        (b"GET", [(b"Upgrade", [b"websockets"]), (b"Connection", [b"Upgrade"])]),
        (b"GET", [(b"Upgrade", [b"websocket"]), (b"Connection", [b"upgraded"])]),
    ],
)
def test_other_requests_are_not_upgrades(
    method: bytes, headers: list[tuple[bytes, list[bytes]]]
) -> None:
    assert not is_upgrade(method, headers)


def test_the_server_leg_is_fed_only_handshake_fields_one_line_per_value() -> None:
    head = server_leg_head(
        b"GET",
        b"/proxy/1/x?y",
        [
            (b"Host", [b"a.test"]),
            (b"Cookie", [b"secret=1"]),
            (b"Sec-Websocket-Key", [b"k1", b"k2"]),
            (b"Origin", [b"http://a.test"]),
            (b"Upgrade", [b"websocket"]),
            (b"Connection", [b"Upgrade"]),
        ],
    )
    assert head == (
        b"GET /proxy/1/x?y HTTP/1.1\r\nHost: a.test\r\nSec-Websocket-Key: k1\r\n"
        b"Sec-Websocket-Key: k2\r\nOrigin: http://a.test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n"
    )


@pytest.mark.parametrize(
    "path, target",
    [
        (b"", "/"),
        (b"/", "/"),
        (b"/a%2Fb//c?x=%20&y=/z", "/a%2Fb//c?x=%20&y=/z"),
        (b"/caf\xc3\xa9", "/caf%C3%A9"),
        (b"/a b", "/a%20b"),
    ],
)
def test_the_request_target_is_kept_byte_for_byte_when_ascii(
    path: bytes, target: str
) -> None:
    assert request_target(path) == target


def test_the_upstream_gets_the_clients_host_origin_and_headers() -> None:
    head = upstream_head(
        _AUTOBAHN_HEAD,
        host=b"Example.COM",
        origin=b"https://Example.COM",
        headers=[
            (b"Cookie", [b"a=1; b=2"]),
            (b"Cache-Control", [b"no-cache"]),
            (b"Pragma", [b"no-cache"]),
            (b"X-Multi", [b"1", b"2"]),
        ],
    )
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /x?y=1 HTTP/1.1"
    assert [line for line in lines if line.lower().startswith(b"host:")] == [
        b"Host: Example.COM"
    ]
    assert b"Origin: https://Example.COM" in lines
    assert lines.count(b"Cache-Control: no-cache") == 1
    assert lines.count(b"Pragma: no-cache") == 1
    assert b"X-Multi: 1" in lines and b"X-Multi: 2" in lines
    assert b"Cookie: a=1; b=2" in lines
    assert head.endswith(b"\r\n\r\n") and head.count(b"\r\n\r\n") == 1


def test_no_client_host_and_no_origin_leave_none() -> None:
    head = upstream_head(_AUTOBAHN_HEAD, host=None, origin=None, headers=[])
    assert b"Host:" not in head and b"Origin:" not in head


@given(
    before=st.binary(max_size=10),
    separator=st.sampled_from([b"\r", b"\n", b"\x00"]),
    after=st.binary(max_size=10),
)
def test_values_that_would_split_the_head_are_dropped(
    before: bytes, separator: bytes, after: bytes
) -> None:
    value = before + separator + after
    head = upstream_head(
        _AUTOBAHN_HEAD, host=value, origin=value, headers=[(b"X-Evil", [value])]
    )
    assert head == upstream_head(_AUTOBAHN_HEAD, host=None, origin=None, headers=[])


@pytest.mark.parametrize(
    "head", [b"GET / HTTP/1.1\r\nUpgrade: x\r\n\r\n", b"GET / HTTP/1.1\r\n"]
)
def test_an_unexpected_autobahn_head_is_an_error(head: bytes) -> None:
    with pytest.raises(ValueError):
        upstream_head(head, host=b"h", origin=None, headers=[])


@pytest.mark.parametrize(
    "line, expected",
    [
        ("HTTP/1.1 403 Forbidden", (403, "Forbidden")),
        ("HTTP/1.1 401 Unauthorized", (401, "Unauthorized")),
        ("HTTP/1.0 404 Not Found", (404, "Not Found")),
        ("HTTP/1.1 302 Found", (302, "Found")),
        ("HTTP/1.1 503", (503, None)),
        ("HTTP/1.1 500 Bad\x01Thing", (500, None)),
        ("HTTP/1.1 101 Switching Protocols", (502, None)),
        ("HTTP/1.1 200 OK", (502, None)),
        ("HTTP/1.1 600 Weird", (502, None)),
        ("garbage", (502, None)),
        ("", (502, None)),
        (None, (502, None)),
    ],
)
def test_the_upstreams_refusal_status_is_passed_on(
    line: str | None, expected: tuple[int, str | None]
) -> None:
    assert refusal_status(line) == expected


def test_error_responses_have_a_json_body_by_default() -> None:
    raw = error_response(502, 'Nothing is listening on port 1 <"x">')
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 502 Bad Gateway"
    assert b"Content-Length: %d" % len(body) in lines
    assert b"Content-Type: application/json" in lines
    assert b"Connection: close" in lines
    assert json.loads(body) == {"error": 'Nothing is listening on port 1 <"x">'}


def test_error_responses_for_browsers_are_escaped_html_with_the_upstream_phrase() -> None:
    raw = error_response(
        403,
        "<script>alert(1)</script>",
        phrase="Go Away",
        accept=b"text/html",
        extra=[("Sec-WebSocket-Version", "13")],
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Go Away\r\n")
    assert b"Sec-WebSocket-Version: 13" in head.split(b"\r\n")
    assert b"<script>" not in body and b"&lt;script&gt;" in body

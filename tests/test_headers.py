"""Request and response header policy: hop-by-hop, cookies, X-Forwarded-*."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from portproxy.http.cookies import cookie_values
from portproxy.http.headers import (
    HOP_BY_HOP,
    ClientView,
    RawHeaders,
    client_view,
    forward_request_headers,
    forward_websocket_headers,
    is_hop_by_hop,
    is_trusted,
    response_header_pairs,
)

SESSION = b"portproxy-session"
NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
UNTRUSTED = ClientView(peer="203.0.113.9", trusted=False, scheme="https", host="h.test")
TRUSTED = ClientView(peer="10.0.0.2", trusted=True, scheme="https", host="pub.test")

Raw = list[tuple[bytes, list[bytes]]]


def forward(
    headers: RawHeaders,
    view: ClientView = UNTRUSTED,
    session_cookie: bytes | None = SESSION,
    prefix: bytes | None = None,
) -> Raw:
    return forward_request_headers(
        headers, view=view, session_cookie=session_cookie, prefix=prefix
    )


def values(headers: Raw, name: bytes) -> list[bytes]:
    found = [v for n, vs in headers if n.lower() == name.lower() for v in vs]
    return found


def names(headers: Raw) -> list[bytes]:
    return [n.lower() for n, _ in headers]


# --- is_trusted -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("fd00::5", True),
        ("[fd00::5]", True),
        ("11.0.0.1", False),
        ("::ffff:11.0.0.1", False),
        ("::1", False),
        ("127.0.0.1", False),
        ("", False),
        ("/run/pp.sock", False),
        ("10.0.0.1.evil", False),
    ],
)
def test_is_trusted(address: str, expected: bool) -> None:
    assert is_trusted(address, NETS) is expected


def test_nobody_is_trusted_without_networks() -> None:
    assert not is_trusted("127.0.0.1", ())


def test_scoped_ipv6_peer_is_matched() -> None:
    assert is_trusted("fe80::1%eth0", (ipaddress.ip_network("fe80::/10"),))


# --- client_view ----------------------------------------------------------------------


def view_of(headers: Raw, peer: str = "10.0.0.2", secure: bool = False) -> ClientView:
    return client_view(headers, peer=peer, secure=secure, trusted_networks=NETS)


SPOOF: Raw = [
    (b"Host", [b"real.test:8443"]),
    (b"X-Forwarded-Host", [b"spoof.test"]),
    (b"X-Forwarded-Proto", [b"https"]),
    (b"Forwarded", [b"host=spoof2.test;proto=https"]),
]


def test_untrusted_peer_forwarding_headers_are_ignored() -> None:
    view = view_of(SPOOF, peer="203.0.113.9")
    assert view == ClientView("203.0.113.9", False, "http", "real.test:8443")


def test_untrusted_peer_scheme_comes_from_connection() -> None:
    assert view_of(SPOOF, peer="203.0.113.9", secure=True).scheme == "https"


def test_trusted_peer_forwarded_wins() -> None:
    assert view_of(SPOOF) == ClientView("10.0.0.2", True, "https", "spoof2.test")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Host", [b"h"])],
        [(b"Host", [b"other"]), (b"X-Forwarded-Host", [b"h"])],
        [(b"Host", [b"other"]), (b"X-Forwarded-Host", [b"h, h"])],
        [(b"Host", [b"other"]), (b"Forwarded", [b"for=127.0.0.1, host=h, proto=http"])],
        [(b"Host", [b"other"]), (b"Forwarded", [b"for=127.0.0.1;proto=http;host=h"])],
        [(b"Host", [b"other"]), (b"Forwarded", [b"proto=http;host=h, for=127.0.0.1"])],
    ],
)
def test_trusted_host_sources_as_code_server(headers: Raw) -> None:
    view = view_of(headers)
    assert (view.host, view.scheme) == ("h", "http")


def test_trusted_first_x_forwarded_entry_is_the_browsers() -> None:
    view = view_of(
        [
            (b"Host", [b"inner"]),
            (b"X-Forwarded-Host", [b"outer.test:8443, middle.test", b"third.test"]),
            (b"X-Forwarded-Proto", [b"https, http"]),
        ]
    )
    assert (view.host, view.scheme) == ("outer.test:8443", "https")


def test_trusted_forwarded_quoted_host_with_port() -> None:
    view = view_of([(b"Forwarded", [b'for="[2001:db8::1]:4711";host="pub.test:8443"'])])
    assert view.host == "pub.test:8443"


def test_trusted_forwarded_separator_inside_quotes_does_not_split() -> None:
    view = view_of(
        [(b"Host", [b"real.test"]), (b"Forwarded", [b'for="x;host=evil.test;y"'])]
    )
    assert view.host == "real.test"


@pytest.mark.parametrize(
    "bad",
    [b"evil.test/x", b"a@evil.test", b"a b", b"", b"evil.test:port", b"\xff", b"[::1"],
)
def test_trusted_garbage_host_falls_back(bad: bytes) -> None:
    for header in (b"X-Forwarded-Host", b"Forwarded"):
        value = b"host=" + bad if header == b"Forwarded" else bad
        view = view_of([(b"Host", [b"real.test"]), (header, [value])])
        assert view.host == "real.test"


@pytest.mark.parametrize("bad", [b"javascript", b"ftp", b"", b"https x"])
def test_trusted_garbage_proto_falls_back(bad: bytes) -> None:
    view = view_of([(b"X-Forwarded-Proto", [bad]), (b"Forwarded", [b"proto=" + bad])])
    assert view.scheme == "http"
    assert view_of([(b"X-Forwarded-Proto", [bad])], secure=True).scheme == "https"


def test_forwarded_proto_beats_x_forwarded_proto() -> None:
    view = view_of([(b"X-Forwarded-Proto", [b"http"]), (b"Forwarded", [b"proto=HTTPS"])])
    assert view.scheme == "https"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"example.com", "example.com"),
        (b"8080.Dev.Example.com:8443", "8080.Dev.Example.com:8443"),
        (b"[::1]:8080", "[::1]:8080"),
        (b"127.0.0.1", "127.0.0.1"),
        (b"evil.com/x", None),
        (b"user@evil.com", None),
        (b"a b", None),
        (b"", None),
    ],
)
def test_host_header_is_validated(host: bytes, expected: str | None) -> None:
    assert view_of([(b"Host", [host])], peer="203.0.113.9").host == expected


def test_first_host_header_counts() -> None:
    assert view_of([(b"Host", [b"a.test", b"b.test"])]).host == "a.test"


def test_no_host_at_all() -> None:
    assert view_of([], peer="203.0.113.9").host is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [b"Host", b"X-Forwarded-Host", b"X-Forwarded-Proto", b"Forwarded"]
            ),
            st.lists(st.binary(max_size=30), min_size=1, max_size=3),
        ),
        max_size=5,
    )
)
def test_client_view_never_raises_and_host_is_safe(headers: Raw) -> None:
    view = view_of(headers)
    assert view.scheme in ("http", "https")
    if view.host is not None:
        assert not any(c in view.host for c in " /@\\?#\t")


# --- forward_request_headers: hop-by-hop ---------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        b"Connection",
        b"Keep-Alive",
        b"Proxy-Connection",
        b"Te",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
        b"Proxy-Authorization",
        b"Proxy",
        b"Content-Length",
        b"Expect",
    ],
)
def test_per_hop_headers_are_not_forwarded(name: bytes) -> None:
    out = forward([(b"Host", [b"h.test"]), (name, [b"x"]), (b"Accept", [b"*/*"])])
    assert name.lower() not in names(out)
    assert values(out, b"Accept") == [b"*/*"]


def test_names_listed_in_any_connection_field_are_dropped() -> None:
    out = forward(
        [
            (b"Connection", [b"keep-alive, X-Secret", b"x-other ,,"]),
            (b"X-Secret", [b"1"]),
            (b"X-Other", [b"2"]),
            (b"X-Kept", [b"3"]),
        ]
    )
    assert b"x-secret" not in names(out) and b"x-other" not in names(out)
    assert values(out, b"X-Kept") == [b"3"]


def test_connection_cannot_remove_host() -> None:
    out = forward([(b"Connection", [b"Host"]), (b"Host", [b"h.test"])])
    assert values(out, b"Host") == [b"h.test"]


def test_proxy_prefixed_lookalike_is_kept() -> None:
    out = forward([(b"Proxyish", [b"1"])])
    assert values(out, b"Proxyish") == [b"1"]


def test_hop_by_hop_set_is_lower_case() -> None:
    assert all(n == n.lower() for n in HOP_BY_HOP)
    assert is_hop_by_hop(b"proxy-authenticate") and not is_hop_by_hop(b"cookie")


# --- forward_request_headers: what passes untouched ----------------------------------


def test_order_and_repeated_values_are_kept() -> None:
    headers: Raw = [
        (b"Host", [b"h.test"]),
        (b"Accept", [b"text/html", b"*/*"]),
        (b"Authorization", [b"Bearer app-token"]),
        (b"Accept-Encoding", [b"gzip, br"]),
        (b"X-Custom", [b"a", b"b"]),
    ]
    out = forward(headers)
    assert out[: len(headers)] == headers


def test_only_first_host_is_kept() -> None:
    out = forward([(b"Host", [b"a.test", b"b.test"])])
    assert values(out, b"Host") == [b"a.test"]


def test_works_on_twisted_headers() -> None:
    h = Headers()
    h.addRawHeader(b"host", b"h.test")
    h.addRawHeader(b"cookie", b"a=1; portproxy-session=s")
    h.addRawHeader(b"cookie", b"b=2")
    h.addRawHeader(b"connection", b"close")
    out = forward(list(h.getAllRawHeaders()))
    assert values(out, b"Cookie") == [b"a=1; b=2"]
    assert b"connection" not in names(out)


# --- cookies --------------------------------------------------------------------------

OTHERS = [
    [
        b"cookie2=hello",
        b"cookie1=hello%3Dthere",
        b"cookie3=foo|bar",
        b"cookie4=foo%7Cbar",
        b"cookie5=bar%3Bbaz",
    ],
    [b"a=1", b"b=%20x", b'c="q"', b"d=1=2", b"e="],
]


@pytest.mark.parametrize("others", OTHERS)
@pytest.mark.parametrize("position", range(6))
@pytest.mark.parametrize("websocket", [False, True])
def test_session_cookie_stripped_from_any_position(
    others: list[bytes], position: int, websocket: bool
) -> None:
    pairs = list(others)
    pairs.insert(position, SESSION + b"=signed-value")
    headers: Raw = [(b"Cookie", [b"; ".join(pairs)])]
    fn = forward_websocket_headers if websocket else forward_request_headers
    out = fn(headers, view=UNTRUSTED, session_cookie=SESSION, prefix=None)
    assert values(out, b"Cookie") == [b"; ".join(others)]


def test_only_session_cookie_leaves_no_cookie_header() -> None:
    out = forward([(b"Cookie", [SESSION + b"=x"]), (b"Accept", [b"*/*"])])
    assert b"cookie" not in names(out)


def test_suffixed_session_cookie_is_not_confused_with_the_plain_name() -> None:
    out = forward(
        [(b"Cookie", [b"portproxy-session=app; portproxy-session-x=ours"])],
        session_cookie=b"portproxy-session-x",
    )
    assert values(out, b"Cookie") == [b"portproxy-session=app"]


def test_several_cookie_fields_become_one_in_place() -> None:
    out = forward(
        [
            (b"Accept", [b"*/*"]),
            (b"Cookie", [b"a=1", SESSION + b"=x; b=2"]),
            (b"X-After", [b"1"]),
        ]
    )
    assert out[:3] == [
        (b"Accept", [b"*/*"]),
        (b"Cookie", [b"a=1; b=2"]),
        (b"X-After", [b"1"]),
    ]


def test_without_session_cookie_values_are_joined_untouched() -> None:
    out = forward([(b"Cookie", [b"a=1;b=2", b"", b"c=%7C"])], session_cookie=None)
    assert values(out, b"Cookie") == [b"a=1;b=2; c=%7C"]


def test_empty_cookie_field_is_not_forwarded() -> None:
    assert b"cookie" not in names(forward([(b"Cookie", [b""])], session_cookie=None))


# --- X-Forwarded-* --------------------------------------------------------------------

INBOUND: Raw = [
    (b"Host", [b"h.test"]),
    (b"X-Forwarded-For", [b"1.2.3.4", b"5.6.7.8"]),
    (b"X-Forwarded-Proto", [b"http"]),
    (b"X-Forwarded-Host", [b"front.test"]),
    (b"X-Forwarded-Port", [b"81"]),
    (b"X-Forwarded-Prefix", [b"/front/"]),
    (b"Forwarded", [b"for=1.2.3.4;host=front.test"]),
]


def test_untrusted_spoofed_forwarding_headers_are_replaced() -> None:
    out = forward(INBOUND, prefix=b"/PROXY/8080")
    assert out == [
        (b"Host", [b"h.test"]),
        (b"X-Forwarded-For", [b"203.0.113.9"]),
        (b"X-Forwarded-Proto", [b"https"]),
        (b"X-Forwarded-Host", [b"h.test"]),
        (b"X-Forwarded-Prefix", [b"/PROXY/8080"]),
    ]


def test_untrusted_inbound_prefix_removed_without_ours() -> None:
    out = forward(INBOUND)
    assert b"x-forwarded-prefix" not in names(out)
    assert b"forwarded" not in names(out) and b"x-forwarded-port" not in names(out)


def test_trusted_chain_is_appended_and_the_rest_kept() -> None:
    out = forward(INBOUND, view=TRUSTED, prefix=b"/proxy/8080")
    assert out == [
        (b"Host", [b"h.test"]),
        (b"X-Forwarded-For", [b"1.2.3.4, 5.6.7.8, 10.0.0.2"]),
        (b"X-Forwarded-Proto", [b"http"]),
        (b"X-Forwarded-Host", [b"front.test"]),
        (b"X-Forwarded-Port", [b"81"]),
        (b"X-Forwarded-Prefix", [b"/front/proxy/8080"]),
        (b"Forwarded", [b"for=1.2.3.4;host=front.test"]),
    ]


def test_trusted_missing_forwarding_headers_come_from_the_view() -> None:
    out = forward([(b"Host", [b"inner.test"])], view=TRUSTED, prefix=b"/proxy/1")
    assert values(out, b"X-Forwarded-For") == [b"10.0.0.2"]
    assert values(out, b"X-Forwarded-Proto") == [b"https"]
    assert values(out, b"X-Forwarded-Host") == [b"pub.test"]
    assert values(out, b"X-Forwarded-Prefix") == [b"/proxy/1"]


def test_trusted_inbound_prefix_kept_on_unprefixed_routes() -> None:
    out = forward(INBOUND, view=TRUSTED)
    assert values(out, b"X-Forwarded-Prefix") == [b"/front/"]


@pytest.mark.parametrize("bad", [b"front", b"/a b", b"/\xff", b""])
def test_trusted_garbage_inbound_prefix_is_replaced_by_ours(bad: bytes) -> None:
    out = forward([(b"X-Forwarded-Prefix", [bad])], view=TRUSTED, prefix=b"/proxy/1")
    assert values(out, b"X-Forwarded-Prefix") == [b"/proxy/1"]


def test_ipv4_mapped_peer_is_written_as_ipv4() -> None:
    view = ClientView(peer="::ffff:192.0.2.1", trusted=False, scheme="http", host=None)
    out = forward([], view=view)
    assert values(out, b"X-Forwarded-For") == [b"192.0.2.1"]
    assert b"x-forwarded-host" not in names(out)


def test_unix_socket_peer_adds_no_x_forwarded_for() -> None:
    view = ClientView(peer="", trusted=False, scheme="http", host="h.test")
    out = forward([(b"X-Forwarded-For", [b"6.6.6.6"])], view=view)
    assert b"x-forwarded-for" not in names(out)


# --- WebSocket ------------------------------------------------------------------------


def test_websocket_leaves_handshake_headers_to_the_client() -> None:
    headers: Raw = [
        (b"Host", [b"h.test"]),
        (b"Origin", [b"https://h.test"]),
        (b"Upgrade", [b"websocket"]),
        (b"Connection", [b"Upgrade"]),
        (b"Sec-Websocket-Key", [b"k"]),
        (b"Sec-Websocket-Version", [b"13"]),
        (b"Sec-Websocket-Protocol", [b"p"]),
        (b"Sec-Websocket-Extensions", [b"permessage-deflate"]),
        (b"Authorization", [b"Basic eA=="]),
        (b"Cookie", [b"a=1; " + SESSION + b"=x"]),
        (b"X-Forwarded-For", [b"6.6.6.6"]),
        (b"X-App", [b"1"]),
    ]
    out = forward_websocket_headers(
        headers, view=UNTRUSTED, session_cookie=SESSION, prefix=b"/proxy/1"
    )
    assert out == [
        (b"Authorization", [b"Basic eA=="]),
        (b"Cookie", [b"a=1"]),
        (b"X-App", [b"1"]),
        (b"X-Forwarded-For", [b"203.0.113.9"]),
        (b"X-Forwarded-Proto", [b"https"]),
        (b"X-Forwarded-Host", [b"h.test"]),
        (b"X-Forwarded-Prefix", [b"/proxy/1"]),
    ]


# --- responses ------------------------------------------------------------------------


def wire(headers: Raw) -> list[tuple[bytes, bytes]]:
    """The fields one by one, as the response reader hands them over."""
    return [(name, value) for name, values in headers for value in values]


def test_response_headers_drop_hop_by_hop_and_keep_repeats() -> None:
    upstream: Raw = [
        (b"Content-Type", [b"text/plain"]),
        (b"Connection", [b"close, X-Internal"]),
        (b"Keep-Alive", [b"timeout=5"]),
        (b"Transfer-Encoding", [b"chunked"]),
        (b"X-Internal", [b"secret"]),
        (b"Proxy-Authenticate", [b"Basic"]),
        (b"Set-Cookie", [b"a=1", b"b=2", b"a=3"]),
        (b"Content-Length", [b"5"]),
    ]
    # Content-Length goes too: Transfer-Encoding framed the body (RFC 9112 6.3).
    assert response_header_pairs(wire(upstream)) == [
        (b"Content-Type", [b"text/plain"]),
        (b"Set-Cookie", [b"a=1", b"b=2", b"a=3"]),
    ]


# --- properties -----------------------------------------------------------------------

_NAMES = [
    b"Host", b"Cookie", b"Accept", b"Authorization", b"X-App", b"X-Other", b"Origin",
    b"Connection", b"Keep-Alive", b"Te", b"Trailer", b"Transfer-Encoding", b"Upgrade",
    b"Proxy-Authorization", b"Proxy-Connection", b"X-Forwarded-For", b"Forwarded",
    b"X-Forwarded-Host", b"X-Forwarded-Prefix", b"Content-Length", b"Expect",
]  # fmt: skip
_VALUE = st.one_of(
    st.binary(max_size=20),
    st.lists(
        st.sampled_from([b"a=1", SESSION + b"=s", b" b=2", b"", b"c"]), max_size=4
    ).map(b";".join),
    st.lists(st.sampled_from([n.lower() for n in _NAMES]), max_size=3).map(b", ".join),
)
_HEADERS = st.dictionaries(
    st.sampled_from(_NAMES), st.lists(_VALUE, min_size=1, max_size=3), max_size=10
).map(lambda d: list(d.items()))


def _connection_named(headers: Sequence[tuple[bytes, Sequence[bytes]]]) -> set[bytes]:
    return {
        t.strip().lower()
        for n, vs in headers
        if n.lower() == b"connection"
        for v in vs
        for t in v.split(b",")
    }


@given(_HEADERS, st.sampled_from([UNTRUSTED, TRUSTED]), st.booleans())
def test_forwarding_never_leaks_hop_headers_or_our_cookie(
    headers: Raw, view: ClientView, websocket: bool
) -> None:
    fn = forward_websocket_headers if websocket else forward_request_headers
    out = fn(headers, view=view, session_cookie=SESSION, prefix=b"/proxy/1")
    out_names = names(out)
    assert not any(is_hop_by_hop(n) for n in out_names)
    assert len(out_names) == len(set(out_names))
    assert cookie_values(values(out, b"Cookie"), SESSION, 1) == []
    assert all(v.strip(b" ;") for v in values(out, b"Cookie"))
    dropped = _connection_named(headers) - {b"host"}
    special = {b"cookie", b"host", b"content-length", b"expect", b"origin"}
    for name, vs in headers:
        lower = name.lower()
        if (
            is_hop_by_hop(lower)
            or lower in dropped
            or lower in special
            or b"forwarded" in lower
        ):
            continue
        assert values(out, name) == vs


@given(_HEADERS)
def test_untrusted_forwarding_headers_are_all_ours(headers: Raw) -> None:
    out = forward(headers, prefix=b"/proxy/1")
    assert values(out, b"X-Forwarded-For") == [b"203.0.113.9"]
    assert values(out, b"X-Forwarded-Prefix") == [b"/proxy/1"]
    assert b"forwarded" not in names(out)


@given(_HEADERS)
def test_response_headers_keep_everything_not_per_hop(headers: Raw) -> None:
    out = response_header_pairs(wire(headers))
    dropped = _connection_named(headers)
    if any(n.lower() == b"transfer-encoding" and vs for n, vs in headers):
        dropped.add(b"content-length")  # RFC 9112 6.3: TE framed the body
    expected = [
        (n, v)
        for n, v in headers
        if not is_hop_by_hop(n.lower()) and n.lower() not in dropped
    ]
    for i, (n, vs) in enumerate(expected):
        if n.lower() == b"content-length" and (len(vs) > 1 or b"," in vs[0]):
            # RFC 9110 8.6: repeated (already checked equal) lengths go on once.
            expected[i] = (n, [vs[0].split(b",", 1)[0].strip(b" \t")])
    assert out == expected


# --- client_address: who the client is, for rate limiting -------------------------

import ipaddress as _ipaddress  # noqa: E402

from portproxy.http.headers import client_address  # noqa: E402

_LOCAL = (_ipaddress.ip_network("127.0.0.0/8"), _ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.5", [b"1.2.3.4"], "203.0.113.5"),  # untrusted peer: XFF ignored
        ("127.0.0.1", [b"1.2.3.4"], "1.2.3.4"),
        ("127.0.0.1", [b"6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # rightmost untrusted wins
        ("127.0.0.1", [b"1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # skip trusted hops
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", [b"not-an-ip"], "127.0.0.1"),
        ("::ffff:127.0.0.1", [b"1.2.3.4"], "1.2.3.4"),
    ],
)
def test_client_address_believes_only_trusted_proxies(
    peer: str, xff: list[bytes], expected: str
) -> None:
    headers = [(b"X-Forwarded-For", xff)] if xff else []
    assert client_address(headers, peer=peer, trusted_networks=_LOCAL) == expected

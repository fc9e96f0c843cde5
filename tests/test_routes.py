"""Route parsing on raw request targets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.routing.routes import (
    Route,
    RouteKind,
    absproxy_upstream_path,
    parse_port,
    parse_route,
    split_target,
)


@pytest.mark.parametrize(
    ("target", "route"),
    [
        (b"/proxy/8080/", Route(RouteKind.PROXY, b"8080", b"/proxy/8080", b"/")),
        (
            b"/proxy/8080/a%2Fb//c?x=%20&y=/z",
            Route(RouteKind.PROXY, b"8080", b"/proxy/8080", b"/a%2Fb//c?x=%20&y=/z"),
        ),
        (b"/PROXY/8080/x", Route(RouteKind.PROXY, b"8080", b"/PROXY/8080", b"/x")),
        (
            b"/proxy/8080?q=1",
            Route(RouteKind.PROXY, b"8080", b"/proxy/8080", b"?q=1", needs_slash=True),
        ),
        (b"/proxy/8080", Route(RouteKind.PROXY, b"8080", b"/proxy/8080", b"", True)),
        (b"/proxy/8080//", Route(RouteKind.PROXY, b"8080", b"/proxy/8080", b"//")),
        (
            b"/absproxy/8080/x?y",
            Route(RouteKind.ABSPROXY, b"8080", b"/absproxy/8080", b"/absproxy/8080/x?y"),
        ),
        (
            b"/AbsProxy/8080",
            Route(RouteKind.ABSPROXY, b"8080", b"/AbsProxy/8080", b"/AbsProxy/8080"),
        ),
        (b"/proxy/abc/x", Route(RouteKind.PROXY, b"abc", b"/proxy/abc", b"/x")),
        (b"/proxy/", Route(RouteKind.NOT_FOUND)),
        (b"/proxy", Route(RouteKind.NOT_FOUND)),
        (b"/proxyx/80/", Route(RouteKind.NOT_FOUND)),
        (b"/", Route(RouteKind.INDEX)),
        (b"/?x=1", Route(RouteKind.INDEX)),
        (b"/login?to=/x", Route(RouteKind.LOGIN, rest=b"?to=/x")),
        (b"/LOGOUT", Route(RouteKind.LOGOUT)),
        (b"/healthz", Route(RouteKind.HEALTHZ)),
        (b"/healthz/x", Route(RouteKind.NOT_FOUND)),
        (b"/favicon.ico", Route(RouteKind.NOT_FOUND)),
        (
            b"http://example.com/proxy/80/x?q",
            Route(RouteKind.PROXY, b"80", b"/proxy/80", b"/x?q"),
        ),
    ],
)
def test_parse_route(target: bytes, route: Route) -> None:
    assert parse_route(target) == route


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/a?b", (b"/a", b"?b")),
        (b"/a", (b"/a", b"")),
        (b"http://h:1/p?q", (b"/p", b"?q")),
        (b"http://h:1?q", (b"/", b"?q")),
        (b"http://h:1", (b"/", b"")),
        (b"/a?b?c", (b"/a", b"?b?c")),
    ],
)
def test_split_target(target: bytes, expected: tuple[bytes, bytes]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(
    ("label", "port"),
    [(b"1", 1), (b"8080", 8080), (b"65535", 65535), ("5173", 5173)],
)
def test_canonical_ports_are_accepted(label: bytes | str, port: int) -> None:
    assert parse_port(label) == port


@pytest.mark.parametrize(
    "label",
    [
        b"0",
        b"65536",
        b"99999",
        b"08080",
        b"+80",
        b"-1",
        b"80a",
        b"",
        b"%38080",
        "８０",
        b"123456",
        b" 80",
        b"8080 ",
    ],
)
def test_noncanonical_ports_are_refused(label: bytes | str) -> None:
    assert parse_port(label) is None


@given(st.integers(min_value=1, max_value=65535))
def test_every_port_round_trips(port: int) -> None:
    assert parse_port(str(port).encode()) == port


@given(st.binary(max_size=8))
def test_parse_port_accepts_only_its_own_spelling(label: bytes) -> None:
    port = parse_port(label)
    if port is not None:
        assert str(port).encode() == label


@given(st.binary(max_size=64))
def test_proxy_rest_is_a_byte_exact_suffix(tail: bytes) -> None:
    target = b"/proxy/80/" + tail
    route = parse_route(target)
    assert route.kind is RouteKind.PROXY
    assert route.prefix + route.rest == target


def test_absproxy_base_path_is_prepended() -> None:
    assert absproxy_upstream_path(b"/absproxy/1/x?y", b"/base") == b"/base/absproxy/1/x?y"
    assert absproxy_upstream_path(b"/absproxy/1/x", b"") == b"/absproxy/1/x"

"""Fuzz targets for the pure parsers: each test states a property that must hold for any
input, with a bounded number of examples so the whole file stays quick.

A crash found here is a bug; its input stays as an C{@example}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from portproxy.auth.cookiepolicy import cookie_domain, set_cookie_value
from portproxy.auth.redirects import safe_redirect_target
from portproxy.auth.sessions import MAX_CLOCK_SKEW, SessionSigner
from portproxy.http.cookies import cookie_values, strip_cookie
from portproxy.http.headers import BadRequest, client_view, request_authority
from portproxy.http.rewrite import rewrite_location, rewrite_set_cookie
from portproxy.routing.domains import (
    DomainMatcher,
    DomainPatternError,
    host_name,
    normalize_patterns,
)
from portproxy.routing.hosts import parse_authority
from portproxy.routing.routes import (
    RouteKind,
    absolute_form,
    origin_form,
    parse_port,
    parse_route,
    split_target,
)
from portproxy.websocket.origin import (
    origin_allowed,
    parse_origin,
    parse_trusted_origin,
)

FAST = settings(max_examples=150, deadline=None)
THOROUGH = settings(max_examples=300, deadline=None)

_BAD_BYTES = (b"\r", b"\n", b"\x00")

# Bytes that matter to these parsers, mixed with anything at all.
_PIECES = st.sampled_from(
    [
        b"/", b"//", b"\\", b"?", b"#", b"%", b"%2F", b":", b"@", b"[", b"]", b".", b"..",
        b"-", b"_", b"=", b";", b",", b" ", b"\t", b'"', b"proxy", b"absproxy", b"PROXY",
        b"8080", b"0", b"65536", b"localhost", b"127.0.0.1", b"[::1]", b"http://",
        b"https://", b"ws://", b"example.test", b"{{port}}", b"{{host}}", b"*.",
    ]
)  # fmt: skip
_SPICY = st.lists(st.one_of(_PIECES, st.binary(max_size=4)), max_size=12).map(b"".join)
_TEXT = _SPICY.map(lambda b: b.decode("latin-1"))
_ASCII_TEXT = _SPICY.map(lambda b: b.decode("ascii", "replace"))


def _clean(value: bytes) -> bool:
    return not any(c in value for c in _BAD_BYTES)


# -- request-target routing -----------------------------------------------------------


@FAST
@given(_SPICY.map(lambda b: b"/" + b) | _SPICY)
@example(b"x/proxy/80/a")
@example(b"http://h/proxy/80/a")
@example(b"http://h?proxy/80")
@example(b"*")
def test_route_upstream_paths_start_with_a_slash(target: bytes) -> None:
    path, query = split_target(target)
    assert path + query == origin_form(target)
    assert query == b"" or query.startswith(b"?")
    route = parse_route(target)
    if route.kind is RouteKind.PROXY:
        assert route.prefix.startswith(b"/")
        if route.needs_slash:
            assert route.rest == query
        else:
            assert route.rest.startswith(b"/")
    elif route.kind is RouteKind.ABSPROXY:
        assert route.prefix.startswith(b"/") and route.rest.startswith(b"/")
    absolute = absolute_form(target)
    if absolute is not None:
        assert absolute[1].startswith(b"/")
        assert b"/" not in absolute[0] and b"?" not in absolute[0]


@FAST
@given(st.one_of(_SPICY, st.text(max_size=8), st.binary(max_size=8)))
@example("\u0663")
@example(b"08080")
def test_a_port_label_has_exactly_one_spelling(label: bytes | str) -> None:
    port = parse_port(label)
    if port is not None:
        assert 1 <= port <= 65535
        raw = label.encode("ascii") if isinstance(label, str) else label
        assert raw == str(port).encode("ascii")


# -- the host parser and the request's host -------------------------------------------


@THOROUGH
@given(st.one_of(_SPICY, st.text(max_size=12)))
@example(b"[fe80::1%eth0]")
@example(b"[::1]:")
def test_a_parsed_host_is_well_formed_and_reparses_to_itself(value: bytes | str) -> None:
    authority = parse_authority(value)
    if authority is None:
        return
    host, port = authority
    assert host and not any(c in host for c in " \t\r\n\x00/@?#\\,%")
    assert port is None or 0 <= port <= 65535
    text = host if port is None else f"{host}:{port}"
    assert parse_authority(text) == authority


@FAST
@given(
    st.lists(_SPICY, max_size=3),
    _SPICY,
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]),
)
def test_the_requests_host_is_well_formed_or_a_bad_request(
    hosts: list[bytes], target: bytes, version: bytes
) -> None:
    try:
        host = request_authority(hosts, target, version=version)
    except BadRequest:
        return
    if host is not None:
        assert parse_authority(host) is not None
    elif version == b"HTTP/1.1":
        raise AssertionError("HTTP/1.1 without a host was accepted")


_NETS = (ipaddress.ip_network("10.0.0.0/8"),)
_HEADER_NAMES = st.sampled_from(
    [b"Host", b"Forwarded", b"X-Forwarded-Host", b"X-Forwarded-Proto", b"X-Other"]
)


@FAST
@given(
    st.lists(st.tuples(_HEADER_NAMES, st.lists(_SPICY, min_size=1, max_size=2))),
    st.sampled_from(["10.1.2.3", "203.0.113.5", "::ffff:10.0.0.1", "", "[::1]"]),
    st.booleans(),
)
def test_the_client_view_only_holds_well_formed_values(
    headers: list[tuple[bytes, list[bytes]]], peer: str, secure: bool
) -> None:
    view = client_view(headers, peer=peer, secure=secure, trusted_networks=_NETS)
    assert view.scheme in ("http", "https")
    if view.host is not None:
        assert parse_authority(view.host) is not None
    if not view.trusted:
        hosts = [v[0] for n, v in headers if n == b"Host"]
        if view.host is not None:
            assert view.host.encode("ascii") == hosts[0].strip(b" \t")
        assert view.scheme == ("https" if secure else "http")


# -- proxy-domain matching ------------------------------------------------------------


@FAST
@given(st.lists(_TEXT, min_size=1, max_size=3))
def test_pattern_normalisation_raises_only_its_own_error_and_is_idempotent(
    raw: list[str],
) -> None:
    try:
        patterns = normalize_patterns(raw)
    except DomainPatternError:
        return
    assert normalize_patterns(patterns) == patterns


_PATTERNS = [
    "example.test",
    "dev-{{port}}.dash.test",
    "{{port}}-{{host}}.single.test",
    "{{port}}.{{host}}",
]


@THOROUGH
@given(st.one_of(_TEXT, st.text(max_size=20)), _TEXT)
@example("5173.attacker.test", "myhost.test")
@example("K.test", "x")
def test_domain_matching_never_raises_and_labels_are_digits(host: str, other: str) -> None:
    matcher = DomainMatcher(_PATTERNS)
    host_name(host)
    label = matcher.match(host)
    assert label is None or (label.isascii() and label.isdigit())
    if matcher.redirect_allowed(host, other):
        assert label is not None  # only ever a proxy host
    cookie_domain(host, matcher.patterns)


@FAST
@given(
    st.integers(1, 65535),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
)
def test_host_patterns_round_trip_and_never_cross_host_values(
    port: int, mine: str, theirs: str
) -> None:
    matcher = DomainMatcher(["{{port}}.{{host}}"])
    public = f"{port}.{mine}"
    assert matcher.match(public) == str(port)
    assert matcher.public_host(port, public) == public
    assert matcher.redirect_allowed(public, mine)
    foreign = f"{port}.{theirs}"
    assert matcher.redirect_allowed(foreign, mine) is (theirs == mine)
    assert matcher.redirect_allowed(foreign, public) is (theirs == mine)


# -- Location and Set-Cookie rewriting ------------------------------------------------


def _public_url(port: int, rest: bytes) -> bytes:
    return b"/proxy/%d" % port + rest


@THOROUGH
@given(_SPICY, st.sampled_from([None, b"/proxy/8080", b"/PROXY/8080"]))
@example(b"http://localhost:80@evil.test/", None)
@example(b"//localhost:3000\\evil", None)
@example(b"http://[::1]:3000//evil.test", None)
def test_a_rewritten_loopback_location_never_leaves_this_site(
    location: bytes, prefix: bytes | None
) -> None:
    out = rewrite_location(location, prefix=prefix, public_url=_public_url)
    if _clean(location):
        assert _clean(out)
    if out != location:
        # Only ever rewritten onto this site: under the prefix, or the proxy route of
        # another loopback port (``http://localhost`` is port 80).
        assert out.startswith((prefix or b"/proxy/", b"/proxy/"))
        assert not out.startswith((b"//", b"/\\"))
    if prefix is not None and location[:1] in (b"/", b"\\"):
        assert rewrite_location(out, prefix=prefix, public_url=_public_url) == out


@THOROUGH
@given(_SPICY, st.sampled_from([b"/proxy/8080", b"/proxy/1"]))
@example(b"a=1; Path=/; Domain=localhost", b"/proxy/8080")
@example(b"__Host-a=1; Path=/", b"/proxy/8080")
def test_set_cookie_rewriting_keeps_the_cookie_and_is_idempotent(
    value: bytes, prefix: bytes
) -> None:
    out = rewrite_set_cookie(value, prefix)
    assert out.split(b";")[0] == value.split(b";")[0]
    if _clean(value):
        assert _clean(out)
    assert rewrite_set_cookie(out, prefix) == out


# -- cookies and sessions -------------------------------------------------------------

_NAME = b"portproxy-session"


@FAST
@given(st.lists(_SPICY | st.just(b"portproxy-session=v; a=1"), max_size=4))
def test_our_cookie_is_always_stripped_and_others_kept(values: list[bytes]) -> None:
    out = strip_cookie(values, _NAME)
    if out is None:
        return
    assert out  # never an empty Cookie header
    pairs = [p.strip(b" \t") for p in out.split(b";")]
    assert _NAME not in [p.split(b"=", 1)[0].strip(b" \t") for p in pairs]
    if all(_clean(v) for v in values):
        assert _clean(out)
    assert strip_cookie([out], _NAME) == out
    assert cookie_values([out], _NAME, 4) == []


_SIGNER = SessionSigner(b"key material", 3600)
_NOW = 1_700_000_000


@THOROUGH
@given(st.one_of(_SPICY, st.binary(max_size=90), st.text(max_size=90)))
@example("1.1700000000.1700003600." + "A" * 43)
def test_a_forged_session_value_is_never_accepted(value: bytes | str) -> None:
    assert _SIGNER.verify(value, _NOW) is False


@FAST
@given(st.integers(0, 76), st.integers(0, 255), st.integers(0, 3599))
def test_a_tampered_session_value_is_never_accepted(at: int, byte: int, age: int) -> None:
    value = _SIGNER.issue(_NOW).encode("ascii")
    assert _SIGNER.verify(value, _NOW + age)
    at %= len(value)
    tampered = value[:at] + bytes([byte]) + value[at + 1 :]
    if tampered != value:
        assert not _SIGNER.verify(tampered, _NOW + age)
    assert not _SIGNER.verify(value, _NOW + 3600)  # expired
    assert not _SIGNER.verify(_SIGNER.issue(_NOW + MAX_CLOCK_SKEW + 1), _NOW)
    other = SessionSigner(b"other password", 3600)
    assert not other.verify(value, _NOW + age)


@FAST
@given(_TEXT)
def test_a_session_cookie_value_is_refused_rather_than_broken(value: str) -> None:
    try:
        header = set_cookie_value(
            "portproxy-session", value, max_age=1, secure=True, domain=None
        )
    except ValueError:
        return
    assert _clean(header) and b";" not in header.split(b"; ")[0]


# -- redirect targets -----------------------------------------------------------------


@THOROUGH
@given(st.one_of(_TEXT, st.text(max_size=30)))
@example("/\\evil.test")
@example("/%2F%2Fevil.test")
@example("http://a.test\\@evil.test/")
@example("https://evil.test@a.test/")
def test_a_redirect_target_is_this_site_or_an_allowed_host(to: str) -> None:
    seen: list[str] = []

    def allowed(authority: str) -> bool:
        seen.append(authority)
        return authority in ("a.test", "a.test:8080")

    out = safe_redirect_target(to, allowed_host=allowed)
    assert out == "/" or out == to
    assert not any(c in out for c in "\r\n\x00\t \\")
    if out.startswith("/"):
        assert not out.startswith("//")
    elif out != "/":
        authority = out.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        assert authority.split("#", 1)[0].lower() in ("a.test", "a.test:8080")


# -- Origin ---------------------------------------------------------------------------


@THOROUGH
@given(
    st.lists(_SPICY, max_size=2),
    st.one_of(st.none(), _ASCII_TEXT),
    st.sampled_from(["http", "https"]),
)
@example([b"http://a.test:80"], "a.test", "http")
@example([b"http://a.test@evil.test"], "a.test", "http")
def test_origin_checks_never_raise_and_only_pass_matching_origins(
    origins: list[bytes], host: str | None, scheme: str
) -> None:
    for origin in origins:
        parse_origin(origin)
    allowed = origin_allowed(origins, host=host, scheme=scheme)
    if origins and allowed:
        assert len(origins) == 1
        assert parse_origin(origins[0]) is not None
        assert host is not None


@FAST
@given(_TEXT)
def test_trusted_origin_entries_raise_only_value_error(entry: str) -> None:
    try:
        parse_trusted_origin(entry)
    except ValueError as e:
        assert "--trusted-origins" in str(e)


@pytest.mark.parametrize("value", [b"", b"=", b";;", b'"'])
def test_cookie_readers_take_degenerate_values(value: Any) -> None:
    assert cookie_values([value], _NAME, 4) == []
    assert strip_cookie([value], _NAME) in (None, value.strip(b" \t;") or None, value)


@pytest.mark.parametrize(
    "origin", [b"http:// a.test", b"http://a.test :80", b"http://a~b.test", b"http://[::1"]
)
def test_origins_with_blanks_or_odd_hosts_are_refused(origin: bytes) -> None:
    assert parse_origin(origin) is None
    assert not origin_allowed([origin], host="a.test", scheme="http")

"""Tests for L{portproxy.routing.domains}: proxy-domain patterns and host matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.routing.domains import (
    DomainMatcher,
    DomainPatternError,
    base_domain,
    host_name,
    normalize_patterns,
)

# --- normalisation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["example.test"], ("{{port}}.example.test",)),
        (["*.example.test"], ("{{port}}.example.test",)),
        (["{{port}}.example.test"], ("{{port}}.example.test",)),
        (["dev-{{port}}.example.test"], ("dev-{{port}}.example.test",)),
        (["{{port}}-{{host}}.example.test"], ("{{port}}-{{host}}.example.test",)),
        (["{{host}}"], ("{{port}}.{{host}}",)),
        (["  Example.TEST \n"], ("{{port}}.example.test",)),
        (["{{PORT}}.Example.test"], ("{{port}}.example.test",)),
        (
            ["*.coder.com", "coder.com", "coder.org"],
            ("{{port}}.coder.com", "{{port}}.coder.org"),
        ),
        (["b.test", "a.test", "*.b.test"], ("{{port}}.b.test", "{{port}}.a.test")),
        (["my_box.test"], ("{{port}}.my_box.test",)),
        ([], ()),
    ],
)
def test_normalize_patterns_examples(raw: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_patterns(raw) == expected


def test_star_dot_is_dropped_only_once() -> None:
    with pytest.raises(DomainPatternError, match=r"'\*'"):
        normalize_patterns(["*.*.example.test"])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("{{port}}.{{port}}.example.test", "more than one {{port}}"),
        ("{{host}}.{{port}}.{{host}}.test", "more than one {{host}}"),
        ("exa mple.test", "' '"),
        ("example.test/app", "'/'"),
        ("user@example.test", "'@'"),
        ("example.test?x", r"'\?'"),
        ("example.test#x", "'#'"),
        ("exa\x00mple.test", r"'\\x00'"),
        ("exa\tmple.test", r"'\\t'"),
        ("example.test:8080", "port"),
        ("https://example.test", "URL"),
        ("bücher.test", "xn--"),
        ("example.test.", "ends with a dot"),
        ("example..test", "empty label"),
        (".example.test", "empty label"),
        ("*.", "no domain"),
        ("*", r"'\*'"),
        ("ex*ample.test", r"'\*'"),
        ("*example.test", r"'\*'"),
        ("{{prot}}.example.test", "unknown placeholder"),
        ("{{ port }}.example.test", "unknown placeholder"),
        ("{port}.example.test", "unknown placeholder"),
        ("{{port}}", "ends in a number"),
        ("10.0.0.1", "ends in a number"),
        ("example.{{port}}", "ends in a number"),
        ("app.0x{{port}}", "ends in a number"),
    ],
)
def test_malformed_pattern_is_refused(raw: str, reason: str) -> None:
    with pytest.raises(DomainPatternError, match=reason) as caught:
        normalize_patterns(["good.test", raw])
    assert repr(raw) in str(caught.value)


def test_pattern_error_is_a_value_error() -> None:
    assert issubclass(DomainPatternError, ValueError)


def test_matcher_refuses_malformed_pattern() -> None:
    with pytest.raises(DomainPatternError):
        DomainMatcher(["example.test/"])


# --- matching -------------------------------------------------------------------------

ROUTING = [
    # (pattern, host, expected port label)
    ("example.test", "8080.example.test", "8080"),
    ("*.example.test", "8080.example.test", "8080"),
    ("{{port}}.example.test", "8080.example.test", "8080"),
    ("dev-{{port}}.example.test", "dev-8080.example.test", "8080"),
    ("{{port}}-{{host}}.example.test", "8080-myhost.example.test", "8080"),
    ("{{port}}-{{host}}.example.test", "8080-my.host.example.test", "8080"),
    ("{{port}}.{{host}}", "5173.localhost", "5173"),
    ("{{port}}.{{host}}", "5173.anything.example", "5173"),
    ("{{port}}{{host}}.example.test", "80x.example.test", "80"),
]

REFUSED_HOSTS = [
    "abc.example.test",
    "9001.sub.example.test",
    "example.test",
    "dev-.example.test",
    "8080-.example.test",
    "8080.example.test.evil.com",
    "evil8080.example.test",
    ".example.test",
    "8080example.test",
    "8080.example.tes",
    "8080.example-test",
    "-8080.example.test",
    "8080",
    "",
]


@pytest.mark.parametrize(("pattern", "host", "label"), ROUTING)
def test_pattern_routes_its_hosts(pattern: str, host: str, label: str) -> None:
    matcher = DomainMatcher([pattern])
    assert matcher.match(host) == label
    assert matcher.is_proxy_host(host)


@pytest.mark.parametrize(
    "pattern",
    [
        "example.test",
        "*.example.test",
        "{{port}}.example.test",
        "dev-{{port}}.example.test",
        "{{port}}-{{host}}.example.test",
    ],
)
@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_pattern_refuses_other_hosts(pattern: str, host: str) -> None:
    matcher = DomainMatcher([pattern])
    assert matcher.match(host) is None
    assert not matcher.is_proxy_host(host)


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("dev-{{port}}.example.test", "8080.example.test"),
        ("{{port}}.example.test", "dev-8080.example.test"),
        ("{{port}}-{{host}}.example.test", "8080.example.test"),
        ("{{port}}.example.test", "8080-myhost.example.test"),
        ("{{port}}.{{host}}", "localhost"),
        ("{{port}}.{{host}}", "abc.localhost"),
    ],
)
def test_pattern_refuses_hosts_of_other_forms(pattern: str, host: str) -> None:
    assert DomainMatcher([pattern]).match(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "8080.example.test:8443",
        "8080.example.test:80",
        "8080.example.test:",
        "8080.EXAMPLE.test",
        "8080.Example.Test:8443",
        "8080.example.test.",
        "8080.example.test.:443",
        " 8080.example.test ",
    ],
)
def test_port_suffix_case_and_trailing_dot_are_ignored(host: str) -> None:
    assert DomainMatcher(["example.test"]).match(host) == "8080"


@pytest.mark.parametrize(
    "host",
    [
        "8080.example.test:abc",
        "8080.example.test:80:80",
        "8080.example.test:\u0668\u0660",
        "8080.example.test..",
        "8080.example.test/x",
        "8080.example.test@evil.com",
        "user@8080.example.test",
        "8080.exampl\u212a.test",  # Kelvin sign lower-cases to 'k' under Unicode rules
        "\u0668\u0660.example.test",  # Arabic-Indic digits are not a port
        "8080.ex ample.test",
    ],
)
def test_malformed_host_never_matches(host: str) -> None:
    assert DomainMatcher(["example.test", "{{port}}-{{host}}.test"]).match(host) is None


@pytest.mark.parametrize(
    "host",
    ["[::1]:80", "[::1]", "::1", "[::ffff:127.0.0.1]:8080", "[fe80::1%25eth0]", "[::1"],
)
def test_ipv6_literal_never_matches(host: str) -> None:
    assert DomainMatcher(["{{port}}.{{host}}", "{{host}}-{{port}}.x"]).match(host) is None


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:8080", "8080.192.168.1.5", "8080.0x7f", "8080.1"]
)
def test_ipv4_host_never_matches_a_host_placeholder(host: str) -> None:
    assert DomainMatcher(["{{port}}.{{host}}"]).match(host) is None


def test_too_long_host_is_refused_quickly() -> None:
    matcher = DomainMatcher(["{{port}}{{host}}.example.test"])
    assert matcher.match("1" * 100_000 + ".example.test") is None
    assert matcher.match("1" * 2000 + ".example.tes") is None
    long_ok = "8" + "a" * (253 - len("8.example.test")) + ".example.test"
    assert matcher.match(long_ok) == "8"


@pytest.mark.parametrize("label", ["99999", "0", "007", "65536", "1" * 30])
def test_unvalidated_port_label_is_returned_as_written(label: str) -> None:
    assert DomainMatcher(["example.test"]).match(f"{label}.example.test") == label


def test_first_matching_pattern_wins() -> None:
    # Both patterns match '12.test' but read different ports from it.
    assert DomainMatcher(["{{port}}{{host}}.test", "{{port}}.test"]).match("12.test") == "1"
    assert (
        DomainMatcher(["{{port}}.test", "{{port}}{{host}}.test"]).match("12.test") == "12"
    )
    assert DomainMatcher(["{{port}}{{host}}.test"]).match("123x.test") == "123"


def test_later_pattern_matches_when_earlier_does_not() -> None:
    matcher = DomainMatcher(["one.test", "dev-{{port}}.two.test"])
    assert matcher.match("dev-3000.two.test") == "3000"
    assert matcher.match("3000.one.test") == "3000"
    assert matcher.match("3000.two.test") is None


def test_matcher_without_patterns_matches_nothing() -> None:
    matcher = DomainMatcher([])
    assert matcher.patterns == ()
    assert matcher.match("8080.example.test") is None
    assert matcher.public_host(8080) is None


def test_matcher_keeps_normalised_patterns() -> None:
    matcher = DomainMatcher(["*.coder.com", "coder.com", "coder.org"])
    assert matcher.patterns == ("{{port}}.coder.com", "{{port}}.coder.org")
    assert "coder.org" in repr(matcher)


def test_regex_metacharacters_in_pattern_are_literal() -> None:
    # '.' must not match any character, which would let '8080xexample.test' through.
    matcher = DomainMatcher(["example.test"])
    assert matcher.match("8080xexample.test") is None
    assert matcher.match("8080.examplextest") is None


# --- host_name --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM:8080", "example.com"),
        ("example.com", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:443", "example.com"),
        ("example.com:", "example.com"),
        (" example.com ", "example.com"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8080", None),
        ("[::1]", None),
        ("[::1]:", None),
        ("[::1]x", None),
        ("::1", None),
        ("a:b", None),
        ("example.com:99999", None),
        ("", None),
        ("\u212a.test", None),
    ],
)
def test_host_name(host: str, expected: str | None) -> None:
    assert host_name(host) == expected


@pytest.mark.parametrize(
    "host", ["a~b.test", "a%41.test", "user@a.test", "a.test:80:80", "a" * 254]
)
def test_host_name_refuses_what_the_one_host_parser_refuses(host: str) -> None:
    from portproxy.routing.hosts import parse_authority

    assert parse_authority(host) is None
    assert host_name(host) is None


# --- public_host, base_domain -------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "port", "request_host", "expected"),
    [
        (["example.test"], 5173, None, "5173.example.test"),
        (["dev-{{port}}.example.test"], 80, None, "dev-80.example.test"),
        (["example.test"], 5173, "8080.example.test:8443", "5173.example.test"),
        (["example.test"], 5173, "main.example.test", "5173.example.test"),
        (["{{port}}-{{host}}.example.test"], 5173, None, None),
        (
            ["{{port}}-{{host}}.example.test"],
            5173,
            "8080-box.example.test",
            "5173-box.example.test",
        ),
        (
            ["{{port}}-{{host}}.example.test"],
            5173,
            "8080-A.B.example.test",
            "5173-a.b.example.test",
        ),
        (["{{port}}-{{host}}.example.test"], 5173, "other.test", None),
        (["{{port}}-{{host}}.example.test"], 5173, "8080-x/y.example.test", None),
        (["{{port}}.{{host}}"], 3000, "8080.localhost:8080", "3000.localhost"),
        # A proxy host under a later pattern keeps the user under that domain.
        (["a.test", "b.test"], 5173, "8080.b.test", "5173.b.test"),
        (["a.test", "b.test"], 5173, "b.test", "5173.a.test"),
        (["{{port}}-{{host}}.a.test", "b.test"], 5173, "b.test", None),
        (["example.test"], 0, None, None),
        (["example.test"], 65536, None, None),
        (["example.test"], 65535, None, "65535.example.test"),
        (["example.test"], -1, "8080.example.test", None),
        ([], 5173, "8080.example.test", None),
    ],
)
def test_public_host(
    patterns: list[str], port: int, request_host: str | None, expected: str | None
) -> None:
    assert DomainMatcher(patterns).public_host(port, request_host) == expected


def test_public_host_refuses_bool_port() -> None:
    assert DomainMatcher(["example.test"]).public_host(True) is None


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("{{port}}.example.test", "example.test"),
        ("dev-{{port}}.example.test", "example.test"),
        ("{{port}}-{{host}}.example.test", "example.test"),
        ("{{port}}.{{host}}.example.test", "example.test"),
        ("{{port}}.{{host}}", None),
        ("{{port}}.localhost", "localhost"),
    ],
)
def test_base_domain(pattern: str, expected: str | None) -> None:
    assert base_domain(pattern) == expected


# --- properties -----------------------------------------------------------------------

_LDH = "abcdefghijklmnopqrstuvwxyz0123456789"
labels = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?\Z")
tlds = st.from_regex(r"\A[a-z]{2,6}\Z")
domains = st.builds(
    lambda inner, tld: ".".join([*inner, tld]), st.lists(labels, max_size=3), tlds
)
ports = st.integers(min_value=1, max_value=65535)


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips))


@st.composite
def proxy_hosts(draw: st.DrawFn) -> tuple[str, str, int]:
    domain = draw(domains)
    port = draw(ports)
    host = _random_case(draw, f"{port}.{domain}")
    suffix = draw(st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}")))
    return domain, host + suffix, port


@given(proxy_hosts())
def test_property_port_host_maps_back_to_port(case: tuple[str, str, int]) -> None:
    domain, host, port = case
    assert DomainMatcher([domain]).match(host) == str(port)
    assert DomainMatcher([f"*.{domain.upper()}"]).match(host) == str(port)


@given(domains, ports)
def test_property_public_host_round_trips(domain: str, port: int) -> None:
    matcher = DomainMatcher([domain])
    public = matcher.public_host(port)
    assert public == f"{port}.{domain}"
    assert matcher.match(public) == str(port)


def _is_proxy_host_of(host: str, domain: str) -> bool:
    name = host_name(host)
    if name is None or not name.endswith("." + domain):
        return False
    first = name[: -len(domain) - 1]
    return first != "" and all(c in "0123456789" for c in first)


near_misses = st.builds(
    lambda a, b, c: a + b + c,
    st.sampled_from(["", "x", "8080", "-", ".", "1.", "8080.", "12a"]),
    st.sampled_from(["", "9", "443", "0", "."]),
    st.sampled_from(["", ".", ":", ":80", ".x", "x"]),
)


@given(
    domains,
    st.one_of(st.text(max_size=40), st.text(_LDH + ".-:[]", max_size=40), near_misses),
)
def test_property_other_hosts_do_not_match(domain: str, junk: str) -> None:
    matcher = DomainMatcher([domain])
    for host in (junk, junk + domain, junk + "." + domain, junk + domain + junk):
        expected = (
            (host_name(host) or "").split(".", 1)[0]
            if _is_proxy_host_of(host, domain)
            else None
        )
        assert matcher.match(host) == expected


raw_patterns = st.builds(
    lambda star, head, body, tld, pad: pad + star + head + body + tld + pad,
    st.sampled_from(["", "*."]),
    st.sampled_from(
        ["", "{{port}}.", "dev-{{port}}.", "{{port}}-{{host}}.", "{{HOST}}.{{port}}."]
    ),
    st.lists(labels, max_size=2).map(lambda ls: "".join(label + "." for label in ls)),
    tlds.flatmap(lambda t: st.sampled_from([t, t.upper()])),
    st.sampled_from(["", " ", "\t"]),
)


@given(st.lists(raw_patterns, max_size=5))
def test_property_normalize_patterns_is_idempotent(raw: list[str]) -> None:
    once = normalize_patterns(raw)
    assert normalize_patterns(once) == once
    assert len(set(once)) == len(once)
    assert all("{{port}}" in p and p == p.lower() for p in once)

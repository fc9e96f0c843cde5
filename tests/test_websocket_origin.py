"""The WebSocket Origin rules (pure): same host, trusted origins, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.websocket.origin import (
    normalize_authority,
    origin_allowed,
    parse_origin,
    parse_trusted_origin,
    parse_trusted_origins,
)


def allowed(
    origin: bytes | None,
    host: str | None,
    scheme: str = "http",
    trusted: tuple[str, ...] = (),
) -> bool:
    return origin_allowed(
        [] if origin is None else [origin],
        host=host,
        scheme=scheme,
        trusted=parse_trusted_origins(trusted),
    )


@pytest.mark.parametrize(
    "origin, host, scheme",
    [
        (None, None, "http"),
        (None, "anything:1", "https"),
        (b"http://127.0.0.1:8080", "127.0.0.1:8080", "http"),
        (b"https://9001.coder.test", "9001.coder.test", "https"),
        (b"https://App.Example.com", "app.example.COM", "https"),
        (b"https://example.com", "example.com:443", "https"),
        (b"http://example.com:80", "example.com", "http"),
        (b"https://example.com:443", "example.com", "https"),
        (b"http://[::1]:8080", "[::1]:8080", "http"),
        (b"http://example.com", "example.com", "https"),  # the scheme is not compared
        (b" http://example.com ", "example.com", "http"),
    ],
)
def test_no_origin_or_the_requests_own_host_is_allowed(
    origin: bytes | None, host: str | None, scheme: str
) -> None:
    assert allowed(origin, host, scheme)


@pytest.mark.parametrize(
    "origin, host, scheme",
    [
        (b"http://127.0.0.1:9999", "127.0.0.1:8080", "http"),
        (b"https://coder.test", "9001.coder.test", "https"),
        (b"https://evil.example", "example.com", "https"),
        (b"http://example.com:8080", "example.com", "http"),
        (b"http://example.com", "example.com:8080", "http"),
        (b"https://example.com", "example.com:80", "https"),
        (b"http://localhost:8080", None, "http"),
        (b"http://localhost:8080", " ", "http"),
        (b"http://example.com", "example.com:", "http"),
    ],
)
def test_a_foreign_origin_is_refused(origin: bytes, host: str | None, scheme: str) -> None:
    assert not allowed(origin, host, scheme)


@pytest.mark.parametrize(
    "origin",
    [
        b"null",
        b"",
        b"localhost:8080",
        b"test.org",
        b"http://",
        b"http://example.com/",
        b"http://example.com/path",
        b"http://example.com?q",
        b"http://user@example.com",
        b"http://example.com:99999",
        b"http://example.com:",
        b"http://example.com:8a",
        b"http://exa mple.com",
        b"http://example.com http://other.com",
        b"http://[::1",
        b"http://\xc3\xa9xample.com",
        b"//example.com",
    ],
)
def test_null_and_malformed_origins_are_refused_even_with_star(origin: bytes) -> None:
    host = "example.com"
    assert not allowed(origin, host, trusted=("*",))
    assert parse_origin(origin) is None


def test_several_origin_fields_are_refused() -> None:
    same = b"http://example.com"
    assert not origin_allowed([same, same], host="example.com", scheme="http")


@pytest.mark.parametrize(
    "trusted, origin, expected",
    [
        ("*", b"https://anything.example", True),
        ("app.example.org", b"https://app.example.org", True),
        ("app.example.org", b"https://app.example.org:8443", False),
        ("app.example.org:8443", b"https://app.example.org:8443", True),
        ("app.example.org:443", b"https://app.example.org", True),
        ("app.example.org", b"https://other.example.org", False),
        ("*.example.org", b"https://example.org", True),
        ("*.example.org", b"https://a.example.org", True),
        ("*.example.org", b"https://a.b.example.org", True),
        ("*.example.org", b"https://example.org.evil", False),
        ("*.example.org", b"https://evilexample.org", False),
        ("*.example.org", b"https://a.example.org:8443", False),
        ("*.example.org:8443", b"https://a.example.org:8443", True),
        ("*.Example.ORG", b"https://A.example.org", True),
        ("[::1]:9000", b"http://[::1]:9000", True),
        ("abcdef", b"chrome-extension://abcdef", True),
    ],
)
def test_trusted_origins(trusted: str, origin: bytes, expected: bool) -> None:
    assert allowed(origin, "portproxy.test", "https", (trusted,)) is expected


@pytest.mark.parametrize(
    "entry",
    [
        "https://example.com",
        "example.com/",
        "*.",
        "*",
        "*.*.example.com",
        "a b",
        "*.[::1]",
        "",
    ],
)
def test_malformed_trusted_origins_are_rejected_naming_the_option(entry: str) -> None:
    if entry == "*":
        assert parse_trusted_origin(entry).any_origin
        return
    with pytest.raises(ValueError, match="--trusted-origins"):
        parse_trusted_origin(entry)


@pytest.mark.parametrize(
    "value, scheme, expected",
    [
        ("Example.COM:443", "https", "example.com"),
        ("example.com:443", "http", "example.com:443"),
        ("example.com:80", "http", "example.com"),
        ("[::1]:80", "http", "[::1]"),
        ("example.com:", "http", None),
        ("exa mple.com", "http", None),
        (None, "http", None),
    ],
)
def test_request_hosts_are_normalised_like_origins(
    value: str | None, scheme: str, expected: str | None
) -> None:
    assert normalize_authority(value, scheme) == expected


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hostname = st.lists(_label, min_size=1, max_size=4).map(".".join)
_port = st.integers(min_value=1, max_value=65535)


@given(host=_hostname, port=_port, scheme=st.sampled_from(["http", "https"]))
def test_an_origin_built_from_the_request_host_is_always_allowed(
    host: str, port: int, scheme: str
) -> None:
    origin = f"{scheme}://{host}:{port}".encode()
    assert allowed(origin, f"{host}:{port}", scheme)


@given(origin=st.binary(max_size=60), trusted=st.sampled_from([(), ("*.example.org",)]))
def test_without_a_known_request_host_only_a_trusted_entry_can_allow(
    origin: bytes, trusted: tuple[str, ...]
) -> None:
    result = allowed(origin, None, "https", trusted)
    if result:
        parsed = parse_origin(origin)
        assert parsed is not None and parsed[1].host.endswith("example.org")


@given(prefix=st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True), domain=_hostname)
def test_a_wildcard_never_matches_a_name_that_merely_ends_with_its_domain(
    prefix: str, domain: str
) -> None:
    # "evilexample.org" for "*.example.org": the domain is not preceded by a dot.
    origin = f"https://{prefix}{domain}".encode()
    assert not allowed(origin, "portproxy.test", "https", (f"*.{domain}",))


@given(domain=_hostname, suffix=_label)
def test_a_wildcard_never_matches_its_domain_with_more_after_it(
    domain: str, suffix: str
) -> None:
    origin = f"https://{domain}.{suffix}".encode()
    if f"{domain}.{suffix}".endswith("." + domain):
        return  # e.g. "a.a" really is a subdomain of "a"
    assert not allowed(origin, "portproxy.test", "https", (f"*.{domain}",))

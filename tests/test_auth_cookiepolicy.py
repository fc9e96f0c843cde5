"""The session cookie's name, Domain and attributes."""

from __future__ import annotations

import pytest

from portproxy.auth.cookiepolicy import (
    clear_cookie_value,
    cookie_domain,
    session_cookie_name,
    set_cookie_value,
)


@pytest.mark.parametrize(
    ("suffix", "name"),
    [
        ("", "portproxy-session"),
        ("my suffix!", "portproxy-session-my-suffix-"),
        ("dev-2", "portproxy-session-dev-2"),
        ("a;b=c", "portproxy-session-a-b-c"),
        ("t\u00e4st", "portproxy-session-t-st"),
    ],
)
def test_cookie_name_suffix_mapping(suffix: str, name: str) -> None:
    assert session_cookie_name(suffix) == name


PORT_EXAMPLE = ["{{port}}.example.com"]


@pytest.mark.parametrize(
    ("host", "patterns", "domain"),
    [
        ("localhost:8081", PORT_EXAMPLE, None),
        ("localhost", ["{{port}}.localhost"], None),
        ("127.0.0.1", PORT_EXAMPLE, None),
        ("127.0.0.1:8080", PORT_EXAMPLE, None),
        ("[::1]", PORT_EXAMPLE, None),
        ("[::1]:8080", PORT_EXAMPLE, None),
        ("dev.localhost", ["{{port}}.dev.localhost"], None),
        ("3000.localhost", ["{{port}}.localhost"], None),
        ("intranet", ["{{port}}.intranet"], None),
        ("example.com", PORT_EXAMPLE, "example.com"),
        ("example.com:8443", PORT_EXAMPLE, "example.com"),
        ("Code.Example.com", PORT_EXAMPLE, "example.com"),
        ("code.example.com", PORT_EXAMPLE, "example.com"),
        ("3000.example.com", PORT_EXAMPLE, "example.com"),
        ("example.org", PORT_EXAMPLE, None),
        ("notexample.com", PORT_EXAMPLE, None),
        ("example.com.evil.net", PORT_EXAMPLE, None),
        ("example.com", [], None),
        ("code.example.com", ["dev-{{port}}.example.com"], "example.com"),
        ("code.example.com", ["{{port}}-{{host}}.example.com"], "example.com"),
        ("a.b.example.com", ["{{port}}.{{host}}.example.com"], "example.com"),
        ("code.example.com", ["{{port}}.{{host}}"], None),
        (
            "code.a.example.com",
            ["{{port}}.a.example.com", "{{port}}.example.com"],
            "example.com",
        ),
        ("code.a.example.com", ["{{port}}.a.example.com"], "a.example.com"),
        ("code.lan", ["{{port}}.lan"], None),
        ("", PORT_EXAMPLE, None),
        ("exa mple.com", PORT_EXAMPLE, None),
        ("\u00e9xample.com", PORT_EXAMPLE, None),
        ("10.0.0.1", ["{{port}}.0.1"], None),
    ],
)
def test_cookie_domain_table(host: str, patterns: list[str], domain: str | None) -> None:
    assert cookie_domain(host, patterns) == domain


def test_set_cookie_has_the_required_attributes_and_no_secure_by_default() -> None:
    header = set_cookie_value(
        "portproxy-session", "v", max_age=60, secure=False, domain=None
    )
    parts = header.split(b"; ")
    assert parts[0] == b"portproxy-session=v"
    assert set(parts[1:]) == {b"Max-Age=60", b"Path=/", b"HttpOnly", b"SameSite=Lax"}


def test_set_cookie_secure_and_domain() -> None:
    header = set_cookie_value("n", "v", max_age=5, secure=True, domain="example.com")
    assert set(header.split(b"; ")[1:]) == {
        b"Max-Age=5",
        b"Path=/",
        b"Domain=example.com",
        b"HttpOnly",
        b"SameSite=Lax",
        b"Secure",
    }


@pytest.mark.parametrize("value", ["a;b", "a b", 'a"b', "a,b", "a\\b", "\u00e9"])
def test_set_cookie_refuses_values_a_cookie_cannot_carry(value: str) -> None:
    with pytest.raises(ValueError):
        set_cookie_value("n", value, max_age=5, secure=False, domain=None)


@pytest.mark.parametrize("domain", [None, "example.com"])
def test_clear_cookie_matches_the_set_cookie_scope(domain: str | None) -> None:
    header = clear_cookie_value("n", secure=True, domain=domain)
    parts = header.split(b"; ")
    assert parts[0] == b"n="
    assert b"Max-Age=0" in parts and b"Path=/" in parts and b"Secure" in parts
    assert (b"Domain=example.com" in parts) is (domain is not None)

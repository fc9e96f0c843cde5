"""Location and Set-Cookie rewriting for apps behind the proxy."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.http.rewrite import is_loopback_host, rewrite_location, rewrite_set_cookie

PREFIX = b"/proxy/8080"


def public(port: int, path: bytes) -> bytes:
    assert path[:1] == b"/"
    return b"https://pub.test/proxy/%d%s" % (port, path)


def nowhere(port: int, path: bytes) -> None:
    return None


def loc(location: bytes, prefix: bytes | None = PREFIX) -> bytes:
    return rewrite_location(location, prefix=prefix, public_url=public)


# --- root-relative on /proxy/<port> ---------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (b"/x", b"/proxy/8080/x"),
        (b"/finale?x=1", b"/proxy/8080/finale?x=1"),
        (b"/", b"/proxy/8080/"),
        (b"//evil.example/x", b"/proxy/8080//evil.example/x"),
        (b"/\\evil.example", b"/proxy/8080/\\evil.example"),
        (b"\\x", b"/proxy/8080/x"),
        (b"\\\\evil.example/x", b"/proxy/8080/\\evil.example/x"),
        (b"/a b/\xff", b"/proxy/8080/a b/\xff"),
        (b"/proxy/80800/x", b"/proxy/8080/proxy/80800/x"),
        (b"/proxy/8080x", b"/proxy/8080/proxy/8080x"),
    ],
)
def test_root_relative_location_gets_the_prefix(location: bytes, expected: bytes) -> None:
    assert loc(location) == expected


@pytest.mark.parametrize(
    "location",
    [
        b"/proxy/8080/x",
        b"/PROXY/8080/x",
        b"/proxy/8080",
        b"/proxy/8080?x=1",
        b"/proxy/8080#top",
    ],
)
def test_location_already_under_prefix_is_not_prefixed_twice(location: bytes) -> None:
    assert loc(location) == location


def test_prefix_case_is_kept() -> None:
    assert loc(b"/x", prefix=b"/PROXY/8080") == b"/PROXY/8080/x"


@pytest.mark.parametrize("location", [b"/x", b"//evil.example/x", b"\\x"])
def test_no_prefix_on_other_routes(location: bytes) -> None:
    assert loc(location, prefix=None) == location


@pytest.mark.parametrize("prefix", [PREFIX, None])
@pytest.mark.parametrize(
    "location",
    [
        b"finale",
        b"../y",
        b"?q=1",
        b"#frag",
        b"",
        b"http://example.com/x",
        b"https://evil.example:8080/",
        b"mailto:me@localhost",
        b"javascript:alert(1)",
    ],
)
def test_relative_and_foreign_locations_are_untouched(
    location: bytes, prefix: bytes | None
) -> None:
    assert loc(location, prefix=prefix) == location


# --- loopback absolute URLs ------------------------------------------------------------


@pytest.mark.parametrize("prefix", [PREFIX, None])
@pytest.mark.parametrize(
    ("location", "port", "path"),
    [
        (b"http://localhost:9001/finale", 9001, b"/finale"),
        (b"HTTP://LocalHost:3000/a?b=1#c", 3000, b"/a?b=1#c"),
        (b"http://localhost:3000", 3000, b"/"),
        (b"http://localhost:3000?q", 3000, b"/?q"),
        (b"http://localhost:3000#f", 3000, b"/#f"),
        (b"http://localhost:3000\\x", 3000, b"/x"),
        (b"http://localhost/x", 80, b"/x"),
        (b"https://localhost/x", 443, b"/x"),
        (b"http://localhost:/x", 80, b"/x"),
        (b"http://localhost.:5000/", 5000, b"/"),
        (b"http://app.localhost:5000/", 5000, b"/"),
        (b"http://127.0.0.1:5000/", 5000, b"/"),
        (b"http://127.1.2.3:5000/", 5000, b"/"),
        (b"http://0.0.0.0:5000/", 5000, b"/"),
        (b"http://[::1]:5000/", 5000, b"/"),
        (b"http://[::]:5000/", 5000, b"/"),
        (b"http://[0:0:0:0:0:0:0:1]:5000/", 5000, b"/"),
        (b"http://[::ffff:127.0.0.1]:5000/", 5000, b"/"),
        (b"http://[::1]/", 80, b"/"),
        (b"http://a@localhost:1/", 1, b"/"),
        (b"http://a:b@c@localhost:1/", 1, b"/"),
        (b"http://localhost:03000/", 3000, b"/"),
    ],
)
def test_loopback_location_points_at_public_url(
    location: bytes, port: int, path: bytes, prefix: bytes | None
) -> None:
    assert loc(location, prefix=prefix) == public(port, path)


@pytest.mark.parametrize(
    "location",
    [
        b"http://localhost:3000@evil.com/",
        b"http://localhost.evil.com/",
        b"http://localhost.evil.com:3000/",
        b"http://evil.com#@localhost:1/",
        b"http://evil.com?@localhost:1/",
        b"http://evil.com\\@localhost:1/",
        b"http://evil.com/@localhost:1/",
        b"http://127.0.0.1.evil.com/",
        b"http://[::1].evil.com/",
        b"http://notlocalhost/",
        b"http://.localhost/",
        b"http://10.0.0.1:3000/",
        b"http://[::2]:3000/",
    ],
)
def test_foreign_hosts_that_mention_localhost_are_not_rewritten(
    location: bytes,
) -> None:
    assert loc(location, prefix=None) == location


@pytest.mark.parametrize(
    "location",
    [
        b"http://localhost:99999/",
        b"http://localhost:0/",
        b"http://localhost:abc/",
        b"http://localhost:1:2/",
        b"http://localhost:" + b"9" * 5000 + b"/",
        b"http://[::1/",
        b"http://[::1]x/",
        b"http://[::1%25eth0]:1/",
        b"ftp://localhost:21/",
        b"ws://localhost:1/",
        b"http:/localhost:1/",
        b"http:localhost:1/",
        b"http://%6cocalhost:1/",
        b"http://127.0.0.01:1/",
        b"http://127.1:1/",
        b"http://localhost\x00:1/",
        b"http://localhost:1/\x7f",
        b"http://localhost:1/\xc3\xa9",
        b" http://localhost:1/",
        b"//localhost/x",
    ],
)
def test_unusual_loopback_spellings_are_left_alone(location: bytes) -> None:
    assert loc(location, prefix=None) == location


def test_scheme_relative_loopback_with_port_is_rewritten_off_the_proxy_route() -> None:
    assert loc(b"//localhost:3000/x", prefix=None) == public(3000, b"/x")


def test_scheme_relative_loopback_on_proxy_route_gets_the_prefix() -> None:
    assert loc(b"//localhost:3000/x") == b"/proxy/8080//localhost:3000/x"


def test_no_public_url_leaves_location_alone() -> None:
    location = b"http://localhost:3000/x"
    assert rewrite_location(location, prefix=None, public_url=nowhere) == location


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"localhost", True),
        (b"LOCALHOST", True),
        (b"a.b.localhost", True),
        (b"127.255.0.1", True),
        (b"::1", True),
        (b"[::1]", True),
        (b"localhost.evil", False),
        (b"evil-localhost", False),
        (b"128.0.0.1", False),
        (b"256.0.0.1", False),
        (b"", False),
        (b"[]", False),
        (b"loc\xc3\xa1lhost", False),
    ],
)
def test_is_loopback_host(host: bytes, expected: bool) -> None:
    assert is_loopback_host(host) is expected


# --- Location properties --------------------------------------------------------------


@given(st.binary(max_size=60), st.sampled_from([PREFIX, b"/PROXY/1", None]))
def test_rewrite_location_never_raises(location: bytes, prefix: bytes | None) -> None:
    result = loc(location, prefix=prefix)
    assert result == location or result.startswith((b"/", b"https://pub.test/"))


@given(st.binary(max_size=40).map(lambda b: b"/" + b))
def test_root_relative_location_stays_under_prefix(location: bytes) -> None:
    result = loc(location)
    if location.lower().startswith(PREFIX.lower()) and location[len(PREFIX) :][:1] in (
        b"",
        b"/",
        b"?",
        b"#",
    ):
        assert result == location
    else:
        assert result == PREFIX + location
    assert loc(result) == result  # idempotent: never a double prefix


_PIECES = st.sampled_from(
    [
        "localhost", "LOCALHOST", "127.0.0.1", "[::1]", "app.localhost", "evil.com",
        "localhost.evil.com", "@", ":", ":3000", ":99999", "/", "\\", "?", "#", "a", ".",
        "%40",
    ]
)  # fmt: skip


def _oracle_loopback(host: str | None) -> bool:
    if host is None:
        return False
    host = host.removesuffix(".")
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")


_PLAIN_LOOPBACK = re.compile(
    r"(localhost|127\.0\.0\.1|\[::1\]|app\.localhost)(:(3000)?)?", re.IGNORECASE
)


@given(st.sampled_from(["http://", "https://", "HTTP://"]), st.lists(_PIECES, max_size=6))
def test_only_urls_a_browser_sends_to_loopback_are_rewritten(
    scheme: str, pieces: list[str]
) -> None:
    url = scheme + "".join(pieces)
    result = loc(url.encode(), prefix=None)
    # An independent reading: WHATWG treats '\' as '/' in http(s) URLs, and the host
    # follows the last '@' of the authority.
    try:
        parts = urlsplit(url.replace("\\", "/"))
        host = parts.hostname
    except ValueError:
        host = None
    if result != url.encode():
        assert _oracle_loopback(host)
    if _oracle_loopback(host) and _PLAIN_LOOPBACK.fullmatch(
        parts.netloc.rpartition("@")[2]
    ):
        assert result != url.encode()


# --- Set-Cookie -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"a=1; Path=/", b"a=1; Path=/proxy/8080/"),
        (b"a=1; Path=/x; HttpOnly", b"a=1; Path=/proxy/8080/x; HttpOnly"),
        (b"a=1;path = /x ;Secure", b"a=1;path = /proxy/8080/x ;Secure"),
        (b"a=1; PATH=/x", b"a=1; PATH=/proxy/8080/x"),
        (b"a=1; Path=/x; Path=/y", b"a=1; Path=/proxy/8080/x; Path=/proxy/8080/y"),
        (b"path=/x; Path=/", b"path=/x; Path=/proxy/8080/"),
        (b'a="x; Path=/y"', b'a="x; Path=/proxy/8080/y"'),
        (b"a=1; Path=/proxy/80800", b"a=1; Path=/proxy/8080/proxy/80800"),
        (
            b"a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/",
            b"a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/proxy/8080/",
        ),
        (b"a=1; Domain=localhost; Path=/", b"a=1; Path=/proxy/8080/"),
        (b"a=1; Domain=.localhost", b"a=1"),
        (b"a=1; domain = LOCALHOST ; Secure", b"a=1; Secure"),
        (b"a=1; Domain=app.localhost", b"a=1"),
        (b"a=1; Domain=127.0.0.1", b"a=1"),
        (b"a=1; Domain=[::1]", b"a=1"),
        (b"a=1; Domain=::1", b"a=1"),
        (b"a=1; Domain=example.com", b"a=1; Domain=example.com"),
        (b"a=1; Domain=localhost.evil.com", b"a=1; Domain=localhost.evil.com"),
    ],
)
def test_set_cookie_is_scoped_under_the_prefix(value: bytes, expected: bytes) -> None:
    assert rewrite_set_cookie(value, PREFIX) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"a=1",
        b"a=1; HttpOnly; SameSite=Lax",
        b"a=path=/x",
        b"a=1; Path=/proxy/8080/x",
        b"a=1; Path=/PROXY/8080/x",
        b"a=1; Path=/proxy/8080",
        b"a=1; Path=x",
        b"a=1; Path=",
        b"a=1; Path",
        b"__Host-id=1; Path=/; Secure",
        b"__host-id=1; Path=/; Secure",
        b"",
        b"\xff; \x00",
    ],
)
def test_set_cookie_left_alone(value: bytes) -> None:
    assert rewrite_set_cookie(value, PREFIX) == value


def test_set_cookie_prefix_case_is_kept() -> None:
    assert rewrite_set_cookie(b"a=1; Path=/x", b"/PROXY/8080") == b"a=1; Path=/PROXY/8080/x"


_COOKIE = st.lists(
    st.sampled_from(
        [b"Path=/", b"path=/x", b" PATH = /y ", b"Domain=localhost", b"domain=a.test",
         b"HttpOnly", b"Path=", b"Path=/proxy/8080/z", b"", b"x"]
    ) | st.binary(max_size=12),
    max_size=5,
)  # fmt: skip


@given(st.binary(max_size=20).filter(lambda b: b";" not in b), _COOKIE)
def test_set_cookie_properties(pair: bytes, attributes: list[bytes]) -> None:
    value = b";".join([pair, *attributes])
    result = rewrite_set_cookie(value, PREFIX)
    assert result.split(b";")[0] == pair
    assert rewrite_set_cookie(result, PREFIX) == result
    if pair.strip().lower().startswith(b"__host-"):
        return
    for attribute in result.split(b";")[1:]:
        key, _eq, path = attribute.partition(b"=")
        if key.strip().lower() == b"path" and path.strip()[:1] == b"/":
            assert path.strip().startswith(PREFIX)
        if key.strip().lower() == b"domain":
            assert not is_loopback_host(path.strip().lstrip(b"."))

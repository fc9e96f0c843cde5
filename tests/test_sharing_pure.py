"""The pure rules of sharing: durations, scopes, token parsing, signed values, keys."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.http.headers import ClientView, forward_request_headers
from portproxy.http.setcookie import allowed_set_cookies
from portproxy.sharing.access import (
    check_methods,
    check_path_prefix,
    check_ports,
    method_allowed,
    path_in_scope,
)
from portproxy.sharing.durations import format_duration, parse_duration
from portproxy.sharing.grants import (
    grant_cookie_name,
    grant_set_cookie,
    grant_value,
    grant_value_id,
    link_token,
    link_token_id,
)
from portproxy.sharing.keys import SharingKeys
from portproxy.sharing.tokens import (
    authorization_holds_token,
    new_secret,
    presented_token,
)

# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("3600", 3600),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("30d", 2592000),
        ("1w", 604800),
        ("1h30m", 5400),
        (" 2H ", 7200),
        ("0.5h", 1800),
    ],
)
def test_durations_read_as_people_type_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1", "2y", "h", "2 h", "1h-", "inf", "nan"])
def test_a_bad_duration_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**8))
def test_a_formatted_duration_reads_back_the_same(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# -- scopes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix, path, inside",
    [
        ("/", b"/anything/../x", True),
        ("/api", b"/api", True),
        ("/api", b"/api/", True),
        ("/api", b"/api/x?y=1", True),
        ("/api", b"/api?y=1", True),
        ("/api", b"/apix", False),
        ("/api", b"/ap", False),
        ("/api", b"/", False),
        ("/api", b"", False),
        ("/api", b"/API/x", False),  # paths are case-sensitive
        ("/api", b"/api/../admin", False),
        ("/api", b"/api/./x", False),
        ("/api", b"/api/%2e%2e/admin", False),
        ("/api", b"/api/%2E/x", False),
        ("/api", b"/api/a%2fb", False),
        ("/api", b"/api/a%5cb", False),
        ("/api", b"/api/a\\..\\b", False),
        ("/api", b"//api/x", False),
        ("/a/b", b"/a/b/c", True),
        ("/a/b", b"/a/bc", False),
        # Review 15: what Tomcat, Jetty or Spring read as a dot segment.
        ("/hooks", b"/hooks/..;/admin", False),
        ("/hooks", b"/hooks/x;jsessionid=1", False),
        ("/hooks", b"/hooks/%252e%252e/admin", False),
        ("/hooks", b"/hooks/%c0%ae%c0%ae/admin", False),
        ("/hooks", b"/hooks/%C0%AE/x", False),
        ("/hooks", b"/hooks/caf%c3%a9", False),
        ("/hooks", b"/hooks/x?a=;&b=%25", True),  # the query is the app's
        ("/", b"/..;/admin", True),  # the whole port is shared: nothing to escape
    ],
)
def test_a_prefix_covers_paths_on_segment_boundaries_only(
    prefix: str, path: bytes, inside: bool
) -> None:
    assert path_in_scope(prefix, path) is inside


_SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_~", min_size=1)


@given(st.lists(_SEGMENT, min_size=1, max_size=4), st.binary(max_size=40))
def test_a_path_in_scope_starts_with_the_prefix_and_a_slash_and_holds_no_trick(
    segments: list[str], rest: bytes
) -> None:
    prefix = "/" + "/".join(segments)
    path = prefix.encode() + rest
    if path_in_scope(prefix, path):
        bare = path.split(b"?", 1)[0]
        assert bare == prefix.encode() or bare.startswith(prefix.encode() + b"/")
        assert b"/../" not in bare + b"/" and b"/./" not in bare + b"/"
        assert b"%2e" not in bare.lower() and b"%2f" not in bare.lower()
        assert b"\\" not in bare


@given(st.lists(_SEGMENT, min_size=1, max_size=4))
def test_every_clean_prefix_is_accepted_and_covers_itself(segments: list[str]) -> None:
    prefix = "/" + "/".join(segments)
    assert check_path_prefix(prefix) == prefix
    assert check_path_prefix(prefix + "/") == prefix
    assert path_in_scope(prefix, prefix.encode() + b"/x")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "api",
        "/a/../b",
        "/a/./b",
        "/a//b",
        "/a%2fb",
        "/%2e%2e",
        "/a b",
        "/a?b",
        "/a#b",
        "/a\\b",
        "/%zz",
        None,
        3,
    ],
)
def test_a_bad_prefix_is_refused_naming_the_path_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"^path: "):
        check_path_prefix(value)


def test_methods_are_upper_cased_and_get_brings_head() -> None:
    assert check_methods(None) is None
    assert check_methods(["get", "POST"]) == ("GET", "HEAD", "POST")
    assert method_allowed(("GET", "HEAD"), b"HEAD")
    assert not method_allowed(("GET", "HEAD"), b"POST")
    for bad in ([], "GET", ["GE T"], [""], [1]):
        with pytest.raises(ValueError, match=r"^methods: "):
            check_methods(bad)


def test_ports_are_checked_and_sorted() -> None:
    assert check_ports([3001, 3000, 3000]) == (3000, 3001)
    for bad in ([], [0], [65536], ["80"], [True], "3000"):
        with pytest.raises(ValueError, match=r"^ports: "):
            check_ports(bad)


# -- tokens in requests ----------------------------------------------------------------

SECRET = "ppt_" + "A" * 43


def _basic(user: bytes, password: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user + b":" + password)


@pytest.mark.parametrize(
    "authorization, header, found, in_authorization",
    [
        ([b"Bearer " + SECRET.encode()], None, SECRET, True),
        ([b"bearer  " + SECRET.encode()], None, SECRET, True),
        ([_basic(b"anyone", SECRET.encode())], None, SECRET, True),
        ([_basic(b"", SECRET.encode())], None, SECRET, True),
        (None, [SECRET.encode()], SECRET, False),
        ([b"Bearer abc"], [SECRET.encode()], SECRET, False),
        ([b"Bearer abc"], None, None, False),
        ([b"Basic " + base64.b64encode(b"user:password")], None, None, False),
        ([_basic(SECRET.encode(), b"x")], None, None, False),  # the user name is not it
        ([b"Basic !!notbase64"], None, None, False),
        ([b"Bearer ppt_short"], None, None, False),
        ([b"Bearer " + SECRET.encode()] * 2, None, None, False),
        (None, [SECRET.encode()] * 2, None, False),
        (None, [b"Bearer " + SECRET.encode()], None, False),
        ([b"Digest " + SECRET.encode()], None, None, False),
    ],
)
def test_a_token_is_found_only_where_it_may_be_presented(
    authorization: list[bytes] | None,
    header: list[bytes] | None,
    found: str | None,
    in_authorization: bool,
) -> None:
    presented = presented_token(authorization, header)
    if found is None:
        assert presented is None
    else:
        assert presented is not None
        assert (presented.secret, presented.in_authorization) == (found, in_authorization)


@given(
    st.lists(st.binary(max_size=80), max_size=3),
    st.lists(st.binary(max_size=80), max_size=3),
)
def test_token_parsing_never_fails_and_finds_only_ppt_secrets(
    authorization: list[bytes], header: list[bytes]
) -> None:
    presented = presented_token(authorization or None, header or None)
    if presented is not None:
        assert presented.secret.startswith("ppt_")


def test_new_secrets_are_found_and_differ() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert presented_token([b"Bearer " + secret.encode()], None) is not None


# -- signed values, keys ------------------------------------------------------------------


def test_keys_differ_per_use_and_per_password() -> None:
    one, two = SharingKeys.derive(b"password one"), SharingKeys.derive(b"password two")
    assert len({one.link, one.grant, one.token, two.link, two.grant, two.token}) == 6
    assert SharingKeys.derive(b"password one") == one
    with pytest.raises(ValueError):
        SharingKeys.derive(b"")


def test_a_link_token_and_a_grant_check_only_under_their_own_key_and_port() -> None:
    keys = SharingKeys.derive(b"k")
    other = SharingKeys.derive(b"other")
    share_id = "0123456789abcdef"
    token = link_token(keys.link, share_id)
    assert link_token_id(keys.link, token) == share_id
    assert link_token_id(other.link, token) is None
    assert link_token_id(keys.grant, token) is None
    value = grant_value(keys.grant, share_id, 3000)
    assert grant_value_id(keys.grant, value, 3000) == share_id
    assert grant_value_id(keys.grant, value, 3001) is None
    assert grant_value_id(keys.link, value, 3000) is None
    assert link_token_id(keys.link, value) is None  # a cookie is not a link


@given(st.text(max_size=60))
def test_no_made_up_value_checks(value: str) -> None:
    keys = SharingKeys.derive(b"k")
    assert link_token_id(keys.link, value) is None
    assert grant_value_id(keys.grant, value, 3000) is None


def test_the_grant_cookie_is_http_only_lax_and_scoped() -> None:
    assert grant_cookie_name(3000) == "portproxy-grant-3000"
    assert grant_cookie_name(3000, "a.b") == "portproxy-grant-3000-a-b"
    cookie = grant_set_cookie("n", "v", max_age=10, path=b"/proxy/3000", secure=True)
    assert cookie == b"n=v; Max-Age=10; Path=/proxy/3000; HttpOnly; SameSite=Lax; Secure"
    with pytest.raises(ValueError):
        grant_set_cookie("n", "v", max_age=10, path=b"/x;Domain=evil", secure=False)


# -- what reaches the app --------------------------------------------------------------------

VIEW = ClientView(peer="127.0.0.1", scheme="http", host="h", trusted=False)


def _forwarded(headers: list[tuple[bytes, list[bytes]]]) -> dict[bytes, list[bytes]]:
    out = forward_request_headers(headers, view=VIEW, session_cookie=b"s", prefix=None)
    return {name.lower(): values for name, values in out}


def test_grant_cookies_and_the_token_header_never_reach_the_app() -> None:
    sent = _forwarded(
        [
            (b"Cookie", [b"a=1; portproxy-grant-3000=x.y", b's=z;b="2 3"']),
            (b"X-Portproxy-Token", [SECRET.encode()]),
            (b"Authorization", [b"Bearer app-token"]),
        ]
    )
    assert sent[b"cookie"] == [b'a=1; b="2 3"']
    assert b"x-portproxy-token" not in sent
    assert sent[b"authorization"] == [b"Bearer app-token"]
    only_ours = _forwarded([(b"Cookie", [b"portproxy-grant-1=x; s=y"])])
    assert b"cookie" not in only_ours


def test_an_app_cannot_set_or_clear_a_grant_cookie() -> None:
    values = [
        b"portproxy-grant-3000=x",
        b"PORTPROXY-GRANT-1=y",
        b" portproxy-grant-2=z",
        b"portproxy-grantee=ok",
        b"s=1",
        b"mine=2",
    ]
    assert allowed_set_cookies(values, b"s") == [b"portproxy-grantee=ok", b"mine=2"]


_TRICKS = (
    [";", "%25", "%2525"]
    + [f"%{b:02x}" for b in range(0x80, 0x100)]
    + [f"%{b:02X}" for b in range(0x80, 0x100)]
)


@given(
    st.lists(_SEGMENT, min_size=1, max_size=3),
    st.text(alphabet=string.ascii_letters + "/.-", max_size=12),
    st.sampled_from(_TRICKS),
    st.text(alphabet=string.ascii_letters + "/.-", max_size=12),
)
def test_under_a_prefix_a_semicolon_a_double_or_a_non_ascii_escape_is_refused(
    segments: list[str], before: str, trick: str, after: str
) -> None:
    prefix = "/" + "/".join(segments)
    path = f"{prefix}/{before}{trick}{after}".encode("ascii")
    assert not path_in_scope(prefix, path)
    assert path_in_scope("/", path)


def test_only_a_scope_open_to_every_method_allows_a_websocket_upgrade() -> None:
    assert method_allowed(None, b"GET", upgrade=True)
    assert not method_allowed(("GET", "HEAD"), b"GET", upgrade=True)
    assert not method_allowed(("GET", "HEAD", "POST", "PUT"), b"GET", upgrade=True)
    assert method_allowed(("GET", "HEAD"), b"GET", upgrade=False)


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer ppt_" + b"a" * 43,
        b"bearer  ppt_" + b"a" * 43,
        b"Basic " + base64.b64encode(b"ci:ppt_" + b"a" * 43),
        # Not accepted as credentials, but still secrets the app must not get.
        b"Token ppt_" + b"a" * 43,
        b"Bearer ppt_" + b"a" * 43 + b",",
        b"Bearer ppt_" + b"a" * 43 + b" x",
        b"Bearer\tppt_" + b"a" * 43,
        b"Basic " + base64.b64encode(b"ppt_" + b"a" * 43 + b":"),  # curl -u "$T:"
        b"Basic " + base64.b64encode(b"ppt_" + b"a" * 42 + b":")[:-1],  # no padding
        # What a lenient decoder would still read (last attacker pass):
        b"Basic " + base64.urlsafe_b64encode(b"ci:ppt_" + b"a" * 40 + b"\xff\xfe"),
        b"Basic " + base64.b64encode(b"ci:ppt_" + b"a" * 43) + b"=",
        b"Basic x" + base64.b64encode(b"ci:ppt_" + b"a" * 43),
        b"Basic "
        + base64.b64encode(b"ci:ppt_" + b"a" * 43)[:12]
        + b","
        + base64.b64encode(b"ci:ppt_" + b"a" * 43)[12:],
        b"Bearer ppt%5F" + b"a" * 43,
    ],
)
def test_a_token_in_authorization_is_recognised_for_removal(value: bytes) -> None:
    assert authorization_holds_token([value])
    assert authorization_holds_token([b"Bearer abc", value])  # even next to another


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer abc.def.ghi",
        b"Basic " + base64.b64encode(b"user:a long password of the app itself"),
        b'Digest username="ppt", realm="x"',
    ],
)
def test_an_app_authorization_with_no_token_is_kept(value: bytes) -> None:
    assert not authorization_holds_token([value])


@pytest.mark.parametrize(
    "values",
    [None, [], [b"Bearer abc"], [b"Basic " + base64.b64encode(b"app:secret")], [b"x"]],
)
def test_an_apps_own_authorization_is_not_taken_for_a_token(
    values: list[bytes] | None,
) -> None:
    assert not authorization_holds_token(values)

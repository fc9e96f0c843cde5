"""The login page's C{to} is followed only to this server or its proxy hosts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.auth.redirects import MAX_TARGET_LENGTH, safe_redirect_target

GOOD_HOSTS = {
    "example.com",
    "my_app.example.com",
    "code.example.com:8443",
    "3000.example.com",
    "[::1]:8080",
}


def safe(to: str) -> str:
    return safe_redirect_target(to, allowed_host=lambda host: host in GOOD_HOSTS)


@pytest.mark.parametrize(
    "to",
    [
        "/",
        "/proxy/3000/x?y",
        "/proxy/3000/",
        "/absproxy/8080/a/b?c=d&e=f#frag",
        "/proxy/3000/%2Fkept?q=%2F",
        "/a//b",
        "/x?next=https://evil.com",
        "/x?<script>",
        "https://3000.example.com/deep/link?x=1",
        "http://example.com",
        "HTTPS://3000.EXAMPLE.COM/Path",
        "https://code.example.com:8443/?a",
        "http://[::1]:8080/x",
        "https://example.com#top",
        "https://my_app.example.com/",
    ],
)
def test_good_targets_are_kept(to: str) -> None:
    assert safe(to) == to


@pytest.mark.parametrize(
    "to",
    [
        "",
        "https://evil.com",
        "https://evil.com/proxy/3000/",
        "//evil.com",
        "//evil.com/x",
        "///evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "\\/evil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        "\t/evil.com",
        " /x",
        "/x y",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:x",
        "ftp://example.com/",
        "https://good.com@evil.com",
        "https://example.com@evil.com/",
        "https://example.com:x@evil.com/",
        "https://evil.com\\@example.com",
        "https://evil.com#@example.com",
        "https://evil.com?@example.com",
        "https:example.com",
        "https:/example.com",
        "https:///example.com",
        "http://example.com.evil.com/",
        "https://example.com.",
        "https://exa%6dple.com/",
        "https://example.com:/",
        "https://ex ample.com/",
        "https://example..com/",
        "https://-example.com/",
        "https://example.com//evil.com",
        "https://example.com/%2F/evil.com",
        "/%5Cevil.com",
        "/%5cevil.com",
        "/%2Fevil.com",
        "/%2f%2fevil.com",
        "/caf\u00e9",
        "/\u2215evil.com",
        "/\x7f",
        "/\x00",
        "proxy/3000/",
        "?to=/x",
        "#x",
        "/" + "a" * MAX_TARGET_LENGTH,
    ],
)
def test_open_redirect_forms_are_refused(to: str) -> None:
    assert safe(to) == "/"


@given(st.text(max_size=60))
def test_result_is_the_input_or_root(to: str) -> None:
    result = safe(to)
    assert result in (to, "/")
    if result != "/":
        assert (result.startswith("/") and not result.startswith("//")) or (
            result.lower().startswith(("http://", "https://"))
        )


@given(st.text(alphabet="/\\:@.%5Cce \t", max_size=20))
def test_root_relative_result_never_leaves_the_origin(to: str) -> None:
    result = safe_redirect_target(to, allowed_host=lambda host: False)
    assert result == "/" or (result.startswith("/") and result[1:2] not in ("/", "\\"))


def test_allowed_host_gets_the_lowercased_authority_with_port() -> None:
    seen: list[str] = []

    def allowed(host: str) -> bool:
        seen.append(host)
        return False

    safe_redirect_target("https://Code.Example.COM:8443/x", allowed_host=allowed)
    assert seen == ["code.example.com:8443"]

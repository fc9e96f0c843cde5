"""The start page: every listening port at a glance (SPEC 13)."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from portproxy.web.home import (
    content_security_policy,
    render_home,
)
from tests.support import get, parse_response, raw_request

if TYPE_CHECKING:
    from tests.conftest import RunningProxy

NONCE = "n0nce-Value_123"


def entry(port: int = 3000, **fields: Any) -> dict[str, Any]:
    """A ports-API entry with every field known, overridden by C{fields}."""
    base: dict[str, Any] = {
        "port": port,
        "addresses": [{"address": "127.0.0.1", "family": "IPv4"}],
        "pid": 4242,
        "process": "node",
        "command": ["node", "server.js", "--port", str(port)],
        "cwd": "/home/dev/app",
        "user": "dev",
        "http": True,
        "title": "My app",
        "label": "frontend",
        "access": "private",
        "self": False,
        "urls": {
            "proxy": f"./proxy/{port}/",
            "absproxy": f"./absproxy/{port}/",
            "domain": None,
        },
        "warnings": [],
    }
    base.update(fields)
    return base


def page_of(*entries: dict[str, Any]) -> str:
    return render_home(list(entries), csp_nonce=NONCE).decode("utf-8")


def markup(page: str) -> str:
    """The page without its script (whose code names the same fields)."""
    return page.split("<script", 1)[0]


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'"


def test_every_value_is_escaped_including_a_hostile_title_command_and_cwd() -> None:
    page = page_of(
        entry(
            title=HOSTILE,
            command=HOSTILE,
            cwd=HOSTILE,
            user=HOSTILE,
            process=HOSTILE,
            label=HOSTILE,
            pid=HOSTILE,
            addresses=[{"address": HOSTILE, "family": HOSTILE}],
            warnings=[HOSTILE],
            urls={"proxy": HOSTILE, "absproxy": HOSTILE, "domain": HOSTILE},
        )
    )
    assert "<img" not in page
    assert "alert(1)</script>" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    # The command's full text also sits in an attribute: its quotes are escaped there.
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x' in page


class _Tags(HTMLParser):
    """The page's element structure: every start tag with its attribute names."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, tuple[str, ...]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(name for name, _ in attrs)))


def _structure(page: str) -> list[tuple[str, tuple[str, ...]]]:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser.tags


@given(text=st.text(min_size=1, max_size=40))
def test_no_text_from_an_app_adds_an_element_or_an_attribute(text: str) -> None:
    """Whatever a title, command, cwd or label says, the page has the same elements."""
    plain = page_of(entry())
    hostile = page_of(
        entry(title=text, command=text, cwd=text, label=text, user=text, process=text)
    )
    assert _structure(hostile) == _structure(plain)


def test_the_policy_allows_only_the_pages_nonce_and_this_origin() -> None:
    policy = content_security_policy(NONCE).decode()
    assert f"script-src 'nonce-{NONCE}'" in policy
    assert f"style-src 'nonce-{NONCE}'" in policy
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "base-uri 'none'" in policy
    assert "unsafe" not in policy
    page = page_of(entry())
    assert page.count("<script") == 1 and f'<script nonce="{NONCE}">' in page
    assert page.count("<style") == 1 and f'<style nonce="{NONCE}">' in page
    assert " style=" not in page  # an inline style attribute would be blocked


def test_the_page_loads_nothing_from_elsewhere_and_its_urls_are_relative() -> None:
    page = page_of(entry(), entry(3001, urls=None))
    assert not re.search(r"\bsrc=", page)
    assert "@import" not in page and "url(" not in page
    urls = re.findall(r'(?:href|action|data-events|data-root)="([^"]*)"', page)
    assert urls and all(u.startswith("./") for u in urls), urls
    assert 'data-events="./.portproxy/api/ports/events"' in page
    assert 'action="./logout"' in page and 'method="post"' in page


def test_each_port_links_every_route_with_a_copy_button() -> None:
    page = page_of(
        entry(
            80,
            urls={
                "proxy": "./proxy/80/",
                "absproxy": "./absproxy/80/",
                "domain": "http://80.localhost:8080/",
            },
        )
    )
    assert '<a href="./proxy/80/">/proxy/80/</a>' in page
    assert '<a href="./absproxy/80/">/absproxy/80/</a>' in page
    assert '<a href="http://80.localhost:8080/">http://80.localhost:8080/</a>' in page
    # Copy buttons need the script: hidden until it runs.
    assert page.count('<button type="button" class="copy" hidden>Copy</button>') == 3


def test_a_port_shows_what_identifies_it() -> None:
    page = page_of(entry())
    for shown in (
        ">3000<",
        "node ",
        "pid 4242",
        "node server.js --port 3000",  # the argv, as a shell would read it
        "/home/dev/app",
        ">dev<",
        "127.0.0.1 (IPv4)",
        "Yes: My app",
        '<span class="label">frontend</span>',
        '<span class="badge private">private</span>',
    ):
        assert shown in page, shown
    quoted = page_of(entry(command=["python3", "-c", "print('a b')"]))
    assert "python3 -c &#x27;print(&#x27;&quot;&#x27;&quot;&#x27;a b&#x27;" in quoted


def test_unknown_values_are_left_blank() -> None:
    page = page_of(
        entry(
            pid=None,
            process=None,
            command=None,
            cwd=None,
            user=None,
            http=None,
            title=None,
            label=None,
            addresses=[],
        )
    )
    assert "None" not in markup(page)
    assert "Not checked yet" in markup(page)
    for label in ("Command", "Directory", "User", "Listens on", 'class="proc"'):
        assert label not in markup(page)


def test_the_proxys_own_listener_is_marked_and_not_linked() -> None:
    page = markup(page_of(entry(8080, self=True, urls=None)))
    assert '<span class="badge self">this proxy</span>' in page
    assert "<a " not in page and 'class="copy"' not in page
    assert 'class="sharing"' not in page


def test_bind_warnings_are_shown_with_the_port() -> None:
    page = page_of(
        entry(
            addresses=[{"address": "0.0.0.0", "family": "IPv4"}],
            warnings=["bound to 0.0.0.0: reachable without portproxy"],
        )
    )
    assert (
        '<ul class="warnings"><li>bound to 0.0.0.0: reachable without portproxy</li></ul>'
        in page
    )
    assert "0.0.0.0 (IPv4)" in page


def test_each_port_has_a_sharing_placeholder_with_its_access_level() -> None:
    page = page_of(entry(3000), entry(3001, access="public"))
    assert '<div class="sharing" data-port="3000" data-access="private">' in page
    assert '<div class="sharing" data-port="3001" data-access="public">' in page
    assert '<span class="badge public">public</span>' in page
    assert "Public: anyone who can reach portproxy" in page
    custom = render_home(
        [entry()], csp_nonce=NONCE, sharing=lambda e: f"<b>{e['port']}</b>"
    ).decode()
    assert (
        '<div class="sharing" data-port="3000" data-access="private"><b>3000</b>' in custom
    )


def test_an_empty_list_and_an_unknown_one_say_so() -> None:
    assert "No app is listening" in render_home([], csp_nonce=NONCE).decode()
    assert "does not tell" in render_home(None, csp_nonce=NONCE).decode()
    assert 'id="empty" hidden' in page_of(entry())


def _nonce(headers: dict[bytes, list[bytes]]) -> str:
    policy = headers[b"content-security-policy"][0].decode()
    found = re.search(r"script-src 'nonce-([^']+)'", policy)
    assert found is not None, policy
    return found.group(1)


@pytest_twisted.ensureDeferred
async def test_start_page_lists_a_listening_upstream(
    upstream: Callable[..., Any], proxy: RunningProxy
) -> None:
    up = upstream()
    status, headers, body = parse_response(await raw_request(proxy.port, get(b"/")))
    assert status == 200
    assert b'href="./proxy/%d/"' % up.port in body
    assert b'data-events="./.portproxy/api/ports/events"' in body
    # Its own listener is listed as such, never linked.
    assert b'href="./proxy/%d/"' % proxy.port not in body
    assert (
        b'<li class="port" data-port="%d"><div class="top"><span class="num">%d</span>'
        % (
            proxy.port,
            proxy.port,
        )
        in body
    )
    assert b'<span class="badge self">this proxy</span>' in body
    assert headers[b"x-frame-options"] == [b"DENY"]
    assert headers[b"x-content-type-options"] == [b"nosniff"]
    assert headers[b"referrer-policy"] == [b"no-referrer"]
    assert headers[b"cache-control"] == [b"no-store"]


@pytest_twisted.ensureDeferred
async def test_each_response_has_a_fresh_nonce_that_its_script_carries(
    proxy: RunningProxy,
) -> None:
    nonces = []
    for _ in range(2):
        _, headers, body = parse_response(await raw_request(proxy.port, get(b"/")))
        nonce = _nonce(headers)
        assert b'<script nonce="%s">' % nonce.encode() in body
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


@pytest_twisted.ensureDeferred
async def test_start_page_needs_a_session(
    make_proxy: Callable[..., RunningProxy], tmp_path: Path
) -> None:
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    status, headers, _ = parse_response(
        await raw_request(proxy.port, get(b"/", headers=b"Accept: text/html\r\n"))
    )
    # Relative to the page (the sign-in redirect survives a prefix).
    assert status == 302 and headers[b"location"] == [b"./login?to=/"]
    # An absolute-form request line comes back to the same page, not to its URL.
    absolute = (
        b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Accept: text/html\r\nConnection: close\r\n\r\n"
    )
    status, headers, _ = parse_response(await raw_request(proxy.port, absolute))
    assert status == 302 and headers[b"location"] == [b"./login?to=/"]
    status, _, body = parse_response(await raw_request(proxy.port, get(b"/")))
    assert status == 401
    assert b"ports" not in body.lower() or b"data-port" not in body

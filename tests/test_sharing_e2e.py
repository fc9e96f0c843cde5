"""Sharing ports end to end (SPEC 12): real sockets, a real portproxy with a password.

Every refusal of the issue's list is here: another port, outside the prefix (also by
dot and encoded tricks), the home page and the API with a grant or a token, revoked
and expired links and tokens (after a restart and across two instances sharing the
data dir, which is what C{--workers 2} runs), a password change; and what must pass:
the token and the grant cookie never reach the app, the app's own Authorization does.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from portproxy.sharing.state import SharingState
from tests.support import Recorder, get, get_reactor, parse_response, raw_request
from tests.test_websocket_relay import (  # noqa: F401 (fixtures used by name)
    Browser,
    app,
    browsers,
    live,
    next_message,
    open_ws,
)

PASSWORD = "sharing password 1"
HTML = b"Accept: text/html\r\n"


class OffsetClock:
    """The reactor's time plus an offset the test moves forward (expiry without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def seconds(self) -> float:
        return float(get_reactor().seconds()) + self.offset


def _start(make_proxy: Any, data_dir: Path, password: str = PASSWORD, **fields: Any) -> Any:
    return make_proxy(
        environ={"PASSWORD": password},
        auth="password",
        data_dir=str(data_dir),
        proxy_domains=("example.test",),
        **fields,
    )


def _state(proxy: Any) -> SharingState:
    state = proxy.instance.sharing
    assert isinstance(state, SharingState)
    return state


async def _ask(
    proxy: Any,
    path: bytes,
    headers: bytes = b"",
    *,
    host: bytes = b"127.0.0.1",
    method: bytes = b"GET",
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    request = get(path, host=host, headers=headers).replace(b"GET ", method + b" ", 1)
    return parse_response(await raw_request(proxy.port, request))


def _session(proxy: Any) -> bytes:
    auth = proxy.instance.root.auth
    value = auth.signer.issue(get_reactor().seconds())
    return b"Cookie: %s=%s\r\n" % (auth.cookie_name, value.encode("ascii"))


async def _open_link(
    proxy: Any, link: str, host: bytes = b"127.0.0.1"
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    return await _ask(proxy, b"/.portproxy/share/" + link.encode("ascii"), HTML, host=host)


def _grant_header(headers: dict[bytes, list[bytes]]) -> bytes:
    (set_cookie,) = headers[b"set-cookie"]
    return b"Cookie: " + set_cookie.split(b";")[0] + b"\r\n"


# -- tokens ----------------------------------------------------------------------------


def _presentations(secret: str) -> dict[str, bytes]:
    basic = base64.b64encode(b"ci:" + secret.encode()).decode()
    return {
        "bearer": f"Authorization: Bearer {secret}\r\n".encode(),
        "basic": f"Authorization: Basic {basic}\r\n".encode(),
        "header": f"X-Portproxy-Token: {secret}\r\n".encode(),
    }


@pytest.mark.parametrize("form", ["bearer", "basic", "header"])
@pytest_twisted.ensureDeferred
async def test_a_token_opens_its_port_and_never_reaches_the_app(
    make_proxy: Any, upstream: Any, tmp_path: Path, form: str
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, secret = _state(proxy).create_token(name="ci", ports=[up.port])
    status, _, body = await _ask(
        proxy, b"/proxy/%d/x" % up.port, _presentations(secret)[form]
    )
    assert (status, body) == (200, b"ok /x")
    assert rec.header(0, b"authorization") == []
    assert rec.header(0, b"x-portproxy-token") == []
    assert secret.encode() not in repr(rec.requests[0]["headers"]).encode()


@pytest_twisted.ensureDeferred
async def test_the_apps_own_authorization_passes_untouched_next_to_a_token(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, secret = _state(proxy).create_token(name="ci", ports=[up.port])
    own = b"Authorization: Basic YXBwOmFwcC1wYXNzd29yZA==\r\n"
    status, _, _ = await _ask(
        proxy, b"/proxy/%d/" % up.port, own + f"X-Portproxy-Token: {secret}\r\n".encode()
    )
    assert status == 200
    assert rec.header(0, b"authorization") == [b"Basic YXBwOmFwcC1wYXNzd29yZA=="]
    # And for a signed-in browser: an Authorization that is not ours is the app's.
    status, _, _ = await _ask(
        proxy, b"/proxy/%d/" % up.port, _session(proxy) + b"Authorization: Bearer abc\r\n"
    )
    assert status == 200
    assert rec.header(1, b"authorization") == [b"Bearer abc"]


@pytest_twisted.ensureDeferred
async def test_an_authorization_that_is_not_a_token_gets_the_usual_401(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    for header in (b"Authorization: Bearer abc\r\n", b"Authorization: Bearer ppt_\r\n"):
        status, _, _ = await _ask(proxy, b"/proxy/%d/" % up.port, header)
        assert status == 401
    assert rec.requests == []


@pytest.mark.parametrize(
    "path, method",
    [
        (b"/proxy/{other}/", b"GET"),  # another port
        (b"/proxy/{p}/apix", b"GET"),  # outside the prefix, not on a segment boundary
        (b"/proxy/{p}/other", b"GET"),
        (b"/proxy/{p}/api/%2e%2e/admin", b"GET"),  # encoded dot segment
        (b"/proxy/{p}/api/%2E%2E%2Fadmin", b"GET"),
        (b"/proxy/{p}/api/../admin", b"GET"),  # raw dot segment
        (b"/proxy/{p}/api%2fx", b"GET"),
        (b"/proxy/{p}/api/x", b"DELETE"),  # a method it does not allow
        (b"/absproxy/{p}/admin", b"GET"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_token_out_of_scope_gets_403_and_the_app_sees_nothing(
    make_proxy: Any, upstream: Any, tmp_path: Path, path: bytes, method: bytes
) -> None:
    up = upstream(rec := Recorder())
    other = upstream(other_rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, secret = _state(proxy).create_token(
        name="ci", ports=[up.port], path="/api", methods=["GET", "POST"]
    )
    target = path.replace(b"{p}", b"%d" % up.port).replace(b"{other}", b"%d" % other.port)
    status, _, _ = await _ask(
        proxy, target, f"Authorization: Bearer {secret}\r\n".encode(), method=method
    )
    assert status == 403
    assert rec.requests == [] and other_rec.requests == []
    # In scope it works, on every route.
    for ok in (b"/proxy/%d/api" % up.port, b"/absproxy/%d/api/x?y=1" % up.port):
        status, _, _ = await _ask(proxy, ok, f"Authorization: Bearer {secret}\r\n".encode())
        assert status == 200


@pytest.mark.parametrize(
    "path, expected", [(b"/", 401), (b"/.portproxy/api/ports", 401), (b"/logout", 302)]
)
@pytest_twisted.ensureDeferred
async def test_a_token_never_opens_the_home_page_or_the_api(
    make_proxy: Any, upstream: Any, tmp_path: Path, path: bytes, expected: int
) -> None:
    up = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, secret = _state(proxy).create_token(name="ci", ports=[up.port])
    status, _, body = await _ask(
        proxy, path, f"Authorization: Bearer {secret}\r\n".encode()
    )
    assert status in (expected, 302, 401)
    assert b"ok " not in body
    if path == b"/":
        status, headers, _ = await _ask(
            proxy, path, HTML + f"Authorization: Bearer {secret}\r\n".encode()
        )
        assert status == 302 and b"login" in headers[b"location"][0]


@pytest_twisted.ensureDeferred
async def test_a_revoked_or_expired_token_gets_401_also_after_a_restart(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path)
    state = _state(proxy)
    token, secret = state.create_token(name="ci", ports=[up.port])
    _, short = state.create_token(name="short", ports=[up.port], ttl=60)
    bearer = f"Authorization: Bearer {secret}\r\n".encode()
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, bearer))[0] == 200
    assert state.revoke_token(token.id) is True
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, bearer))[0] == 401
    state.clock = clock = OffsetClock()
    short_bearer = f"Authorization: Bearer {short}\r\n".encode()
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, short_bearer))[0] == 200
    clock.offset = 61
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, short_bearer))[0] == 401
    # A new instance on the same data dir: still revoked.
    again = _start(make_proxy, tmp_path)
    assert (await _ask(again, b"/proxy/%d/" % up.port, bearer))[0] == 401


@pytest_twisted.ensureDeferred
async def test_a_tokens_last_use_is_recorded(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path)
    state = _state(proxy)
    token, secret = state.create_token(name="ci", ports=[up.port])
    assert token.last_used is None
    await _ask(proxy, b"/proxy/%d/" % up.port, f"X-Portproxy-Token: {secret}\r\n".encode())
    (listed,) = state.tokens()
    assert listed.last_used is not None
    stored = json.loads((tmp_path / "sharing.json").read_text())
    assert stored["tokens"][0]["last_used"] == listed.last_used
    assert secret not in (tmp_path / "sharing.json").read_text()


# -- share links -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_share_link_sets_a_grant_cookie_for_its_port_and_redirects_there(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, link = _state(proxy).create_share(port=up.port, path="/webhook", ttl=3600)
    status, headers, _ = await _open_link(proxy, link)
    assert status == 302
    assert headers[b"location"] == [b"./../../proxy/%d/webhook" % up.port]
    (set_cookie,) = headers[b"set-cookie"]
    attributes = [a.strip() for a in set_cookie.split(b";")]
    assert attributes[0].startswith(b"portproxy-grant-%d=" % up.port)
    assert b"HttpOnly" in attributes and b"SameSite=Lax" in attributes
    assert b"Path=/proxy/%d" % up.port in attributes
    max_age = [a for a in attributes if a.startswith(b"Max-Age=")]
    assert 3590 <= int(max_age[0].split(b"=")[1]) <= 3600
    assert b"Secure" not in attributes  # plain HTTP here
    grant = _grant_header(headers)
    other_cookies = b'Cookie: theme=dark; b="x y"\r\n'
    status, _, body = await _ask(
        proxy, b"/proxy/%d/webhook/github?x=1" % up.port, grant + other_cookies
    )
    assert (status, body) == (200, b"ok /webhook/github?x=1")
    # The app sees its own cookies byte for byte, never the grant.
    assert rec.header(0, b"cookie") == [b'theme=dark; b="x y"']


@pytest.mark.parametrize(
    "path",
    [
        b"/proxy/{p}/webhookx",
        b"/proxy/{p}/",
        b"/proxy/{p}/webhook/%2e%2e/admin",
        b"/proxy/{p}/webhook/..%2fadmin",
        b"/proxy/{p}/webhook/./../admin",
        b"/proxy/{p}/webhook\\..\\admin",
        # Review 15: read as /admin by Tomcat/Jetty/Spring or a double decoder.
        b"/proxy/{p}/webhook/..;/admin",
        b"/proxy/{p}/webhook/%252e%252e/admin",
        b"/proxy/{p}/webhook/%c0%ae%c0%ae/admin",
        b"/absproxy/{p}/webhook/..;/admin",
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_grant_outside_its_prefix_gets_403(
    make_proxy: Any, upstream: Any, tmp_path: Path, path: bytes
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, link = _state(proxy).create_share(port=up.port, path="/webhook")
    grant = _grant_header((await _open_link(proxy, link))[1])
    status, _, _ = await _ask(proxy, path.replace(b"{p}", b"%d" % up.port), grant)
    assert status == 403
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_a_grant_never_opens_another_port_the_home_page_or_the_api(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    other = upstream(other_rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, link = _state(proxy).create_share(port=up.port)
    headers = (await _open_link(proxy, link))[1]
    name_value = headers[b"set-cookie"][0].split(b";")[0]
    grant = b"Cookie: " + name_value + b"\r\n"
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, grant))[0] == 200
    # The browser would not send it elsewhere (Path); sent anyway, it opens nothing.
    for path in (b"/proxy/%d/" % other.port, b"/absproxy/%d/" % other.port):
        assert (await _ask(proxy, path, grant))[0] == 401
    # Renamed for the other port, its MAC (bound to the port) does not check.
    value = name_value.split(b"=", 1)[1]
    forged = b"Cookie: portproxy-grant-%d=%s\r\n" % (other.port, value)
    assert (await _ask(proxy, b"/proxy/%d/" % other.port, forged))[0] == 401
    assert other_rec.requests == []
    for path in (b"/", b"/.portproxy/api/ports", b"/.portproxy/api/shares"):
        status, _, body = await _ask(proxy, path, grant)
        assert status == 401, path
    status, headers, _ = await _ask(proxy, b"/", grant + HTML)
    assert status == 302 and b"login" in headers[b"location"][0]


@pytest_twisted.ensureDeferred
async def test_a_grant_allows_only_its_methods(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, link = _state(proxy).create_share(port=up.port, methods=["POST"])
    grant = _grant_header((await _open_link(proxy, link))[1])
    post = grant + b"Content-Length: 0\r\n"
    assert (await _ask(proxy, b"/proxy/%d/hook" % up.port, post, method=b"POST"))[0] == 200
    assert (await _ask(proxy, b"/proxy/%d/hook" % up.port, grant))[0] == 403
    assert [r["method"] for r in rec.requests] == [b"POST"]


@pytest_twisted.ensureDeferred
async def test_bad_revoked_and_expired_links_are_refused_without_a_cookie(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path)
    state = _state(proxy)
    share, link = state.create_share(port=up.port, ttl=60)
    forged = link[:-2] + ("AA" if link[-2:] != "AA" else "BB")
    for bad in (forged, "nope", link + "x", "0123456789abcdef.x"):
        status, headers, _ = await _open_link(proxy, bad)
        assert status == 403 and b"set-cookie" not in headers
    grant = _grant_header((await _open_link(proxy, link))[1])
    state.clock = clock = OffsetClock()
    clock.offset = 61
    status, headers, _ = await _open_link(proxy, link)
    assert status == 410 and b"set-cookie" not in headers
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, grant))[0] == 401
    clock.offset = 0
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, grant))[0] == 200
    assert state.revoke_share(share.id) is True
    status, headers, _ = await _open_link(proxy, link)
    assert status == 410 and b"set-cookie" not in headers
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, grant))[0] == 401
    status, _, _ = await _ask(proxy, b"/.portproxy/share/" + link.encode(), method=b"POST")
    assert status == 405


@pytest_twisted.ensureDeferred
async def test_a_revoked_link_stops_on_another_instance_within_two_seconds(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    """Two instances on one data dir, as C{--workers 2} runs them."""
    up = upstream(Recorder())
    first = _start(make_proxy, tmp_path)
    second = _start(make_proxy, tmp_path)
    share, link = _state(first).create_share(port=up.port)
    token, secret = _state(first).create_token(name="ci", ports=[up.port])
    bearer = f"Authorization: Bearer {secret}\r\n".encode()
    await deferLater(get_reactor(), 1.1, lambda: None)
    # Made on the first, opened on the second: the link and its cookie work there.
    grant = _grant_header((await _open_link(second, link))[1])
    assert (await _ask(second, b"/proxy/%d/" % up.port, grant))[0] == 200
    assert (await _ask(second, b"/proxy/%d/" % up.port, bearer))[0] == 200
    _state(first).revoke_share(share.id)
    _state(first).revoke_token(token.id)
    await deferLater(get_reactor(), 1.1, lambda: None)
    assert (await _ask(second, b"/proxy/%d/" % up.port, grant))[0] == 401
    assert (await _ask(second, b"/proxy/%d/" % up.port, bearer))[0] == 401
    # And after a restart.
    third = _start(make_proxy, tmp_path)
    assert (await _ask(third, b"/proxy/%d/" % up.port, grant))[0] == 401
    assert (await _open_link(third, link))[0] == 410


@pytest_twisted.ensureDeferred
async def test_a_password_change_revokes_every_link_and_token(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    before = _start(make_proxy, tmp_path)
    _, link = _state(before).create_share(port=up.port)
    _, secret = _state(before).create_token(name="ci", ports=[up.port])
    grant = _grant_header((await _open_link(before, link))[1])
    after = _start(make_proxy, tmp_path, password="a new password")
    assert (await _open_link(after, link))[0] == 403
    assert (await _ask(after, b"/proxy/%d/" % up.port, grant))[0] == 401
    bearer = f"Authorization: Bearer {secret}\r\n".encode()
    assert (await _ask(after, b"/proxy/%d/" % up.port, bearer))[0] == 401


@pytest_twisted.ensureDeferred
async def test_a_domain_link_is_opened_on_the_ports_own_host(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, link = _state(proxy).create_share(port=up.port, path="/app", route="domain")
    host = b"%d.example.test" % up.port
    status, _, _ = await _open_link(proxy, link)  # the main host cannot set its cookie
    assert status == 404
    status, _, _ = await _open_link(proxy, link, host=b"1.example.test")
    assert status == 404
    status, headers, _ = await _open_link(proxy, link, host=host)
    assert status == 302 and headers[b"location"] == [b"./../../app"]
    attributes = [a.strip() for a in headers[b"set-cookie"][0].split(b";")]
    assert b"Path=/" in attributes and not any(a.startswith(b"Domain") for a in attributes)
    grant = _grant_header(headers)
    status, _, body = await _ask(proxy, b"/app/page", grant, host=host)
    assert (status, body) == (200, b"ok /app/page")
    assert rec.header(0, b"cookie") == []
    assert (await _ask(proxy, b"/other", grant, host=host))[0] == 403


@pytest_twisted.ensureDeferred
async def test_an_app_cannot_plant_a_grant_cookie(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    def plant(request: Any) -> bytes:
        for name in (b"portproxy-grant-1", b"PortProxy-Grant-2", b"mine"):
            request.responseHeaders.addRawHeader(b"set-cookie", name + b"=x; Path=/")
        return b"planted"

    up = upstream(Recorder(handler=plant))
    proxy = _start(make_proxy, tmp_path)
    _, headers, _ = await _ask(proxy, b"/proxy/%d/" % up.port, _session(proxy))
    assert headers[b"set-cookie"] == [b"mine=x; Path=/proxy/%d/" % up.port]


# -- public ports, WebSocket ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_public_port_needs_no_sign_in_on_any_route_and_others_still_do(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    other = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path, public_ports=(up.port,))
    for path in (b"/proxy/%d/x" % up.port, b"/absproxy/%d/x" % up.port):
        assert (await _ask(proxy, path))[0] == 200
    assert (await _ask(proxy, b"/x", host=b"%d.example.test" % up.port))[0] == 200
    assert (await _ask(proxy, b"/proxy/%d/x" % other.port))[0] == 401
    # Made private at run time (the home page / API): the next request needs sign-in.
    _state(proxy).set_port(up.port, access="private")
    assert (await _ask(proxy, b"/proxy/%d/x" % up.port))[0] == 401
    _state(proxy).set_port(other.port, access="public")
    assert (await _ask(proxy, b"/proxy/%d/x" % other.port))[0] == 200


@pytest_twisted.ensureDeferred
async def test_websockets_open_on_a_public_port_with_a_grant_or_a_token(
    make_proxy: Any,
    app: Any,  # noqa: F811 (the relay tests' fixture)
    browsers: list[Browser],  # noqa: F811
    upstream: Any,
    tmp_path: Path,
) -> None:
    proxy = _start(make_proxy, tmp_path)
    state = _state(proxy)
    # Signed out and nothing shared: refused.
    with pytest.raises(Exception, match="handshake failed"):
        await open_ws(browsers, proxy.port, f"/proxy/{app.port}/")
    _, link = state.create_share(port=app.port)
    grant = _grant_header((await _open_link(proxy, link))[1]).split(b": ", 1)[1].strip()
    browser = await open_ws(
        browsers, proxy.port, f"/proxy/{app.port}/", headers={"Cookie": grant.decode()}
    )
    browser.sendMessage(b"hello", isBinary=False)
    assert await next_message(browser) == (b"hello", False)
    assert "portproxy-grant" not in str(app.requests[-1].headers)
    _, secret = state.create_token(name="ws", ports=[app.port])
    browser = await open_ws(
        browsers,
        proxy.port,
        f"/proxy/{app.port}/",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert "authorization" not in app.requests[-1].headers
    state.set_port(app.port, access="public")
    browser = await open_ws(browsers, proxy.port, f"/absproxy/{app.port}/")
    browser.sendMessage(b"open", isBinary=False)
    assert await next_message(browser) == (b"open", False)


# -- the state file ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_corrupt_state_file_is_logged_and_treated_as_empty(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    from twisted.logger import ILogObserver, globalLogPublisher

    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        (tmp_path / "sharing.json").write_text("{not json")
        up = upstream(Recorder())
        proxy = _start(make_proxy, tmp_path)  # starts all the same
    finally:
        globalLogPublisher.removeObserver(observer)
    assert any("corrupt" in str(e.get("log_format", "")) for e in events)
    assert (await _ask(proxy, b"/proxy/%d/" % up.port))[0] == 401
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, _session(proxy)))[0] == 200
    _state(proxy).create_token(name="ci", ports=[up.port])
    assert os.stat(tmp_path / "sharing.json").st_mode & 0o777 == 0o600
    assert (tmp_path / "sharing.json.corrupt").read_text() == "{not json"


@pytest_twisted.ensureDeferred
async def test_behind_a_trusted_front_proxy_the_grant_cookie_follows_its_prefix_and_scheme(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    from portproxy.config import parse_trusted_proxies

    up = upstream(Recorder())
    proxy = _start(
        make_proxy, tmp_path, trusted_proxies=parse_trusted_proxies(["127.0.0.1/32"])
    )
    _, link = _state(proxy).create_share(port=up.port)
    front = b"X-Forwarded-Prefix: /pp\r\nX-Forwarded-Proto: https\r\n"
    status, headers, _ = await _ask(proxy, b"/.portproxy/share/" + link.encode(), front)
    assert status == 302
    # The browser is at /pp/.portproxy/share/...: relative, it lands on /pp/proxy/<port>/.
    assert headers[b"location"] == [b"./../../proxy/%d/" % up.port]
    attributes = [a.strip() for a in headers[b"set-cookie"][0].split(b";")]
    assert b"Path=/pp/proxy/%d" % up.port in attributes and b"Secure" in attributes


@pytest_twisted.ensureDeferred
async def test_a_streamed_upload_with_a_token_reaches_the_app_without_it(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    """A large body streams to the app before the request is rendered: the token must
    be gone by then too."""
    up = upstream(rec := Recorder(handler=lambda request: b"got"))
    proxy = _start(make_proxy, tmp_path)
    _, secret = _state(proxy).create_token(name="ci", ports=[up.port], methods=["POST"])
    body = b"x" * (256 * 1024)
    request = (
        b"POST /proxy/%d/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
        % (up.port, secret.encode(), len(body), body)
    )
    status, _, answer = parse_response(await raw_request(proxy.port, request))
    assert (status, answer) == (200, b"got")
    assert rec.requests[0]["body"] == body
    assert rec.header(0, b"authorization") == []


# -- review 15 -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["bearer", "basic"])
@pytest_twisted.ensureDeferred
async def test_a_token_in_authorization_never_reaches_an_app_on_a_public_port(
    make_proxy: Any, upstream: Any, tmp_path: Path, form: str
) -> None:
    up = upstream(rec := Recorder())
    other = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path, public_ports=(up.port,))
    # A token for another port, sent by a client of the public app: the app must not
    # get it (it could replay it against the private port).
    _, secret = _state(proxy).create_token(name="ci", ports=[other.port])
    for path in (b"/proxy/%d/x" % up.port, b"/absproxy/%d/x" % up.port):
        status, _, _ = await _ask(proxy, path, _presentations(secret)[form])
        assert status == 200
    assert (
        await _ask(
            proxy, b"/x", _presentations(secret)[form], host=b"%d.example.test" % up.port
        )
    )[0] == 200
    for i in range(3):
        assert rec.header(i, b"authorization") == []
        assert secret.encode() not in repr(rec.requests[i]["headers"]).encode()


@pytest.mark.parametrize("form", ["bearer", "basic"])
@pytest_twisted.ensureDeferred
async def test_a_token_in_authorization_never_reaches_the_app_of_a_signed_in_client(
    make_proxy: Any, upstream: Any, tmp_path: Path, form: str
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, secret = _state(proxy).create_token(name="ci", ports=[up.port])
    unknown = "ppt_" + "x" * 43  # token-shaped, valid or not: never the app's
    for token in (secret, unknown):
        headers = _session(proxy) + _presentations(token)[form]
        assert (await _ask(proxy, b"/proxy/%d/x" % up.port, headers))[0] == 200
    assert rec.header(0, b"authorization") == [] and rec.header(1, b"authorization") == []


@pytest_twisted.ensureDeferred
async def test_a_token_in_authorization_never_reaches_the_app_next_to_a_grant(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(rec := Recorder())
    other = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path)
    state = _state(proxy)
    _, secret = state.create_token(name="ci", ports=[other.port], path="/only")
    _, link = state.create_share(port=up.port)
    grant = _grant_header((await _open_link(proxy, link))[1])
    unknown = _presentations("ppt_" + "y" * 43)["bearer"]
    assert (await _ask(proxy, b"/proxy/%d/x" % up.port, grant + unknown))[0] == 200
    assert rec.header(0, b"authorization") == []


@pytest_twisted.ensureDeferred
async def test_junk_grant_cookies_planted_before_the_real_one_do_not_lock_it_out(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    up = upstream(Recorder())
    proxy = _start(make_proxy, tmp_path)
    _, link = _state(proxy).create_share(port=up.port)
    real = _grant_header((await _open_link(proxy, link))[1])[len(b"Cookie: ") : -2]
    name = real.split(b"=", 1)[0]
    junk = [b"junk%d" % i for i in range(12)]
    junk += [b"0123456789abcdef.%s" % (b"A" * 22) for _ in range(12)]  # forged MACs
    cookie = b"; ".join([name + b"=" + value for value in junk] + [real])
    assert (await _ask(proxy, b"/proxy/%d/" % up.port, b"Cookie: " + cookie + b"\r\n"))[
        0
    ] == 200


@pytest.mark.parametrize("limited", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_method_limited_grant_or_token_strips_method_overrides(
    make_proxy: Any, upstream: Any, tmp_path: Path, limited: bool
) -> None:
    up = upstream(rec := Recorder())
    proxy = _start(make_proxy, tmp_path)
    state = _state(proxy)
    methods = ["GET"] if limited else None
    _, link = state.create_share(port=up.port, methods=methods)
    _, secret = state.create_token(name="ro", ports=[up.port], methods=methods)
    overrides = (
        b"X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\n"
        b"X-Method-Override: DELETE\r\n"
    )
    grant = _grant_header((await _open_link(proxy, link))[1])
    token = _presentations(secret)["header"]
    for i, headers in enumerate((grant, token)):
        assert (await _ask(proxy, b"/proxy/%d/x" % up.port, headers + overrides))[0] == 200
        for name in (b"x-http-method-override", b"x-http-method", b"x-method-override"):
            assert rec.header(i, name) == ([] if limited else [b"DELETE"])


@pytest_twisted.ensureDeferred
async def test_a_read_only_grant_or_token_cannot_open_a_websocket(
    make_proxy: Any,
    app: Any,  # noqa: F811 (the relay tests' fixture)
    browsers: list[Browser],  # noqa: F811
    tmp_path: Path,
) -> None:
    proxy = _start(make_proxy, tmp_path)
    state = _state(proxy)
    _, link = state.create_share(port=app.port, methods=["GET"])
    grant = _grant_header((await _open_link(proxy, link))[1]).split(b": ", 1)[1].strip()
    with pytest.raises(Exception, match="handshake failed"):
        await open_ws(
            browsers, proxy.port, f"/proxy/{app.port}/", headers={"Cookie": grant.decode()}
        )
    _, secret = state.create_token(name="ro", ports=[app.port], methods=["GET", "POST"])
    with pytest.raises(Exception, match="handshake failed"):
        await open_ws(
            browsers,
            proxy.port,
            f"/proxy/{app.port}/",
            headers={"Authorization": f"Bearer {secret}"},
        )
    # The same HTTP GET is let in: only the upgrade is refused.
    assert (await _ask(proxy, b"/proxy/%d/" % app.port, b"Cookie: " + grant + b"\r\n"))[
        0
    ] != 403

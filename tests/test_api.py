"""The gate of the JSON API: session only, main host only, no cross-site calls."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from portproxy.auth import print_auth_cookie
from portproxy.config import Config
from tests.support import parse_response, raw_request

PASSWORD = "api-test-password"


@pytest.fixture
def api_proxy(make_proxy, tmp_path) -> Any:
    fields: dict[str, Any] = dict(
        auth="password", data_dir=str(tmp_path), proxy_domains=("{{port}}.dev.test",)
    )
    proxy = make_proxy(environ={"PASSWORD": PASSWORD}, **fields)
    seen: list[Any] = []

    def echo(request: Any, fields: Any, body: Any) -> tuple[int, Any]:
        seen.append((fields, body))
        return 201, {"got": body, "fields": dict(fields)}

    proxy.instance.api.add("GET", r"things", lambda r, f, b: (200, ["a"]))
    proxy.instance.api.add("POST", r"things/(?P<id>[a-z]+)", echo)
    proxy.cookie = print_auth_cookie(
        Config(**fields), environ={"PASSWORD": PASSWORD}
    ).encode()
    proxy.seen = seen
    return proxy


def _call(
    method: bytes,
    path: bytes,
    *,
    host: bytes = b"127.0.0.1",
    headers: bytes = b"",
    body=b"",
) -> bytes:
    return (
        b"%s /.portproxy/api/%s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (method, path, host, headers, len(body), body)
    )


async def _answer(proxy: Any, request: bytes) -> tuple[int, Any]:
    status, headers, body = parse_response(await raw_request(proxy.port, request))
    return status, json.loads(body) if body else None


@pytest_twisted.ensureDeferred
async def test_a_signed_in_call_reaches_its_handler(api_proxy) -> None:
    cookie = b"Cookie: " + api_proxy.cookie + b"\r\n"
    assert await _answer(api_proxy, _call(b"GET", b"things", headers=cookie)) == (
        200,
        ["a"],
    )
    status, payload = await _answer(
        api_proxy,
        _call(
            b"POST",
            b"things/abc",
            headers=cookie
            + b"Content-Type: application/json\r\nOrigin: http://127.0.0.1\r\n",
            body=b'{"x": 1}',
        ),
    )
    assert (status, payload) == (201, {"got": {"x": 1}, "fields": {"id": "abc"}})


@pytest_twisted.ensureDeferred
async def test_a_call_without_a_session_gets_401(api_proxy) -> None:
    assert await _answer(api_proxy, _call(b"GET", b"things")) == (
        401,
        {"error": "Unauthorized"},
    )
    forged = b"Cookie: portproxy-session=1.2.3.forged\r\n"
    assert (await _answer(api_proxy, _call(b"GET", b"things", headers=forged)))[0] == 401


@pytest_twisted.ensureDeferred
async def test_the_api_does_not_exist_on_a_proxy_host(api_proxy) -> None:
    # An app on a proxy host runs same-origin there with the user's cookies.
    cookie = b"Cookie: " + api_proxy.cookie + b"\r\n"
    status, _ = await _answer(
        api_proxy, _call(b"GET", b"things", host=b"5173.dev.test", headers=cookie)
    )
    assert status == 404
    assert api_proxy.seen == []


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"Content-Type: application/x-www-form-urlencoded\r\n", 415),
        (b"Content-Type: text/plain\r\n", 415),
        (b"", 415),
        (b"Content-Type: application/json\r\nOrigin: http://evil.example\r\n", 403),
        (b"Content-Type: application/json\r\nOrigin: http://5173.dev.test\r\n", 403),
        (b"Content-Type: application/json\r\nOrigin: https://127.0.0.1\r\n", 403),
        (b"Content-Type: application/json\r\nOrigin: null\r\n", 403),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_cross_site_state_change_is_refused(api_proxy, extra, status) -> None:
    cookie = b"Cookie: " + api_proxy.cookie + b"\r\n"
    request = _call(b"POST", b"things/abc", headers=cookie + extra, body=b'{"x": 1}')
    assert (await _answer(api_proxy, request))[0] == status
    assert api_proxy.seen == []


@pytest_twisted.ensureDeferred
async def test_bad_json_unknown_paths_and_methods_get_clear_errors(api_proxy) -> None:
    cookie = b"Cookie: " + api_proxy.cookie + b"\r\n"
    json_type = b"Content-Type: application/json\r\n"
    assert await _answer(
        api_proxy, _call(b"POST", b"things/abc", headers=cookie + json_type, body=b"{x")
    ) == (400, {"error": "Body is not valid JSON"})
    assert await _answer(api_proxy, _call(b"GET", b"nothing", headers=cookie)) == (
        404,
        {"error": "Not found"},
    )
    status, _ = await _answer(
        api_proxy, _call(b"DELETE", b"things", headers=cookie + json_type)
    )
    assert status == 405
    assert api_proxy.seen == []

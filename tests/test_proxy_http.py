"""End-to-end HTTP through /proxy and /absproxy: real sockets, real Twisted upstreams."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.web.resource import Resource

from tests.support import Recorder, get, parse_response, raw_request


@pytest_twisted.ensureDeferred
async def test_path_and_query_reach_the_upstream_byte_for_byte(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    raw = await raw_request(proxy.port, get(b"/proxy/%d/a%%2Fb//c?x=%%20&y=/z" % up.port))
    status, _, body = parse_response(raw)
    assert status == 200
    assert rec.requests[0]["uri"] == b"/a%2Fb//c?x=%20&y=/z"
    assert rec.requests[0]["version"] == b"HTTP/1.1"


@pytest_twisted.ensureDeferred
async def test_percent_encoded_non_ascii_path_is_forwarded_unchanged(
    upstream, proxy
) -> None:
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port, get(b"/proxy/%d/caf%%C3%%A9/%%E2%%9C%%93?q=%%C3%%A9" % up.port)
    )
    assert rec.requests[0]["uri"] == b"/caf%C3%A9/%E2%9C%93?q=%C3%A9"


@pytest_twisted.ensureDeferred
async def test_raw_utf8_request_line_is_refused_with_400(upstream, proxy) -> None:
    """RFC 9112 allows only ASCII in the request target; browsers percent-encode."""
    up = upstream(rec := Recorder())
    raw = await raw_request(proxy.port, get(b"/proxy/%d/caf\xc3\xa9" % up.port))
    assert parse_response(raw)[0] == 400
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_route_words_ignore_case(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    raw = await raw_request(proxy.port, get(b"/PROXY/%d/x" % up.port))
    assert parse_response(raw)[0] == 200
    assert rec.requests[0]["uri"] == b"/x"


@pytest_twisted.ensureDeferred
async def test_missing_slash_redirects_keeping_the_query(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    status, headers, _ = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d?a=1&b=%%20" % up.port))
    )
    assert status == 302
    # Relative, so that it stays under a front proxy's path prefix.
    assert headers[b"location"] == [b"./../proxy/%d/?a=1&b=%%20" % up.port]
    assert rec.requests == []


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"PATCH", b"DELETE"])
@pytest_twisted.ensureDeferred
async def test_missing_slash_keeps_the_method_with_308(upstream, proxy, method) -> None:
    up = upstream(rec := Recorder())
    request = (
        b"%s /proxy/%d?a=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nhi" % (method, up.port)
    )
    status, headers, _ = parse_response(await raw_request(proxy.port, request))
    assert status == 308
    assert headers[b"location"] == [b"./../proxy/%d/?a=1" % up.port]
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_absproxy_keeps_the_full_path(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    await raw_request(proxy.port, get(b"/absproxy/%d/x/y?z=1" % up.port))
    assert rec.requests[0]["uri"] == b"/absproxy/%d/x/y?z=1" % up.port


@pytest_twisted.ensureDeferred
async def test_absproxy_base_path_is_put_in_front(upstream, make_proxy) -> None:
    proxy = make_proxy(abs_proxy_base_path=b"/base/app")
    up = upstream(rec := Recorder())
    await raw_request(proxy.port, get(b"/absproxy/%d/x?z=1" % up.port))
    await raw_request(proxy.port, get(b"/proxy/%d/x" % up.port))
    assert rec.requests[0]["uri"] == b"/base/app/absproxy/%d/x?z=1" % up.port
    assert rec.requests[1]["uri"] == b"/x"


@pytest_twisted.ensureDeferred
async def test_invalid_ports_get_400(proxy) -> None:
    for label in (b"0", b"65536", b"99999", b"abc", b"080", b"%38080"):
        status, headers, body = parse_response(
            await raw_request(proxy.port, get(b"/proxy/%s/" % label))
        )
        assert status == 400, label
        assert json.loads(body) == {"error": "Invalid port"}
        assert headers[b"content-type"] == [b"application/json"]


@pytest_twisted.ensureDeferred
async def test_own_port_is_refused(proxy) -> None:
    status, _, _ = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/" % proxy.port))
    )
    assert status == 403
    status, _, _ = parse_response(
        await raw_request(proxy.port, get(b"/absproxy/%d/" % proxy.port))
    )
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_disabled_proxy_answers_403(upstream, make_proxy) -> None:
    proxy = make_proxy(disable_proxy=True)
    up = upstream(rec := Recorder())
    for path in (
        b"/proxy/%d/" % up.port,
        b"/absproxy/%d/" % up.port,
        b"/proxy/%d" % up.port,
    ):
        status, _, _ = parse_response(await raw_request(proxy.port, get(path)))
        assert status == 403
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_dead_port_gives_502_json_or_html(proxy) -> None:
    from twisted.web.server import Site

    from tests.support import listen

    # Find a port with nothing on it: bind, note, close.
    port_obj = listen(Site(Resource()))
    dead = port_obj.getHost().port
    await port_obj.stopListening()
    status, headers, body = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/" % dead))
    )
    assert status == 502
    assert json.loads(body)["error"] == f"Nothing is listening on port {dead}"
    status, headers, body = parse_response(
        await raw_request(
            proxy.port, get(b"/proxy/%d/<x>" % dead, headers=b"Accept: text/html\r\n")
        )
    )
    assert status == 502
    assert headers[b"content-type"][0].startswith(b"text/html")
    assert b"port %d" % dead in body


@pytest_twisted.ensureDeferred
async def test_error_pages_escape_echoed_values() -> None:
    from portproxy.http.errorpages import error_body

    page = error_body(502, "<script>alert(1)</script>", html_page=True).body
    assert b"<script>" not in page
    assert b"&lt;script&gt;" in page


@pytest_twisted.ensureDeferred
async def test_upstream_on_ipv6_loopback_only_is_reached(upstream, proxy) -> None:
    import socket

    if not socket.has_ipv6:
        import pytest

        pytest.skip("no IPv6")
    up = upstream(Recorder(), interface="::1")
    status, _, body = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/six" % up.port))
    )
    assert status == 200
    assert body == b"ok /six"


@pytest_twisted.ensureDeferred
async def test_duplicate_request_headers_and_host_pass_through(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        get(
            b"/proxy/%d/" % up.port,
            host=b"example.test:1234",
            headers=b"X-Dup: 1\r\nX-Dup: 2\r\nAuthorization: Basic YTpi\r\n",
        ),
    )
    assert rec.header(0, b"x-dup") == [b"1", b"2"]
    assert rec.header(0, b"host") == [b"example.test:1234"]
    assert rec.header(0, b"authorization") == [b"Basic YTpi"]


@pytest_twisted.ensureDeferred
async def test_hop_by_hop_headers_are_not_forwarded(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        b"GET /proxy/%d/ HTTP/1.1\r\nHost: h\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
        b"TE: trailers\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\nX-Keep: 2\r\n\r\n"
        % up.port,
    )
    names = {n.lower() for n, _ in rec.requests[0]["headers"]}
    assert not names & {b"x-hop", b"te", b"keep-alive", b"proxy-authorization"}
    assert rec.header(0, b"x-keep") == [b"2"]


@pytest_twisted.ensureDeferred
async def test_spoofed_forwarded_headers_from_untrusted_peer_are_replaced(
    upstream, proxy
) -> None:
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        get(
            b"/proxy/%d/" % up.port,
            host=b"pub.test",
            headers=b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n"
            b"X-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Prefix: /x\r\n",
        ),
    )
    assert rec.header(0, b"x-forwarded-for") == [b"127.0.0.1"]
    assert rec.header(0, b"x-forwarded-host") == [b"pub.test"]
    assert rec.header(0, b"x-forwarded-proto") == [b"http"]
    assert rec.header(0, b"x-forwarded-prefix") == [b"/proxy/%d" % up.port]
    assert rec.header(0, b"forwarded") == []


@pytest_twisted.ensureDeferred
async def test_forwarded_for_from_trusted_proxy_is_appended(upstream, make_proxy) -> None:
    import ipaddress

    proxy = make_proxy(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        get(b"/proxy/%d/" % up.port, headers=b"X-Forwarded-For: 203.0.113.9\r\n"),
    )
    assert rec.header(0, b"x-forwarded-for") == [b"203.0.113.9, 127.0.0.1"]


@pytest_twisted.ensureDeferred
async def test_body_and_method_are_forwarded(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    body = b"x" * 300_000
    raw = await raw_request(
        proxy.port,
        b"PUT /proxy/%d/up HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (up.port, len(body), body),
    )
    assert parse_response(raw)[0] == 200
    assert rec.requests[0]["method"] == b"PUT"
    assert rec.requests[0]["body"] == body


@pytest_twisted.ensureDeferred
async def test_chunked_upload_is_forwarded(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    await raw_request(
        proxy.port,
        b"POST /proxy/%d/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        % up.port,
    )
    assert rec.requests[0]["body"] == b"hello world"


@pytest_twisted.ensureDeferred
async def test_body_over_max_size_gets_413(upstream, make_proxy) -> None:
    proxy = make_proxy(max_body_size=1000)
    up = upstream(rec := Recorder())
    raw = await raw_request(
        proxy.port,
        b"POST /proxy/%d/ HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n%s"
        % (up.port, b"x" * 2000),
    )
    assert parse_response(raw)[0] == 413
    assert rec.requests == []


def _responder(status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> Any:
    def handler(request: Any) -> bytes:
        request.setResponseCode(status)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        return body

    return handler


@pytest_twisted.ensureDeferred
async def test_repeated_set_cookie_survives_and_is_scoped(upstream, proxy) -> None:
    up = upstream(
        Recorder(
            _responder(
                200,
                [
                    (b"Set-Cookie", b"a=1; Path=/"),
                    (b"Set-Cookie", b"b=2; Path=/app; Domain=localhost"),
                    (b"Set-Cookie", b"c=3"),
                ],
                b"x",
            )
        )
    )
    _, headers, _ = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
    )
    assert headers[b"set-cookie"] == [
        b"a=1; Path=/proxy/%d/" % up.port,
        b"b=2; Path=/proxy/%d/app" % up.port,
        b"c=3",
    ]


@pytest_twisted.ensureDeferred
async def test_absproxy_leaves_set_cookie_path_alone(upstream, proxy) -> None:
    up = upstream(Recorder(_responder(200, [(b"Set-Cookie", b"a=1; Path=/")])))
    _, headers, _ = parse_response(
        await raw_request(proxy.port, get(b"/absproxy/%d/" % up.port))
    )
    assert headers[b"set-cookie"] == [b"a=1; Path=/"]


@pytest_twisted.ensureDeferred
async def test_location_rewriting_on_the_path_route(upstream, proxy) -> None:
    cases = {
        b"/x?y=1": b"/proxy/{p}/x?y=1",
        b"//evil.example/x": b"/proxy/{p}//evil.example/x",
        b"relative": b"relative",
        b"https://other.example/x": b"https://other.example/x",
        b"http://localhost:{p}/deep?q": b"/proxy/{p}/deep?q",
        b"http://127.0.0.1:{p}": b"/proxy/{p}/",
        b"/proxy/{p}/already": b"/proxy/{p}/already",
    }
    location: list[bytes] = []
    up = upstream(
        Recorder(
            lambda r: (
                r.setResponseCode(302),
                r.setHeader(b"location", location[0]),
                b"",
            )[2]
        )
    )
    p = b"%d" % up.port
    for given, expected in cases.items():
        location[:] = [given.replace(b"{p}", p)]
        _, headers, _ = parse_response(
            await raw_request(proxy.port, get(b"/proxy/%s/" % p))
        )
        assert headers[b"location"] == [expected.replace(b"{p}", p)], given


@pytest_twisted.ensureDeferred
async def test_loopback_location_on_absproxy_becomes_root_relative(upstream, proxy) -> None:
    up = upstream(
        Recorder(_responder(302, [(b"Location", b"http://localhost:%d/absproxy/1/x" % 0)]))
    )
    # Rebuild with the real port now that it is known.
    loc = b"http://[::1]:%d/absproxy/%d/x" % (up.port, up.port)
    up.resource.handler = _responder(302, [(b"Location", loc)])
    _, headers, _ = parse_response(
        await raw_request(proxy.port, get(b"/absproxy/%d/" % up.port))
    )
    assert headers[b"location"] == [b"/absproxy/%d/x" % up.port]


@pytest_twisted.ensureDeferred
async def test_no_content_type_is_invented(upstream, proxy) -> None:
    def bare(request: Any) -> bytes:
        request.responseHeaders.removeHeader(b"content-type")
        request.defaultContentType = None
        return b"raw"

    up = upstream(Recorder(bare))
    up.displayTracebacks = False
    _, headers, body = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
    )
    assert body == b"raw"
    assert b"content-type" not in headers


@pytest_twisted.ensureDeferred
async def test_status_reason_and_empty_bodies(upstream, proxy) -> None:
    up = upstream(Recorder(_responder(204, [(b"X-A", b"1")])))
    raw = await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
    status, headers, body = parse_response(raw)
    assert raw.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert headers[b"x-a"] == [b"1"] and body == b""
    up.resource.handler = _responder(404, [], b"nope")
    status, _, body = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
    )
    assert (status, body) == (404, b"nope")


@pytest_twisted.ensureDeferred
async def test_head_carries_no_body(upstream, proxy) -> None:
    up = upstream(Recorder(lambda r: b"twelve bytes"))
    raw = await raw_request(
        proxy.port,
        b"HEAD /proxy/%d/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % up.port,
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b""


@pytest_twisted.ensureDeferred
async def test_healthz_reports_heartbeat(upstream, proxy) -> None:
    status, _, body = parse_response(await raw_request(proxy.port, get(b"/healthz")))
    assert status == 200
    assert json.loads(body)["status"] == "expired"
    up = upstream(Recorder())
    await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
    _, _, body = parse_response(await raw_request(proxy.port, get(b"/healthz")))
    data = json.loads(body)
    assert data["status"] == "alive" and data["lastHeartbeat"] > 0


@pytest_twisted.ensureDeferred
async def test_unknown_main_route_is_404(proxy) -> None:
    status, _, _ = parse_response(await raw_request(proxy.port, get(b"/nothing-here")))
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_oversized_request_head_is_refused_without_harming_others(
    upstream, proxy
) -> None:
    up = upstream(rec := Recorder())
    big = b"X-Big: " + b"a" * 17_000 + b"\r\n"
    raw = await raw_request(proxy.port, get(b"/proxy/%d/" % up.port, headers=big))
    # Twisted answers 400 and closes; a reset before the answer is read is also fine.
    assert raw == b"" or raw.split(b" ")[1] in (b"400", b"431")
    assert rec.requests == []
    status, _, _ = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
    )
    assert status == 200
    assert len(rec.requests) == 1


@pytest_twisted.ensureDeferred
async def test_malformed_request_line_gets_400(proxy) -> None:
    raw = await raw_request(proxy.port, b"GARBAGE\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(
    ("variable", "value", "disabled"),
    [
        ("CS_DISABLE_PROXY", "1", True),
        ("CS_DISABLE_PROXY", "TRUE", True),
        ("CS_DISABLE_PROXY", "0", False),
        ("PORTPROXY_DISABLE_PROXY", "true", True),
        ("CS_DISABLE_PROXY", "", False),
    ],
)
def test_code_server_disable_variable_disables_the_proxy(variable, value, disabled) -> None:
    from portproxy.tap import Options

    options = Options()
    options.environ = {variable: value}
    options.parseOptions(["--auth", "none"])
    assert options.config.disable_proxy is disabled


@pytest.mark.parametrize(
    ("route", "kept"),
    [(b"/proxy/%d/sw.js", False), (b"/absproxy/%d/sw.js", False), (b"/sw.js", True)],
)
@pytest_twisted.ensureDeferred
async def test_service_worker_allowed_is_dropped_on_path_routes(
    upstream, make_proxy, route, kept
) -> None:
    # On /proxy/ and /absproxy/ the app shares the main host's origin: the header would
    # let its service worker control sign-in, the home page and every other port. A
    # proxy host is the app's own origin: the header passes there.
    up = upstream(Recorder(handler=_responder(200, [(b"Service-Worker-Allowed", b"/")])))
    proxy = make_proxy(proxy_domains=("{{port}}.dev.test",))
    host = b"%d.dev.test" % up.port if kept else b"127.0.0.1"
    target = route % up.port if b"%d" in route else route
    status, headers, _ = parse_response(
        await raw_request(proxy.port, get(target, host=host))
    )
    assert status == 200
    assert (b"service-worker-allowed" in headers) is kept

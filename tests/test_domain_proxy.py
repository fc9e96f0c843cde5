"""End-to-end domain proxy: routing by Host onto the same engine as the path routes."""

from __future__ import annotations

import ipaddress
import json

import pytest
import pytest_twisted

from tests.support import Recorder, get, parse_response, raw_request

DOMAINS = (
    "example.test",
    "*.star.test",
    "{{port}}.explicit.test",
    "dev-{{port}}.dash.test",
    "{{port}}-{{host}}.single.test",
)


def _host(template: str, port: int) -> bytes:
    return template.replace("{p}", str(port)).encode()


@pytest.mark.parametrize(
    "template",
    [
        "{p}.example.test",
        "{p}.EXAMPLE.test",
        "{p}.example.test:8443",
        "{p}.star.test",
        "{p}.explicit.test",
        "dev-{p}.dash.test",
        "{p}-myhost.single.test",
        "{p}-a.b.single.test",
    ],
)
@pytest_twisted.ensureDeferred
async def test_proxy_hosts_reach_their_port(upstream, make_proxy, template: str) -> None:
    proxy = make_proxy(proxy_domains=DOMAINS)
    up = upstream(rec := Recorder())
    host = _host(template, up.port)
    status, _, body = parse_response(
        await raw_request(proxy.port, get(b"/a%2Fb//c?x=%20&y=/z", host=host))
    )
    assert status == 200
    assert rec.requests[0]["uri"] == b"/a%2Fb//c?x=%20&y=/z"
    assert rec.header(0, b"host") == [host]  # Host passes unchanged
    assert rec.header(0, b"x-forwarded-prefix") == []


@pytest.mark.parametrize(
    "host",
    [
        b"abc.example.test",
        b"9001.sub.example.test",
        b"example.test",
        b"dash.test",
        b"dev-.dash.test",
        b"9001.example.test.evil",
        b"x9001.example.test",
    ],
)
@pytest_twisted.ensureDeferred
async def test_other_hosts_are_the_main_host(upstream, make_proxy, host: bytes) -> None:
    proxy = make_proxy(proxy_domains=DOMAINS)
    up = upstream(rec := Recorder())
    status, _, body = parse_response(
        await raw_request(proxy.port, get(b"/healthz", host=host))
    )
    assert status == 200 and b"status" in body  # portproxy's own route, not an app
    status, _, _ = parse_response(
        await raw_request(proxy.port, get(b"/proxy/%d/x" % up.port, host=host))
    )
    assert status == 200 and rec.requests[0]["uri"] == b"/x"


@pytest.mark.parametrize("label", [b"65536", b"0", b"99999", b"08080"])
@pytest_twisted.ensureDeferred
async def test_bad_port_label_gives_400(make_proxy, label: bytes) -> None:
    proxy = make_proxy(proxy_domains=DOMAINS)
    status, _, body = parse_response(
        await raw_request(proxy.port, get(b"/", host=label + b".example.test"))
    )
    assert status == 400
    assert json.loads(body) == {"error": "Invalid port"}


@pytest_twisted.ensureDeferred
async def test_disabled_proxy_gives_403_on_every_path_of_a_proxy_host(
    upstream, make_proxy
) -> None:
    proxy = make_proxy(proxy_domains=DOMAINS, disable_proxy=True)
    up = upstream(rec := Recorder())
    for path in (b"/", b"/login", b"/healthz", b"/x?y"):
        status, _, _ = parse_response(
            await raw_request(
                proxy.port, get(path, host=_host("{p}.example.test", up.port))
            )
        )
        assert status == 403, path
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_own_port_on_a_proxy_host_is_refused(make_proxy) -> None:
    proxy = make_proxy(proxy_domains=DOMAINS)
    status, _, _ = parse_response(
        await raw_request(proxy.port, get(b"/", host=_host("{p}.example.test", proxy.port)))
    )
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_spoofed_forwarded_host_from_untrusted_peer_is_ignored(
    upstream, make_proxy
) -> None:
    proxy = make_proxy(proxy_domains=DOMAINS)
    up = upstream(rec := Recorder())
    spoof = b"X-Forwarded-Host: %d.example.test\r\nForwarded: host=%d.example.test\r\n" % (
        up.port,
        up.port,
    )
    status, _, body = parse_response(
        await raw_request(proxy.port, get(b"/healthz", host=b"main.test", headers=spoof))
    )
    assert status == 200 and b"status" in body
    assert rec.requests == []


@pytest_twisted.ensureDeferred
async def test_forwarded_host_from_trusted_proxy_routes(upstream, make_proxy) -> None:
    proxy = make_proxy(
        proxy_domains=DOMAINS, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)
    )
    up = upstream(rec := Recorder())
    header = b"X-Forwarded-Host: %d.example.test\r\n" % up.port
    status, _, _ = parse_response(
        await raw_request(proxy.port, get(b"/app?q=1", host=b"main.test", headers=header))
    )
    assert status == 200
    assert rec.requests[0]["uri"] == b"/app?q=1"


@pytest_twisted.ensureDeferred
async def test_loopback_redirect_becomes_the_public_proxy_host(
    upstream, make_proxy
) -> None:
    proxy = make_proxy(proxy_domains=DOMAINS)
    target: list[bytes] = []

    def redirect(request):  # type: ignore[no-untyped-def]
        request.setResponseCode(302)
        request.setHeader(b"location", target[0])
        return b""

    up = upstream(Recorder(redirect))
    target.append(b"http://localhost:%d/next?x=1" % up.port)
    host = _host("{p}.example.test:8443", up.port)
    _, headers, _ = parse_response(await raw_request(proxy.port, get(b"/", host=host)))
    assert headers[b"location"] == [b"http://%d.example.test:8443/next?x=1" % up.port]
    target[0] = b"/root-relative"
    _, headers, _ = parse_response(await raw_request(proxy.port, get(b"/", host=host)))
    assert headers[b"location"] == [b"/root-relative"]  # no prefix on proxy hosts


@pytest_twisted.ensureDeferred
async def test_domain_route_uses_the_same_engine(upstream, make_proxy) -> None:
    """Keep-alive pooling is shared: path and domain requests reuse one upstream pool."""
    proxy = make_proxy(proxy_domains=DOMAINS)
    up = upstream(Recorder())
    await raw_request(proxy.port, get(b"/", host=_host("{p}.example.test", up.port)))
    await raw_request(proxy.port, get(b"/proxy/%d/" % up.port))
    pool = proxy.instance.engine.pool
    assert pool.opened == 1
    assert pool.idle_count() == 1

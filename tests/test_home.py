"""The start page's list of listening ports."""

from __future__ import annotations

import pytest_twisted

from portproxy.routing.publicurl import PortURLs
from portproxy.web.home import parse_listening_ports, render_index
from tests.support import get, parse_response, raw_request

TABLE = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 00000000:1435 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   2: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0
   3: 0A00000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
"""
TABLE6 = """  sl  local_address remote_address st
   0: 00000000000000000000000001000000:14E5 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A
"""


def test_only_listening_sockets_on_loopback_or_any_address_count() -> None:
    # 8080 on 127.0.0.1 and 5173 on 0.0.0.0 listen; 8081 is a connection; port 80 on
    # 10.0.0.10 is not reachable through loopback.
    assert parse_listening_ports(TABLE) == {8080, 5173}
    assert parse_listening_ports(TABLE6) == {5349, 22}


def _urls(port: int) -> PortURLs:
    return {
        "proxy": f"./proxy/{port}/?<x>",
        "absproxy": f"./absproxy/{port}/",
        "domain": f"http://{port}.localhost:8080/" if port == 80 else None,
    }


def test_index_links_each_port_on_every_route_and_escapes() -> None:
    page = render_index({3000, 80}, _urls)
    assert page.index(b">80<") < page.index(b">3000<")
    assert b'href="./proxy/3000/?&lt;x&gt;">3000<' in page  # preferred: /proxy/
    assert b'href="./absproxy/3000/"' in page
    assert b'href="http://80.localhost:8080/">80<' in page  # preferred: the proxy host
    assert b"<script" not in page
    assert b'action="./logout"' in page
    assert b"does not tell" in render_index(None, _urls)


@pytest_twisted.ensureDeferred
async def test_start_page_lists_a_listening_upstream(upstream, proxy) -> None:
    up = upstream()
    status, _, body = parse_response(await raw_request(proxy.port, get(b"/")))
    assert status == 200
    assert b'href="./proxy/%d/"' % up.port in body
    assert b">%d<" % proxy.port not in body  # never offers itself


@pytest_twisted.ensureDeferred
async def test_start_page_needs_a_session(make_proxy, tmp_path) -> None:
    proxy = make_proxy(environ={"PASSWORD": "pw"}, auth="password", data_dir=str(tmp_path))
    status, headers, _ = parse_response(
        await raw_request(proxy.port, get(b"/", headers=b"Accept: text/html\r\n"))
    )
    # Root-relative or relative to the page (the sign-in redirect survives a prefix).
    assert status == 302 and headers[b"location"][0].startswith((b"/login", b"./login"))
    status, _, _ = parse_response(await raw_request(proxy.port, get(b"/")))
    assert status == 401

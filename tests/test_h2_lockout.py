"""HTTP/2 connections without a stream at the connection cap (second review, finding 3).

Live: the TLS listener that C{twist portproxy} runs, h2 clients in threads. These need
both halves: L{portproxy.net.limits.ConnectionLimits.h2_idle} / C{h2_busy} (the limits) and
L{portproxy.http.http2.HardenedH2Connection} reporting to them (and its C{evict}).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.test_limits import sleep
from tests.test_tls import write_pair
from tests.test_tls_http2 import h2_requests
from tests.test_tls_live import Running, tls_services


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    with tls_services(tmp_path) as start:
        yield start


def _preface_only(port: int, cafile: str) -> ssl.SSLSocket:
    """An h2 connection that sends its preface and SETTINGS, then nothing."""
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    assert tls.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    return tls


def _closed_by_server(tls: ssl.SSLSocket, timeout: float) -> bool:
    """Read until the server closes (C{True}) or C{timeout} passes (C{False})."""
    tls.settimeout(timeout)
    try:
        while tls.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def _config(tmp_path: Path, **fields: Any) -> tuple[dict[str, Any], str]:
    """The proxy's TLS fields, and the CA file a client trusts."""
    cert, key, ca = write_pair(tmp_path)
    return {"cert": cert, "cert_key": key, **fields}, ca


@pytest_twisted.ensureDeferred
async def test_preface_only_h2_connections_make_room_for_a_new_user(
    tmp_path: Path, tls_proxy: Any
) -> None:
    config, cert = _config(tmp_path, max_connections=3, header_timeout=30.0)
    proxy = tls_proxy(**config)
    idle = [await deferToThread(_preface_only, proxy.port, cert) for _ in range(3)]
    await sleep(0.2)
    try:
        responses = await h2_requests(
            proxy.port, cert, [(b"GET", b"/healthz", b"")], timeout=5
        )
        assert responses[0].status == 200
        assert await deferToThread(_closed_by_server, idle[0], 5)  # it made room
    finally:
        for tls in idle:
            tls.close()


@pytest_twisted.ensureDeferred
async def test_preface_only_h2_connection_is_closed_at_the_header_timeout(
    tmp_path: Path, tls_proxy: Any
) -> None:
    config, cert = _config(tmp_path, header_timeout=1.0)
    proxy = tls_proxy(**config)
    tls = await deferToThread(_preface_only, proxy.port, cert)
    try:
        assert await deferToThread(_closed_by_server, tls, 5)
    finally:
        tls.close()

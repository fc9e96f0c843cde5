"""HTTP/2 over a TLS listener (ALPN h2), as browsers speak it: an h2 client in a thread."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h2.config
import h2.connection
import h2.events
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.support import Recorder, get_reactor
from tests.test_tls import write_pair
from tests.test_tls_live import PASSWORD, Running, tls_services


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    with tls_services(tmp_path) as start:
        yield start


@dataclass
class H2Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    reset: int | None = None

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


def _h2_exchange(
    port: int,
    cafile: str,
    requests: Sequence[tuple[bytes, bytes, bytes]],
    on_data: Callable[[int, bytes], None] | None,
    timeout: float = 10,
) -> tuple[str | None, list[H2Response]]:
    """Open one h2 connection, send every request at once, read until all end."""
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        alpn = tls.selected_alpn_protocol()
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_connection()
        streams: dict[int, H2Response] = {}
        uploads: dict[int, bytes] = {}

        def pump() -> None:
            # Send request bodies as the server's flow-control windows allow.
            for stream, rest in list(uploads.items()):
                while rest:
                    room = min(
                        conn.local_flow_control_window(stream), conn.max_outbound_frame_size
                    )
                    if room <= 0:
                        break
                    conn.send_data(stream, rest[:room])
                    rest = rest[room:]
                uploads[stream] = rest
                if not rest:
                    conn.end_stream(stream)
                    del uploads[stream]

        for method, path, body in requests:
            stream = conn.get_next_available_stream_id()
            streams[stream] = H2Response()
            headers = [
                (b":method", method),
                (b":path", path),
                (b":scheme", b"https"),
                (b":authority", b"localhost:%d" % port),
                (b"accept", b"*/*"),
            ]
            if body:
                headers.append((b"content-length", b"%d" % len(body)))
            conn.send_headers(stream, headers, end_stream=not body)
            if body:
                uploads[stream] = body
        pump()
        tls.sendall(conn.data_to_send())
        open_streams = set(streams)
        while open_streams:
            try:
                data = tls.recv(65536)
            except TimeoutError:
                # Say what was still waiting, so an intermittent stall can be told apart
                # (an upload stuck on flow control, or a response that never came).
                state = {
                    s: (
                        streams[s].status,
                        len(streams[s].body),
                        len(uploads.get(s, b"")),
                        conn.local_flow_control_window(s) if s in uploads else None,
                    )
                    for s in sorted(open_streams)
                }
                raise TimeoutError(
                    "h2 streams still open (status, body bytes, upload bytes left, "
                    f"send window): {state}"
                ) from None
            if not data:
                raise ConnectionError("the server closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    response = streams[event.stream_id]
                    response.headers = [(bytes(k), bytes(v)) for k, v in event.headers]
                    response.status = int(response.header(b":status")[0])
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id].body += event.data
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    if on_data is not None:
                        on_data(event.stream_id, event.data)
                elif isinstance(event, h2.events.StreamEnded):
                    open_streams.discard(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    streams[event.stream_id].reset = event.error_code
                    open_streams.discard(event.stream_id)
            pump()
            tls.sendall(conn.data_to_send())
        conn.close_connection()
        tls.sendall(conn.data_to_send())
        return alpn, [streams[s] for s in sorted(streams)]


async def h2_requests(
    port: int,
    cafile: str,
    requests: Sequence[tuple[bytes, bytes, bytes]],
    on_data: Callable[[int, bytes], None] | None = None,
    timeout: float = 10,
) -> list[H2Response]:
    alpn, responses = await deferToThread(
        _h2_exchange, port, cafile, requests, on_data, timeout
    )
    assert alpn == "h2"
    return list(responses)


def _app(request: Any) -> bytes | int:
    if request.path.startswith(b"/missing"):
        request.setResponseCode(404)
        return b"no such page"
    if request.method == b"POST":
        request.content.seek(0)  # Recorder read it first
        return b"got " + request.content.read()
    return b"ok " + request.uri


@pytest_twisted.ensureDeferred
async def test_h2_client_gets_proxied_responses_uploads_and_the_upstreams_404(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    up = upstream(rec := Recorder(handler=_app))
    proxy = tls_proxy(cert=cert, cert_key=key)
    base = b"/proxy/%d" % up.port
    upload = b"x" * 100_000
    ok, missing, posted = await h2_requests(
        proxy.port,
        ca,
        [
            (b"GET", base + b"/page?q=1", b""),
            (b"GET", base + b"/missing", b""),
            (b"POST", base + b"/form", upload),
        ],
    )
    assert (ok.status, ok.body) == (200, b"ok /page?q=1")
    assert (missing.status, missing.body) == (404, b"no such page")
    assert (posted.status, posted.body) == (200, b"got " + upload)
    # request.isSecure() is true over h2: the upstream hears https.
    for index in range(3):
        assert rec.header(index, b"x-forwarded-proto") == [b"https"]
    assert {r["version"] for r in rec.requests} == {b"HTTP/1.1"}


class _Held(Resource):
    """Sends a first chunk, then waits for the test to release the rest."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render_GET(self, request: Any) -> int:
        self.requests.append(request)
        request.write(b"first;")
        return NOT_DONE_YET

    def release(self) -> None:
        for request in self.requests:
            request.write(b"second")
            request.finish()


@pytest_twisted.ensureDeferred
async def test_h2_client_receives_a_streamed_body_before_it_ends(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    held = _Held()
    up = upstream(held)
    proxy = tls_proxy(cert=cert, cert_key=key)
    reactor = get_reactor()
    seen_before_release: list[bytes] = []

    def on_data(stream: int, data: bytes) -> None:
        if not seen_before_release:
            seen_before_release.append(data)
            # The upstream still holds the response open: only now let it finish.
            reactor.callFromThread(held.release)

    (response,) = await h2_requests(
        proxy.port, ca, [(b"GET", b"/proxy/%d/events" % up.port, b"")], on_data
    )
    assert seen_before_release == [b"first;"]
    assert (response.status, response.body) == (200, b"first;second")
    assert response.reset is None


@pytest_twisted.ensureDeferred
async def test_h2_login_sets_a_secure_session_cookie(
    tmp_path: Path, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    proxy = tls_proxy(
        environ={"PASSWORD": PASSWORD}, auth="password", cert=cert, cert_key=key
    )
    form = f"password={quote(PASSWORD)}&to=%2F".encode()
    (response,) = await h2_requests(proxy.port, ca, [(b"POST", b"/login", form)])
    assert response.status == 302
    (cookie,) = [
        c for c in response.header(b"set-cookie") if c.startswith(b"portproxy-session=")
    ]
    assert b"secure" in [a.strip().lower() for a in cookie.split(b";")]


class _BreaksOff(Resource):
    """Sends part of a body, then drops the connection."""

    isLeaf = True

    def render_GET(self, request: Any) -> int:
        request.write(b"part;")
        get_reactor().callLater(0.2, request.channel.transport.abortConnection)
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_h2_client_sees_a_reset_when_the_upstream_breaks_off_mid_body(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    up = upstream(_BreaksOff())
    proxy = tls_proxy(cert=cert, cert_key=key)
    (response,) = await h2_requests(
        proxy.port, ca, [(b"GET", b"/proxy/%d/" % up.port, b"")]
    )
    assert response.reset is not None


@pytest_twisted.ensureDeferred
async def test_h2_body_over_the_limit_gets_413(
    tmp_path: Path, upstream: Any, tls_proxy: Any
) -> None:
    cert, key, ca = write_pair(tmp_path)
    up = upstream(Recorder())
    proxy = tls_proxy(cert=cert, cert_key=key, max_body_size=1000)
    (response,) = await h2_requests(
        proxy.port, ca, [(b"POST", b"/proxy/%d/" % up.port, b"x" * 5000)], timeout=2
    )
    assert response.status == 413 or response.reset is not None


def test_http2_is_part_of_the_normal_install() -> None:
    """h2 is required without an extra, so every TLS listener offers HTTP/2 by ALPN."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    required = [Requirement(r) for r in requires("portproxy") or ()]
    h2 = [r for r in required if r.name == "h2"]
    assert h2 and h2[0].marker is None, "h2 must be in install_requires, not an extra"
    assert h2[0].specifier.contains("4.3.0") and not h2[0].specifier.contains("4.2.0")

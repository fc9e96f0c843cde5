"""The ports API and its event stream on a live portproxy (SPEC 13), and the 502 page
that waits for an app to listen (SPEC 9)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from portproxy.auth import print_auth_cookie
from portproxy.config import Config
from tests.support import free_port, get, get_reactor, parse_response, raw_request

PASSWORD = "ports-test-password"


@pytest.fixture
def ports_proxy(make_proxy: Callable[..., Any], tmp_path: Path) -> Any:
    fields: dict[str, Any] = dict(auth="password", data_dir=str(tmp_path / "data"))
    proxy = make_proxy(environ={"PASSWORD": PASSWORD}, **fields)
    cookie = print_auth_cookie(Config(**fields), environ={"PASSWORD": PASSWORD})
    proxy.cookie_header = b"Cookie: " + cookie.encode() + b"\r\n"
    return proxy


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start C{python -m http.server} on a free port in its own temp cwd."""
    started: list[subprocess.Popen[bytes]] = []
    cwd = tmp_path / "site"
    cwd.mkdir()

    def start() -> subprocess.Popen[bytes]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc.port = port  # type: ignore[attr-defined]
        proc.cwd = str(cwd)  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


async def _sleep(seconds: float) -> None:
    await deferLater(get_reactor(), seconds, lambda: None)


async def _listening(port: int, timeout: float = 10.0) -> float:
    """Wait until C{port} accepts connections; the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.monotonic()
        await _sleep(0.02)
    raise AssertionError(f"port {port} never listened")


async def _ports(proxy: Any, headers: bytes | None = None) -> tuple[int, Any]:
    raw = await raw_request(
        proxy.port,
        get(
            b"/.portproxy/api/ports",
            headers=proxy.cookie_header if headers is None else headers,
        ),
    )
    status, _, body = parse_response(raw)
    return status, json.loads(body)


async def _entry_for(proxy: Any, port: int, until: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + 10.0
    while True:
        status, entries = await _ports(proxy)
        assert status == 200
        entry = next((e for e in entries if e["port"] == port), None)
        if entry is not None and until(entry):
            return entry
        assert time.monotonic() < deadline, entries
        await _sleep(0.2)


class EventStream(Protocol):
    """An HTTP/1.0 client of the event stream (close-delimited, so no chunking)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.raw = b""
        self.head: bytes | None = None
        self.events: list[tuple[float, str, Any]] = []
        self.comments: list[bytes] = []
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        if self.head is None:
            if b"\r\n\r\n" not in self.raw:
                return
            self.head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        while b"\n\n" in self.raw:
            block, _, self.raw = self.raw.partition(b"\n\n")
            fields = dict(
                line.split(b": ", 1) for line in block.split(b"\n") if b": " in line
            )
            if block.startswith(b":"):
                self.comments.append(block)
            elif b"event" in fields:
                self.events.append(
                    (
                        time.monotonic(),
                        fields[b"event"].decode(),
                        json.loads(fields[b"data"]),
                    )
                )

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)

    async def until(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            for at, name, data in self.events:
                if name == "ports" and predicate(data):
                    return at
            assert time.monotonic() < deadline, self.events[-1:]
            await _sleep(0.02)

    async def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()
        await self.closed


async def _stream(proxy: Any, headers: bytes = b"") -> EventStream:
    request = (
        b"GET /.portproxy/api/ports/events HTTP/1.0\r\nHost: 127.0.0.1\r\n%s%s\r\n"
        % (proxy.cookie_header, headers)
    )
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", proxy.port)
    stream = EventStream(request)
    await endpoint.connect(Factory.forProtocol(lambda: stream))
    return stream


def _ports_in(entries: Any) -> set[int]:
    return {e["port"] for e in entries}


# -- GET ports ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_app_appears_with_its_pid_command_cwd_and_page_title(
    ports_proxy, app
) -> None:
    proc = app()
    await _listening(proc.port)
    entry = await _entry_for(ports_proxy, proc.port, lambda e: e["http"] is not None)
    assert entry["pid"] == proc.pid
    assert entry["process"] is not None
    assert entry["command"].endswith(f"-m http.server {proc.port} --bind 127.0.0.1")
    assert os.path.realpath(entry["cwd"]) == os.path.realpath(proc.cwd)
    assert entry["addresses"] == [{"address": "127.0.0.1", "family": "ipv4"}]
    assert entry["http"] is True and entry["title"] == "Directory listing for /"
    assert entry["self"] is False and entry["access"] == "private"
    assert entry["label"] is None and entry["warnings"] == []
    assert entry["urls"] == {
        "proxy": f"http://127.0.0.1/proxy/{proc.port}/",
        "absproxy": f"http://127.0.0.1/absproxy/{proc.port}/",
        "domain": None,
    }
    assert list(entry)[:14] == [
        "port", "addresses", "pid", "process", "command", "cwd", "user",
        "http", "title", "label", "access", "self", "urls", "warnings",
    ]  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_the_proxys_own_listener_is_marked_self_and_not_linked(ports_proxy) -> None:
    status, entries = await _ports(ports_proxy)
    assert status == 200
    (own,) = [e for e in entries if e["port"] == ports_proxy.port]
    assert own["self"] is True and own["urls"] is None
    assert own["http"] is None  # never probed
    assert [e["port"] for e in entries] == sorted(e["port"] for e in entries)


@pytest_twisted.ensureDeferred
async def test_without_a_session_the_list_and_the_stream_get_401(ports_proxy) -> None:
    for path in (b"/.portproxy/api/ports", b"/.portproxy/api/ports/events"):
        raw = await raw_request(ports_proxy.port, get(path))
        status, headers, body = parse_response(raw)
        assert status == 401
        assert json.loads(body) == {"error": "Unauthorized"}
    assert ports_proxy.instance.ports.streams == 0


@pytest_twisted.ensureDeferred
async def test_head_of_the_list_has_no_body(ports_proxy) -> None:
    raw = await raw_request(
        ports_proxy.port,
        b"HEAD /.portproxy/api/ports HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
        b"Connection: close\r\n\r\n" % ports_proxy.cookie_header,
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""


# -- the event stream ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_stream_shows_an_app_arrive_and_leave_within_2_s(
    ports_proxy, app
) -> None:
    stream = await _stream(ports_proxy)
    try:
        await stream.until(lambda entries: ports_proxy.port in _ports_in(entries))
        proc = app()
        listening = await _listening(proc.port)
        arrived = await stream.until(lambda entries: proc.port in _ports_in(entries))
        assert arrived - listening < 2.0
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone = time.monotonic()
        left = await stream.until(
            lambda entries: proc.port not in _ports_in(entries), timeout=5
        )
        assert left - gone < 2.0
    finally:
        await stream.close()


@pytest_twisted.ensureDeferred
async def test_the_stream_is_uncompressed_unbuffered_and_uncached(ports_proxy) -> None:
    stream = await _stream(ports_proxy, b"Accept-Encoding: gzip, br\r\n")
    try:
        await stream.until(lambda entries: True)
        assert stream.head is not None
        head = stream.head.lower()
        assert b"content-type: text/event-stream" in head
        assert b"cache-control: no-store" in head
        assert b"x-accel-buffering: no" in head
        assert b"content-encoding" not in head
    finally:
        await stream.close()


@pytest_twisted.ensureDeferred
async def test_a_closed_stream_unsubscribes_and_the_watcher_goes_quiet(
    ports_proxy,
) -> None:
    ports = ports_proxy.instance.ports
    stream = await _stream(ports_proxy)
    await stream.until(lambda entries: True)
    assert ports.streams == 1 and ports.watcher.subscribers == 1
    await stream.close()
    deadline = time.monotonic() + 5
    while ports.streams or ports.watcher.subscribers:
        assert time.monotonic() < deadline
        await _sleep(0.02)


@pytest_twisted.ensureDeferred
async def test_streams_beyond_the_limit_get_503(ports_proxy) -> None:
    ports = ports_proxy.instance.ports
    ports._max_streams = 1
    first = await _stream(ports_proxy)
    try:
        await first.until(lambda entries: True)
        raw = await raw_request(
            ports_proxy.port,
            get(b"/.portproxy/api/ports/events", headers=ports_proxy.cookie_header),
        )
        status, headers, body = parse_response(raw)
        assert status == 503 and headers[b"retry-after"] == [b"5"]
    finally:
        await first.close()


@pytest_twisted.ensureDeferred
async def test_the_stream_sends_keep_alive_comments(ports_proxy) -> None:
    ports = ports_proxy.instance.ports
    ports._keepalive = 0.1
    stream = await _stream(ports_proxy)
    try:
        deadline = time.monotonic() + 5
        while not stream.comments:
            assert time.monotonic() < deadline
            await _sleep(0.05)
        assert stream.comments[0] == b": keep-alive"
    finally:
        await stream.close()


# -- the 502 that waits -----------------------------------------------------------------


async def _dead_port(proxy: Any, method: bytes, accept: bytes) -> tuple[int, Any, bytes]:
    dead = free_port()
    raw = await raw_request(
        proxy.port,
        b"%s /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\n%sAccept: %s\r\n"
        b"Connection: close\r\nContent-Length: 0\r\n\r\n"
        % (method, dead, proxy.cookie_header, accept),
    )
    status, headers, body = parse_response(raw)
    return status, headers, body.replace(b"%d" % dead, b"PORT")


BROWSER_ACCEPT = b"text/html,application/xhtml+xml,*/*;q=0.8"


@pytest_twisted.ensureDeferred
async def test_a_browser_502_page_reloads_itself_until_the_app_listens(
    ports_proxy,
) -> None:
    status, headers, body = await _dead_port(ports_proxy, b"GET", BROWSER_ACCEPT)
    assert status == 502
    assert headers[b"content-type"] == [b"text/html; charset=utf-8"]
    assert b'<meta http-equiv="refresh" content="1">' in body
    assert b"Nothing is listening on port PORT" in body
    assert b"reloads itself" in body
    assert b"<script" not in body  # works under a strict CSP


@pytest_twisted.ensureDeferred
async def test_json_clients_get_the_plain_502_at_once(ports_proxy) -> None:
    status, headers, body = await _dead_port(ports_proxy, b"GET", b"*/*")
    assert status == 502
    assert json.loads(body) == {"error": "Nothing is listening on port PORT"}


@pytest_twisted.ensureDeferred
async def test_head_gets_the_502_without_a_body(ports_proxy) -> None:
    dead = free_port()
    raw = await raw_request(
        ports_proxy.port,
        b"HEAD /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\n%sAccept: text/html\r\n"
        b"Connection: close\r\n\r\n" % (dead, ports_proxy.cookie_header),
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502") and body == b""


@pytest_twisted.ensureDeferred
async def test_a_form_post_to_a_dead_port_is_not_resent_by_a_reload(ports_proxy) -> None:
    status, headers, body = await _dead_port(ports_proxy, b"POST", BROWSER_ACCEPT)
    assert status == 502 and b"Nothing is listening" in body
    assert b"refresh" not in body


def test_other_502_pages_do_not_reload() -> None:
    from portproxy.http.errorpages import error_body

    page = error_body(502, "Port 3000 sent no valid response", html_page=True).body
    assert b"refresh" not in page


# -- many ports (issue 16) ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_proxied_request_is_answered_promptly_while_hundreds_of_ports_are_probed(
    ports_proxy: Any, upstream: Callable[..., Any]
) -> None:
    # 1000 listeners of this process that never answer: each probe waits its full 1 s.
    # Before issue 16 all 1000 probes went out at once and every answer rebuilt and
    # published all 1000 entries: a proxied request waited 11 s.
    site = upstream()
    sockets = []
    try:
        for _ in range(1000):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            sockets.append(s)
        watcher = ports_proxy.instance.ports.watcher
        status, _ = await _ports(ports_proxy)  # starts the watcher and its probes
        assert status == 200
        request = get(b"/proxy/%d/" % site.port, headers=ports_proxy.cookie_header)
        slowest = 0.0
        probed = False
        end = time.monotonic() + 3.0  # past the first probes' 1 s deadline
        while time.monotonic() < end:
            probed = probed or watcher.probing > 0
            started = time.monotonic()
            status, _, _ = parse_response(await raw_request(ports_proxy.port, request))
            assert status == 200
            slowest = max(slowest, time.monotonic() - started)
            await _sleep(0.05)
        assert probed
        # A GENEROUS bound, not a speed test: it catches a reactor frozen for seconds.
        assert slowest < 2.0, slowest
    finally:
        for s in sockets:
            s.close()

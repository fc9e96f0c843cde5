"""Test helpers: live sites on 127.0.0.1, a raw HTTP client, and the proxy under test.

Nothing here imports the global reactor at import time (pytest-twisted installs it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


def get_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def listen(site: Any, interface: str = "127.0.0.1") -> Any:
    """Listen on an ephemeral port now (binding is synchronous); return the port."""
    return get_reactor().listenTCP(0, site, interface=interface)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RawResponse(Protocol):
    """Sends raw bytes and collects everything until the server closes."""

    def __init__(self, request: bytes, done: Deferred[bytes]) -> None:
        self.request = request
        self.done = done
        self.data = bytearray()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(bytes(self.data))


async def raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send C{request} as is to C{127.0.0.1:port}; return all bytes until close."""
    reactor = get_reactor()
    done: Deferred[bytes] = Deferred()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    proto = await endpoint.connect(Factory.forProtocol(lambda: RawResponse(request, done)))
    done.addTimeout(
        timeout, reactor, onTimeoutCancel=lambda *a: proto.transport.abortConnection()
    )
    return await done


def parse_response(raw: bytes) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """Split one HTTP/1.x response (a single one, with Connection: close)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        body = dechunk(body)
    return status, headers, body


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
    return bytes(out)


def get(path: bytes, host: bytes = b"127.0.0.1", headers: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n" % (
        path,
        host,
        headers,
    )


class HeldResource(Resource):
    """A leaf that keeps every request it gets unanswered, until the test answers it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Any] = []

    def render(self, request: Any) -> Any:
        self.waiting.append(request)
        return NOT_DONE_YET


_PROBE_AGENT = b"portproxy-probe"  # portproxy.ports.probe.USER_AGENT


@dataclass
class Recorder(Resource):
    """An upstream leaf that records each request and answers with a handler."""

    handler: Callable[[Any], bytes | int] | None = None
    requests: list[Any] = field(default_factory=list)
    #: Record the ports panel's probes too. Off by default: a port watcher of any
    #: running proxy may probe the test's app port at any moment (its own GET, with
    #: its own User-Agent), which is not a request the test's proxy forwarded.
    record_probes: bool = False
    isLeaf = True

    def __post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Any) -> bytes | int:
        if not self.record_probes and request.getHeader(b"user-agent") == _PROBE_AGENT:
            return b"probe"
        body = request.content.read() if request.content is not None else b""
        self.requests.append(
            {
                "method": request.method,
                "uri": request.uri,
                "headers": list(request.requestHeaders.getAllRawHeaders()),
                "body": body,
                "version": request.clientproto,
            }
        )
        if self.handler is not None:
            return self.handler(request)
        request.setHeader(b"content-type", b"text/plain")
        return b"ok " + request.uri

    def header(self, index: int, name: bytes) -> list[bytes]:
        for key, values in self.requests[index]["headers"]:
            if key.lower() == name.lower():
                return list(values)
        return []


@dataclass
class LiveSite:
    site: Site
    port_obj: Any
    connections: list[Any] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.port_obj.getHost().port)


class FakeConnection:
    """A client connection as L{portproxy.net.limits.ConnectionLimits} sees it: it
    records what the limits did to it (C{408}, C{reclaimed}, C{cut})."""

    def __init__(self, key: str = "198.51.100.1", unsent: int | None = 0) -> None:
        self.limit_key = key
        self.unsent = unsent
        self.events: list[str] = []
        self.transport = object()

    def head_timed_out(self) -> None:
        self.events.append("408")

    def reclaim(self) -> None:
        self.events.append("reclaimed")

    def send_timed_out(self) -> None:
        self.events.append("cut")

    def unsent_bytes(self) -> int | None:
        return self.unsent


def fake_clock_limits(clock: Any, **kw: Any) -> Any:
    """A L{ConnectionLimits} on C{clock} with small defaults (cap 10, 30 s, 60 s)."""
    from portproxy.net.limits import ConnectionLimits

    kw.setdefault("max_connections", 10)
    kw.setdefault("header_timeout", 30.0)
    kw.setdefault("send_timeout", 60.0)
    return ConnectionLimits(clock, **kw)


NGINX = "/usr/sbin/nginx"


def nginx_under_prefix(root: Path, backend: int) -> tuple[int, list[str]]:
    """Write an nginx config in C{root} that mounts C{127.0.0.1:backend} under C{/pp/}.

    No X-Forwarded-Prefix is sent: only relative URLs keep a browser under C{/pp/}.
    Returns the port it will listen on and the command line that runs it in the
    foreground.
    """
    root.mkdir()
    port = free_port()
    temp = " ".join(
        f"{kind}_temp_path {root}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (root / "nginx.conf").write_text(
        f"""
worker_processes 1;
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temp}
    server {{
        listen 127.0.0.1:{port};
        location /pp/ {{ proxy_pass http://127.0.0.1:{backend}/; }}
    }}
}}
"""
    )
    return port, [
        NGINX,
        "-p",
        str(root),
        "-c",
        str(root / "nginx.conf"),
        "-g",
        "daemon off;",
    ]

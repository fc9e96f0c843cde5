"""Browser-like loaders for the page-load benchmark: HTTP/1.1 with 6 connections, or HTTP/2.

Each loader fetches index.html, scans it for module scripts, and fetches each module as soon
as an import naming it is seen, as a browser's module loader does: the page is discovered
level by level. HTTP/1.1 keeps up to 6 keep-alive connections, opened on demand when no idle
one is free (Chromium's per-host limit), over TLS too for https URLs; HTTP/2 uses one TLS
connection (ALPN h2) with every discovered request in flight at once, Chromium's window
sizes and Chromium's priority chain (each request depends exclusively on the previous one).
Requests carry Chromium's headers, `Accept-Encoding: gzip, deflate, br` included. Every body
is decoded and its sha256 checked against the page's manifest; a missing, extra or wrong
file fails the run.

Usage: python client.py URL_OF_INDEX_HTML MANIFEST --protocol h1|h2 [--no-priorities]
Prints one JSON object: seconds to the last module, counts, encodings, body bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import re
import ssl
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import brotli  # type: ignore[import-untyped]

MAX_CONNECTIONS = 6
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
ACCEPT_HTML = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8"
)
ACCEPT_ENCODING = "gzip, deflate, br"

IMPORT_RE = re.compile(rb"""^\s*import\s+(?:[^'";]*?\s+from\s+)?["']([^"']+)["']""", re.M)
SCRIPT_RE = re.compile(rb"""<script\s+type="module"\s+src="([^"]+)\"""")


def request_headers(
    path: str, html: bool, authority: str, referer: str
) -> list[tuple[str, str]]:
    """The headers Chromium sends for a navigation (HTML) or a module script."""
    if html:
        return [
            ("upgrade-insecure-requests", "1"),
            ("user-agent", USER_AGENT),
            ("accept", ACCEPT_HTML),
            ("sec-fetch-site", "none"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-user", "?1"),
            ("sec-fetch-dest", "document"),
            ("accept-encoding", ACCEPT_ENCODING),
            ("accept-language", "en-US,en;q=0.9"),
        ]
    return [
        ("user-agent", USER_AGENT),
        ("accept", "*/*"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "script"),
        ("referer", referer),
        ("accept-encoding", ACCEPT_ENCODING),
        ("accept-language", "en-US,en;q=0.9"),
    ]


def decode(body: bytes, encoding: str) -> bytes:
    """The body without its Content-Encoding."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        return bytes(brotli.decompress(body))
    raise ValueError(f"unknown content-encoding {encoding!r}")


@dataclass
class Page:
    """What is known and fetched of the page; finds new module URLs in each fetched body."""

    base: str  # URL path of the folder holding index.html, ending in "/"
    manifest: dict[str, dict[str, Any]]
    requested: set[str] = field(default_factory=set)
    done: dict[str, int] = field(default_factory=dict)
    encodings: collections.Counter[str] = field(default_factory=collections.Counter)
    body_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def key(self, path: str) -> str:
        return path[len(self.base) :] if path.startswith(self.base) else path

    def receive(self, path: str, status: int, encoding: str, body: bytes) -> list[str]:
        """Check one response; return the paths it makes the page want next."""
        key = self.key(path)
        self.body_bytes += len(body)
        self.encodings[encoding or "identity"] += 1
        if status != 200:
            self.errors.append(f"{key}: status {status}")
            return []
        data = decode(body, encoding)
        expected = self.manifest.get(key)
        if expected is None or hashlib.sha256(data).hexdigest() != expected["sha256"]:
            self.errors.append(f"{key}: content differs from the origin's")
        self.done[key] = len(data)
        pattern = SCRIPT_RE if key.endswith(".html") else IMPORT_RE
        found = []
        for spec in pattern.findall(data):
            target = urlsplit(urljoin(path, spec.decode())).path
            if target not in self.requested:
                self.requested.add(target)
                found.append(target)
        return found

    def summary(self, seconds: float) -> dict[str, Any]:
        missing = set(self.manifest) - {"manifest.json"} - set(self.done)
        if missing:
            self.errors.append(
                f"{len(missing)} files never fetched, e.g. {sorted(missing)[0]}"
            )
        return {
            "seconds": seconds,
            "files": len(self.done),
            "decoded_bytes": sum(self.done.values()),
            "body_bytes": self.body_bytes,
            "encodings": dict(self.encodings),
            "errors": self.errors[:5],
        }


def tls_context(alpn: list[str]) -> ssl.SSLContext:
    """A client context offering ALPN; the targets' certificates are self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    return context


async def read_h1_response(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
        headers["connection"] = "close"
    return status, headers, body


async def load_h1(url: str, page: Page) -> dict[str, Any]:
    """Load the page over up to 6 keep-alive HTTP/1.1 connections, opened on demand."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host, port = parts.hostname or "", parts.port or (443 if tls else 80)
    authority = parts.netloc
    context = tls_context(["http/1.1"]) if tls else None
    pending: collections.deque[str] = collections.deque()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    busy = 0
    opened = 0
    finished = asyncio.get_running_loop().create_future()
    # The loop keeps only weak references to tasks, and a stream reader is held only by the
    # task reading it: without this set a waiting request can be garbage-collected mid-read.
    tasks: set[asyncio.Task[None]] = set()

    def want(paths: list[str]) -> None:
        nonlocal busy, opened
        pending.extend(paths)
        while pending and (idle or opened < MAX_CONNECTIONS):
            conn = idle.pop() if idle else None
            if conn is None:
                opened += 1
            busy += 1
            task = asyncio.ensure_future(run(conn, pending.popleft()))
            tasks.add(task)
            task.add_done_callback(crash)

    def crash(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if task.exception() is not None and not finished.done():
            finished.set_exception(task.exception())  # type: ignore[arg-type]

    async def run(
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, path: str
    ) -> None:
        nonlocal busy, opened
        if conn is None:
            if context is None:
                conn = await asyncio.open_connection(host, port)
            else:
                conn = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname="localhost"
                )
        reader, writer = conn
        html = path.endswith(".html")
        fields = request_headers(path, html, authority, url)
        head = f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: keep-alive\r\n"
        head += "".join(f"{k.title()}: {v}\r\n" for k, v in fields) + "\r\n"
        writer.write(head.encode())
        status, headers, body = await read_h1_response(reader)
        found = page.receive(path, status, headers.get("content-encoding", ""), body)
        busy -= 1
        if headers.get("connection", "").lower() == "close":
            writer.close()
            opened -= 1
        else:
            idle.append(conn)
        want(found)
        if not busy and not pending and not finished.done():
            finished.set_result(None)

    start = time.perf_counter()
    first = parts.path
    page.requested.add(first)
    want([first])
    await finished
    seconds = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    return page.summary(seconds)


async def load_h2(url: str, page: Page, priorities: bool = True) -> dict[str, Any]:
    """Load the page over one TLS connection speaking HTTP/2, all known requests at once."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    parts = urlsplit(url)
    context = tls_context(["h2", "http/1.1"])
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(
        parts.hostname, parts.port or 443, ssl=context, server_hostname="localhost"
    )
    protocol = writer.get_extra_info("ssl_object").selected_alpn_protocol()
    if protocol != "h2":
        raise SystemExit(f"server chose {protocol!r}, not h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    # Chromium's settings and connection window.
    conn.update_settings(
        {
            h2.settings.SettingCodes.HEADER_TABLE_SIZE: 65536,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 6291456,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 262144,
        }
    )
    conn.increment_flow_control_window(15663105)
    pending: collections.deque[str] = collections.deque()
    streams: dict[int, tuple[str, list[Any], bytearray]] = {}
    last = 0

    def send() -> None:
        nonlocal last
        limit = conn.remote_settings.max_concurrent_streams
        while pending and conn.open_outbound_streams < limit:
            path = pending.popleft()
            stream_id = conn.get_next_available_stream_id()
            fields = [
                (":method", "GET"),
                (":authority", parts.netloc),
                (":scheme", "https"),
                (":path", path),
                *request_headers(path, path.endswith(".html"), parts.netloc, url),
            ]
            # Chromium's HTTP/2 priorities: each request depends exclusively on the one sent
            # before it at the same priority, so a server that honours them sends responses
            # in request order instead of interleaving all of them.
            if priorities:
                conn.send_headers(
                    stream_id,
                    fields,
                    end_stream=True,
                    priority_weight=256 if path.endswith(".html") else 220,
                    priority_depends_on=last,
                    priority_exclusive=True,
                )
            else:
                conn.send_headers(stream_id, fields, end_stream=True)
            last = stream_id
            streams[stream_id] = (path, [], bytearray())

    page.requested.add(parts.path)
    pending.append(parts.path)
    send()
    writer.write(conn.data_to_send())
    while streams or pending:
        data = await reader.read(1 << 16)
        if not data:
            raise SystemExit("server closed the HTTP/2 connection")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                streams[event.stream_id][1].extend(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                streams[event.stream_id][2].extend(event.data)
                conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded):
                path, headers, body = streams.pop(event.stream_id)
                fields = {
                    (k.decode() if isinstance(k, bytes) else k): (
                        v.decode() if isinstance(v, bytes) else v
                    )
                    for k, v in headers
                }
                status = int(fields.get(":status", 0))
                pending.extend(
                    page.receive(
                        path, status, fields.get("content-encoding", ""), bytes(body)
                    )
                )
            elif isinstance(event, h2.events.StreamReset):
                raise SystemExit(f"stream {event.stream_id} reset: {event.error_code}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise SystemExit(f"connection terminated: {event.error_code}")
        send()
        writer.write(conn.data_to_send())
    seconds = time.perf_counter() - start
    conn.close_connection()
    writer.write(conn.data_to_send())
    writer.close()
    return page.summary(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="URL of index.html through the target")
    parser.add_argument("manifest")
    parser.add_argument("--protocol", choices=["h1", "h2"], default="h1")
    parser.add_argument(
        "--no-priorities",
        action="store_true",
        help="HTTP/2 without Chromium's priority chain: every stream the same weight",
    )
    args = parser.parse_args()
    with open(args.manifest) as f:
        manifest = json.load(f)["files"]
    path = urlsplit(args.url).path
    page = Page(base=path[: path.rindex("/") + 1], manifest=manifest)
    if args.protocol == "h1":
        job = load_h1(args.url, page)
    else:
        job = load_h2(args.url, page, priorities=not args.no_priorities)
    result = asyncio.run(asyncio.wait_for(job, 120))
    result["protocol"] = args.protocol
    print(json.dumps(result))
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()

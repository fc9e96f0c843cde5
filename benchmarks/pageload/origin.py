"""The origin app of the page-load benchmark: a static server like a dev server (Vite's).

Serves the generated page from memory over HTTP/1.1 with keep-alive, uncompressed (a Vite
dev server does not compress), with `Cache-Control: no-cache` and a strong ETag as Vite
sends.
One process, one thread per connection; listens on every address given.

Usage: python origin.py PAGE_DIR PORT HOST [HOST ...]
"""

from __future__ import annotations

import hashlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".json": "application/json",
}


def load(page: Path) -> dict[str, tuple[bytes, str, str]]:
    """Every file under PAGE, keyed by its URL path: (body, content type, etag)."""
    files = {}
    for path in page.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
            url = "/" + path.relative_to(page).as_posix()
            files[url] = (data, TYPES.get(path.suffix, "application/octet-stream"), etag)
    files["/"] = files["/index.html"]
    return files


def handler(files: dict[str, tuple[bytes, str, str]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "origin"
        # Node (Vite's runtime) sets TCP_NODELAY by default; without it the head and body
        # writes would meet Nagle's algorithm and stall a round trip on the shaped link.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, body: bool) -> None:
            entry = files.get(self.path.split("?", 1)[0])
            if entry is None:
                self.send_error(404)
                return
            data, kind, etag = entry
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("ETag", etag)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class Server(ThreadingHTTPServer):
    # Node's listen backlog (Vite's runtime); socketserver's default of 5 drops the SYNs of
    # a proxy opening many app connections at once, which then wait a 1 s retransmission.
    request_queue_size = 511
    daemon_threads = True


def main() -> None:
    page, port, hosts = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    files = load(page)
    servers = [Server((host, port), handler(files)) for host in hosts]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"origin listening on {', '.join(hosts)} port {port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

"""Microbenchmark of the upstream HTTP/1.1 wire code (issue 14, CPU per request).

Prints microseconds per call for the pure pieces a proxied request runs through on the
app side: parsing the response head, working out its body framing, the whole
L{ResponseReader} feed for a response that arrives in one read, chunked decoding, and
serialising the request head. The inputs are what real apps send: nginx's static-file
answer, a Vite dev-server answer, a chunked one, and a browser's request.

    taskset -c 1 python benchmarks/micro_wire.py [--repeat 5] [--number 20000]

It times CPU (process time), but a shared machine is still noisy (caches, clock
speed): pin it to one core, run it a few times and quote the best figure. Nothing here
asserts a speed; it only measures. To compare with older code, put an older checkout's
package first: C{PYTHONPATH=/tmp/old python benchmarks/micro_wire.py}.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

from portproxy.http.response_reader import ResponseReader
from portproxy.http.wire import (
    ChunkedDecoder,
    body_framing,
    build_request_head,
    parse_response_head,
)

#: nginx serving a small static file: 10 header fields, a 100-byte body, one read.
NGINX_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 07 Dec 2026 03:14:43 GMT\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Length: 100\r\n"
    b"Last-Modified: Sun, 06 Dec 2026 11:02:09 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "6752d8a1-64"\r\n'
    b"Cache-Control: no-cache\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Accept-Ranges: bytes"
)
NGINX = NGINX_HEAD + b"\r\n\r\n" + b"x" * 100

#: Vite's dev server answering a module request: 12 fields.
VITE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Vary: Origin\r\n"
    b"Access-Control-Allow-Origin: *\r\n"
    b"Content-Type: text/javascript\r\n"
    b"Cache-Control: no-cache\r\n"
    b'Etag: W/"4a1-Xj0mQbXgS3kVfq2rW3S1Oa3wM2Y"\r\n'
    b"Date: Mon, 07 Dec 2026 03:14:43 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Content-Length: 1185\r\n"
    b"X-Powered-By: Vite\r\n"
    b"Access-Control-Allow-Methods: GET,HEAD,PUT,PATCH,POST,DELETE\r\n"
    b"Access-Control-Allow-Headers: Content-Type"
)
VITE = VITE_HEAD + b"\r\n\r\n" + b"y" * 1185

#: A chunked answer (a Node/Express app streaming JSON), head and body in one read.
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"X-Powered-By: Express\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Date: Mon, 07 Dec 2026 03:14:43 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Transfer-Encoding: chunked"
)
CHUNKED_BODY = b"40\r\n" + b"z" * 64 + b"\r\n" + b"1c\r\n" + b"w" * 28 + b"\r\n0\r\n\r\n"
CHUNKED = CHUNKED_HEAD + b"\r\n\r\n" + CHUNKED_BODY

#: What Chromium sends for a page load, as the engine hands it over (12 fields).
BROWSER_FIELDS: list[tuple[bytes, list[bytes]]] = [
    (b"Host", [b"127.0.0.1:5173"]),
    (b"Connection", [b"keep-alive"]),
    (b"Sec-Ch-Ua", [b'"Chromium";v="131", "Not_A Brand";v="24"']),
    (b"Sec-Ch-Ua-Mobile", [b"?0"]),
    (b"Sec-Ch-Ua-Platform", [b'"Linux"']),
    (b"Upgrade-Insecure-Requests", [b"1"]),
    (
        b"User-Agent",
        [
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            b"Chrome/131.0.0.0 Safari/537.36"
        ],
    ),
    (
        b"Accept",
        [
            b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
            b"image/webp,image/apng,*/*;q=0.8"
        ],
    ),
    (b"Sec-Fetch-Site", [b"none"]),
    (b"Sec-Fetch-Mode", [b"navigate"]),
    (b"Accept-Encoding", [b"gzip, deflate, br, zstd"]),
    (b"Accept-Language", [b"en-US,en;q=0.9"]),
]


def _read_one(wire: bytes) -> Callable[[], object]:
    def run() -> object:
        reader = ResponseReader()
        reader.start(b"GET")
        return reader.feed(wire)

    return run


def _chunks() -> object:
    return ChunkedDecoder().feed(CHUNKED_BODY)


def _request() -> bytes:
    return build_request_head(
        b"GET",
        b"/src/main.ts?t=1733541283",
        BROWSER_FIELDS,
        body_length=None,
        default_host=b"127.0.0.1:5173",
    )


def cases() -> list[tuple[str, Callable[[], object]]]:
    """The measured calls, named as printed."""
    nginx = parse_response_head(NGINX_HEAD)
    vite = parse_response_head(VITE_HEAD)
    chunked = parse_response_head(CHUNKED_HEAD)
    return [
        ("reader feed, nginx 200 (10 fields, 100 B)", _read_one(NGINX)),
        ("reader feed, vite 200 (12 fields, 1185 B)", _read_one(VITE)),
        ("reader feed, chunked 200 (6 fields, 2 chunks)", _read_one(CHUNKED)),
        ("parse_response_head, nginx", lambda: parse_response_head(NGINX_HEAD)),
        ("parse_response_head, vite", lambda: parse_response_head(VITE_HEAD)),
        ("body_framing, nginx", lambda: body_framing(b"GET", nginx)),
        ("body_framing, vite", lambda: body_framing(b"GET", vite)),
        ("body_framing, chunked", lambda: body_framing(b"GET", chunked)),
        ("ChunkedDecoder feed, 2 chunks", _chunks),
        ("build_request_head, browser GET (12 fields)", _request),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timing rounds (best kept)")
    parser.add_argument("--number", type=int, default=20000, help="calls per round")
    args = parser.parse_args()
    for name, call in cases():
        # CPU time, not wall time: another process on the core does not count.
        timer = time.process_time
        best = min(timeit.repeat(call, timer, number=args.number, repeat=args.repeat))
        print(f"{best / args.number * 1e6:8.2f} us  {name}")


if __name__ == "__main__":
    main()

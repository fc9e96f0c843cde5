"""Per-request cost of the pure header and routing functions (issue 14).

Times, with timeit on one core, what every proxied request pays in
L{portproxy.http.headers} and L{portproxy.routing.routes}: the request headers a wrk
load test sends (Host only) and the ones Chrome sends (about 15 fields, a session
cookie among the app's), from a direct client and from a trusted front proxy; the
response heads of nginx and of a Vite dev server; and routing a typical target.

    taskset -c 1 python benchmarks/micro_headers.py [--repeat 5] [--number 20000]

Prints microseconds per call, the best of C{--repeat} runs (the machine is shared:
run it a few times and quote the best). No pytest, no network.
"""

from __future__ import annotations

import argparse
import ipaddress
import timeit
from collections.abc import Callable

from twisted.web.http_headers import Headers

from portproxy.http.headers import (
    ClientView,
    client_view,
    forward_request_headers,
    request_authority,
    response_header_pairs,
)
from portproxy.http.wire import build_request_head
from portproxy.routing.routes import origin_form, parse_route

SESSION = b"portproxy-session"
TRUSTED_NETS = (ipaddress.ip_network("10.0.0.0/8"),)


def _raw(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, list[bytes]]]:
    """The fields as twisted.web hands them over: canonical names, values grouped."""
    headers = Headers()
    for name, value in fields:
        headers.addRawHeader(name, value)
    return [(name, list(values)) for name, values in headers.getAllRawHeaders()]


WRK = _raw([(b"Host", b"127.0.0.1:8080")])

# Chrome 131 loading a page of a Vite app through /proxy/5173/, signed in.
BROWSER = _raw(
    [
        (b"Host", b"localhost:8080"),
        (b"Connection", b"keep-alive"),
        (
            b"sec-ch-ua",
            b'"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
        ),
        (b"sec-ch-ua-mobile", b"?0"),
        (b"sec-ch-ua-platform", b'"Linux"'),
        (b"Upgrade-Insecure-Requests", b"1"),
        (
            b"User-Agent",
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            b"Chrome/131.0.0.0 Safari/537.36",
        ),
        (
            b"Accept",
            b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
            b"image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        ),
        (b"Sec-Fetch-Site", b"same-origin"),
        (b"Sec-Fetch-Mode", b"navigate"),
        (b"Sec-Fetch-User", b"?1"),
        (b"Sec-Fetch-Dest", b"document"),
        (b"Referer", b"http://localhost:8080/proxy/5173/"),
        (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
        (b"Accept-Language", b"en-US,en;q=0.9"),
        (
            b"Cookie",
            b"portproxy-session=Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4; theme=dark; "
            b"_ga=GA1.1.1234567890.1700000000; csrftoken=abcdef0123456789",
        ),
    ]
)

# The same browser behind a trusted nginx (proxy_set_header ... as its docs show).
BEHIND_NGINX = _raw(
    [
        (b"Host", b"dev.example.com"),
        (b"X-Real-IP", b"198.51.100.7"),
        (b"X-Forwarded-For", b"198.51.100.7"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"dev.example.com"),
        (b"Connection", b"close"),
    ]
    + [(n, v) for n, vs in BROWSER[2:] for v in vs]
)

DIRECT = ClientView(peer="127.0.0.1", trusted=False, scheme="http", host="localhost:8080")
FRONTED = ClientView(peer="10.0.0.2", trusted=True, scheme="https", host="dev.example.com")

NGINX_RESPONSE = [
    (b"Server", b"nginx/1.22.1"),
    (b"Date", b"Mon, 07 Dec 2026 03:00:00 GMT"),
    (b"Content-Type", b"text/html"),
    (b"Content-Length", b"615"),
    (b"Last-Modified", b"Tue, 01 Dec 2026 10:00:00 GMT"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b'"674d2a50-267"'),
    (b"Cache-Control", b"no-cache"),
    (b"X-Frame-Options", b"SAMEORIGIN"),
    (b"Accept-Ranges", b"bytes"),
]

VITE_RESPONSE = [
    (b"Vary", b"Origin"),
    (b"Access-Control-Allow-Origin", b"*"),
    (b"Content-Type", b"text/javascript"),
    (b"Cache-Control", b"no-cache"),
    (b"Etag", b'W/"1a2-abcdefghijklmnopqrstuvwxyz0"'),
    (b"Date", b"Mon, 07 Dec 2026 03:00:00 GMT"),
    (b"Connection", b"keep-alive"),
    (b"Keep-Alive", b"timeout=5"),
    (b"Transfer-Encoding", b"chunked"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Set-Cookie", b"vite-hmr=1; Path=/"),
]


def _forward_and_head(
    raw: list[tuple[bytes, list[bytes]]], view: ClientView
) -> Callable[[], object]:
    def run() -> object:
        headers = forward_request_headers(
            iter(raw), view=view, session_cookie=SESSION, prefix=b"/proxy/5173"
        )
        return build_request_head(
            b"GET",
            b"/src/main.ts",
            headers,
            body_length=None,
            default_host=b"127.0.0.1:5173",
        )

    return run


def _forward(
    raw: list[tuple[bytes, list[bytes]]], view: ClientView
) -> Callable[[], object]:
    return lambda: forward_request_headers(
        iter(raw), view=view, session_cookie=SESSION, prefix=b"/proxy/5173"
    )


def _view(
    raw: list[tuple[bytes, list[bytes]]], peer: str, trusted: bool
) -> Callable[[], object]:
    nets = TRUSTED_NETS if trusted else ()
    return lambda: client_view(iter(raw), peer=peer, secure=False, trusted_networks=nets)


CASES: list[tuple[str, Callable[[], object]]] = [
    ("forward_request_headers wrk", _forward(WRK, DIRECT)),
    ("forward_request_headers browser", _forward(BROWSER, DIRECT)),
    ("forward_request_headers browser, trusted nginx", _forward(BEHIND_NGINX, FRONTED)),
    ("forward+build_request_head wrk", _forward_and_head(WRK, DIRECT)),
    ("forward+build_request_head browser", _forward_and_head(BROWSER, DIRECT)),
    (
        "forward+build_request_head browser, trusted nginx",
        _forward_and_head(BEHIND_NGINX, FRONTED),
    ),
    ("response_header_pairs nginx (10)", lambda: response_header_pairs(NGINX_RESPONSE)),
    ("response_header_pairs vite (11)", lambda: response_header_pairs(VITE_RESPONSE)),
    ("client_view browser, no trusted proxies", _view(BROWSER, "127.0.0.1", False)),
    ("client_view browser, trusted nginx", _view(BEHIND_NGINX, "10.0.0.2", True)),
    (
        "request_authority browser",
        lambda: request_authority(
            [b"localhost:8080"], b"/proxy/5173/", version=b"HTTP/1.1"
        ),
    ),
    (
        "parse_route(origin_form()) /proxy/5173/src/main.ts",
        lambda: parse_route(origin_form(b"/proxy/5173/src/main.ts?t=1733540000")),
    ),
    ("parse_route(origin_form()) /", lambda: parse_route(origin_form(b"/"))),
    (
        "parse_route(origin_form()) absolute-form",
        lambda: parse_route(origin_form(b"http://localhost:8080/proxy/5173/x")),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per case (best is kept)"
    )
    parser.add_argument("--number", type=int, default=20000, help="calls per run")
    args = parser.parse_args()
    width = max(len(label) for label, _ in CASES)
    for label, func in CASES:
        best = min(timeit.repeat(func, number=args.number, repeat=args.repeat))
        print(f"{label:<{width}}  {best / args.number * 1e6:7.3f} us")


if __name__ == "__main__":
    main()

# -*- test-case-name: tests.test_proxy_http -*-
"""Error answers: an HTML page for browsers, C{{"error": ...}} JSON for everything else.

Each page is rendered from plain strings, and every value that came from the request or
the upstream is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from typing import Protocol

__all__ = ["ErrorBody", "accepts_html", "error_body", "reason_phrase", "write_error"]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {title} - portproxy</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}
h1{{font-size:1.4em}}p{{line-height:1.5}}</style></head>
<body><h1>{status} {title}</h1><p>{message}</p></body></html>
"""

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


class _Request(Protocol):
    def getHeader(self, key: bytes) -> bytes | None: ...
    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...
    def setHeader(self, name: bytes, value: bytes) -> None: ...


class ErrorBody:
    """A rendered error: its content type and bytes."""

    __slots__ = ("body", "content_type")

    def __init__(self, content_type: bytes, body: bytes) -> None:
        self.content_type = content_type
        self.body = body


def reason_phrase(status: int) -> bytes | None:
    """The reason phrase for C{status} (twisted.web lacks some, such as 429)."""
    title = _TITLES.get(status)
    return title.encode("ascii") if title else None


def accepts_html(accept: bytes | None) -> bool:
    """True when an C{Accept} header lists C{text/html} (a browser navigation).

    C{*/*} alone does not count: curl and fetch send it and want machine-readable errors.
    """
    if not accept:
        return False
    for item in accept.split(b","):
        media, _, params = item.strip().partition(b";")
        if media.strip().lower() == b"text/html":
            q = params.replace(b" ", b"").lower()
            return b"q=0" not in q or (b"q=0." in q and q != b"q=0.0")
    return False


def error_body(status: int, message: str, *, html_page: bool) -> ErrorBody:
    """Render C{message} for C{status}: an HTML page, or JSON C{{"error": message}}."""
    if html_page:
        page = _PAGE.format(
            status=status,
            title=html.escape(_TITLES.get(status, "Error")),
            message=html.escape(message),
        )
        return ErrorBody(b"text/html; charset=utf-8", page.encode("utf-8"))
    return ErrorBody(b"application/json", json.dumps({"error": message}).encode("utf-8"))


def write_error(request: _Request, status: int, message: str) -> bytes:
    """Set the status and content type on C{request}; return the body to render."""
    body = error_body(status, message, html_page=accepts_html(request.getHeader(b"accept")))
    request.setResponseCode(status, reason_phrase(status))
    request.setHeader(b"content-type", body.content_type)
    request.setHeader(b"cache-control", b"no-store")
    return body.body

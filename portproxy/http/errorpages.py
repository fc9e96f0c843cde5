# -*- test-case-name: tests.test_proxy_http -*-
"""Error answers: an HTML page for browsers, C{{"error": ...}} JSON for everything else.

Each page is rendered from plain strings, and every value that came from the request or
the upstream is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from typing import Protocol

__all__ = [
    "RELOAD_AFTER",
    "ErrorBody",
    "accepts_html",
    "error_body",
    "nothing_listening_hint",
    "reason_phrase",
    "write_error",
]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {title} - portproxy</title>{refresh}
<style>
body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}
h1{{font-size:1.4em}}p{{line-height:1.5}}</style></head>
<body><h1>{status} {title}</h1><p>{message}</p>{more}</body></html>
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


#: Seconds between two reloads of a page that waits for an app (SPEC 9: the page shows
#: the app within 2 s of it listening).
RELOAD_AFTER = 1


def error_body(
    status: int,
    message: str,
    *,
    html_page: bool,
    hint: str | None = None,
    reload_after: int | None = None,
) -> ErrorBody:
    """Render C{message} for C{status}: an HTML page, or JSON C{{"error": message}}.

    @param hint: a second paragraph for the HTML page (what to check).
    @param reload_after: the HTML page reloads itself after this many seconds (a meta
        refresh: no script, so a strict Content-Security-Policy does not stop it).
    """
    if html_page:
        refresh = (
            f'\n<meta http-equiv="refresh" content="{int(reload_after)}">'
            if reload_after is not None
            else ""
        )
        page = _PAGE.format(
            status=status,
            title=html.escape(_TITLES.get(status, "Error")),
            message=html.escape(message),
            refresh=refresh,
            more=f"<p>{html.escape(hint)}</p>" if hint else "",
        )
        return ErrorBody(b"text/html; charset=utf-8", page.encode("utf-8"))
    return ErrorBody(b"application/json", json.dumps({"error": message}).encode("utf-8"))


def write_error(
    request: _Request,
    status: int,
    message: str,
    *,
    hint: str | None = None,
    reload_after: int | None = None,
) -> bytes:
    """Set the status and content type on C{request}; return the body to render.

    C{hint} and C{reload_after} shape the HTML page only (L{error_body}).
    """
    body = error_body(
        status,
        message,
        html_page=accepts_html(request.getHeader(b"accept")),
        hint=hint,
        reload_after=reload_after,
    )
    request.setResponseCode(status, reason_phrase(status))
    request.setHeader(b"content-type", body.content_type)
    request.setHeader(b"cache-control", b"no-store")
    return body.body


def nothing_listening_hint(port: int) -> str:
    """What the waiting 502 page tells a browser user (SPEC 9)."""
    return (
        f"This page reloads itself every second and opens the app as soon as it "
        f"listens. Check that the app is running, that it uses port {port}, and that "
        "it listens on 127.0.0.1, localhost or ::1 (portproxy connects over loopback)."
    )

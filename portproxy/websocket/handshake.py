# -*- test-case-name: tests.test_websocket_handshake -*-
"""The bytes of the two opening handshakes, as pure functions.

Autobahn runs both handshakes; these functions decide what it is fed and what, of what it
writes, must change so that the upstream sees the client's own request: the client's
C{Host} and C{Origin} byte for byte, and the application headers the header policy chose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from twisted.web.http import RESPONSES

from portproxy.http.errorpages import accepts_html, error_body

__all__ = [
    "RawHeaders",
    "Target",
    "error_response",
    "is_upgrade",
    "refusal_status",
    "request_target",
    "server_leg_head",
    "upstream_head",
]

RawHeaders = Iterable[tuple[bytes, Sequence[bytes]]]


@dataclass(frozen=True)
class Target:
    """What one upgrade sends upstream, computed before the connection is taken over."""

    port: int
    resource: str
    host: bytes | None
    origin: bytes | None
    headers: list[tuple[bytes, list[bytes]]]
    #: The client's C{Accept} header (not C{Sec-WebSocket-Accept}): whether a refusal
    #: is answered with an HTML or a JSON error page.
    accept_header: bytes | None


# What Autobahn's server leg reads from the client's request; nothing else is fed to it.
_HANDSHAKE_FIELDS = (b"host", b"upgrade", b"connection", b"origin")
# Written by Autobahn's client leg itself (always "no-cache", as browsers send them).
_WRITTEN_BY_CLIENT_LEG = frozenset({b"pragma", b"cache-control"})


def _tokens(values: Sequence[bytes]) -> Iterable[bytes]:
    for value in values:
        for token in value.split(b","):
            yield token.strip(b" \t").lower()


def is_upgrade(method: bytes, headers: RawHeaders) -> bool:
    """Whether a request asks for a WebSocket (RFC 6455 section 4.1).

    C{GET}, an C{Upgrade} field listing C{websocket}, and an C{upgrade} token in any
    C{Connection} field (each a comma list, matched without regard to case).
    """
    if method != b"GET":
        return False
    upgrade = connection = False
    for name, values in headers:
        lower = name.lower()
        if lower == b"upgrade":
            upgrade = upgrade or b"websocket" in _tokens(values)
        elif lower == b"connection":
            connection = connection or b"upgrade" in _tokens(values)
    return upgrade and connection


def server_leg_head(method: bytes, uri: bytes, headers: RawHeaders) -> bytes:
    """The request head to feed Autobahn's server leg, from the request twisted.web parsed.

    Only the fields Autobahn checks are included, one line per value, so that its
    duplicate checks (two C{Host}, two C{Sec-WebSocket-Key}) still see duplicates.
    """
    lines = [method + b" " + uri + b" HTTP/1.1"]
    for name, values in headers:
        lower = name.lower()
        if lower in _HANDSHAKE_FIELDS or lower.startswith(b"sec-websocket-"):
            lines.extend(name + b": " + value for value in values)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request_target(path: bytes) -> str:
    """The upstream request target as text for Autobahn, byte for byte when ASCII.

    Bytes outside printable ASCII (never sent by browsers) are percent-encoded, as the
    HTTP engine does; an empty target becomes C{/}.
    """
    if not path:
        return "/"
    return "".join(chr(b) if 0x21 <= b <= 0x7E else "%%%02X" % b for b in path)


def _safe_value(value: bytes) -> bool:
    return not any(c in value for c in b"\r\n\x00")


def upstream_head(
    head: bytes,
    *,
    host: bytes | None,
    origin: bytes | None,
    headers: RawHeaders,
) -> bytes:
    """Rewrite the opening request Autobahn's client leg wrote for the upstream.

    Autobahn always writes C{Host: <host>:<port>} from its URL, so its C{Host} line is
    replaced with the client's value (or removed when the client sent none, which
    Autobahn's server leg refuses anyway); C{Origin} and the application C{headers} are
    added as raw bytes before the blank line that ends the head.

    @raise ValueError: if C{head} has no C{Host} line or no end (Autobahn changed).
    """
    end = head.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("not a complete request head")
    lines = head[:end].split(b"\r\n")
    index = next((i for i, line in enumerate(lines) if line[:5].lower() == b"host:"), None)
    if index is None:
        raise ValueError("the client leg wrote no Host line")
    replacement = [b"Host: " + host] if host is not None and _safe_value(host) else []
    lines[index : index + 1] = replacement
    if origin is not None and _safe_value(origin):
        lines.append(b"Origin: " + origin)
    for name, values in headers:
        if name.lower() in _WRITTEN_BY_CLIENT_LEG:
            continue
        lines.extend(name + b": " + value for value in values if _safe_value(value))
    return b"\r\n".join(lines) + b"\r\n\r\n" + head[end + 4 :]


def refusal_status(status_line: str | None) -> tuple[int, str | None]:
    """The status to give the client when the upstream did not switch protocols.

    An upstream error or redirect (3xx to 5xx) is passed on with its reason phrase;
    anything else (no answer, a 101 that failed Autobahn's checks, a 200) is a 502.

    @return: C{(status, reason phrase or None for the standard one)}.
    """
    parts = (status_line or "").split(None, 2)
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        code = int(parts[1])
        if 300 <= code <= 599:
            phrase = parts[2] if len(parts) == 3 else None
            if phrase is not None and not all(" " <= c <= "~" for c in phrase):
                phrase = None
            return code, phrase
    return 502, None


def error_response(
    code: int,
    message: str,
    *,
    phrase: str | None = None,
    accept: bytes | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A complete HTTP error response for a failed upgrade, with a body (then close).

    The body is the proxy's usual error page: HTML for a browser navigation, else JSON.
    """
    if phrase is None:
        phrase = RESPONSES.get(code, b"Error").decode("latin-1")
    body = error_body(code, message, html_page=accepts_html(accept))
    lines = [
        b"HTTP/1.1 %d %s" % (code, phrase.encode("latin-1")),
        b"Content-Type: " + body.content_type,
        b"Content-Length: %d" % len(body.body),
        b"Cache-Control: no-store",
        b"Connection: close",
    ]
    for name, value in extra:
        lines.append(f"{name}: {value}".encode("latin-1", "replace"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body.body

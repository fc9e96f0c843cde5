# -*- test-case-name: tests.test_http11 -*-
"""HTTP/1.1 message framing for the upstream side, without I/O.

The proxy talks to apps on loopback over persistent HTTP/1.1 connections. These pure
pieces build the request head and parse the response (status line, headers, body
framing, chunked decoding); L{portproxy.http.upstream} wires them to sockets. Parsing is
strict where laxness would let one message bleed into the next (RFC 9112 6.3, 11.2).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_HEAD_SIZE",
    "BodyKind",
    "ChunkedDecoder",
    "ProtocolError",
    "ResponseHead",
    "body_framing",
    "build_request_head",
    "parse_response_head",
]

#: Largest response head accepted from an upstream.
MAX_HEAD_SIZE = 64 * 1024


class ProtocolError(ValueError):
    """The upstream sent something that is not HTTP/1.1; the connection is unusable."""


class BodyKind(enum.Enum):
    NONE = "none"  # HEAD, 1xx, 204, 304
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"
    CLOSE = "close"  # delimited by the end of the connection


@dataclass(frozen=True, slots=True)
class ResponseHead:
    version: bytes
    code: int
    reason: bytes
    #: Header fields in arrival order, names as sent.
    headers: list[tuple[bytes, bytes]]


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# A field value holds visible bytes, spaces and tabs only (RFC 9110 5.5): no CR, LF,
# NUL or other control byte, so no value can end a line early or hide one.
_FIELD_SRC = (
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)[ \t]*\r\n"
)
_FIELD = re.compile(_FIELD_SRC)
_FIELDS = re.compile(
    rb"(?:" + _FIELD_SRC.replace(b"(", b"(?:").replace(b"(?:?:", b"(?:") + rb")*"
)
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")
#: reason-phrase = *( HTAB / SP / VCHAR / obs-text ) (RFC 9112 4): a CR or LF in it
#: would be copied into the client's status line and start a header there.
_REASON = _VALUE
#: What a request target may hold: visible ASCII only (RFC 9112 3.2), so no byte can
#: end the request line early or be read differently by the app.
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
#: chunk-size [ BWS ";" chunk-ext ] (RFC 9112 7.1), the extension free of control bytes.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?\Z")


def parse_response_head(block: bytes) -> ResponseHead:
    """Parse a status line and header fields (C{block} ends before the blank line)."""
    lines = block.split(b"\r\n")
    status = lines[0]
    parts = status.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ProtocolError(f"bad status line {status[:80]!r}")
    code_text = parts[1]
    if len(code_text) != 3 or not code_text.isdigit():
        raise ProtocolError(f"bad status code {code_text[:10]!r}")
    code = int(code_text)
    if not 100 <= code <= 599:
        # RFC 9110 15: codes are 100-599; a "000" must not pass for an interim
        # response to be skipped, nor a 6xx (a library's private code) reach a client.
        raise ProtocolError(f"status code {code_text!r} is outside 100-599")
    reason = parts[2] if len(parts) == 3 else b""
    if reason and _REASON.match(reason) is None:
        raise ProtocolError(f"control character in the reason phrase {reason[:80]!r}")
    rest = block[len(status) + 2 :]
    if not rest and len(lines) == 1:
        return ResponseHead(parts[0], code, reason, [])
    if _FIELDS.fullmatch(rest + b"\r\n") is not None:
        # The common case, checked and split in C: well-formed, unfolded fields.
        return ResponseHead(parts[0], code, reason, _FIELD.findall(rest + b"\r\n"))
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            # Obsolete line folding (RFC 9112 5.2): a proxy replaces it with a space.
            if not headers:
                raise ProtocolError("continuation line before any header")
            if _VALUE.match(line) is None:
                raise ProtocolError("control character in a header value")
            name, value = headers[-1]
            headers[-1] = (name, (value + b" " + line.strip(b" \t")).strip(b" "))
            continue
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.match(name) is None:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        if _VALUE.match(value) is None:
            raise ProtocolError("control character in a header value")
        headers.append((name, value.strip(b" \t")))
    return ResponseHead(parts[0], code, reason, headers)


def body_framing(method: bytes, head: ResponseHead) -> tuple[BodyKind, int, bool]:
    """How the response body is delimited: C{(kind, length, keep_alive)}.

    Raises L{ProtocolError} for an unusable Content-Length (RFC 9112 6.3: conflicting or
    malformed lengths must not be guessed at).
    """
    keep_alive = head.version == b"HTTP/1.1"
    #: Set by anything that rules reuse out, whatever a later field says.
    close = False
    chunked = False
    lengths: set[bytes] = set()
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens and head.version == b"HTTP/1.0":
                keep_alive = True
        elif lower == b"transfer-encoding":
            codings = [t.strip().lower() for t in value.split(b",") if t.strip()]
            if any(
                _TOKEN.match(c.split(b";", 1)[0].rstrip(b" \t")) is None for c in codings
            ):
                raise ProtocolError(f"bad Transfer-Encoding {value[:40]!r}")
            if chunked or b"chunked" in codings[:-1]:
                # Chunked applied twice, or not last: no framing to trust.
                raise ProtocolError("chunked is not the last transfer coding")
            if head.version != b"HTTP/1.1":
                # RFC 9112 6.1: Transfer-Encoding in a 1.0 message is faulty framing;
                # decode it, but never read another response on this connection.
                close = True
            if codings and codings[-1] == b"chunked":
                chunked = True
            else:
                # Not chunked last: the body runs to the end of the connection.
                close = True
                lengths.add(b"close")
        elif lower == b"content-length":
            for item in value.split(b","):
                lengths.add(item.strip())
    keep_alive = keep_alive and not close
    length = -1
    numbers = lengths - {b"close"}
    if numbers:
        # Checked even where no body follows: the field still reaches the client.
        if len(numbers) != 1:
            raise ProtocolError("conflicting Content-Length values")
        (text,) = numbers
        if not text.isdigit() or len(text) > 18:
            raise ProtocolError(f"bad Content-Length {text[:20]!r}")
        length = int(text)
    code = head.code
    if method == b"HEAD" or code < 200 or code in (204, 304):
        # No body follows, whatever the framing fields say (RFC 9112 6.3). An app that
        # sends one anyway (a HEAD answered like a GET, a 304 with its full body)
        # races the next request on this connection: bytes in the same read as the
        # head revoke keep-alive (ResponseReader), bytes that come while the
        # connection is idle abort it, but bytes that come after the next request
        # was written are read as its response, which may be another client's. So
        # where a body may follow that the status forbids, the connection is not
        # reused: after any HEAD (rare, and a HEAD answered like a GET is a common
        # app bug, Python's do_HEAD = do_GET among them), a 204 with a Content-Length
        # other than 0 or any Transfer-Encoding (RFC 9110 8.6, RFC 9112 6.1), and a
        # 304 whose fields describe a body (allowed, but the body may come too).
        if method == b"HEAD":
            keep_alive = False
        elif code == 204:
            if length > 0 or chunked or b"close" in lengths:
                keep_alive = False
        elif code == 304 and (length > 0 or chunked or b"close" in lengths):
            keep_alive = False
        return BodyKind.NONE, 0, keep_alive
    if chunked:
        # Transfer-Encoding overrides Content-Length; such a message is suspect, so
        # the connection is not reused.
        return BodyKind.CHUNKED, 0, keep_alive and not lengths
    if b"close" in lengths:
        return BodyKind.CLOSE, 0, False
    if length >= 0:
        return BodyKind.LENGTH, length, keep_alive
    return BodyKind.CLOSE, 0, False


class ChunkedDecoder:
    """Decode a chunked body incrementally; C{feed} returns the data chunks found."""

    __slots__ = ("_buffer", "_remaining", "_state", "done", "extra")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._buffer = b""
        self.done = False
        #: Bytes received after the end of the body (a pipelining upstream's bug).
        self.extra = b""

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.done:
            self.extra += data
            return out
        data = self._buffer + data
        self._buffer = b""
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = self._DATA_END
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                rest = data[pos:]
                if len(rest) > 4096:
                    raise ProtocolError("chunk line too long")
                self._buffer = rest
                break
            line = data[pos:eol]
            pos = eol + 2
            if state == self._SIZE:
                match = _CHUNK_LINE.match(line)
                if match is None:
                    raise ProtocolError(f"bad chunk size {line[:20]!r}")
                size = int(match.group(1), 16)
                if size:
                    self._remaining = size
                    self._state = self._DATA
                else:
                    self._state = self._TRAILER
            elif state == self._DATA_END:
                if line:
                    raise ProtocolError("missing CRLF after chunk data")
                self._state = self._SIZE
            elif not line:  # the blank line that ends the trailer section
                self.done = True
                self.extra = data[pos:]
                break
            elif _FIELD.fullmatch(line + b"\r\n") is None and not (
                line[:1] in (b" ", b"\t") and _VALUE.match(line) is not None
            ):
                raise ProtocolError(f"bad trailer line {line[:40]!r}")
            # Trailer fields are dropped: twisted.web cannot send them on.
        return out


def build_request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, Sequence[bytes]]],
    *,
    body_length: int | None,
    default_host: bytes,
    chunked: bool = False,
) -> bytes:
    """Serialise a request head; C{body_length} C{None} means no body framing at all.

    Raises L{ProtocolError} when the method is not a token, the target holds anything
    but visible ASCII, or a header value could split the message (CR, LF or NUL), which
    twisted.web's own parser lets through in some positions (its request-target check
    compares with 176 where 126 was meant, so DEL and 0x80-0xB0 get through; HTTP/2's
    C{:method} and C{:path} arrive here unchecked too).
    """
    if _TOKEN.match(method) is None:
        raise ProtocolError(f"bad method {method[:20]!r}")
    if _TARGET.match(target) is None:
        raise ProtocolError(f"bad request target {target[:40]!r}")
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    has_host = False
    for name, values in headers:
        if not has_host and name.lower() == b"host":
            has_host = True
        for value in values:
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                raise ProtocolError("control character in a request header")
            out += (name, b": ", value, b"\r\n")
    if not has_host:
        out += (b"Host: ", default_host, b"\r\n")
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif body_length is not None:
        out += (b"Content-Length: ", b"%d" % body_length, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)

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
from typing import NamedTuple

__all__ = [
    "MAX_HEAD_SIZE",
    "BodyKind",
    "ChunkedDecoder",
    "ProtocolError",
    "ResponseHead",
    "body_framing",
    "build_request_head",
    "framing_from_fields",
    "parse_response_head",
    "read_response_head",
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


# The members framing_from_fields returns, as module globals: on Python 3.11 reading an
# enum member off its class costs about three times a global lookup.
_NO_BODY, _BY_LENGTH, _BY_CHUNKS, _TO_END = (
    BodyKind.NONE,
    BodyKind.LENGTH,
    BodyKind.CHUNKED,
    BodyKind.CLOSE,
)


class ResponseHead(NamedTuple):
    """A parsed status line and its header fields.

    A named tuple rather than a frozen dataclass: one is made per response, and a frozen
    dataclass's C{__init__} costs more than the parsing it records.
    """

    version: bytes
    code: int
    reason: bytes
    #: Header fields in arrival order, names as sent.
    headers: list[tuple[bytes, bytes]]


#: Builds a L{ResponseHead} from a 4-tuple in C, skipping the generated C{__new__}.
_new_head = tuple.__new__

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(rb"[" + _TCHAR + rb"]+\Z")
# A field value holds visible bytes, spaces and tabs only (RFC 9110 5.5): no CR, LF,
# NUL or other control byte, so no value can end a line early or hide one.
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")
#: reason-phrase = *( HTAB / SP / VCHAR / obs-text ) (RFC 9112 4): a CR or LF in it
#: would be copied into the client's status line and start a header there.
_REASON = _VALUE
#: What a request target may hold: visible ASCII only (RFC 9112 3.2), so no byte can
#: end the request line early or be read differently by the app.
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
#: chunk-size [ BWS ";" chunk-ext ] (RFC 9112 7.1), the extension free of control bytes.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?\Z")
#: A trailer field line (name, colon, value bytes); possessive, so linear in its length.
_TRAILER_FIELD = re.compile(rb"[" + _TCHAR + rb"]++:[\t\x20-\x7e\x80-\xff]*+\Z")

# The fast head parser checks a whole head with two scans in C and leaves anything
# unusual (folded lines, blanks at a value's end, any error) to the line-by-line parser,
# which is the rule book; tests/test_wire_equivalence.py holds the two to one result.
#
#: The status line without its CRLF: three digits 100-599 (RFC 9110 15), and a reason
#: of HTAB, SP, VCHAR and obs-text (RFC 9112 4).
_STATUS = re.compile(rb"(HTTP/1\.[01]) ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*+))?")
#: One field line, from the LF that ends the line before it to its own CR: a token,
#: a colon and a value of HTAB, SP, VCHAR and obs-text, the blanks around it left out.
#: Anchored at the LF, so a search cannot start inside a line ("Bad Name: x" yields no
#: "Name"); a value that ends in a blank does not match (the slow parser strips it).
#: Possessive throughout: linear time, whatever the blanks.
_LINE = re.compile(
    rb"\n([" + _TCHAR + rb"]++):[ \t]*+([\t\x20-\x7e\x80-\xff]*+)(?<![ \t])\r(?=\n)"
)
#: The fields that frame the body, by the same anchors and value rule; only run on a
#: head _LINE has passed, where the bytes up to a CR are the value's.
_FRAMING_LINE = re.compile(
    rb"\n((?i:connection|content-length|transfer-encoding)):[ \t]*+([^\r]*+)(?<![ \t])\r"
)
#: Every byte but CR, LF and NUL, which could split a request head.
_NOT_CR_LF_NUL = bytes(b for b in range(256) if b not in (0x00, 0x0A, 0x0D))
_FRAMING_NAMES = frozenset((b"connection", b"content-length", b"transfer-encoding"))
_CODES = {b"%d" % code: code for code in range(100, 600)}


def read_response_head(
    data: bytes,
) -> tuple[ResponseHead, list[tuple[bytes, bytes]]]:
    """Parse a head given with the CRLF that ends its last line (but not the blank line).

    Also returns the fields that frame the body (Connection, Content-Length,
    Transfer-Encoding; names as sent) for L{framing_from_fields}, found in the same
    go. Raises L{ProtocolError} as L{parse_response_head} does.
    """
    status_end = data.find(b"\r\n")
    if status_end > 0 and data[-1:] == b"\n":
        status = _STATUS.fullmatch(data, 0, status_end)
        if status is not None:
            start = status_end + 1  # the status line's LF
            fields = _LINE.findall(data, start)
            # A match runs from one LF to the CR before the next, with no CR, LF or
            # control byte between: when every later LF ends one, every line is a
            # field line and no lone CR or LF is anywhere (RFC 9112 2.2).
            if len(fields) == data.count(b"\n", start + 1):
                version, code, reason = status.group(1, 2, 3)
                head: ResponseHead = _new_head(
                    ResponseHead, (version, _CODES[code], reason or b"", fields)
                )
                return head, _FRAMING_LINE.findall(data, start)
    head = _parse_lines(data[:-2])
    return head, _framing_fields(head.headers)


def parse_response_head(block: bytes) -> ResponseHead:
    """Parse a status line and header fields (C{block} ends before the blank line)."""
    return read_response_head(block + b"\r\n")[0]


def _parse_lines(block: bytes) -> ResponseHead:
    """Parse a head line by line: the rules, for every head the fast parser passes up."""
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


def _framing_fields(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name.lower() in _FRAMING_NAMES]


def body_framing(method: bytes, head: ResponseHead) -> tuple[BodyKind, int, bool]:
    """How the response body is delimited: C{(kind, length, keep_alive)}.

    Raises L{ProtocolError} for an unusable Content-Length (RFC 9112 6.3: conflicting or
    malformed lengths must not be guessed at).
    """
    return framing_from_fields(method, head, _framing_fields(head.headers))


def framing_from_fields(
    method: bytes, head: ResponseHead, fields: Sequence[tuple[bytes, bytes]]
) -> tuple[BodyKind, int, bool]:
    """L{body_framing} from C{head}'s framing fields, as L{read_response_head} gives them.

    C{fields} are C{head}'s Connection, Content-Length and Transfer-Encoding fields in
    order (names in any case), and no others.
    """
    version = head.version
    keep_alive = version == b"HTTP/1.1"
    #: Set by anything that rules reuse out, whatever a later field says.
    close = False
    chunked = False
    #: A transfer coding other than chunked last: the body runs to the end.
    to_end = False
    length_text: bytes | None = None
    conflict = False
    for name, value in fields:
        # The name is one of three, which differ in length.
        size = len(name)
        if size == 14:  # Content-Length
            if length_text is None and value.isdigit():
                length_text = value  # the usual field: one number, nothing around it
                continue
            for item in value.split(b","):
                item = item.strip()
                if length_text is None:
                    length_text = item
                elif item != length_text:
                    conflict = True
        elif size == 10:  # Connection
            lowered = value.lower()
            if lowered == b"keep-alive":
                if version == b"HTTP/1.0":
                    keep_alive = True
            elif b"close" in lowered or b"keep-alive" in lowered:
                tokens = {t.strip() for t in lowered.split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                    keep_alive = True
        else:  # Transfer-Encoding
            lowered = value.lower()
            if lowered == b"chunked":
                codings = [lowered]
            else:
                codings = [t.strip() for t in lowered.split(b",") if t.strip()]
                if any(
                    _TOKEN.match(c.split(b";", 1)[0].rstrip(b" \t")) is None
                    for c in codings
                ):
                    raise ProtocolError(f"bad Transfer-Encoding {value[:40]!r}")
            if chunked or b"chunked" in codings[:-1]:
                # Chunked applied twice, or not last: no framing to trust.
                raise ProtocolError("chunked is not the last transfer coding")
            if version != b"HTTP/1.1":
                # RFC 9112 6.1: Transfer-Encoding in a 1.0 message is faulty framing;
                # decode it, but never read another response on this connection.
                close = True
            if codings and codings[-1] == b"chunked":
                chunked = True
            else:
                # Not chunked last: the body runs to the end of the connection.
                close = True
                to_end = True
    keep_alive = keep_alive and not close
    length = -1
    if length_text is not None:
        # Checked even where no body follows: the field still reaches the client.
        if conflict:
            raise ProtocolError("conflicting Content-Length values")
        if not length_text.isdigit() or len(length_text) > 18:
            raise ProtocolError(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
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
            if length > 0 or chunked or to_end:
                keep_alive = False
        elif code == 304 and (length > 0 or chunked or to_end):
            keep_alive = False
        return _NO_BODY, 0, keep_alive
    if chunked:
        # Transfer-Encoding overrides Content-Length; such a message is suspect, so
        # the connection is not reused.
        return _BY_CHUNKS, 0, keep_alive and length_text is None
    if to_end:
        return _TO_END, 0, False
    if length >= 0:
        return _BY_LENGTH, length, keep_alive
    return _TO_END, 0, False


#: ChunkedDecoder states.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
_HEX_DIGITS = b"0123456789abcdefABCDEF"


class ChunkedDecoder:
    """Decode a chunked body incrementally; C{feed} returns the data chunks found."""

    __slots__ = ("_buffer", "_remaining", "_state", "done", "extra")

    def __init__(self) -> None:
        self._state = _SIZE
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
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        pos = 0
        end = len(data)
        # The state lives in locals while the loop runs (attribute access is the cost).
        state = self._state
        remaining = self._remaining
        try:
            while pos < end:
                if state == _DATA:
                    take = end - pos
                    if take > remaining:
                        take = remaining
                    out.append(data[pos : pos + take])
                    pos += take
                    remaining -= take
                    if not remaining:
                        state = _DATA_END
                    continue
                if state == _DATA_END and data.startswith(b"\r\n", pos):
                    pos += 2
                    state = _SIZE
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
                if state == _SIZE:
                    if 0 < len(line) <= 15 and not line.translate(None, _HEX_DIGITS):
                        size = int(line, 16)  # bare hex digits, the usual size line
                    else:
                        match = _CHUNK_LINE.match(line)
                        if match is None:
                            raise ProtocolError(f"bad chunk size {line[:20]!r}")
                        size = int(match.group(1), 16)
                    if size:
                        remaining = size
                        state = _DATA
                    else:
                        state = _TRAILER
                elif state == _DATA_END:
                    if line:
                        raise ProtocolError("missing CRLF after chunk data")
                    state = _SIZE
                elif not line:  # the blank line that ends the trailer section
                    self.done = True
                    self.extra = data[pos:]
                    break
                elif _TRAILER_FIELD.match(line) is None and not (
                    line[:1] in (b" ", b"\t") and _VALUE.match(line) is not None
                ):
                    raise ProtocolError(f"bad trailer line {line[:40]!r}")
                # Trailer fields are dropped: twisted.web cannot send them on.
        finally:
            self._state = state
            self._remaining = remaining
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
        if not has_host and len(name) == 4 and name.lower() == b"host":
            has_host = True
        if len(values) == 1:  # the usual field; no inner loop to set up
            out += (name, b": ", values[0], b"\r\n")
        else:
            for value in values:
                out += (name, b": ", value, b"\r\n")
    #: The lines written: the request line, one per value, the blank line.
    lines = len(out) // 4 + 1
    if not has_host:
        out += (b"Host: ", default_host, b"\r\n")
        lines += 1
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
        lines += 1
    elif body_length is not None:
        out += (b"Content-Length: ", b"%d" % body_length, b"\r\n")
        lines += 1
    out.append(b"\r\n")
    head = b"".join(out)
    # One scan of the whole head instead of three per value: when the CRs, LFs and
    # NULs in it are just the line ends written above, no value holds one.
    if len(head.translate(None, _NOT_CR_LF_NUL)) != 2 * lines:
        _check_request_values(headers)
    return head


def _check_request_values(headers: Sequence[tuple[bytes, Sequence[bytes]]]) -> None:
    """Raise L{ProtocolError} for a request header value that holds a CR, LF or NUL."""
    for _name, values in headers:
        for value in values:
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                raise ProtocolError("control character in a request header")

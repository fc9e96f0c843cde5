# -*- test-case-name: tests.test_compress -*-
"""Compression of proxied responses (SPEC 14): the decision, the head edits, the encoders.

Pure (no Twisted). With C{--compress on} the engine asks L{eligible} once per response
head, then L{acceptable} for the coding, applies L{header_edits}, and passes each body
piece through an L{Encoder}. Every piece is flushed on its own (a sync flush), so a
streamed response keeps its timing and the encoder holds no more than its window.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol

__all__ = [
    "BROTLI_QUALITY",
    "BROTLI_WINDOW_BITS",
    "GZIP_LEVEL",
    "MIN_LENGTH",
    "BrotliEncoder",
    "Coding",
    "Encoder",
    "GzipEncoder",
    "acceptable",
    "accepted_codings",
    "brotli_available",
    "choose_encoding",
    "compressible_type",
    "eligible",
    "header_edits",
    "negotiate",
    "new_encoder",
]

Coding = Literal["br", "gzip"]

#: A response header lookup: lower-case name to its raw values, or C{None}.
Header = Callable[[bytes], "Sequence[bytes] | None"]

#: One edit of the response head: set the name to these values, or remove it (C{None}).
Edit = tuple[bytes, "list[bytes] | None"]

#: zlib level: 5 gives nearly level 6's ratio on JavaScript at a lower CPU cost
#: (docs/performance.rst, "Compression").
GZIP_LEVEL = 5
#: Brotli quality 4 is faster than gzip 5 with a better ratio; 5 and up cost more CPU
#: per byte than the reactor thread should spend.
BROTLI_QUALITY = 4
#: A 256 KiB window: about 1 MiB per encoder, however long the body (the default, 4
#: MiB, grows an encoder to 4.5 MiB for the same 1% of ratio).
BROTLI_WINDOW_BITS = 18
#: A body known to be smaller than this is sent as it is (SPEC 14).
MIN_LENGTH = 1024

# Statuses whose responses have no content, are partial, or are interim.
_NO_BODY = frozenset((204, 205, 206, 304))

_APPLICATION_TEXT = frozenset(
    (
        b"javascript",
        b"x-javascript",
        b"ecmascript",
        b"x-ecmascript",
        b"json",
        b"x-ndjson",
        b"ndjson",
        b"jsonl",
        b"xml",
        b"wasm",
    )
)

# RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(rb"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")


def accepted_codings(values: Sequence[bytes]) -> dict[bytes, float]:
    """The weight of each coding named in the C{Accept-Encoding} field lines.

    Names are lower case; C{x-gzip} counts as C{gzip} (RFC 9110 8.4.1.3). An element
    with a weight that is not a qvalue is ignored; a coding named twice keeps its
    lowest weight, so a refusal is never overridden.
    """
    weights: dict[bytes, float] = {}
    for value in values:
        for element in value.split(b","):
            coding, *params = element.split(b";")
            name = coding.strip(b" \t").lower()
            if not name:
                continue
            weight: float | None = 1.0
            for param in params:
                key, _, raw = param.partition(b"=")
                if key.strip(b" \t").lower() == b"q":
                    raw = raw.strip(b" \t")
                    weight = float(raw) if _QVALUE.match(raw) else None
            if weight is None:
                continue
            if name == b"x-gzip":
                name = b"gzip"
            known = weights.get(name)
            weights[name] = weight if known is None else min(known, weight)
    return weights


def negotiate(accept: Sequence[bytes], *, brotli: bool = True) -> Coding | None:
    """The coding to use for a client that sent these C{Accept-Encoding} lines.

    The higher weight wins, C{br} on a tie; C{*} stands for a coding not named; an
    explicit C{identity} weighted above both means the client prefers no coding.
    """
    if not accept:
        return None  # no field: nginx and code-server send the body as it is
    weights = accepted_codings(accept)
    star = weights.get(b"*", 0.0)
    br = weights.get(b"br", star) if brotli else 0.0
    gz = weights.get(b"gzip", star)
    coding: Coding = "br" if br >= gz else "gzip"
    best = max(br, gz)
    if best <= 0:
        return None
    identity = weights.get(b"identity")
    if identity is not None and identity > best:
        return None
    return coding


@lru_cache(maxsize=256)  # an app sends few distinct types; asked on every response
def compressible_type(value: bytes) -> bool:
    """Whether a C{Content-Type} names a text-like type (SPEC 14), never SSE."""
    media = value.split(b";", 1)[0].strip(b" \t").lower()
    top, _, sub = media.partition(b"/")
    if not sub:
        return False
    if top == b"text":
        return sub != b"event-stream"
    if sub.endswith((b"+json", b"+xml")):  # image/svg+xml, application/manifest+json
        return True
    return top == b"application" and sub in _APPLICATION_TEXT


def _no_transform(values: Sequence[bytes]) -> bool:
    for value in values:
        for directive in value.split(b","):
            if directive.split(b"=", 1)[0].strip(b" \t").lower() == b"no-transform":
                return True
    return False


def eligible(status: int, header: Header) -> bool:
    """Whether this response is compressed for some client (so it varies on that).

    Text-like type, a status with a whole body, no coding of the app's, no
    C{no-transform}. Method, size and the client's C{Accept-Encoding} are not asked
    here: they decide whether this response is compressed, not whether it could be.
    """
    if status < 200 or status in _NO_BODY:
        return False
    content_type = header(b"content-type")
    if not content_type or len(content_type) != 1:
        return False
    if not compressible_type(content_type[0]):
        return False
    if header(b"content-encoding") is not None:
        return False
    cache_control = header(b"cache-control")
    return not (cache_control and _no_transform(cache_control))


def acceptable(
    accept: Sequence[bytes] | None, method: bytes, header: Header, *, brotli: bool = True
) -> Coding | None:
    """For an L{eligible} response: the coding to send it in, or C{None} for none."""
    if not accept or method == b"HEAD":
        return None
    length = header(b"content-length")
    if length and length[0].isdigit() and int(length[0]) < MIN_LENGTH:
        return None
    return negotiate(accept, brotli=brotli)


def choose_encoding(
    accept: Sequence[bytes] | None,
    method: bytes,
    status: int,
    header: Header,
    *,
    brotli: bool = True,
) -> Coding | None:
    """The coding a response is sent in (C{None}: as the app sent it); SPEC 14."""
    if not eligible(status, header):
        return None
    return acceptable(accept, method, header, brotli=brotli)


def _weak(etag: bytes) -> bytes:
    tag = etag.strip(b" \t")
    if tag.startswith(b"W/"):
        return etag
    if not tag.startswith(b'"'):
        tag = b'"' + tag + b'"'  # not an entity-tag at all; quoted, it becomes one
    return b"W/" + tag


def _vary(values: Sequence[bytes] | None) -> list[bytes] | None:
    if not values:
        return [b"Accept-Encoding"]
    for value in values:
        for name in value.split(b","):
            name = name.strip(b" \t").lower()
            if name == b"*" or name == b"accept-encoding":
                return None
    last = values[-1]
    merged = last + b", Accept-Encoding" if last.strip(b" \t") else b"Accept-Encoding"
    return [*values[:-1], merged]


def header_edits(coding: Coding | None, header: Header) -> list[Edit]:
    """What to change in an L{eligible} response's head, compressed in C{coding} or not.

    Always C{Vary: Accept-Encoding} (merged with the app's). Compressed: the coding
    named, C{Content-Length} and C{Accept-Ranges} dropped (ranges of the app's bytes
    are not ranges of ours; nginx drops it too), and a strong ETag made weak, since
    the bytes differ from the ones the app tagged (RFC 9110 8.8.1).
    """
    edits: list[Edit] = []
    vary = _vary(header(b"vary"))
    if vary is not None:
        edits.append((b"vary", vary))
    if coding is None:
        return edits
    edits += [
        (b"content-encoding", [coding.encode()]),
        (b"content-length", None),
        (b"accept-ranges", None),
    ]
    etags = header(b"etag")
    if etags:
        weak = [_weak(tag) for tag in etags]
        if weak != list(etags):
            edits.append((b"etag", weak))
    return edits


class Encoder(Protocol):
    """A streaming encoder: each piece in gives bytes a client can decode at once."""

    def compress(self, piece: bytes) -> bytes:
        """Encode C{piece} and flush: the result decodes without what follows."""

    def finish(self) -> bytes:
        """The end of the stream; the encoder is not used after this."""


class GzipEncoder:
    """gzip (RFC 1952) from zlib, with a sync flush after every piece."""

    __slots__ = ("_zlib",)

    def __init__(self, level: int = GZIP_LEVEL) -> None:
        # wbits 16 + 15: a gzip header and trailer around a 32 KiB-window deflate.
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, piece: bytes) -> bytes:
        if not piece:
            return b""  # a sync flush of nothing would still send five bytes
        z = self._zlib
        return z.compress(piece) + z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._zlib.flush(zlib.Z_FINISH)


_brotli: Any = None


def brotli_available() -> bool:
    """Whether the C{brotli} package imports (it is loaded on first use only)."""
    global _brotli
    if _brotli is None:
        try:
            import brotli
        except ImportError:
            _brotli = False
        else:
            _brotli = brotli
    return _brotli is not False


class BrotliEncoder:
    """Brotli (RFC 7932) from the C{brotli} package, flushed after every piece."""

    __slots__ = ("_brotli",)

    def __init__(
        self, quality: int = BROTLI_QUALITY, window_bits: int = BROTLI_WINDOW_BITS
    ) -> None:
        if not brotli_available():
            raise RuntimeError("the brotli package is not installed")
        self._brotli = _brotli.Compressor(quality=quality, lgwin=window_bits)

    def compress(self, piece: bytes) -> bytes:
        if not piece:
            return b""
        b = self._brotli
        out: bytes = b.process(piece)
        return out + b.flush()

    def finish(self) -> bytes:
        out: bytes = self._brotli.finish()
        return out


def new_encoder(coding: Coding) -> Encoder:
    """A fresh encoder for one response."""
    return BrotliEncoder() if coding == "br" else GzipEncoder()

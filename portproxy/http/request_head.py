# -*- test-case-name: tests.test_request_head -*-
"""Splitting a whole HTTP/1.1 request head in one pass, for the common request.

twisted.web's channel reads a request line by line and handles each header field on its
own, about a microsecond per field; a browser sends fifteen or more. When one read holds
exactly one complete head of the plainest kind, L{split_request_head} splits it with two
regular expressions instead, and the channel hands the result to the same steps its
line parser would have reached (L{portproxy.web.channel.ProxyChannel}). Anything else
(a body, a pipelined request, an odd byte, folding, a long head) returns C{None}, and
twisted.web's parser takes the bytes as before: this is a shortcut, never a second set
of rules.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["MAX_FAST_HEAD", "ParsedHead", "split_request_head"]

#: Heads longer than this go to twisted.web's parser (its own limit is 16 KiB).
MAX_FAST_HEAD = 8192
#: More fields than this go to twisted.web's parser, which counts them against its limit.
_MAX_FIELDS = 100

# request-line = method SP request-target SP HTTP-version (RFC 9112 3), with the
# target of visible ASCII only, as twisted.web's _parseRequestLine accepts it.
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.1\r\n")
# A field line from the LF before it to its CR: token ":" OWS value, the value of
# visible bytes, spaces and tabs only (stricter than twisted.web, which only refuses
# NUL, CR and LF: the rest falls back), not ending in a blank (twisted.web strips those:
# such a line falls back too), and the CR followed by its LF. Possessive throughout, so
# the scan is linear whatever the blanks: a run of blanks before a bad byte would
# otherwise be tried at every split (0.3 s of CPU for one 8 KiB head, before sign-in).
_FIELD_LINE = re.compile(
    rb"\n([!#$%&'*+\-.^_`|~0-9A-Za-z]++):[ \t]*+"
    rb"([\t\x20-\x7e\x80-\xff]*+)(?<![ \t])\r(?=\n)"
)
# Fields whose handling needs twisted.web's own parser: a body's framing, 100-continue.
_NEEDS_PARSER = re.compile(rb"\n(?:content-length|transfer-encoding|expect):", re.I)


class ParsedHead(NamedTuple):
    """A request head: the request line's parts and the fields, names as sent."""

    method: bytes
    target: bytes
    version: bytes
    fields: list[tuple[bytes, bytes]]


def split_request_head(data: bytes) -> ParsedHead | None:
    """Split C{data} if it is exactly one plain HTTP/1.1 request head without a body.

    C{None} when it is not: no complete head, bytes after it, over L{MAX_FAST_HEAD},
    anything malformed or unusual, or a field that announces a body or asks for 100
    Continue. The caller then parses C{data} the usual way.
    """
    if len(data) > MAX_FAST_HEAD or data.find(b"\r\n\r\n") != len(data) - 4:
        return None
    line = _REQUEST_LINE.match(data)
    if line is None:
        return None
    # From the request line's LF to the last field's CR. A match runs from one LF to
    # the CR before the next LF, with no CR, LF or control byte between: when every
    # LF in that stretch begins a match, every line is a field line.
    # (The LF that ends the last field line begins the blank line: not counted.)
    start = line.end() - 1
    end = len(data) - 2
    fields: list[tuple[bytes, bytes]] = _FIELD_LINE.findall(data, start, end)
    if len(fields) != data.count(b"\n", start, end - 1) or len(fields) > _MAX_FIELDS:
        return None
    if _NEEDS_PARSER.search(data, start, end) is not None:
        return None
    return ParsedHead(line.group(1), line.group(2), b"HTTP/1.1", fields)

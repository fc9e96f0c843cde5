# -*- test-case-name: tests.test_request_validation -*-
"""The one parser of C{host[:port]}: a C{Host} header, an absolute target's authority.

RFC 9110 7.2 and RFC 3986 3.2 allow more in a host than any real client sends
(percent-encoding, most sub-delims, IPvFuture); portproxy accepts exactly what browsers
and HTTP tools write and refuses the rest, so nothing odd reaches routing, public URLs
or an app:

 - a name of ASCII letters, digits, C{-}, C{.} and C{_} (an IPv4 address is one too),
   at most 253 characters plus one trailing dot;
 - or an IPv6 address in brackets (no zone, no IPvFuture);
 - then optionally C{:} and a port of one to five ASCII digits, at most 65535.

No user info, no blanks inside, no empty host, no empty port.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NamedTuple

__all__ = ["MAX_HOST_LENGTH", "Authority", "parse_authority"]

#: Longest host name DNS can carry (RFC 1035: 255 octets, minus the length bytes).
MAX_HOST_LENGTH = 253

_NAME = re.compile(rb"[A-Za-z0-9._-]{1,%d}\.?" % MAX_HOST_LENGTH)
_PORT = re.compile(rb"[0-9]{1,5}")


class Authority(NamedTuple):
    """A well-formed C{host[:port]}, spelled as received.

    @ivar host: the host, case kept, an IPv6 literal with its brackets.
    @ivar port: the port number, or C{None} when none was written.
    """

    host: str
    port: int | None


@functools.lru_cache(maxsize=1024)
def parse_authority(value: bytes | str, *, blanks: bool = True) -> Authority | None:
    """Parse C{host[:port]} strictly (see the module docstring); C{None} if malformed.

    Surrounding blanks (SP, HTAB) are ignored, as they are around a field value
    (C{Host}); with C{blanks=False} they make the value malformed, for an authority
    that is not a field value of its own (HTTP/2's C{:authority}, inside an C{Origin},
    the C{Host} of a plain request on a TLS port, which twisted.web has stripped).
    Never raises, whatever C{value} holds. Answers are cached: the function is pure,
    and the same few hosts come back on every request.
    """
    if isinstance(value, str):
        if not value.isascii():
            return None
        value = value.encode("ascii")
    if blanks:
        value = value.strip(b" \t")
    elif value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        return None
    if value[:1] == b"[":
        end = value.find(b"]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
        if b"%" in host:  # a zone (fe80::1%eth0) means nothing to another machine
            return None
        try:
            ipaddress.IPv6Address(host[1:-1].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
    else:
        host, colon, port_text = value.partition(b":")
        rest = colon + port_text
        if _NAME.fullmatch(host) is None:
            return None
    if not rest:
        return Authority(host.decode("ascii"), None)
    if rest[:1] != b":" or _PORT.fullmatch(rest[1:]) is None:
        return None
    port = int(rest[1:])
    if port > 65535:
        return None
    return Authority(host.decode("ascii"), port)

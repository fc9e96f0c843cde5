# -*- test-case-name: tests.test_auth_tickets_pure -*-
"""Origins as a browser sees them: C{scheme://host:port}, normalised for comparing.

Sign-in tickets and the sessions they give are bound to one origin. Comparing the
text of authorities would be wrong both ways: C{h}, C{h:80} and C{H:80} are one origin
over plain HTTP, while a browser reads C{h:08123} as port 8123, so text that differs
from what the browser will use must never be bound. Here a port is always written out,
and only a canonical one (no leading zero, 1 to 65535) is accepted.

Pure: no I/O, no Twisted.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from portproxy.routing.hosts import parse_authority

__all__ = ["DEFAULT_PORTS", "Origin", "origin", "url_origin"]

#: The port a browser uses when a URL names none.
DEFAULT_PORTS = {"http": 80, "https": 443}

_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)")
_CANONICAL_PORT = re.compile(r"[1-9][0-9]{0,4}")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Origin(NamedTuple):
    """An C{http(s)} origin: lower-case scheme and host, and the port it uses.

    The host keeps a trailing dot: C{5173.localhost.} is another origin (and another
    cookie jar) to a browser than C{5173.localhost}.
    """

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        """The bound form, port always written: C{http://5173.localhost:80}."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The form for a URL, without a default port: C{http://5173.localhost}."""
        if DEFAULT_PORTS[self.scheme] == self.port:
            return f"{self.scheme}://{self.host}"
        return str(self)


@functools.lru_cache(maxsize=256)
def origin(scheme: str, authority: str) -> Origin | None:
    """The origin of C{authority} (C{host[:port]}) reached over C{scheme}, or C{None}.

    C{None} for a scheme other than C{http} and C{https}, an authority
    L{parse_authority} refuses, or a port that is not written canonically (a leading
    zero, C{0}); a missing port is the scheme's default. Cached: the same few hosts
    come back on every request.
    """
    scheme = scheme.translate(_ASCII_LOWER)
    if scheme not in DEFAULT_PORTS:
        return None
    parsed = parse_authority(authority, blanks=False)
    if parsed is None:
        return None
    if parsed.port is None:
        port = DEFAULT_PORTS[scheme]
    else:
        if not _CANONICAL_PORT.fullmatch(authority.rpartition(":")[2]):
            return None
        port = parsed.port
    return Origin(scheme, parsed.host.translate(_ASCII_LOWER), port)


def url_origin(url: str) -> Origin | None:
    """The origin of an absolute C{http(s)://authority...} URL, or C{None}."""
    found = _ABSOLUTE.match(url)
    if found is None:
        return None
    return origin(found.group(1), found.group(2))

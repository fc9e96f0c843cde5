# -*- test-case-name: tests.test_auth_guard -*-
"""The peer address of a request: the one place that reads it off the connection.

The resource tree (the client's view), sign-in (rate limits per address) and the
assembly (the address behind trusted proxies) all start from the direct peer; they ask
here, so a UNIX socket or a test request without an address gives the same answer to
all of them.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["peer_host"]


class _HasClientAddress(Protocol):
    def getClientAddress(self) -> object: ...


def peer_host(request: _HasClientAddress) -> str:
    """The host of C{request}'s direct peer (an IP address as text).

    C{""} when the address has no host: a UNIX socket, or a request built by a test.
    """
    return str(getattr(request.getClientAddress(), "host", "") or "")

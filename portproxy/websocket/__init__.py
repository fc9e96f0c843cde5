# -*- test-case-name: tests.test_websocket_relay -*-
"""WebSocket upgrades through portproxy: the Origin rules and the Autobahn relay.

L{origin} is pure and L{handshake} nearly so (it takes its reason phrases from
twisted.web); L{relay} (what the resource tree, L{portproxy.web.root}, calls for an
upgrade that passed its guards), L{bridge} (one relayed connection's lifecycle) and
L{legs} (the Autobahn protocols on each side) are the Twisted shell.
See docs/websockets.rst.
"""

from __future__ import annotations

from portproxy.websocket.origin import (
    TrustedOrigin,
    origin_allowed,
    parse_trusted_origin,
    parse_trusted_origins,
)
from portproxy.websocket.relay import AutobahnRelay

__all__ = [
    "AutobahnRelay",
    "TrustedOrigin",
    "origin_allowed",
    "parse_trusted_origin",
    "parse_trusted_origins",
]

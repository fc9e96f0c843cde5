# -*- test-case-name: tests.test_proxy_http -*-
"""The heartbeat behind C{/healthz}: when was portproxy last used?"""

from __future__ import annotations

import json

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["HEARTBEAT_WINDOW", "HealthResource", "Heartbeat"]

HEARTBEAT_WINDOW = 60.0


class Heartbeat:
    """Remembers the time of the last proxied or signed-in request (one float store)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.last = 0.0

    def beat(self) -> None:
        self.last = self._clock.seconds()

    def status(self) -> dict[str, object]:
        """C{alive} when used within the last minute, as code-server reports it."""
        alive = self.last and self._clock.seconds() - self.last < HEARTBEAT_WINDOW
        return {
            "status": "alive" if alive else "expired",
            "lastHeartbeat": int(self.last * 1000),
        }


class HealthResource(Resource):
    """C{GET /healthz}: JSON status, no authentication, never cached."""

    isLeaf = True

    def __init__(self, heartbeat: Heartbeat) -> None:
        super().__init__()
        self._heartbeat = heartbeat

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self._heartbeat.status()).encode()

    render_HEAD = render_GET

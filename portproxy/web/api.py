# -*- test-case-name: tests.test_api -*-
"""The JSON API under C{/.portproxy/api/}: one gate, then small handlers.

Every call needs a signed-in session (a share grant or a machine token never reaches
the API) and is served on the main host only: on a proxy host, an app's own scripts
run same-origin with the user's browser and could otherwise call it. A call that
changes state must say C{Content-Type: application/json} (a cross-site HTML form
cannot) and, when the browser sends an C{Origin}, come from this host's own origin
(SPEC 12). Handlers get the parsed JSON body and the path's fields, and return a
status and a JSON payload, or raise L{ApiError} with a message naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from portproxy.http.errorpages import reason_phrase
from portproxy.http.headers import ClientView
from portproxy.http.hostrewrite import public_origin
from portproxy.routing.routes import split_target

__all__ = [
    "API_PREFIX",
    "STREAMING",
    "ApiError",
    "ApiResource",
    "Handler",
]

#: The path under which the API lives, on the main host.
API_PREFIX = b"/.portproxy/api/"
#: Returned by a handler that writes (and finishes) the response itself, as the
#: Server-Sent Events stream does.
STREAMING: Any = object()

_SAFE_METHODS = (b"GET", b"HEAD")
_MAX_BODY = 64 * 1024


class ApiError(Exception):
    """A refused call: its status and a message for C{{"error": ...}}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: C{handler(request, fields, body)} → C{(status, payload)} or L{STREAMING};
#: C{fields} are the named groups of the route's pattern, C{body} the parsed JSON (or
#: C{None} for a call without one).
Handler = Callable[[Request, Mapping[str, str], Any], "tuple[int, Any] | Any"]


@dataclass(frozen=True)
class _Route:
    method: bytes
    pattern: re.Pattern[str]
    handler: Handler


class ApiResource(Resource):
    """C{/.portproxy/api/...}: the gate of every call, and its dispatch.

    @param is_signed_in: true for a request with a valid session (only a session).
    @param is_proxy_host: true when the request's host is a proxy host (the API is
        refused there: 404, as if it did not exist).
    @param view_of: the client's view of a request (scheme and host as it sees them).
    """

    isLeaf = True

    def __init__(
        self,
        *,
        is_signed_in: Callable[[Request], bool],
        is_proxy_host: Callable[[Request], bool],
        view_of: Callable[[Request], ClientView],
    ) -> None:
        super().__init__()
        self._is_signed_in = is_signed_in
        self._is_proxy_host = is_proxy_host
        self._view_of = view_of
        self._routes: list[_Route] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve C{method} on the API paths that fully match C{pattern}.

        C{pattern} is a regular expression for the path after C{/.portproxy/api/}
        (C{r"shares/(?P<id>[A-Za-z0-9_-]+)"}); its named groups reach the handler.
        """
        self._routes.append(_Route(method.encode("ascii"), re.compile(pattern), handler))

    def render(self, request: Request) -> bytes | int:
        try:
            return self._render(request)
        except ApiError as e:
            return _json(request, e.status, {"error": e.message})

    def _render(self, request: Request) -> bytes | int:
        if self._is_proxy_host(request):
            raise ApiError(404, "Not found")
        if not self._is_signed_in(request):
            raise ApiError(401, "Unauthorized")
        path = split_target(request.uri)[0]
        rest = path[len(API_PREFIX) :].decode("ascii", "replace")
        method = request.method
        matched: list[_Route] = []
        for route in self._routes:
            found = route.pattern.fullmatch(rest)
            if found is None:
                continue
            matched.append(route)
            if route.method == method or (method == b"HEAD" and route.method == b"GET"):
                body = self._body(request, method)
                result = route.handler(request, found.groupdict(), body)
                if result is STREAMING:
                    return NOT_DONE_YET
                status, payload = result
                return _json(request, status, payload)
        if not matched:
            raise ApiError(404, "Not found")
        allowed = sorted({r.method.decode("ascii") for r in matched})
        request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        raise ApiError(405, "Method not allowed")

    def _body(self, request: Request, method: bytes) -> Any:
        if method in _SAFE_METHODS:
            return None
        # A cross-site form can send only urlencoded, multipart or text/plain bodies;
        # a cross-site fetch() with JSON needs a preflight that nothing answers.
        kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            raise ApiError(415, "Content-Type must be application/json")
        origin = request.getHeader(b"origin")
        if origin is not None and not self._same_origin(request, origin):
            raise ApiError(403, "Origin not allowed")
        content = request.content
        raw = b""
        if content is not None:
            content.seek(0)
            raw = content.read(_MAX_BODY + 1)
        if len(raw) > _MAX_BODY:
            raise ApiError(413, "Body too large")
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Body is not valid JSON") from None

    def _same_origin(self, request: Request, origin: bytes) -> bool:
        view = self._view_of(request)
        mine = public_origin(view.scheme, view.host)
        scheme, sep, authority = origin.strip().partition(b"://")
        if mine is None or not sep:
            return False
        try:
            theirs = public_origin(
                scheme.decode("ascii").lower(), authority.decode("ascii")
            )
        except UnicodeDecodeError:
            return False
        return theirs == mine


def _json(request: Request, status: int, payload: Any) -> bytes:
    request.setResponseCode(status, reason_phrase(status))
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    if status == 204:
        return b""
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode("utf-8")

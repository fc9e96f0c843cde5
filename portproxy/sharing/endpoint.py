# -*- test-case-name: tests.test_sharing_links -*-
"""C{GET /.portproxy/share/<token>}: open a share link, set its grant cookie, redirect.

A path link (C{proxy}, C{absproxy}) is opened on the main host: the cookie is scoped to
the port's route (C{Path=/proxy/3000}) and the browser is sent to the port's URL plus
the share's path prefix, by a relative C{Location} so that it stays under a front
proxy's mount. A domain link is opened on the port's own proxy host
(C{https://3000.example.com/.portproxy/share/<token>}), since the main host cannot set
a cookie for another host: the cookie is host-only there with C{Path=/}. A link that is
not genuine gets 403, a revoked or expired one 410, and neither sets a cookie.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import Request

from portproxy.http.errorpages import write_error
from portproxy.http.headers import ClientView
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.relative import relative_reference
from portproxy.routing.routes import origin_form, parse_port, split_target
from portproxy.sharing.grants import SHARE_PATH, grant_set_cookie
from portproxy.sharing.state import LinkRefusal, Share, SharingState

__all__ = ["ShareLinkResource"]


class ShareLinkResource(Resource):
    """The reserved folder C{/.portproxy/share/}: one leaf for every link token.

    @param mount_prefix: the path prefix a trusted front proxy announced for a request
        (C{X-Forwarded-Prefix}), or C{None}; the grant cookie's Path starts with it.
    """

    isLeaf = True

    def __init__(
        self,
        sharing: SharingState | None,
        *,
        view_of: Callable[[Request], ClientView],
        domains: DomainMatcher,
        mount_prefix: Callable[[Request], bytes | None],
    ) -> None:
        super().__init__()
        self.sharing = sharing
        self.view_of = view_of
        self.domains = domains
        self.mount_prefix = mount_prefix

    def render(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        # The token is in the URL: keep it out of any Referer.
        request.setHeader(b"referrer-policy", b"no-referrer")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return write_error(request, 405, "Method not allowed")
        sharing = self.sharing
        if sharing is None:
            return write_error(
                request, 404, "Sharing is off: this portproxy runs with --auth none"
            )
        here = split_target(origin_form(request.uri))[0]
        token = here[len(SHARE_PATH) :].decode("ascii", "replace")
        try:
            share = sharing.open_link(token)
        except LinkRefusal as refusal:
            return write_error(request, refusal.status, refusal.message)
        view = self.view_of(request)
        on_proxy_host = self._proxy_host_port(view)
        if share.route == "domain":
            if on_proxy_host != share.port:
                return write_error(request, 404, "Open this link on the port's own host")
            cookie_path = b"/"
            target = share.path.encode("ascii")
        else:
            if on_proxy_host is not None:
                return write_error(request, 404, "Open this link on the main host")
            route = b"/%s/%d" % (share.route.encode("ascii"), share.port)
            mount = self.mount_prefix(request) or b""
            cookie_path = mount + route
            target = route + (b"/" if share.path == "/" else share.path.encode("ascii"))
        name, value = sharing.grant_cookie(share)
        request.responseHeaders.addRawHeader(
            b"set-cookie",
            grant_set_cookie(
                name,
                value,
                max_age=_remaining(share, sharing),
                path=cookie_path,
                secure=view.scheme == "https",
            ),
        )
        request.setResponseCode(302)
        request.setHeader(b"location", relative_reference(here, target))
        return b""

    def _proxy_host_port(self, view: ClientView) -> int | None:
        """The port whose proxy host the request came to, or C{None} (the main host)."""
        if not view.host:
            return None
        label = self.domains.match(view.host)
        return None if label is None else parse_port(label) or -1


def _remaining(share: Share, sharing: SharingState) -> int:
    return int(share.expires - sharing.clock.seconds())

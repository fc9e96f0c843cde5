# -*- test-case-name: tests.test_auth_login -*-
"""The login, logout and ticket leaves.

Login and logout answer at C{/login} and C{/logout} on the main host, and under
L{RESERVED_PREFIX<portproxy.auth.guard.RESERVED_PREFIX>} on every host; each keeps its
visitor under the mount it came through, with relative redirects and form action. The
ticket leaves carry a login on the main host to a proxy host a cookie cannot cover
(L{TicketResource} on the main host, L{TicketAcceptResource} on the proxy host).

twisted.web does not parse the form (the site sets C{parsePOSTFormSubmission=False} so
that proxied bodies stay untouched), so the small urlencoded body is read here, capped.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, quote

from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from portproxy.auth.guard import (
    MAIN_LOGIN,
    RESERVED_LOGIN,
    RESERVED_TICKET,
    Authenticator,
    PasswordAuthenticator,
    is_reserved_path,
    redirect,
    request_path,
)
from portproxy.auth.loginpage import (
    CONTENT_SECURITY_POLICY,
    render_login_page,
    render_ticket_refused,
)
from portproxy.auth.redirects import safe_path_target
from portproxy.auth.tickets import Refusal
from portproxy.http.errorpages import accepts_html, reason_phrase, write_error

__all__ = [
    "MAX_FORM_SIZE",
    "LoginResource",
    "LogoutResource",
    "TicketAcceptResource",
    "TicketResource",
]

#: A login form is a password and a URL; anything bigger is not one.
MAX_FORM_SIZE = 16 * 1024


def _login_path_for(request: Request) -> bytes:
    """The login page under C{request}'s mount: the reserved one, or C{/login}."""
    return RESERVED_LOGIN if is_reserved_path(request_path(request)) else MAIN_LOGIN


def _query_value(request: Request, name: bytes) -> str:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name) or [b""]
    try:
        return str(values[0].decode("utf-8"))
    except UnicodeDecodeError:
        return ""


def _read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded body's fields (first value of each); C{None} if too big or bad."""
    content = request.content
    if content is None:
        return {}
    content.seek(0)
    raw = content.read(MAX_FORM_SIZE + 1)
    if len(raw) > MAX_FORM_SIZE:
        return None
    try:
        text = raw.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=16)
    except ValueError:  # UnicodeDecodeError, or too many fields
        return None
    return {name: values[0] for name, values in fields.items()}


def _page_headers(request: Request) -> None:
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


class LoginResource(Resource):
    """C{/login} and C{/.portproxy/login}: the form (GET) and its submission (POST).

    Showing the form is never rate limited. A POST from an address that used up its
    tokens gets 429 with C{Retry-After}, whether the password is right or not.
    """

    isLeaf = True

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self.auth = authenticator

    def _page(self, request: Request, to: str, error: str | None, status: int) -> bytes:
        request.setResponseCode(status, reason_phrase(status))
        _page_headers(request)
        action = self.auth.location(request, _login_path_for(request)).decode("ascii")
        return render_login_page(to=to, error=error, action=action)

    def render_GET(self, request: Request) -> bytes:
        auth = self.auth
        if not isinstance(auth, PasswordAuthenticator):
            return redirect(request, auth.location(request, b"/"))
        to = auth.safe_target(_query_value(request, b"to"), request)
        if auth.is_signed_in(request):
            return redirect(request, auth.location(request, to))
        return self._page(request, to, None, 200)

    def render_POST(self, request: Request) -> bytes | int:
        auth = self.auth
        if not isinstance(auth, PasswordAuthenticator):
            return redirect(request, auth.location(request, b"/"))
        form = _read_form(request)
        if form is None:
            return write_error(request, 413, "The login form is too large")
        to = auth.safe_target(form.get("to") or _query_value(request, b"to"), request)
        address = auth.client_address(request)
        bucket = auth.limiter.take(address)
        if bucket is None:
            wait = auth.limiter.retry_after(address)
            request.setHeader(b"retry-after", str(wait).encode("ascii"))
            message = f"Too many failed attempts. Try again in {wait} seconds."
            return self._page(request, to, message, 429)
        password = form.get("password", "")
        if not password:
            auth.limiter.give_back(address, bucket)
            return self._page(request, to, "Enter the password.", 401)

        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def checked(right: bool) -> None:
            if right:
                auth.limiter.give_back(address, bucket)
                request.responseHeaders.addRawHeader(
                    b"set-cookie", auth.session_cookie(request)
                )
                body = redirect(request, auth.location(request, to))
                auth.log.info("Signed in from {address}", address=address)
            else:
                auth.log.emit(LogLevel.warn, "Failed login from {address}", address=address)
                body = self._page(request, to, "Incorrect password.", 401)
            if not gone:
                request.write(body)
                request.finish()

        def failed(reason: Failure) -> None:
            auth.log.failure("Login failed with an error", reason)
            if not gone and not request.finished:
                request.write(write_error(request, 500, "Internal error"))
                request.finish()

        auth.check_password(password).addCallback(checked).addErrback(failed)
        return NOT_DONE_YET


class LogoutResource(Resource):
    """C{/logout} and C{/.portproxy/logout}: clear the cookie, then go to the login.

    Revoking every session at once means changing the password.
    """

    isLeaf = True

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self.auth = authenticator

    def render(self, request: Request) -> bytes:
        auth = self.auth
        if not isinstance(auth, PasswordAuthenticator):
            return redirect(request, auth.location(request, b"/"))
        for value in auth.clearing_cookies(request):
            request.responseHeaders.addRawHeader(b"set-cookie", value)
        to = _query_value(request, b"to")
        if to:
            return redirect(request, auth.location(request, auth.safe_target(to, request)))
        return redirect(request, auth.location(request, _login_path_for(request)))


def _ticket_headers(request: Request) -> None:
    # The ticket travels in a URL: no cache may keep it, no Referer may carry it on.
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"referrer-policy", b"no-referrer")


def _quoted(value: str | bytes) -> bytes:
    return quote(value, safe="/:").encode("ascii")


class TicketResource(Resource):
    """C{/.portproxy/ticket?to=<URL on a proxy host>}, on the main host.

    A bad C{to} gets 400 (never a redirect): see
    L{ticket_destination<portproxy.auth.tickets.ticket_destination>}. A signed-out
    browser goes to the login page with C{to} pointing back here; a signed-in one gets
    a fresh ticket for the proxy host's origin and is sent to that host's
    L{TicketAcceptResource} (or, when tickets cannot be kept single-use, to that
    host's own login page).
    """

    isLeaf = True

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self.auth = authenticator

    def render_GET(self, request: Request) -> bytes:
        auth = self.auth
        _ticket_headers(request)
        if not isinstance(auth, PasswordAuthenticator) or auth.tickets is None:
            return redirect(request, auth.location(request, b"/"))
        to = _query_value(request, b"to")
        target = auth.ticket_target(to, request)
        if target is None:
            return write_error(
                request, 400, "This sign-in link does not lead to a proxy host"
            )
        if not auth.is_signed_in(request):
            back = RESERVED_TICKET + b"?to=" + _quoted(to)
            login = auth.location(request, RESERVED_LOGIN)
            return redirect(request, login + b"?to=" + _quoted(back))
        destination, path = target
        if not auth.tickets_available():
            # No single use to be had (see portproxy.auth.nonces): the proxy host's
            # own sign-in page, which is where its denials send browsers meanwhile.
            login = f"{destination.url}{RESERVED_LOGIN.decode()}?to=".encode("ascii")
            return redirect(request, login + _quoted(path))
        accept = (
            f"{destination.url}/.portproxy/ticket/accept"
            f"?t={auth.mint_ticket(destination)}&to="
        ).encode("ascii") + _quoted(path)
        return redirect(request, accept)


class TicketAcceptResource(Resource):
    """C{/.portproxy/ticket/accept?t=<ticket>&to=<path>}, on a proxy host.

    A valid ticket for exactly this origin (scheme, host and port), unexpired and
    unused, becomes a host-only session cookie good on this origin only, then a
    redirect to C{to} (a path on this host only). Anything else gets 403 with a link to
    this host's own login page.
    """

    isLeaf = True
    #: Refusals logged per minute at most; the rest are counted into the next line, so
    #: a client replaying junk tickets cannot fill the log.
    LOGGED_REFUSALS_PER_MINUTE = 10

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self.auth = authenticator
        self._minute = -1
        self._logged = 0
        self._unlogged = 0

    def _may_log(self, now: float) -> bool:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._logged = minute, 0
        if self._logged >= self.LOGGED_REFUSALS_PER_MINUTE:
            self._unlogged += 1
            return False
        self._logged += 1
        return True

    def render_GET(self, request: Request) -> bytes:
        auth = self.auth
        _ticket_headers(request)
        to = safe_path_target(_query_value(request, b"to"))
        if not isinstance(auth, PasswordAuthenticator):
            return redirect(request, auth.location(request, to))
        found = auth.redeem_ticket(_query_value(request, b"t"), request)
        if isinstance(found, Refusal):
            if auth.is_signed_in(request):
                # Say, the back button over a used ticket: nothing to refuse.
                return redirect(request, auth.location(request, to))
            if self._may_log(auth.clock.seconds()):
                unlogged, self._unlogged = self._unlogged, 0
                auth.log.info(
                    "Refused a sign-in ticket from {address}: {reason}{more}",
                    address=auth.client_address(request),
                    reason=found.value,
                    more=f" ({unlogged} more refused, not logged)" if unlogged else "",
                )
            return self._refused(request, to)
        bound = auth.request_origin(request)
        assert bound is not None  # the ticket matched it
        request.responseHeaders.addRawHeader(
            b"set-cookie", auth.session_cookie(request, bound=bound)
        )
        auth.log.info(
            "Signed in on {host} with a ticket from {address}",
            host=found.origin,
            address=auth.client_address(request),
        )
        return redirect(request, auth.location(request, to))

    def _refused(self, request: Request, to: str) -> bytes:
        login = self.auth.location(request, RESERVED_LOGIN) + b"?to=" + _quoted(to)
        request.setResponseCode(403, reason_phrase(403))
        message = (
            "This sign-in link has expired or was already used, or is for another host."
        )
        if accepts_html(request.getHeader(b"accept")):
            _page_headers(request)
            return render_ticket_refused(message=message, login=login.decode("ascii"))
        request.setHeader(b"content-type", b"application/json")
        body = {"error": message, "login": login.decode("ascii")}
        return json.dumps(body).encode("ascii")

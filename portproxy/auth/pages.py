# -*- test-case-name: tests.test_auth_login -*-
"""The login and logout leaves.

They answer at C{/login} and C{/logout} on the main host, and under
L{RESERVED_PREFIX<portproxy.auth.guard.RESERVED_PREFIX>} on every host; each keeps its
visitor under the mount it came through.

twisted.web does not parse the form (the site sets C{parsePOSTFormSubmission=False} so
that proxied bodies stay untouched), so the small urlencoded body is read here, capped.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from portproxy.auth.guard import (
    MAIN_LOGIN,
    RESERVED_LOGIN,
    Authenticator,
    PasswordAuthenticator,
    is_reserved_path,
    redirect,
)
from portproxy.auth.loginpage import CONTENT_SECURITY_POLICY, render_login_page
from portproxy.http.errorpages import reason_phrase, write_error
from portproxy.routing.routes import split_target

__all__ = ["MAX_FORM_SIZE", "LoginResource", "LogoutResource"]

#: A login form is a password and a URL; anything bigger is not one.
MAX_FORM_SIZE = 16 * 1024


def _login_path_for(request: Request) -> bytes:
    """The login page under C{request}'s mount: the reserved one, or C{/login}."""
    return RESERVED_LOGIN if is_reserved_path(split_target(request.uri)[0]) else MAIN_LOGIN


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
        action = _login_path_for(request).decode("ascii")
        return render_login_page(to=to, error=error, action=action)

    def render_GET(self, request: Request) -> bytes:
        auth = self.auth
        if not isinstance(auth, PasswordAuthenticator):
            return redirect(request, b"/")
        to = auth.safe_target(_query_value(request, b"to"), request)
        if auth.is_signed_in(request):
            return redirect(request, to)
        return self._page(request, to, None, 200)

    def render_POST(self, request: Request) -> bytes | int:
        auth = self.auth
        if not isinstance(auth, PasswordAuthenticator):
            return redirect(request, b"/")
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
                body = redirect(request, to)
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
            return redirect(request, b"/")
        for value in auth.clearing_cookies(request):
            request.responseHeaders.addRawHeader(b"set-cookie", value)
        to = _query_value(request, b"to")
        if to:
            return redirect(request, auth.safe_target(to, request))
        return redirect(request, _login_path_for(request))

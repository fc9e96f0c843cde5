# -*- test-case-name: tests.test_auth_guard -*-
"""Sign-in for the resource tree: the session check, the denial, and the factory.

The tree asks an L{Authenticator} whether a request is signed in (one HMAC), and on a
miss lets it answer: a browser navigation is sent to the login page carrying the exact
URL it asked for, everything else gets C{401 {"error": "Unauthorized"}}.

Where the login page lives: C{/login} and C{/logout} on the main host, and the
reserved paths C{/.portproxy/login} and C{/.portproxy/logout} on every host, proxy
hosts included. A proxy host that a cookie set on the main host cannot cover
(C{*.localhost}, IPs, C{{{host}}} patterns, other domains) sends signed-out browsers to
the main host's C{/.portproxy/ticket}, which signs them in there once and hands back a
ticket for the proxy host (L{portproxy.auth.tickets}), worth a session for that origin
only; when no main host can be told, or the ticket endpoint would refuse the host, or
tickets cannot be kept single-use, to C{/.portproxy/login} on that same host, which
never shadows an app's own C{/login}.
Requests under L{RESERVED_PREFIX} always reach portproxy, signed in or not: apps cannot
use that prefix through the proxy.

Every C{Location} and form action portproxy writes for sign-in is relative to the
request's path (or carries a trusted C{X-Forwarded-Prefix}), so that it stays under a
front proxy's path prefix, as code-server's redirects do.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.web.server import Request

from portproxy.auth.cookiepolicy import (
    clear_cookie_value,
    cookie_domain,
    session_cookie_name,
    set_cookie_value,
)
from portproxy.auth.nonces import MemoryNonces, NonceStore, nonce_store
from portproxy.auth.origins import Origin, origin, url_origin
from portproxy.auth.passwords import (
    Credential,
    resolve_credential,
    session_key_material,
)
from portproxy.auth.ratelimit import Clock, LoginRateLimiter
from portproxy.auth.redirects import mounted_location, safe_redirect_target
from portproxy.auth.sessions import Session, SessionSigner
from portproxy.auth.tickets import (
    NONCE_BYTES,
    Refusal,
    Ticket,
    TicketSigner,
    sign_in_base,
    ticket_destination,
)
from portproxy.config import Config, StartupError
from portproxy.http.cookies import cookie_values
from portproxy.http.errorpages import accepts_html
from portproxy.net.peer import peer_host
from portproxy.routing.domains import DomainMatcher, normalize_patterns
from portproxy.routing.routes import origin_form, split_target

__all__ = [
    "RESERVED_LOGIN",
    "RESERVED_LOGOUT",
    "RESERVED_PREFIX",
    "RESERVED_TICKET",
    "RESERVED_TICKET_ACCEPT",
    "Authenticator",
    "OpenAccess",
    "PasswordAuthenticator",
    "build_authenticator",
    "is_reserved_path",
    "print_auth_cookie",
    "redirect",
]

#: Path prefix served by portproxy itself on every host, proxy hosts included.
RESERVED_PREFIX = b"/.portproxy/"
RESERVED_LOGIN = RESERVED_PREFIX + b"login"
RESERVED_LOGOUT = RESERVED_PREFIX + b"logout"
#: On the main host: hands a signed-in browser a ticket for a proxy host.
RESERVED_TICKET = RESERVED_PREFIX + b"ticket"
#: On a proxy host: exchanges a ticket for a host-only session cookie.
RESERVED_TICKET_ACCEPT = RESERVED_TICKET + b"/accept"
MAIN_LOGIN = b"/login"

# A browser may send a stale cookie of the same name next to the fresh one (say a
# host-only one next to one for the proxy domain); look at a few, not at all.
_MAX_COOKIES_CHECKED = 4

_UNAUTHORIZED = b'{"error": "Unauthorized"}'


def _host_header(request: Request) -> str:
    host = request.getHeader(b"host") or b""
    return host.decode("ascii", "replace")


def _secure(request: Request) -> bool:
    return bool(request.isSecure())


def is_reserved_path(path: bytes) -> bool:
    """Tell whether a path belongs to portproxy on every host (case-insensitive)."""
    return path[: len(RESERVED_PREFIX)].lower() == RESERVED_PREFIX


def _is_navigation(request: Request) -> bool:
    return request.method in (b"GET", b"HEAD") and accepts_html(
        request.getHeader(b"accept")
    )


def _no_prefix(request: Request) -> bytes | None:
    return None


def request_path(request: Request) -> bytes:
    """The path C{request} arrived with (no query), relative references' base."""
    return split_target(origin_form(request.uri))[0]


def redirect(request: Request, location: bytes | str) -> bytes:
    """Answer C{request} with an uncached 302 to C{location}; return the empty body."""
    if isinstance(location, str):
        location = location.encode("ascii")
    request.setResponseCode(302)
    request.setHeader(b"location", location)
    request.setHeader(b"cache-control", b"no-store")
    return b""


@runtime_checkable
class Authenticator(Protocol):
    """What the resource tree (L{portproxy.web}) and the engine ask of sign-in.

    The one contract: L{OpenAccess} and L{PasswordAuthenticator} provide it, and
    C{portproxy.web} imports it from here (web sits above auth in the layers).

    @ivar cookie_name: the session cookie's name, which the proxy strips from requests.
    """

    cookie_name: bytes

    def is_signed_in(self, request: Request) -> bool:
        """Tell whether C{request} carries a valid session (cheap: one HMAC)."""

    def allows_preflight(self, request: Request) -> bool:
        """Tell whether an unauthenticated CORS preflight may reach the upstream."""

    def deny(self, request: Request, *, original_url: bytes) -> bytes:
        """Answer a signed-out request; return the body.

        A browser navigation (GET or HEAD whose C{Accept} lists C{text/html}) is sent
        to the login page with C{to} set to C{original_url}: absolute for a proxy host,
        whose login page is the reserved one on that host (or the main host's ticket
        endpoint, see L{PasswordAuthenticator.ticket_entry}), root-relative for the
        main host; the login page's own URL is relative. Everything else gets C{401}
        JSON.
        """

    def location(self, request: Request, target: bytes | str) -> bytes:
        """C{target} (a checked path or absolute URL) as a C{Location} for C{request}.

        A path becomes relative to the request's path, or gets a trusted proxy's
        C{X-Forwarded-Prefix}, so that it stays under a front proxy's mount.
        """

    def deny_unauthorized(self, request: Request) -> bytes:
        """Answer a signed-out request with C{401} JSON, never a redirect.

        Used by L{deny} for every request that is not a page load (API calls, assets,
        form posts), and directly for WebSocket upgrades.
        """


class _Denials:
    """The answers to a signed-out request, shared by both authenticators.

    @ivar mount_prefix: the path prefix a trusted front proxy announced for a request
        (C{X-Forwarded-Prefix}), or C{None}.
    """

    cookie_name: bytes = session_cookie_name("").encode("ascii")
    mount_prefix: Callable[[Request], bytes | None] = staticmethod(_no_prefix)

    def location(self, request: Request, target: bytes | str) -> bytes:
        """C{target} (a checked path or absolute URL) as C{request}'s browser must see it.

        A path becomes relative to the request's own path, or gets the trusted
        C{X-Forwarded-Prefix}, so that it stays under a front proxy's mount.
        """
        if isinstance(target, str):
            target = target.encode("ascii")
        return mounted_location(request_path(request), target, self.mount_prefix(request))

    def deny(self, request: Request, *, original_url: bytes) -> bytes:
        """See L{Authenticator.deny}."""
        if not _is_navigation(request):
            return self.deny_unauthorized(request)
        return self._login_redirect(request, original_url)

    def _login_redirect(self, request: Request, original_url: bytes) -> bytes:
        login = MAIN_LOGIN if original_url.startswith(b"/") else RESERVED_LOGIN
        target = quote(original_url, safe="/:").encode("ascii")
        return redirect(request, self.location(request, login) + b"?to=" + target)

    def deny_unauthorized(self, request: Request) -> bytes:
        """See L{Authenticator.deny_unauthorized}."""
        request.setResponseCode(401)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return _UNAUTHORIZED


class OpenAccess(_Denials):
    """C{--auth none}: every request is signed in."""

    def __init__(
        self, *, mount_prefix: Callable[[Request], bytes | None] = _no_prefix
    ) -> None:
        self.mount_prefix = mount_prefix

    def is_signed_in(self, request: Request) -> bool:
        return True

    def allows_preflight(self, request: Request) -> bool:
        return True


class PasswordAuthenticator(_Denials):
    """C{--auth password}: a signed session cookie, obtained on the login page.

    @param verify: checks a password, returning a C{Deferred} (to run argon2 off the
        reactor thread); by default C{credential.check} runs inline.
    @param tickets: signs the tickets that carry a login on the main host to a proxy
        host; C{None} turns that off (every proxy host has its own login).
    @param nonces: records used tickets (single use).
    @param public_url: C{--public-url}, the main host's base URL, if configured.
    @param mount_prefix: the trusted C{X-Forwarded-Prefix} of a request, or C{None}.
    """

    def __init__(
        self,
        *,
        credential: Credential,
        signer: SessionSigner,
        limiter: LoginRateLimiter,
        clock: Clock,
        log: Logger,
        cookie_name: str,
        proxy_patterns: Sequence[str] = (),
        skip_auth_preflight: bool = False,
        is_https: Callable[[Request], bool] = _secure,
        client_address: Callable[[Request], str] = peer_host,
        request_host: Callable[[Request], str] = _host_header,
        allowed_redirect_host: Callable[[str], bool] | None = None,
        verify: Callable[[str], Deferred[bool]] | None = None,
        tickets: TicketSigner | None = None,
        nonces: NonceStore | None = None,
        public_url: str | None = None,
        mount_prefix: Callable[[Request], bytes | None] = _no_prefix,
    ) -> None:
        self.credential = credential
        self.signer = signer
        self.limiter = limiter
        self.clock = clock
        self.log = log
        self.cookie_name = cookie_name.encode("ascii")
        self.proxy_patterns = normalize_patterns(proxy_patterns)
        self.skip_auth_preflight = skip_auth_preflight
        self.is_https = is_https
        self.client_address = client_address
        self.request_host = request_host
        if allowed_redirect_host is None:
            self.redirect_host_allowed: Callable[[str, str], bool] = DomainMatcher(
                self.proxy_patterns
            ).redirect_allowed
        else:
            only = allowed_redirect_host
            self.redirect_host_allowed = lambda target, here: only(target)
        self._verify = verify
        self.tickets = tickets
        self.nonces: NonceStore = nonces if nonces is not None else MemoryNonces()
        self.public_url = public_url
        self.mount_prefix = mount_prefix
        #: Cookie values already verified, with their expiry and the origin they are
        #: bound to (C{None}: every host): a browser sends the same value on every
        #: request, so the HMAC is checked once per value, not per request. Only valid
        #: values are kept, and only until they expire; the origin is compared on
        #: every request.
        self._verified: dict[bytes, Session] = {}

    def is_signed_in(self, request: Request) -> bool:
        values = request.requestHeaders.getRawHeaders(b"cookie") or []
        now = self.clock.seconds()
        verified = self._verified
        for value in cookie_values(values, self.cookie_name, _MAX_COOKIES_CHECKED):
            session = verified.get(value)
            if session is not None and now >= session.expires:
                del verified[value]
                session = None
            if session is None:
                session = self.signer.check(value, now)
                if session is None:
                    continue
                if len(verified) >= _VERIFIED_CACHE_SIZE:
                    verified.clear()
                verified[value] = session
            # A ticket's session is good on its own origin only.
            if session.origin is None or session.origin == str(
                self.request_origin(request)
            ):
                return True
        return False

    def request_scheme(self, request: Request) -> str:
        """C{"https"} or C{"http"}, as the browser used it."""
        return "https" if self.is_https(request) else "http"

    def request_origin(self, request: Request) -> Origin | None:
        """The origin the browser used for C{request}, or C{None} if it cannot be told."""
        return origin(self.request_scheme(request), self.request_host(request))

    def allows_preflight(self, request: Request) -> bool:
        """With C{--skip-auth-preflight}: an C{OPTIONS} with C{Origin} and
        C{Access-Control-Request-Method} and no body.

        A preflight never has a body, so one that declares or carries a body (a
        C{Content-Length} above 0, any C{Transfer-Encoding}, an HTTP/2 stream not ended
        with its head, or bytes already read) needs a session like any other request.
        """
        headers = request.requestHeaders
        return (
            self.skip_auth_preflight
            and request.method == b"OPTIONS"
            # What the head announced (portproxy.web.request.ProxyRequest): None is unknown.
            and getattr(request, "body_length", 0) == 0
            and headers.hasHeader(b"origin")
            and headers.hasHeader(b"access-control-request-method")
            and not headers.hasHeader(b"transfer-encoding")
            and all(_zero(v) for v in headers.getRawHeaders(b"content-length") or ())
            and _content_size(request) == 0
        )

    def check_password(self, password: str) -> Deferred[bool]:
        """Check C{password}; the result may come later (argon2 in a thread)."""
        if self._verify is not None:
            return self._verify(password)
        return maybeDeferred(self.credential.check, password)

    def safe_target(self, to: str, request: Request) -> str:
        """C{to} if it is on this server or a proxy host, else C{/}.

        An absolute C{to} passes when its authority is C{request}'s own host (exactly,
        port included) or a proxy host a redirect from there may reach (see
        L{DomainMatcher.redirect_allowed}: with C{{{host}}} patterns, only hosts built
        from the request's own host) with the request's scheme and port: one listener,
        never another port (someone else's) nor plain HTTP from HTTPS.
        """
        here = self.request_host(request).lower()

        def allowed(authority: str) -> bool:
            if authority == here:
                return True
            # Only called for an absolute http(s) URL, so this is its scheme.
            there = origin(to.split(":", 1)[0], authority)
            here_origin = self.request_origin(request)
            return (
                here_origin is not None
                and there is not None
                and (there.scheme, there.port) == (here_origin.scheme, here_origin.port)
                and self.redirect_host_allowed(authority, here)
            )

        return safe_redirect_target(to, allowed_host=allowed)

    def _domain(self, request: Request) -> str | None:
        return cookie_domain(self.request_host(request), self.proxy_patterns)

    def session_cookie(self, request: Request, *, bound: Origin | None = None) -> bytes:
        """A C{Set-Cookie} value holding a fresh session for C{request}'s host.

        @param bound: the origin a ticket signs in: the session is good there only, and
            the cookie is host-only even where a login would widen its Domain.
        """
        return set_cookie_value(
            self.cookie_name.decode("ascii"),
            self.signer.issue(
                self.clock.seconds(), origin=None if bound is None else str(bound)
            ),
            max_age=self.signer.ttl,
            secure=self.is_https(request),
            domain=None if bound is not None else self._domain(request),
        )

    def deny(self, request: Request, *, original_url: bytes) -> bytes:
        """See L{Authenticator.deny}; a proxy host may send the browser to get a ticket."""
        if not _is_navigation(request):
            return self.deny_unauthorized(request)
        ticket_url = self.ticket_entry(request, original_url)
        if ticket_url is not None:
            return redirect(request, ticket_url)
        return self._login_redirect(request, original_url)

    def tickets_available(self) -> bool:
        """Tell whether tickets can be minted and used now (single use can be kept)."""
        return self.tickets is not None and self.nonces.available(self.clock.seconds())

    def ticket_entry(self, request: Request, original_url: bytes) -> bytes | None:
        """The main host's ticket URL for a signed-out browser on a proxy host, or C{None}.

        C{None} (sign in on this host) for a path route, when tickets are off or
        unavailable, when L{sign_in_base} finds that no ticket is needed or none can be
        had, and when the main host's endpoint would refuse C{original_url}
        (L{ticket_destination}: say, a host with a trailing dot), so that a browser is
        never sent to a refusal it cannot get past.
        """
        if original_url.startswith(b"/") or not self.tickets_available():
            return None
        url = original_url.decode("ascii", "replace")
        scheme = urlsplit(url).scheme
        base = sign_in_base(
            self.request_host(request),
            scheme if scheme in ("http", "https") else "http",
            self.proxy_patterns,
            self.public_url,
            redirect_allowed=self.redirect_host_allowed,
        )
        if base is None:
            return None
        main = url_origin(base)
        if main is None or self._ticket_destination(url, main) is None:
            return None
        to = quote(original_url, safe="/:").encode("ascii")
        return base.encode("ascii") + RESERVED_TICKET + b"?to=" + to

    def _ticket_destination(self, to: str, here: Origin) -> tuple[Origin, str] | None:
        return ticket_destination(
            to,
            here,
            self.proxy_patterns,
            self.public_url,
            redirect_allowed=self.redirect_host_allowed,
        )

    def ticket_target(self, to: str, request: Request) -> tuple[Origin, str] | None:
        """C{(origin, path)} of C{to} if this request's host may mint a ticket for it.

        See L{ticket_destination}: an C{http(s)} URL on a proxy host a redirect from
        here may reach, with this request's scheme and port, that signs in through this
        very host; else C{None}. The path keeps its query.
        """
        here = self.request_origin(request)
        if here is None:
            return None
        return self._ticket_destination(to, here)

    def mint_ticket(self, origin: Origin) -> str:
        """A fresh ticket for C{origin}; requires L{tickets}."""
        assert self.tickets is not None
        nonce = secrets.token_bytes(NONCE_BYTES)
        return self.tickets.issue(origin, self.clock.seconds(), nonce)

    def redeem_ticket(self, token: str, request: Request) -> Ticket | Refusal:
        """Check C{token} for this request's origin and use it up (single use)."""
        if self.tickets is None:
            return Refusal.MALFORMED
        now = self.clock.seconds()
        found = self.tickets.verify(token, self.request_origin(request), now)
        if isinstance(found, Refusal):
            return found
        if not self.nonces.use(found.nonce, found.expires, now):
            return Refusal.REPLAYED
        return found

    def clearing_cookies(self, request: Request) -> list[bytes]:
        """C{Set-Cookie} values deleting the session cookie as login set it.

        A host-only deletion goes along with a Domain one, for a cookie set before the
        proxy domains changed.
        """
        name = self.cookie_name.decode("ascii")
        secure = self.is_https(request)
        domain = self._domain(request)
        values = [clear_cookie_value(name, secure=secure, domain=domain)]
        if domain is not None:
            values.append(clear_cookie_value(name, secure=secure, domain=None))
        return values


def _zero(length: bytes) -> bool:
    length = length.strip(b" \t")
    return length.isdigit() and int(length) == 0


def _content_size(request: Request) -> int:
    """How many body bytes were read into C{request.content} (0 while it streams)."""
    content = getattr(request, "content", None)
    if content is None:
        return 0
    try:
        position = content.tell()
        content.seek(0, 2)
        size = content.tell()
        content.seek(position)
    except (OSError, ValueError):
        return 0
    return int(size)


#: Distinct valid session values remembered (one per signed-in browser, roughly).
_VERIFIED_CACHE_SIZE = 4096


def _threaded_verify(
    threads: IReactorThreads, credential: Credential
) -> Callable[[str], Deferred[bool]]:
    """Check argon2 passwords one at a time in the reactor's thread pool.

    One at a time bounds memory (each check takes the hash's memory cost, often 64 MiB)
    and CPU, while the reactor keeps serving other requests.
    """
    from twisted.internet.threads import deferToThreadPool

    lock = DeferredSemaphore(1)

    def verify(password: str) -> Deferred[bool]:
        return lock.run(
            deferToThreadPool,
            threads,
            threads.getThreadPool(),
            credential.check,
            password,
        )

    return verify


def build_authenticator(
    config: Config,
    *,
    environ: Mapping[str, str],
    clock: Clock,
    log: Logger,
    proxy_patterns: Sequence[str] | None = None,
    is_https: Callable[[Request], bool] = _secure,
    client_address: Callable[[Request], str] = peer_host,
    request_host: Callable[[Request], str] = _host_header,
    allowed_redirect_host: Callable[[str], bool] | None = None,
    threads: IReactorThreads | None = None,
    mount_prefix: Callable[[Request], bytes | None] = _no_prefix,
    shared_processes: bool | None = None,
) -> Authenticator:
    """Make the authenticator that C{config} asks for.

    @param environ: the process environment (C{HASHED_PASSWORD}, C{PASSWORD}).
    @param proxy_patterns: normalised C{--proxy-domain} patterns, for the cookie Domain
        (default: C{config.proxy_domains}).
    @param allowed_redirect_host: accepts the authority of an absolute C{to} (besides
        the request's own host); default: L{DomainMatcher.redirect_allowed} for the
        request's host.
    @param threads: a reactor providing C{IReactorThreads}; when given, argon2 hashes
        are verified in its thread pool instead of blocking the reactor.
    @param mount_prefix: the C{X-Forwarded-Prefix} of a request from a trusted proxy.
    @param shared_processes: whether other processes serve the same listeners (a
        C{--workers} worker); default: C{config.workers > 1}. Then tickets need the
        shared directory of used ones, and are off without it.
    @raise StartupError: for a bad C{--auth}, C{--session-ttl} or password source.
    """
    if config.auth == "none":
        return OpenAccess(mount_prefix=mount_prefix)
    credential = _credential(config, environ)
    if credential.generated_path is not None:
        log.info(
            "No password configured: using the generated one in {path}",
            path=credential.generated_path,
        )
    else:
        log.info("Using the password from {source}", source=credential.source)
    verify = None
    if threads is not None and credential.kind == "argon2":
        verify = _threaded_verify(threads, credential)
    key_material = session_key_material(credential)
    patterns = config.proxy_domains if proxy_patterns is None else proxy_patterns
    if shared_processes is None:
        shared_processes = config.workers > 1
    # Tickets are for proxy hosts: without any, nothing is written to the data dir.
    nonces = (
        nonce_store(os.path.join(config.data_dir, "tickets"), log, shared=shared_processes)
        if patterns
        else MemoryNonces()
    )
    return PasswordAuthenticator(
        credential=credential,
        signer=SessionSigner(key_material, config.session_ttl),
        limiter=LoginRateLimiter(clock),
        clock=clock,
        log=log,
        cookie_name=session_cookie_name(config.cookie_suffix),
        proxy_patterns=patterns,
        skip_auth_preflight=config.skip_auth_preflight,
        is_https=is_https,
        client_address=client_address,
        request_host=request_host,
        allowed_redirect_host=allowed_redirect_host,
        verify=verify,
        tickets=TicketSigner(key_material),
        nonces=nonces,
        public_url=config.public_url,
        mount_prefix=mount_prefix,
    )


def _credential(config: Config, environ: Mapping[str, str]) -> Credential:
    if config.auth != "password":
        raise StartupError(f"--auth must be 'password' or 'none', not {config.auth!r}")
    if config.session_ttl <= 0:
        raise StartupError("--session-ttl must be a positive number of seconds")
    return resolve_credential(
        environ=environ, password_file=config.password_file, data_dir=config.data_dir
    )


class _WallClock:
    def seconds(self) -> float:
        return time.time()


def print_auth_cookie(
    config: Config, environ: Mapping[str, str], clock: Clock | None = None
) -> str:
    """The C{Cookie} header value (C{portproxy-session[-suffix]=VALUE}) for C{curl -H}.

    Like a start-up, this generates and stores a password when none is configured.
    """
    clock = clock or _WallClock()
    if config.auth == "none":
        raise StartupError("--print-auth-cookie needs --auth password")
    credential = _credential(config, environ)
    signer = SessionSigner(session_key_material(credential), config.session_ttl)
    name = session_cookie_name(config.cookie_suffix)
    return f"{name}={signer.issue(clock.seconds())}"

# -*- test-case-name: tests.test_auth_tickets_pure -*-
"""Sign-in tickets: how a login on the main host reaches a proxy host it cannot cover.

A session cookie set on the main host M covers a proxy host P only when its Domain can
be widened over both (see L{portproxy.auth.cookiepolicy}); for C{*.localhost}, IP hosts,
C{{{host}}} patterns and hosts outside M's domain it cannot. A signed-out browser on P
is then sent to M, which, for a signed-in user, hands back a ticket bound to P: a short
signed value P exchanges once for a host-only session cookie.

A ticket is C{t2.<origin>.<expires>.<nonce>.<mac>}: P's origin (C{http://host:port},
scheme included, port always written, base64url; see L{portproxy.auth.origins}), a Unix
time, 16 random bytes (base64url) and an HMAC-SHA256 under a key derived from the
password material with its own label, so that neither a session cookie nor a ticket
can pass for the other. Single use is the caller's part: the nonce is recorded until
the ticket expires (L{portproxy.auth.nonces}).

M mints a ticket only for an origin with the scheme and port the browser used to reach
M (so the browser carries it to this very listener, not to one someone else owns on
another port, nor over plain HTTP from HTTPS), and only where P really signs in through
M (L{ticket_destination}). The session a ticket gives is bound to P's origin
(L{portproxy.auth.sessions}): an app on P, which can always read P's own URLs (a
service worker), gains nothing beyond P.

Everything here is pure: no clock, no randomness, no I/O; callers pass them in.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from portproxy.auth.cookiepolicy import cookie_domain
from portproxy.auth.origins import Origin, url_origin
from portproxy.auth.redirects import safe_redirect_target
from portproxy.auth.sessions import derive_key
from portproxy.routing.domains import HOST, PORT, host_name
from portproxy.routing.hosts import parse_authority

__all__ = [
    "MAX_CLOCK_SKEW",
    "NONCE_BYTES",
    "TICKET_CONTEXT",
    "TICKET_TTL",
    "Refusal",
    "Ticket",
    "TicketSigner",
    "main_host",
    "sign_in_base",
    "ticket_destination",
]

#: Seconds a ticket is valid: a redirect round trip, with room for a slow network.
TICKET_TTL = 45
#: How far past its lifetime a ticket's expiry may lie (instances' clocks differ a little).
MAX_CLOCK_SKEW = 30
#: Random bytes in a nonce.
NONCE_BYTES = 16
#: The HKDF label of the ticket key; the session cookie key has another.
TICKET_CONTEXT = b"portproxy sign-in ticket v1"

_LAYOUT = re.compile(
    rb"t2\.([A-Za-z0-9_-]{1,400})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})"
)
_MAX_LENGTH = 3 + 401 + 13 + 23 + 43


class Refusal(enum.Enum):
    """Why a ticket was refused (for the log; the browser sees one message)."""

    MALFORMED = "malformed"
    FORGED = "forged"
    EXPIRED = "expired"
    WRONG_HOST = "minted for another host, port or scheme"
    REPLAYED = "already used"


@dataclass(frozen=True)
class Ticket:
    """A verified ticket: the origin it is for, when it expires, its nonce."""

    origin: str
    expires: int
    nonce: str


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class TicketSigner:
    """Mint and check tickets for one key.

    @ivar ttl: lifetime of a minted ticket, in seconds.
    """

    def __init__(self, key_material: bytes, ttl: int = TICKET_TTL) -> None:
        if ttl <= 0:
            raise ValueError("the ticket lifetime must be positive")
        self._key = derive_key(key_material, TICKET_CONTEXT)
        self.ttl = int(ttl)

    def _mac(self, payload: bytes) -> bytes:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def issue(self, origin: Origin | str, now: float, nonce: bytes) -> str:
        """A ticket for C{origin} (C{scheme://host:port}), valid from C{now} for L{ttl} s.

        @param nonce: L{NONCE_BYTES} random bytes, never used for another ticket.
        """
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
        payload = b"t2.%s.%d.%s" % (
            _b64(str(origin).lower().encode("ascii")),
            int(now) + self.ttl,
            _b64(nonce),
        )
        return (payload + b"." + self._mac(payload)).decode("ascii")

    def verify(
        self, token: str | bytes | None, origin: Origin | str | None, now: float
    ) -> Ticket | Refusal:
        """The ticket in C{token} if it was minted here for C{origin} and is fresh.

        @param origin: the request's origin (L{portproxy.auth.origins.origin});
            C{None}, for a request whose origin cannot be told, matches no ticket.

        Never raises. The MAC is compared before anything else is looked at, so a
        forged value learns nothing from the answer's timing. Single use is not checked
        here: record L{Ticket.nonce} until L{Ticket.expires}.
        """
        if token is None or len(token) > _MAX_LENGTH:
            return Refusal.MALFORMED
        if isinstance(token, str):
            if not token.isascii():
                return Refusal.MALFORMED
            token = token.encode("ascii")
        match = _LAYOUT.fullmatch(token)
        if match is None:
            return Refusal.MALFORMED
        payload = token[: match.start(4) - 1]
        if not hmac.compare_digest(self._mac(payload), match.group(4)):
            return Refusal.FORGED
        bound = _unb64(match.group(1))
        if (
            origin is None
            or bound is None
            or bound.decode("ascii", "replace") != str(origin).lower()
        ):
            return Refusal.WRONG_HOST
        expires = int(match.group(2))
        if not now < expires <= now + self.ttl + MAX_CLOCK_SKEW:
            return Refusal.EXPIRED
        return Ticket(bound.decode("ascii"), expires, match.group(3).decode("ascii"))


@lru_cache(maxsize=64)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\{\{port\}\}|\{\{host\}\})", pattern):
        if piece == PORT:
            parts.append("[0-9]+")
        elif piece == HOST:
            parts.append("(?P<host>[a-z0-9._-]+)")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts), re.ASCII)


def main_host(proxy_host: str, patterns: Sequence[str]) -> str | None:
    """The main host's name for a proxy host: its pattern without the C{{{port}}} label.

    C{7001.localhost} under C{{{port}}.localhost} -> C{localhost}; C{5173.myhost} under
    C{{{port}}.{{host}}} -> C{myhost}; C{dev-5173.example.com} under
    C{dev-{{port}}.example.com} -> C{example.com}. The first pattern that matches
    decides, as in routing. C{None} when none matches, or when the C{{{port}}} label
    also holds C{{{host}}} (C{{{port}}-{{host}}.example.com}): no main host can be told.

    @param proxy_host: C{host[:port]} of the request; the port is ignored.
    @param patterns: normalised C{--proxy-domain} patterns.
    """
    name = host_name(proxy_host)
    if name is None:
        return None
    for pattern in patterns:
        found = _pattern_regex(pattern).fullmatch(name)
        if found is None:
            continue
        labels = pattern.split(".")
        kept = [label for label in labels if PORT not in label]
        if len(kept) == len(labels) or any(
            HOST in label for label in labels if PORT in label
        ):
            return None
        host = ".".join(kept)
        if HOST in host:
            host = host.replace(HOST, found.group("host"))
        return host or None
    return None


def sign_in_base(
    proxy_authority: str,
    scheme: str,
    patterns: Sequence[str],
    public_url: str | None,
    *,
    redirect_allowed: Callable[[str, str], bool],
) -> str | None:
    """Where a signed-out browser on a proxy host gets its ticket, or C{None}.

    The result is the main host's base URL (no trailing slash): C{public_url} when set,
    else C{scheme://M[:port]} with M from L{main_host} and the proxy host's own C{:port}.
    C{None} (sign in on the proxy host itself) when a cookie set on M would cover the
    proxy host anyway (its Domain widens over both), when no M can be told, or when a
    redirect from M could not come back to the proxy host.

    @param proxy_authority: the proxy host as the browser used it (C{host[:port]}).
    @param scheme: C{"http"} or C{"https"}, as the browser used it.
    @param redirect_allowed: L{DomainMatcher.redirect_allowed
        <portproxy.routing.domains.DomainMatcher.redirect_allowed>}.
    """
    proxy_authority = proxy_authority.lower()
    parsed = parse_authority(proxy_authority)
    proxy_name = host_name(proxy_authority)
    if parsed is None or proxy_name is None:
        return None
    if public_url is not None:
        base = public_url
        authority = urlsplit(public_url).netloc.lower()
    else:
        name = main_host(proxy_authority, patterns)
        if name is None:
            return None
        authority = name if parsed.port is None else f"{name}:{parsed.port}"
        base = f"{scheme}://{authority}"
    if authority == proxy_authority:
        return None
    domain = cookie_domain(authority, patterns)
    if domain is not None and (proxy_name == domain or proxy_name.endswith("." + domain)):
        return None
    if not redirect_allowed(proxy_authority, authority):
        return None
    return base


def ticket_destination(
    to: str,
    here: Origin,
    patterns: Sequence[str],
    public_url: str | None,
    *,
    redirect_allowed: Callable[[str, str], bool],
) -> tuple[Origin, str] | None:
    """C{(origin, path)} of C{to} if the main host at C{here} may mint a ticket for it.

    The rule of M's ticket endpoint, and what a proxy host checks before it sends a
    browser there (no dead end). C{to} must be an absolute C{http(s)} URL that the
    login's C{to} rule lets through (a proxy host a redirect from C{here} may reach,
    clean host labels, so no trailing dot), with C{here}'s scheme and port, and its
    sign-in base (L{sign_in_base}) must be C{here} itself: a host the main host's
    cookie covers needs no ticket, and a host that signs in elsewhere gets none from
    here. C{None} otherwise. The path keeps its query.
    """
    checked = safe_redirect_target(
        to, allowed_host=lambda authority: redirect_allowed(authority, here.host)
    )
    if checked != to or to.startswith("/"):
        return None
    target = url_origin(to)
    if target is None or target == here:
        return None
    if (target.scheme, target.port) != (here.scheme, here.port):
        return None
    parts = urlsplit(to)
    base = sign_in_base(
        parts.netloc, target.scheme, patterns, public_url, redirect_allowed=redirect_allowed
    )
    if base is None or url_origin(base) != here:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return target, path

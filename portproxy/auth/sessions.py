# -*- test-case-name: tests.test_auth_sessions -*-
"""Signed, expiring session cookie values.

A value is C{1.<issued>.<expires>.<mac>}: a format version, two Unix times in whole
seconds, and an HMAC-SHA256 over the rest. The key is derived from the password (see
L{portproxy.auth.passwords.session_key_material}) rather than from a random secret, so
every instance sharing the password accepts the cookie, and changing the password signs
everybody out. Checking a value costs one HMAC, so it can run on every proxied request.

A sign-in ticket gives a session for one origin only (an app on that host could have
taken the ticket, see L{portproxy.auth.tickets}): C{2.<origin>.<issued>.<expires>.<mac>},
the origin (C{http://5173.localhost:8080}) in unpadded base64url, MAC'd under a key
with its own label, so that neither format can pass for the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import NamedTuple

__all__ = ["MAX_CLOCK_SKEW", "Session", "SessionSigner", "derive_key"]

#: How far in the future an issue time may lie (instances' clocks differ a little).
MAX_CLOCK_SKEW = 300

_VERSION = b"1"
_CONTEXT = b"portproxy session cookie v1"
_LAYOUT = re.compile(rb"1\.([0-9]{1,12})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")
# Anything longer cannot match _LAYOUT; refuse it before any other work.
_MAX_LENGTH = 2 + 13 + 13 + 43
_BOUND_VERSION = b"2"
_BOUND_CONTEXT = b"portproxy host session v2"
_BOUND_LAYOUT = re.compile(
    rb"2\.([A-Za-z0-9_-]{1,400})\.([0-9]{1,12})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})"
)
_BOUND_MAX_LENGTH = 2 + 401 + 13 + 13 + 43


class Session(NamedTuple):
    """A verified session value: when it expires, and the origin it is bound to.

    @ivar origin: C{None} for a password login, good on every host the cookie reaches.
    """

    expires: int
    origin: str | None


def derive_key(key_material: bytes, context: bytes = _CONTEXT) -> bytes:
    """HKDF-SHA256 (RFC 5869) of C{key_material} with a fixed salt and context label.

    The label keeps this key apart from any other use of the same password (the
    session cookie by default; sign-in tickets pass their own).
    """
    prk = hmac.new(b"portproxy", key_material, hashlib.sha256).digest()
    return hmac.new(prk, context + b"\x01", hashlib.sha256).digest()


class SessionSigner:
    """Issue and check session values for one key.

    @ivar ttl: lifetime of an issued value, in seconds.
    """

    def __init__(self, key_material: bytes, ttl: int) -> None:
        if ttl <= 0:
            raise ValueError("the session lifetime must be positive")
        self._key = derive_key(key_material)
        self._bound_key = derive_key(key_material, _BOUND_CONTEXT)
        self.ttl = int(ttl)

    def _mac(self, payload: bytes, key: bytes | None = None) -> bytes:
        digest = hmac.new(key or self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def issue(self, now: float, *, origin: str | None = None) -> str:
        """A new value, valid from C{now} for L{ttl} seconds.

        @param origin: bind the session to this origin (C{scheme://host:port}, as
            L{portproxy.auth.origins.Origin} writes it); C{None} for every host.
        """
        issued = int(now)
        if origin is None:
            payload = b"%s.%d.%d" % (_VERSION, issued, issued + self.ttl)
            return (payload + b"." + self._mac(payload)).decode("ascii")
        bound = base64.urlsafe_b64encode(origin.lower().encode("ascii")).rstrip(b"=")
        payload = b"%s.%s.%d.%d" % (_BOUND_VERSION, bound, issued, issued + self.ttl)
        return (payload + b"." + self._mac(payload, self._bound_key)).decode("ascii")

    def verify(self, value: str | bytes | None, now: float) -> bool:
        """Tell whether C{value} is a session for every host, valid at C{now}.

        A value bound to one origin is refused here: use L{check}.
        """
        session = self.check(value, now)
        return session is not None and session.origin is None

    def check(self, value: str | bytes | None, now: float) -> Session | None:
        """The session in C{value} if it was issued with this key and is valid at C{now}.

        Never raises: anything malformed, tampered with, expired, issued too far in the
        future or for longer than L{ttl} gives C{None}. The caller compares
        L{Session.origin} with the request's.
        """
        if value is None or len(value) > _BOUND_MAX_LENGTH:
            return None
        if isinstance(value, str):
            if not value.isascii():
                return None
            value = value.encode("ascii")
        origin: str | None = None
        if value[:1] == _BOUND_VERSION:
            match = _BOUND_LAYOUT.fullmatch(value)
            if match is None:
                return None
            key, times = self._bound_key, 2
        else:
            match = _LAYOUT.fullmatch(value) if len(value) <= _MAX_LENGTH else None
            if match is None:
                return None
            key, times = self._key, 1
        mac = match.group(times + 2)
        payload = value[: match.start(times + 2) - 1]
        # Compare every time, before looking at the times, so timing tells nothing.
        authentic = hmac.compare_digest(self._mac(payload, key), mac)
        issued, expires = int(match.group(times)), int(match.group(times + 1))
        fresh = (
            issued <= now + MAX_CLOCK_SKEW
            and now < expires
            and 0 < expires - issued <= self.ttl
        )
        if not (authentic and fresh):
            return None
        if times == 2:
            origin = _decoded(match.group(1))
            if origin is None:
                return None
        return Session(expires, origin)


def _decoded(text: bytes) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw.decode("ascii") if raw.isascii() else None

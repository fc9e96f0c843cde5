# -*- test-case-name: tests.test_auth_sessions -*-
"""Signed, expiring session cookie values.

A value is C{1.<issued>.<expires>.<mac>}: a format version, two Unix times in whole
seconds, and an HMAC-SHA256 over the rest. The key is derived from the password (see
L{portproxy.auth.passwords.session_key_material}) rather than from a random secret, so
every instance sharing the password accepts the cookie, and changing the password signs
everybody out. Checking a value costs one HMAC, so it can run on every proxied request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = ["MAX_CLOCK_SKEW", "SessionSigner", "derive_key"]

#: How far in the future an issue time may lie (instances' clocks differ a little).
MAX_CLOCK_SKEW = 300

_VERSION = b"1"
_CONTEXT = b"portproxy session cookie v1"
_LAYOUT = re.compile(rb"1\.([0-9]{1,12})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")
# Anything longer cannot match _LAYOUT; refuse it before any other work.
_MAX_LENGTH = 2 + 13 + 13 + 43


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
        self.ttl = int(ttl)

    def _mac(self, payload: bytes) -> bytes:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def issue(self, now: float) -> str:
        """A new value, valid from C{now} for L{ttl} seconds."""
        issued = int(now)
        payload = b"%s.%d.%d" % (_VERSION, issued, issued + self.ttl)
        return (payload + b"." + self._mac(payload)).decode("ascii")

    def verify(self, value: str | bytes | None, now: float) -> bool:
        """Tell whether C{value} was issued with this key and is still valid at C{now}.

        Never raises: anything malformed, tampered with, expired, issued too far in the
        future or for longer than L{ttl} is simply refused.
        """
        if value is None or len(value) > _MAX_LENGTH:
            return False
        if isinstance(value, str):
            if not value.isascii():
                return False
            value = value.encode("ascii")
        match = _LAYOUT.fullmatch(value)
        if match is None:
            return False
        payload = value[: match.start(3) - 1]
        # Compare every time, before looking at the times, so timing tells nothing.
        authentic = hmac.compare_digest(self._mac(payload), match.group(3))
        issued, expires = int(match.group(1)), int(match.group(2))
        fresh = (
            issued <= now + MAX_CLOCK_SKEW
            and now < expires
            and 0 < expires - issued <= self.ttl
        )
        return authentic and fresh

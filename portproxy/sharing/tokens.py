# -*- test-case-name: tests.test_sharing_pure -*-
"""Machine tokens (C{ppt_...}): making one, and finding one in a request's headers.

Pure. A token is presented as C{Authorization: Bearer ppt_...}, as the password of
C{Authorization: Basic} (any user name), or as C{X-Portproxy-Token: ppt_...}. Only a
value that starts with C{ppt_} counts, so an app's own Authorization is never mistaken
for ours (it then passes to the app untouched).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "TOKEN_HEADER",
    "TOKEN_PREFIX",
    "Presented",
    "authorization_holds_token",
    "new_secret",
    "presented_token",
]

TOKEN_PREFIX = "ppt_"
#: The header a token can come in besides Authorization (never forwarded to apps).
TOKEN_HEADER = b"x-portproxy-token"
# The secret: ppt_ then 43 characters of base64url (32 random bytes).
_SECRET = re.compile(r"ppt_[A-Za-z0-9_-]{20,128}")
_SECRET_BYTES = re.compile(rb"ppt_[A-Za-z0-9_-]{20,128}")


def new_secret() -> str:
    """A fresh token secret: C{ppt_} and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Presented:
    """A token found in a request.

    @ivar in_authorization: it came in C{Authorization}, which must then be removed
        before the request reaches the app.
    """

    secret: str
    in_authorization: bool


def _from_authorization(value: bytes) -> str | None:
    scheme, _, rest = value.strip(b" \t").partition(b" ")
    scheme = scheme.lower()
    rest = rest.strip(b" \t")
    if scheme == b"bearer":
        candidate = rest
    elif scheme == b"basic":
        try:
            decoded = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            return None
        candidate = decoded.partition(b":")[2]
    else:
        return None
    if _SECRET_BYTES.fullmatch(candidate):
        return candidate.decode("ascii")
    return None


def presented_token(
    authorization: Sequence[bytes] | None, token_header: Sequence[bytes] | None
) -> Presented | None:
    """The token C{X-Portproxy-Token} or C{Authorization} carries, or C{None}.

    Exactly one value of a header is read: a request with two Authorization or two
    X-Portproxy-Token fields presents nothing (which one would the app have seen?).
    X-Portproxy-Token wins when both are present.
    """
    if token_header:
        if len(token_header) == 1:
            value = token_header[0].strip(b" \t")
            if _SECRET_BYTES.fullmatch(value):
                return Presented(value.decode("ascii"), in_authorization=False)
        return None
    if authorization and len(authorization) == 1:
        secret = _from_authorization(authorization[0])
        if secret is not None:
            return Presented(secret, in_authorization=True)
    return None


def authorization_holds_token(authorization: Sequence[bytes] | None) -> bool:
    """Tell whether any C{Authorization} value carries a C{ppt_} token.

    Such a field is removed before every app, whoever is let in: an app (on a public
    port, or seen by a signed-in browser) must never get a secret it could replay
    against other ports. Cheap when the header is absent.
    """
    if not authorization:
        return False
    return any(_mentions_secret(value) for value in authorization)


def _mentions_secret(value: bytes) -> bool:
    # Wider than what is accepted: a token in any scheme or position (`Token ppt_..`,
    # `Bearer ppt_.., x`, percent-encoded, the user name of Basic as in
    # `curl -u "$TOKEN:"`, base64 that a lenient decoder would still read) is a secret
    # the app must not see.
    if _PPT in value.lower().replace(b"%5f", b"_"):
        return True
    for word in value.replace(b",", b" ").split():
        if len(word) < 6:  # base64 of "ppt_" takes at least 6 characters
            continue
        letters = _NOT_BASE64.sub(b"", word.translate(_URLSAFE))
        for skip in range(4):  # a stray character may shift the alignment
            chunk = letters[skip:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                if _PPT in base64.b64decode(chunk).lower():
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


_PPT = TOKEN_PREFIX.encode("ascii")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def looks_like_secret(value: str) -> bool:
    """Tell whether C{value} has the shape of a token secret."""
    return bool(_SECRET.fullmatch(value))

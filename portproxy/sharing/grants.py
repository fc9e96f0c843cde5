# -*- test-case-name: tests.test_sharing_pure -*-
"""Share links and the grant cookies they set: names, signed values, checks.

Pure. A link token is C{<share id>.<mac>} under the link key; a grant cookie value is
C{<share id>.<mac>} under the grant key, over the id and the port, so a cookie made for
one port never checks for another. Neither carries the scope or the expiry: those live
in the sharing state, which is asked on every use, so revoking a share (removing its id)
or its expiry ends the link and every cookie it set on the next request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from portproxy.http.headers import GRANT_COOKIE_PREFIX as GRANT_PREFIX

__all__ = [
    "GRANT_COOKIE_PREFIX",
    "SHARE_PATH",
    "grant_cookie_name",
    "grant_set_cookie",
    "grant_value",
    "grant_value_id",
    "link_token",
    "link_token_id",
    "new_share_id",
]

#: Where a link is opened: C{GET /.portproxy/share/<link token>}.
SHARE_PATH = b"/.portproxy/share/"
#: Every grant cookie's name starts so (C{portproxy-grant-<port>[-<suffix>]}); the
#: proxy strips such cookies from requests and drops an app's Set-Cookie for them.
GRANT_COOKIE_PREFIX = GRANT_PREFIX.decode("ascii")

_ID = re.compile(r"[0-9a-f]{16}")
_MAC_CHARS = 22  # 16 bytes of HMAC-SHA256, base64url without padding
_NOT_NAME = re.compile(r"[^A-Za-z0-9-]")


def new_share_id(random_hex: str) -> str:
    """Check and return a share id made of 16 hex digits (from C{secrets.token_hex(8)})."""
    if not _ID.fullmatch(random_hex):
        raise ValueError("a share id is 16 lower-case hex digits")
    return random_hex


def _mac(key: bytes, message: bytes) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _split(value: str) -> tuple[str, str] | None:
    share_id, dot, mac = value.partition(".")
    if not dot or not _ID.fullmatch(share_id) or len(mac) != _MAC_CHARS:
        return None
    return share_id, mac


def link_token(key: bytes, share_id: str) -> str:
    """The token in a share link's URL."""
    return f"{share_id}.{_mac(key, b'link|' + share_id.encode('ascii'))}"


def link_token_id(key: bytes, token: str) -> str | None:
    """The share id a link token was made for, or C{None} if it is not genuine."""
    parts = _split(token)
    if parts is None:
        return None
    share_id, mac = parts
    expected = _mac(key, b"link|" + share_id.encode("ascii"))
    return share_id if hmac.compare_digest(mac, expected) else None


def grant_value(key: bytes, share_id: str, port: int) -> str:
    """The value of the grant cookie that share C{share_id} sets for C{port}."""
    return f"{share_id}.{_mac(key, f'grant|{share_id}|{port}'.encode('ascii'))}"


def grant_value_id(key: bytes, value: str, port: int) -> str | None:
    """The share id of a grant cookie value presented on C{port}, or C{None}."""
    parts = _split(value)
    if parts is None:
        return None
    share_id, mac = parts
    expected = _mac(key, f"grant|{share_id}|{port}".encode("ascii"))
    return share_id if hmac.compare_digest(mac, expected) else None


def grant_cookie_name(port: int, suffix: str = "") -> str:
    """C{portproxy-grant-<port>}, or with C{-<suffix>} for C{--cookie-suffix}."""
    name = f"{GRANT_COOKIE_PREFIX}{port}"
    return f"{name}-{_NOT_NAME.sub('-', suffix)}" if suffix else name


def grant_set_cookie(
    name: str, value: str, *, max_age: int, path: bytes, secure: bool
) -> bytes:
    """The C{Set-Cookie} value of a grant cookie: host-only, scoped to C{path}.

    HttpOnly (the app's scripts cannot read it) and SameSite=Lax, like the session
    cookie; Secure over TLS. C{path} is the port's route (C{/proxy/3000}) for a path
    link, C{/} on the port's own proxy host.
    """
    if not re.fullmatch(rb"/[!#-:<-~]*", path):
        raise ValueError("a cookie path is / then visible ASCII without ;")
    parts = [
        f"{name}={value}",
        f"Max-Age={max(1, int(max_age))}",
        f"Path={path.decode('ascii')}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("ascii")

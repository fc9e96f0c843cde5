# -*- test-case-name: tests.test_exchange_integrity -*-
"""Which of an app's Set-Cookie fields may reach the browser.

An app behind the proxy shares the browser's cookie jar for this site with portproxy
itself, so it must not set portproxy's session cookie, nor a cookie the browser would
send back looking like it: a cookie without a name (C{=portproxy-session=x}, or no C{=}
at all) is sent back as its bare value, C{portproxy-session=x} (RFC 6265bis 5.7).
"""

from __future__ import annotations

from collections.abc import Sequence

from portproxy.http.headers import GRANT_COOKIE_PREFIX

__all__ = ["allowed_set_cookies", "cookie_name"]

_GRANT_LENGTH = len(GRANT_COOKIE_PREFIX)


def cookie_name(set_cookie: bytes) -> bytes | None:
    """The cookie's name as a browser reads it, or C{None} for a nameless cookie."""
    pair = set_cookie.split(b";", 1)[0]
    name, equals, _ = pair.partition(b"=")
    if not equals:
        return None
    # Browsers trim spaces and tabs around the name.
    name = name.strip(b" \t")
    return name or None


def allowed_set_cookies(
    values: Sequence[bytes], session_cookie: bytes | None
) -> list[bytes]:
    """Drop the Set-Cookie values that name portproxy's cookies or have no name.

    portproxy's cookies: the session cookie, and every share grant cookie
    (C{portproxy-grant-*}, in any case: an app must not plant or clear a grant).
    """
    out = []
    for value in values:
        name = cookie_name(value)
        if (
            name is None
            or name == session_cookie
            or name[:_GRANT_LENGTH].lower() == GRANT_COOKIE_PREFIX
        ):
            continue
        out.append(value)
    return out

# -*- test-case-name: tests.test_auth_guard -*-
"""Sign-in for portproxy: passwords, signed session cookies, the login pages.

The pure parts (L{passwords}, L{sessions}, L{ratelimit}, L{redirects}, L{cookiepolicy},
L{loginpage}) need no reactor; L{guard} (what the resource tree asks) and L{pages}
(the login and logout leaves) are the thin twisted.web shell.
"""

from __future__ import annotations

from portproxy.auth.guard import (
    RESERVED_LOGIN,
    RESERVED_LOGOUT,
    RESERVED_PREFIX,
    Authenticator,
    OpenAccess,
    PasswordAuthenticator,
    build_authenticator,
    is_reserved_path,
    print_auth_cookie,
)
from portproxy.auth.pages import LoginResource, LogoutResource

__all__ = [
    "RESERVED_LOGIN",
    "RESERVED_LOGOUT",
    "RESERVED_PREFIX",
    "Authenticator",
    "LoginResource",
    "LogoutResource",
    "OpenAccess",
    "PasswordAuthenticator",
    "build_authenticator",
    "is_reserved_path",
    "print_auth_cookie",
]

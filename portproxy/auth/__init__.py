# -*- test-case-name: tests.test_auth_guard -*-
"""Sign-in for portproxy: passwords, signed session cookies, the login pages.

The pure parts (L{passwords}, L{sessions}, L{tickets}, L{ratelimit}, L{redirects},
L{cookiepolicy}, L{loginpage}) need no reactor; L{guard} (what the resource tree
asks), L{nonces} (used tickets) and L{pages} (the login, logout and ticket leaves) are
the thin shell.
"""

from __future__ import annotations

from portproxy.auth.guard import (
    RESERVED_LOGIN,
    RESERVED_LOGOUT,
    RESERVED_PREFIX,
    RESERVED_TICKET,
    RESERVED_TICKET_ACCEPT,
    Authenticator,
    OpenAccess,
    PasswordAuthenticator,
    build_authenticator,
    is_reserved_path,
    print_auth_cookie,
)
from portproxy.auth.pages import (
    LoginResource,
    LogoutResource,
    TicketAcceptResource,
    TicketResource,
)

__all__ = [
    "RESERVED_LOGIN",
    "RESERVED_LOGOUT",
    "RESERVED_PREFIX",
    "RESERVED_TICKET",
    "RESERVED_TICKET_ACCEPT",
    "Authenticator",
    "LoginResource",
    "LogoutResource",
    "OpenAccess",
    "PasswordAuthenticator",
    "TicketAcceptResource",
    "TicketResource",
    "build_authenticator",
    "is_reserved_path",
    "print_auth_cookie",
]

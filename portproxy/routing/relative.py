# -*- test-case-name: tests.test_relative -*-
"""Relative references to portproxy's own paths, so they survive a path prefix.

A front proxy may mount portproxy under a prefix (C{location /pp/ { proxy_pass
http://127.0.0.1:8080/; }}) and not say so: portproxy sees C{/login} while the browser
is at C{/pp/login}. A root-relative C{Location: /login} would leave the prefix; a
reference relative to the request's own path (C{./login}, C{./../proxy/3000/}) is
resolved by the browser against the URL it really used, as code-server's redirects are.
"""

from __future__ import annotations

__all__ = ["relative_reference"]


def relative_reference(request_path: bytes, target: bytes) -> bytes:
    """C{target}, a path on this server (starting with C{/}), relative to C{request_path}.

    C{request_path} is the path the request arrived with (no query). The result always
    starts with C{./}, so that no browser can read it as a scheme or an authority: a
    target that starts with C{//} stays a path on this server.

    >>> relative_reference(b"/proxy/3000", b"/proxy/3000/")
    b'./../proxy/3000/'
    """
    if not target.startswith(b"/"):
        raise ValueError("target must be a path starting with '/'")
    path = request_path.split(b"?", 1)[0] or b"/"
    # RFC 3986 5.2.3: the last segment of the base is dropped; every other '/' after
    # the first is one directory to climb back out of.
    depth = max(path.count(b"/") - 1, 0)
    return b"./" + b"../" * depth + target[1:]

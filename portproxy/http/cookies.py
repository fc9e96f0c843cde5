# -*- test-case-name: tests.test_headers -*-
"""Reading and removing one cookie from raw ``Cookie`` header values.

The proxy must hide its own session cookie from the apps behind it while every other
cookie reaches them byte for byte (code-server #7927 broke apps by re-encoding them), so
this works on the raw bytes and never decodes or re-serialises a cookie it keeps.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["cookie_values", "strip_cookie"]


def _pairs(values: Iterable[bytes]) -> Iterable[bytes]:
    # RFC 6265 separates cookie-pairs with "; ", but browsers and HTTP/2 front ends may
    # send several Cookie fields and sloppy clients may omit the space.
    for value in values:
        for pair in value.split(b";"):
            pair = pair.strip(b" \t")
            if pair:
                yield pair


def _name(pair: bytes) -> bytes:
    return pair.split(b"=", 1)[0].strip(b" \t")


def cookie_values(values: Iterable[bytes], name: bytes, limit: int) -> list[bytes]:
    """The values of the first C{limit} cookies called C{name}, quotes removed."""
    found: list[bytes] = []
    for pair in _pairs(values):
        key, sep, value = pair.partition(b"=")
        if sep and key.strip(b" \t") == name:
            found.append(value.strip(b" \t").strip(b'"'))
            if len(found) >= limit:
                break
    return found


def strip_cookie(
    values: Iterable[bytes], name: bytes | None, *, prefix: bytes | None = None
) -> bytes | None:
    """Join the C{Cookie} values with C{"; "}, leaving out every cookie called C{name}
    and, with C{prefix}, every cookie whose name starts with it.

    Returns C{None} when nothing is left, so that no empty C{Cookie} header is sent.
    """
    # This runs on every request with cookies: one loop, and a pair's name is only cut
    # out when the pair starts like C{name} or C{prefix} (its name is a prefix of the
    # pair, which has no leading blank).
    kept: list[bytes] = []
    for value in values:
        for pair in value.split(b";"):
            pair = pair.strip(b" \t")
            if not pair:
                continue
            if name is not None and pair.startswith(name) and _name(pair) == name:
                continue
            if (
                prefix is not None
                and pair.startswith(prefix)
                and _name(pair).startswith(prefix)
            ):
                continue
            kept.append(pair)
    return b"; ".join(kept) if kept else None

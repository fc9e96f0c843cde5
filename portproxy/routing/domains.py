# -*- test-case-name: tests.test_domains -*-
"""Proxy-domain patterns: normalising C{--proxy-domain} values and matching hosts to ports.

A pattern such as C{{{port}}.dev.example.com} or C{{{port}}-{{host}}.example.com} turns a
request host into the local port it reaches (C{5173.dev.example.com} -> C{"5173"}), and a
port back into the public host name used in redirects and by C{portproxy url}. Everything
here is pure string work, so the per-request cost is one compiled regular expression.

Request hosts are matched after these steps, in order: C{host[:port]} parsed by
L{portproxy.routing.hosts} (surrounding blanks removed, an empty port allowed; see
L{host_name}), the port dropped (unlike code-server, see its #7194), one trailing dot
dropped, ASCII letters lower-cased. A host that is not a plain ASCII host name then
never matches: IPv6 literals, malformed hosts (characters other than letters, digits,
C{.}, C{-} and C{_}, more than 253 characters, a port that is not one), and hosts whose
last label is a number (browsers treat those as IPv4 addresses, so C{{{port}}.{{host}}}
must not swallow C{127.0.0.1}).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from portproxy.routing.hosts import parse_authority

__all__ = [
    "DomainMatcher",
    "DomainPatternError",
    "base_domain",
    "host_name",
    "normalize_patterns",
]

PORT = "{{port}}"
HOST = "{{host}}"

_HOST_NAME = re.compile(r"[a-z0-9._-]+", re.ASCII)
_PLACEHOLDER = re.compile(r"(\{\{port\}\}|\{\{host\}\})")
# WHATWG URL "ends in a number": such a host is parsed as an IPv4 address by browsers.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.ASCII)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# What {{host}} may stand for; request hosts are restricted to these characters anyway,
# so that a {{host}} filled from a request can never smuggle '/', '@' or ':' into a URL.
_HOST_PART = r"[a-z0-9._-]+"


class DomainPatternError(ValueError):
    """A C{--proxy-domain} value that cannot be a host-name pattern."""


def host_name(host: str) -> str | None:
    """The host name in C{host[:port]}, lower-cased, without one trailing dot.

    C{host} is parsed by the one parser, L{portproxy.routing.hosts.parse_authority};
    C{None} when it refuses it, or when the host is an IPv6 literal (which no pattern
    and no cookie Domain can name). Only ASCII letters are lower-cased: Unicode case
    mapping would turn the Kelvin sign into C{k} and let a non-ASCII host pass for an
    ASCII one.

    The one leniency on top of that parser: an empty port (C{example.com:}) counts as
    none, as RFC 3986 3.2.3 allows and as matching has always done (the parser refuses
    it, because no client sends it in a C{Host}). It matters only to callers that hand
    in a host no C{Host} check has seen; requests reach here with a parsed one.
    """
    text = host.strip(" \t")
    if text[-1:] == ":":
        text = text[:-1]
    parsed = parse_authority(text, blanks=False)
    if parsed is None or parsed.host[:1] == "[":
        return None
    return parsed.host.translate(_ASCII_LOWER).removesuffix(".")


def _routable_host(host: str) -> str | None:
    """Normalise a request host for matching, or C{None} if it can never be a proxy host."""
    name = host_name(host)
    if name is None or _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        return None
    return name


def _invalid(value: str, why: str) -> DomainPatternError:
    return DomainPatternError(f"proxy domain {value!r} {why}")


def _normalize_one(value: str) -> str:
    pattern = value.strip()
    if not pattern:
        raise _invalid(value, "is empty")
    if not pattern.isascii():
        raise _invalid(
            value, "is not ASCII; give the IDNA form of the name (xn--...) instead"
        )
    pattern = pattern.lower()
    if "://" in pattern:
        raise _invalid(value, "is a URL; give only the host name, such as example.com")
    if pattern.startswith("*."):
        pattern = pattern[2:]
        if not pattern:
            raise _invalid(value, "names no domain after '*.'")
    if "*" in pattern:
        raise _invalid(value, "has a '*' other than one leading '*.'")
    if pattern.count(PORT) > 1:
        raise _invalid(value, "has more than one {{port}}")
    if pattern.count(HOST) > 1:
        raise _invalid(value, "has more than one {{host}}")
    if PORT not in pattern:
        pattern = f"{PORT}.{pattern}"
    literal = _PLACEHOLDER.sub("x", pattern)
    if "{" in literal or "}" in literal:
        raise _invalid(
            value, "has an unknown placeholder; only {{port}} and {{host}} exist"
        )
    for char in literal:
        if not _HOST_NAME.fullmatch(char):
            if char == ":":
                raise _invalid(
                    value, "has a ':port'; leave it out, the host's port is ignored"
                )
            raise _invalid(value, f"contains {char!r}, which cannot be in a host name")
    if pattern.endswith("."):
        raise _invalid(value, "ends with a dot")
    if ".." in pattern:
        raise _invalid(value, "has an empty label (a leading or doubled dot)")
    last = pattern.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last.replace(PORT, "1").replace(HOST, "h")):
        raise _invalid(
            value,
            "ends in a number; browsers read such a host as an IP address,"
            " so it would never match",
        )
    return pattern


def normalize_patterns(raw: Sequence[str]) -> tuple[str, ...]:
    """Turn C{--proxy-domain} values into normalised patterns, in order, without duplicates.

    Each value is stripped of surrounding blanks and lower-cased; one leading C{*.} is
    dropped and C{{{port}}.} is put in front when there is no C{{{port}}}, so
    C{*.example.com}, C{example.com} and C{{{port}}.example.com} are one pattern. The
    result is idempotent: normalising normalised patterns changes nothing.

    Non-ASCII names are refused rather than IDNA-encoded, because IDNA 2003 (Python's
    codec) and the UTS 46 mapping browsers use disagree on some names (C{ß}), and a
    silent mismatch would leave the domain unreachable; the message asks for the
    C{xn--} form. C{_} is accepted, as browsers accept it in host names.

    @raise DomainPatternError: for an empty value, a URL or C{:port}, a second
        C{{{port}}} or C{{{host}}}, an unknown placeholder, a character that cannot be
        in a host name, a trailing, leading or doubled dot, a C{*} other than one leading
        C{*.}, or a last label that is a number (an IP address to a browser).
    """
    seen: dict[str, None] = {}
    for value in raw:
        seen.setdefault(_normalize_one(value), None)
    return tuple(seen)


def _regex(pattern: str, capture_host: bool) -> str:
    parts = []
    for piece in _PLACEHOLDER.split(pattern):
        if piece == PORT:
            parts.append("(?P<port>[0-9]+)" if capture_host else "([0-9]+)")
        elif piece == HOST:
            parts.append(f"(?P<host>{_HOST_PART})" if capture_host else f"(?:{_HOST_PART})")
        else:
            parts.append(re.escape(piece))
    return "".join(parts)


def base_domain(pattern: str) -> str | None:
    """Return the fixed domain under a normalised pattern, or C{None} if there is none.

    That is the labels after the last label holding a placeholder:
    C{dev-{{port}}.example.com} -> C{example.com}; C{{{port}}.{{host}}} -> C{None}. Every
    host the pattern matches lies within it, which makes it the cookie domain that signs
    a user in on all the pattern's hosts at once.
    """
    labels = pattern.split(".")
    fixed = [i for i, label in enumerate(labels) if "{{" in label]
    rest = labels[fixed[-1] + 1 :] if fixed else labels
    return ".".join(rest) or None


class DomainMatcher:
    """Map request hosts to port labels for a list of C{--proxy-domain} patterns.

    The patterns are normalised and compiled once; L{match} is a single anchored
    alternation, so the first pattern that matches wins as the SPEC requires.

    @ivar patterns: the normalised patterns, in the order given.
    """

    __slots__ = ("_alternation", "_each", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: tuple[str, ...] = normalize_patterns(patterns)
        # One capturing group per alternative: the index of the group that took part
        # tells which pattern matched, and its text is the port label.
        self._alternation: re.Pattern[str] | None = (
            re.compile("|".join(f"(?:{_regex(p, False)})" for p in self.patterns), re.ASCII)
            if self.patterns
            else None
        )
        self._each: tuple[re.Pattern[str], ...] = tuple(
            re.compile(_regex(p, True), re.ASCII) for p in self.patterns
        )

    def __repr__(self) -> str:
        return f"DomainMatcher({list(self.patterns)!r})"

    def match(self, host: str) -> str | None:
        """Return the port label C{host} reaches, or C{None} if it is not a proxy host.

        The label is the matched digits as written (C{"99999"}, C{"0"}, C{"007"}): it is
        not validated here, so that the caller can answer 400 after authentication.
        """
        if self._alternation is None:
            return None
        name = _routable_host(host)
        if name is None:
            return None
        found = self._alternation.fullmatch(name)
        if found is None:
            return None
        return found.group(found.lastindex or 0)

    def is_proxy_host(self, host: str) -> bool:
        """Tell whether C{host} is the host of some port under one of the patterns."""
        return self.match(host) is not None

    def public_host(self, port: int, request_host: str | None = None) -> str | None:
        """Return the host name that reaches C{port}, or C{None} if there is none.

        When C{request_host} is itself a proxy host, the pattern it matched is used (its
        C{{{host}}} part filled in again), so a redirect stays under the domain the user
        is signed in on; otherwise the first pattern is used, which gives C{None} if that
        pattern holds C{{{host}}}. A C{port} outside 1-65535 gives C{None}, as it is
        usually read from an upstream's C{Location} and must not raise.
        """
        if type(port) is not int or not 1 <= port <= 65535:
            return None
        if request_host is not None:
            name = _routable_host(request_host)
            if name is not None:
                for pattern, regex in zip(self.patterns, self._each):
                    found = regex.fullmatch(name)
                    if found is not None:
                        filled = pattern.replace(PORT, str(port))
                        if HOST in pattern:
                            filled = filled.replace(HOST, found.group("host"))
                        return filled
        if not self.patterns or HOST in self.patterns[0]:
            return None
        return self.patterns[0].replace(PORT, str(port))

    def redirect_allowed(self, target: str, request_host: str) -> bool:
        """Tell whether a sign-in redirect from C{request_host} may go to C{target}.

        C{target} (a URL's C{host[:port]}, port ignored) must be a proxy host. Under a
        pattern without C{{{host}}} any of its hosts will do: the operator owns that
        domain. Under a C{{{host}}} pattern the filled-in host must be the request's
        own: the C{{{host}}} part of C{request_host} when it is itself a proxy host of
        such a pattern, else C{request_host} itself. So C{5173.attacker.example} is
        never a destination from C{myhost}, though C{{{port}}.{{host}}} matches it.
        """
        name = _routable_host(target)
        if name is None:
            return False
        own: set[str] | None = None
        for pattern, regex in zip(self.patterns, self._each):
            found = regex.fullmatch(name)
            if found is None:
                continue
            if HOST not in pattern:
                return True
            if own is None:
                own = self._own_host_values(request_host)
            if found.group("host") in own:
                return True
        return False

    def _own_host_values(self, request_host: str) -> set[str]:
        """The C{{{host}}} values a request on C{request_host} may stay within."""
        name = _routable_host(request_host)
        if name is None:
            return set()
        captured = {
            found.group("host")
            for pattern, regex in zip(self.patterns, self._each)
            if HOST in pattern and (found := regex.fullmatch(name)) is not None
        }
        return captured or {name}

"""The fast header policy and routing give exactly what the original code gave.

Issue 14 rewrote L{portproxy.http.headers} (one name lookup classifies a field, the
Connection pass is skipped when no Connection field names a field that is kept), the
cookie stripper and the route parser for speed, with no behaviour change. This file
keeps a frozen copy of the code as it was before (the reference, copied from git
before the change) and checks with hypothesis that the new code returns the same for
arbitrary inputs: real names in random case, hostile names with C{_} and C{-},
Connection lists naming other fields, the session and grant cookies, trusted and
untrusted views, prefixes; targets with odd ports, dots, C{%2e}, C{//} and the like.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from portproxy.http import headers as fast
from portproxy.http.cookies import strip_cookie
from portproxy.http.headers import (
    ClientView,
    client_view,
    forward_request_headers,
    forward_websocket_headers,
    is_hop_by_hop,
    is_trusted,
    response_header_pairs,
)
from portproxy.routing.hosts import parse_authority
from portproxy.routing.routes import (
    Route,
    RouteKind,
    absolute_form,
    origin_form,
    parse_route,
    split_target,
)

# --- the reference: portproxy/http/headers.py, cookies.py, routing/routes.py before
# --- issue 14 (git e2263bb), kept verbatim apart from the _ref_ names. -----------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RawHeaders = Iterable[tuple[bytes, Sequence[bytes]]]

_REF_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REF_REQUEST_ONLY_DROP = frozenset({b"content-length", b"expect", b"x-portproxy-token"})
_REF_GRANT_COOKIE_PREFIX = b"portproxy-grant-"
_REF_WEBSOCKET_DROP = frozenset({b"host", b"origin"})
_REF_NEVER_CONNECTION_OPTION = frozenset({b"host"})
_REF_XFF = b"X-Forwarded-For"
_REF_XFP = b"X-Forwarded-Proto"
_REF_XFH = b"X-Forwarded-Host"
_REF_XFPREFIX = b"X-Forwarded-Prefix"
_REF_TRUSTED_ONLY = frozenset((b"forwarded", b"x-real-ip"))


def _ref_is_hop_by_hop(lower_name: bytes) -> bool:
    return (
        lower_name in _REF_HOP_BY_HOP
        or lower_name.startswith(b"proxy-")
        or lower_name == b"proxy"
    )


def _ref_is_trusted(address: str, networks: Sequence[Network]) -> bool:
    if not networks or not address:
        return False
    if address[:1] == "[" and address[-1:] == "]":
        address = address[1:-1]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(c in net for net in networks for c in candidates)


def _ref_valid_host(value: bytes | None) -> str | None:
    if value is None or parse_authority(value) is None:
        return None
    return value.strip(b" \t").decode("ascii")


def _ref_valid_proto(value: bytes | None) -> str | None:
    if value is None:
        return None
    proto = value.strip(b" \t").lower()
    if proto in (b"http", b"https"):
        return proto.decode("ascii")
    return None


def _ref_first_entry(values: Sequence[bytes]) -> bytes | None:
    for value in values:
        return value.split(b",", 1)[0]
    return None


def _ref_forwarded_params(values: Iterable[bytes]) -> Iterable[tuple[bytes, bytes]]:
    for value in values:
        buf = bytearray()
        quoted = escaped = False
        params: list[bytes] = []
        for c in value:
            if quoted:
                buf.append(c)
                if escaped:
                    escaped = False
                elif c == 0x5C:  # backslash
                    escaped = True
                elif c == 0x22:  # closing quote
                    quoted = False
            elif c == 0x22:
                quoted = True
                buf.append(c)
            elif c in (0x3B, 0x2C):  # ';' between pairs, ',' between elements
                params.append(bytes(buf))
                buf.clear()
            else:
                buf.append(c)
        params.append(bytes(buf))
        for param in params:
            name, eq, val = param.partition(b"=")
            if not eq:
                continue
            val = val.strip(b" \t")
            if len(val) >= 2 and val[:1] == b'"' and val[-1:] == b'"':
                val = val[1:-1]
            yield name.strip(b" \t").lower(), val


def _ref_client_view(
    headers: RawHeaders,
    *,
    peer: str,
    secure: bool,
    trusted_networks: Sequence[Network],
) -> ClientView:
    if not trusted_networks:
        for name, values in headers:
            if values and name.lower() == b"host":
                return ClientView(
                    peer, False, "https" if secure else "http", _ref_valid_host(values[0])
                )
        return ClientView(peer, False, "https" if secure else "http", None)
    trusted = _ref_is_trusted(peer, trusted_networks)
    host_header: bytes | None = None
    forwarded: list[bytes] = []
    xf_host: bytes | None = None
    xf_proto: bytes | None = None
    for name, values in headers:
        lower = name.lower()
        if lower == b"host":
            if host_header is None and values:
                host_header = values[0]
        elif not trusted:
            continue
        elif lower == b"forwarded":
            forwarded.extend(values)
        elif lower == b"x-forwarded-host" and xf_host is None:
            xf_host = _ref_first_entry(values)
        elif lower == b"x-forwarded-proto" and xf_proto is None:
            xf_proto = _ref_first_entry(values)

    scheme = "https" if secure else "http"
    host = None
    if trusted:
        fwd_host: bytes | None = None
        fwd_proto: bytes | None = None
        for key, val in _ref_forwarded_params(forwarded):
            if key == b"host" and fwd_host is None:
                fwd_host = val
            elif key == b"proto" and fwd_proto is None:
                fwd_proto = val
        host = _ref_valid_host(fwd_host) or _ref_valid_host(xf_host)
        scheme = _ref_valid_proto(fwd_proto) or _ref_valid_proto(xf_proto) or scheme
    if host is None:
        host = _ref_valid_host(host_header)
    return ClientView(peer=peer, trusted=trusted, scheme=scheme, host=host)


def _ref_connection_options(
    items: Sequence[tuple[bytes, bytes, Sequence[bytes]]],
) -> set[bytes]:
    options: set[bytes] = set()
    for _, lower, values in items:
        if lower == b"connection":
            for value in values:
                for token in value.split(b","):
                    token = token.strip(b" \t").lower()
                    if token:
                        options.add(token)
    return options


def _ref_inbound_prefix(values: list[bytes]) -> bytes | None:
    if not values:
        return None
    value = values[0].strip(b" \t")
    if value[:1] != b"/" or any(c <= 0x20 or c >= 0x7F for c in value):
        return None
    return value.rstrip(b"/")


def _ref_ipv4_unmapped(peer: str) -> str:
    if peer[:7].lower() == "::ffff:" and "." in peer:
        return peer[7:]
    return peer


def _ref_forward(
    headers: RawHeaders,
    view: ClientView,
    *,
    session_cookie: bytes | None,
    prefix: bytes | None,
    extra_drop: frozenset[bytes] = frozenset(),
    websocket: bool = False,
) -> list[tuple[bytes, list[bytes]]]:
    out: list[tuple[bytes, list[bytes]]] = []
    cookies: list[bytes] = []
    xff: list[bytes] = []
    prefixes: list[bytes] = []
    have_proto = have_host = host_seen = False
    trusted = view.trusted
    items = [(name, name.lower(), values) for name, values in headers if values]
    options = _ref_connection_options(items) - _REF_NEVER_CONNECTION_OPTION
    for name, lower, values in items:
        if (
            _ref_is_hop_by_hop(lower)
            or lower in _REF_REQUEST_ONLY_DROP
            or lower in options
            or lower in extra_drop
            or (websocket and lower.startswith(b"sec-websocket-"))
            or b"_" in lower
            or (not trusted and lower in _REF_TRUSTED_ONLY)
        ):
            continue
        if lower == b"cookie":
            if not cookies:
                out.append((name, cookies))
            cookies.extend(values)
        elif lower == b"host":
            if not host_seen:
                host_seen = True
                out.append((name, [values[0]]))
        elif lower.startswith(b"x-forwarded-"):
            if not trusted:
                continue
            if lower == b"x-forwarded-for":  # appended to
                if not xff:
                    out.append((_REF_XFF, xff))
                xff.extend(values)
            elif lower == b"x-forwarded-prefix" and prefix is not None:  # prepended
                if not prefixes:
                    out.append((_REF_XFPREFIX, prefixes))
                prefixes.extend(values)
            else:  # kept as sent
                have_proto = have_proto or lower == b"x-forwarded-proto"
                have_host = have_host or lower == b"x-forwarded-host"
                out.append((name, list(values)))
        else:
            out.append((name, list(values)))

    if cookies:
        cookies[:] = _ref_merged_cookies(cookies, session_cookie)
    chain = _ref_forwarded_for(xff, view.peer)
    if xff:
        xff[:] = chain
    elif chain:
        out.append((_REF_XFF, chain))
    if not have_proto:
        out.append((_REF_XFP, [view.scheme.encode("ascii")]))
    if not have_host and view.host is not None:
        out.append((_REF_XFH, [view.host.encode("ascii")]))
    if prefix is not None:
        inbound = _ref_inbound_prefix(prefixes)
        combined = [inbound + prefix if inbound is not None else prefix]
        if prefixes:
            prefixes[:] = combined
        else:
            out.append((_REF_XFPREFIX, combined))
    return [entry for entry in out if entry[1]]


def _ref_pairs(values: Iterable[bytes]) -> Iterable[bytes]:
    for value in values:
        for pair in value.split(b";"):
            pair = pair.strip(b" \t")
            if pair:
                yield pair


def _ref_name(pair: bytes) -> bytes:
    return pair.split(b"=", 1)[0].strip(b" \t")


def _ref_strip_cookie(
    values: Iterable[bytes], name: bytes | None, *, prefix: bytes | None = None
) -> bytes | None:
    if prefix is None:
        kept = [pair for pair in _ref_pairs(values) if _ref_name(pair) != name]
    else:
        kept = [
            pair
            for pair in _ref_pairs(values)
            if (own := _ref_name(pair)) != name and not own.startswith(prefix)
        ]
    return b"; ".join(kept) if kept else None


def _ref_merged_cookies(cookies: list[bytes], session_cookie: bytes | None) -> list[bytes]:
    if _REF_GRANT_COOKIE_PREFIX in (
        cookies[0] if len(cookies) == 1 else b";".join(cookies)
    ):
        joined: bytes | None = _ref_strip_cookie(
            cookies, session_cookie, prefix=_REF_GRANT_COOKIE_PREFIX
        )
    elif session_cookie is None:
        joined = b"; ".join(v for v in cookies if v.strip(b" \t;"))
    else:
        joined = _ref_strip_cookie(cookies, session_cookie)
    return [joined] if joined else []


def _ref_forwarded_for(inbound: list[bytes], peer: str) -> list[bytes]:
    address = _ref_ipv4_unmapped(peer).encode("ascii", "replace")
    chain = (
        b", ".join(e for e in (v.strip(b" \t") for v in inbound) if e) if inbound else b""
    )
    if address:
        chain = chain + b", " + address if chain else address
    return [chain] if chain else []


def _ref_response_header_pairs(
    pairs: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, list[bytes]]]:
    options: set[bytes] | None = None
    grouped: dict[bytes, tuple[bytes, list[bytes]]] = {}
    for name, value in pairs:
        lower = name.lower()
        if lower in _REF_HOP_BY_HOP or lower[:6] == b"proxy-" or lower == b"proxy":
            if lower == b"connection":
                if options is None:
                    options = set()
                for token in value.split(b","):
                    options.add(token.strip(b" \t").lower())
            elif lower == b"transfer-encoding":
                if options is None:
                    options = set()
                options.add(b"content-length")
            continue
        entry = grouped.get(lower)
        if entry is None:
            grouped[lower] = (name, [value])
        else:
            entry[1].append(value)
    length = grouped.get(b"content-length")
    if length is not None and (len(length[1]) > 1 or b"," in length[1][0]):
        length[1][:] = [length[1][0].split(b",", 1)[0].strip(b" \t")]
    if options:
        return [entry for lower, entry in grouped.items() if lower not in options]
    return list(grouped.values())


_REF_WORDS = {
    b"login": RouteKind.LOGIN,
    b"logout": RouteKind.LOGOUT,
    b"healthz": RouteKind.HEALTHZ,
}
_REF_ABSOLUTE_SCHEMES = (b"http", b"https", b"ws", b"wss")


def _ref_absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    if target[:1] == b"/":
        return None
    scheme, sep, after = target.partition(b"://")
    if not sep or scheme.lower() not in _REF_ABSOLUTE_SCHEMES:
        return None
    end = len(after)
    for mark in (b"/", b"?"):
        at = after.find(mark)
        if at != -1 and at < end:
            end = at
    rest = after[end:]
    return after[:end], rest if rest[:1] == b"/" else b"/" + rest


def _ref_origin_form(target: bytes) -> bytes:
    absolute = _ref_absolute_form(target)
    return target if absolute is None else absolute[1]


def _ref_split_target(target: bytes) -> tuple[bytes, bytes]:
    path, sep, query = _ref_origin_form(target).partition(b"?")
    return path, sep + query


def _ref_parse_route(target: bytes) -> Route:
    path, query = _ref_split_target(target)
    if path[:1] != b"/":
        return Route(RouteKind.NOT_FOUND)
    parts = path.split(b"/", 3)
    word = parts[1].lower() if len(parts) > 1 else b""
    if word in (b"proxy", b"absproxy"):
        if len(parts) < 3 or not parts[2]:
            return Route(RouteKind.NOT_FOUND)
        label = parts[2]
        prefix = b"/".join(parts[:3])
        if word == b"absproxy":
            return Route(RouteKind.ABSPROXY, label, prefix, path + query)
        if len(parts) == 3:
            return Route(RouteKind.PROXY, label, prefix, query, needs_slash=True)
        return Route(RouteKind.PROXY, label, prefix, b"/" + parts[3] + query)
    if len(parts) == 2:
        if not word:
            return Route(RouteKind.INDEX)
        kind = _REF_WORDS.get(word)
        if kind is not None:
            return Route(kind, rest=query)
    return Route(RouteKind.NOT_FOUND)


# --- end of the reference ---------------------------------------------------------------


# --- inputs -------------------------------------------------------------------------

SESSION = b"portproxy-session"
GRANT = b"portproxy-grant-8080"


def _any_case(names: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """One of C{names}, each letter upper or lower case at random."""
    return st.sampled_from(names).flatmap(
        lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
            lambda upper: bytes(
                c - 32 if up and 0x61 <= c <= 0x7A else c
                for c, up in zip(name, upper, strict=True)
            )
        )
    )


REQUEST_NAMES = [
    b"host", b"cookie", b"connection", b"keep-alive", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-connection",
    b"proxy", b"proxy-x", b"proxyx", b"content-length", b"expect", b"x-portproxy-token",
    b"forwarded", b"x-real-ip", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"x-forwarded-prefix", b"x-forwarded-port", b"x-forwarded-",
    b"x-forwarded", b"origin", b"sec-websocket-key", b"sec-websocket-x",
    b"sec-websocket", b"accept", b"user-agent", b"sec-ch-ua", b"referer", b"dnt",
    b"x-app", b"close", b"x_forwarded_for", b"x-forwarded_for", b"cookie_", b"x--y",
    b"-", b"_", b"",
]  # fmt: skip
_REQUEST_NAME = st.one_of(
    _any_case(REQUEST_NAMES),
    # Twisted's own spelling of the common names, as the tables hold them.
    st.sampled_from(REQUEST_NAMES).map(
        lambda n: b"-".join(part.capitalize() for part in n.split(b"-"))
    ),
    st.binary(min_size=1, max_size=8).filter(lambda b: all(c in b"abxX-_." for c in b)),
    st.binary(max_size=6),
)
_SEPARATOR = st.sampled_from([b",", b", ", b" ,", b"\t,\t", b",,", b" "])
_CONNECTION_VALUE = st.lists(
    st.tuples(_any_case(REQUEST_NAMES), _SEPARATOR), max_size=4
).map(lambda parts: b"".join(name + sep for name, sep in parts))
_COOKIE_PAIR = st.sampled_from(
    [
        SESSION + b"=signed",
        SESSION + b" = s",
        SESSION,
        SESSION + b"x=1",
        b"x" + SESSION + b"=1",
        GRANT + b"=g",
        b"portproxy-grant-=g",
        b" portproxy-grant-1 =g",
        b"portproxy-grant=g",
        b"a=1",
        b" b = 2 ",
        b"c",
        b"=d",
        b"e=",
        b"",
        b"\t",
        b'q="x;y"',
    ]
)
_COOKIE_VALUE = st.lists(
    st.tuples(_COOKIE_PAIR, st.sampled_from([b"; ", b";", b" ; ", b";;", b"; \t"])),
    max_size=5,
).map(lambda parts: b"".join(pair + sep for pair, sep in parts))
_VALUE = st.one_of(
    st.binary(max_size=16),
    _CONNECTION_VALUE,
    _COOKIE_VALUE,
    st.sampled_from(
        [
            b"keep-alive",
            b"Keep-Alive",
            b"close",
            b"Upgrade",
            b"keep-alive, Upgrade",
            b"1.2.3.4",
            b" 5.6.7.8 , 9.9.9.9",
            b", ,",
            b"/outer",
            b"/outer/",
            b" /a ",
            b"/a b",
            b"/\x7f",
            b"a",
            b"https",
            b"host=h.test;proto=https",
        ]
    ),
)
HEADERS = st.lists(st.tuples(_REQUEST_NAME, st.lists(_VALUE, max_size=3)), max_size=12)
VIEWS = st.builds(
    ClientView,
    peer=st.sampled_from(
        ["203.0.113.9", "10.0.0.2", "::ffff:10.0.0.1", "::FFFF:1.2.3.4", "fd00::1", "",
         "/run/pp.sock", "\xe9"]
    ),
    trusted=st.booleans(),
    scheme=st.sampled_from(["http", "https"]),
    host=st.sampled_from([None, "h.test", "[::1]:8080", ""]),
)  # fmt: skip
SESSIONS = st.sampled_from([None, SESSION, b"", GRANT, b"a"])
PREFIXES = st.sampled_from([None, b"/proxy/8080", b"/absproxy/1", b"", b"/p/"])


@contextlib.contextmanager
def _nothing_known() -> Iterator[None]:
    """Run with empty name tables and nothing learned: every name takes the slow way."""
    with (
        mock.patch.object(fast, "_FIELD_ACTIONS", {False: {}, True: {}}),
        mock.patch.object(fast, "_LEARNED_ACTIONS", {False: {}, True: {}}),
        mock.patch.object(fast, "_LEARNED_LIMIT", 0),
        mock.patch.object(fast, "_PASSING_RESPONSE_NAMES", {}),
        mock.patch.object(fast, "_PASSING_RESPONSE_LIMIT", 0),
    ):
        yield


def _reference_forward(
    headers: list[tuple[bytes, list[bytes]]],
    view: ClientView,
    session: bytes | None,
    prefix: bytes | None,
    websocket: bool,
) -> list[tuple[bytes, list[bytes]]]:
    if websocket:
        return _ref_forward(
            headers,
            view,
            session_cookie=session,
            prefix=prefix,
            extra_drop=_REF_WEBSOCKET_DROP,
            websocket=True,
        )
    return _ref_forward(headers, view, session_cookie=session, prefix=prefix)


# --- request headers ------------------------------------------------------------------


@settings(max_examples=600)
@given(HEADERS, VIEWS, SESSIONS, PREFIXES, st.booleans())
# Merged fields that come to nothing: an X-Forwarded-For of blanks from a trusted
# peer without an address, a Cookie of portproxy's cookies only.
@example(
    [(b"X-Forwarded-For", [b" ", b"\t"]), (b"Accept", [b"*/*"])],
    ClientView("", True, "http", None),
    SESSION,
    None,
    False,
)
@example(
    [(b"Cookie", [SESSION + b"=s; " + GRANT + b"=g"]), (b"Accept", [b"*/*"])],
    ClientView("10.0.0.2", True, "http", None),
    SESSION,
    None,
    False,
)
def test_forwarded_headers_are_the_references(
    headers: list[tuple[bytes, list[bytes]]],
    view: ClientView,
    session: bytes | None,
    prefix: bytes | None,
    websocket: bool,
) -> None:
    expected = _reference_forward(headers, view, session, prefix, websocket)
    forward = forward_websocket_headers if websocket else forward_request_headers
    # As a list, and as twisted.web hands them over (an iterator of its dict's items).
    assert forward(headers, view=view, session_cookie=session, prefix=prefix) == expected
    assert (
        forward(iter(headers), view=view, session_cookie=session, prefix=prefix) == expected
    )
    # Without the name tables (the slow way for every name) the answer is the same.
    with _nothing_known():
        assert (
            forward(headers, view=view, session_cookie=session, prefix=prefix) == expected
        )


@pytest.mark.parametrize(
    ("headers", "passes"),
    [
        # keep-alive names a hop-by-hop field: one pass.
        ([(b"Connection", [b"keep-alive"]), (b"Accept", [b"*/*"])], 1),
        # close names no field sent: one pass, though close is no hop-by-hop name.
        ([(b"Host", [b"h"]), (b"Accept", [b"*/*"]), (b"Connection", [b"close"])], 1),
        # A field called Close is sent: the pass is run again without it.
        ([(b"Close", [b"1"]), (b"Connection", [b"close"]), (b"Accept", [b"*/*"])], 2),
        # A common field named before or after the Connection field.
        ([(b"Accept", [b"*/*"]), (b"Connection", [b"accept"])], 2),
        ([(b"Connection", [b"Cookie"]), (b"Cookie", [b"a=1; " + SESSION + b"=s"])], 2),
        ([(b"Connection", [b"x-forwarded-proto, X-Forwarded-For"]),
          (b"X-Forwarded-Proto", [b"http"]), (b"X-Forwarded-For", [b"1.2.3.4"])], 2),
        # An uncommon name, whichever is named.
        ([(b"X-Secret", [b"1"]), (b"Connection", [b"x-other"])], 2),
        ([(b"Connection", [b"x-secret"]), (b"X-Secret", [b"1"])], 2),
        # Host is never dropped, so naming it changes nothing.
        ([(b"Connection", [b"host"]), (b"Host", [b"h"])], 1),
    ],
)  # fmt: skip
@pytest.mark.parametrize("view", [ClientView("10.0.0.2", True, "https", "h.test"),
                                  ClientView("203.0.113.9", False, "http", None)])  # fmt: skip
def test_connection_options_take_the_second_pass_only_when_they_may_drop_a_kept_field(
    headers: list[tuple[bytes, list[bytes]]], passes: int, view: ClientView
) -> None:
    with mock.patch.object(fast, "_forward_pass", wraps=fast._forward_pass) as spy:
        out = forward_request_headers(
            headers, view=view, session_cookie=SESSION, prefix=b"/proxy/1"
        )
    assert spy.call_count == passes
    assert out == _ref_forward(headers, view, session_cookie=SESSION, prefix=b"/proxy/1")


def test_a_full_learned_table_changes_no_answer() -> None:
    headers = [(b"X-Invented-%d" % i, [b"v"]) for i in range(40)] + [
        (b"Connection", [b"x-invented-3"]),
        (b"X_Forwarded_For", [b"6.6.6.6"]),
    ]
    view = ClientView("10.0.0.2", True, "https", "h.test")
    expected = _ref_forward(headers, view, session_cookie=SESSION, prefix=None)
    with (
        mock.patch.object(fast, "_LEARNED_ACTIONS", {False: {}, True: {}}),
        mock.patch.object(fast, "_LEARNED_LIMIT", 10),
    ):
        for _ in range(2):
            out = forward_request_headers(
                headers, view=view, session_cookie=SESSION, prefix=None
            )
            assert out == expected
        assert len(fast._LEARNED_ACTIONS[False]) == 10


def test_every_table_entry_follows_the_rules() -> None:
    """The precomputed answers are the rules' own, for each spelling held."""
    for websocket, table in fast._FIELD_ACTIONS.items():
        for name, action in table.items():
            assert action == fast._field_action(name.lower(), websocket)
    for name, lower in fast._PASSING_RESPONSE_NAMES.items():
        assert lower == name.lower() and not is_hop_by_hop(lower)


@given(st.lists(_VALUE, max_size=4), st.sampled_from([None, SESSION, b"", b"a", b"a "]),
       st.sampled_from([None, b"", b"portproxy-grant-", b"p", b"a="]))  # fmt: skip
@example([b"=x; a=1; =; b; c = 3"], b"", None)
@example([b"portproxy-grant-1=x; p=1; a=2; =3"], None, b"p")
def test_strip_cookie_is_the_references(
    values: list[bytes], name: bytes | None, prefix: bytes | None
) -> None:
    assert strip_cookie(values, name, prefix=prefix) == _ref_strip_cookie(
        values, name, prefix=prefix
    )


# --- client view and trust ------------------------------------------------------------

NETS_A = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
NETS_B = (ipaddress.ip_network("203.0.113.0/24"),)
_NETWORKS = st.sampled_from([NETS_A, NETS_B, (), list(NETS_A)])
_ADDRESSES = st.one_of(
    st.sampled_from(
        ["10.1.2.3", "::ffff:10.1.2.3", "::FFFF:10.1.2.3", "fd00::5", "[fd00::5]",
         "[fd00::5", "11.0.0.1", "203.0.113.9", "::1", "", "/run/pp.sock",
         "10.0.0.1.evil", "fe80::1%eth0", "10.1.2.3 ", "x" * 100]
    ),
    st.text(max_size=12),
)  # fmt: skip


@given(_ADDRESSES, _NETWORKS)
def test_trust_is_the_references_asked_once_or_again(
    address: str, networks: Sequence[Network]
) -> None:
    expected = _ref_is_trusted(address, networks)
    assert is_trusted(address, networks) is expected
    assert is_trusted(address, networks) is expected  # from the memo


def test_trust_in_a_list_of_networks_follows_its_changes() -> None:
    """Only a tuple's answers are remembered: a list may change between calls."""
    networks = list(NETS_B)
    assert not is_trusted("10.1.2.3", networks)
    networks.append(NETS_A[0])
    assert is_trusted("10.1.2.3", networks)


@settings(max_examples=300)
@given(HEADERS, _ADDRESSES, st.booleans(), _NETWORKS)
def test_client_view_is_the_references(
    headers: list[tuple[bytes, list[bytes]]],
    peer: str,
    secure: bool,
    networks: Sequence[Network],
) -> None:
    expected = _ref_client_view(
        headers, peer=peer, secure=secure, trusted_networks=networks
    )
    assert (
        client_view(iter(headers), peer=peer, secure=secure, trusted_networks=networks)
        == expected
    )
    with _nothing_known():
        assert (
            client_view(headers, peer=peer, secure=secure, trusted_networks=networks)
            == expected
        )


# --- response headers -----------------------------------------------------------------

RESPONSE_NAMES = [
    b"content-type", b"set-cookie", b"content-length", b"connection", b"keep-alive",
    b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-authenticate",
    b"proxy", b"proxy-x", b"close", b"x-internal", b"etag", b"location", b"server",
    b"date", b"vary", b"www-authenticate", b"",
]  # fmt: skip
_RESPONSE_VALUE = st.one_of(
    st.binary(max_size=10),
    st.lists(st.tuples(_any_case(RESPONSE_NAMES), _SEPARATOR), max_size=3).map(
        lambda parts: b"".join(name + sep for name, sep in parts)
    ),
    st.sampled_from(
        [b"5", b"5, 5", b" 5 ,5", b"5,", b"keep-alive", b"close", b"Keep-Alive", b"chunked"]
    ),
)
RESPONSE_PAIRS = st.lists(
    st.tuples(
        st.one_of(
            _any_case(RESPONSE_NAMES),
            st.sampled_from([b"ETag", b"WWW-Authenticate", b"Content-Type", b"Set-Cookie"]),
            st.binary(max_size=5),
        ),
        _RESPONSE_VALUE,
    ),
    max_size=12,
)


@settings(max_examples=400)
@given(RESPONSE_PAIRS)
def test_response_headers_are_the_references(pairs: list[tuple[bytes, bytes]]) -> None:
    expected = _ref_response_header_pairs(pairs)
    assert response_header_pairs(pairs) == expected
    with _nothing_known():
        assert response_header_pairs(pairs) == expected


@pytest.mark.parametrize(
    "pairs",
    [
        # Connection names a field sent before it, and after it.
        [(b"X-Internal", b"1"), (b"Connection", b"x-internal"), (b"Vary", b"a")],
        [(b"Connection", b"close, X-Internal"), (b"X-Internal", b"1")],
        [(b"Close", b"1"), (b"Connection", b"close")],
        [(b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")],
        # Transfer-Encoding takes a Content-Length out; a repeated one is sent once.
        [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")],
        [(b"Content-Length", b"5"), (b"content-length", b"5, 5")],
        [(b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"SET-COOKIE", b"c=3")],
    ],
)
def test_response_headers_named_by_connection_are_the_references(
    pairs: list[tuple[bytes, bytes]],
) -> None:
    assert response_header_pairs(pairs) == _ref_response_header_pairs(pairs)


# --- routes ---------------------------------------------------------------------------

_SEGMENT = st.one_of(
    _any_case([b"proxy", b"absproxy", b"login", b"logout", b"healthz"]),
    st.sampled_from(
        [b"8080", b"08080", b"65536", b"0", b"", b".", b"..", b"%2e", b"%2E%2e",
         b"x", b"a?b", b"?", b"?q=/proxy/1/", b"#f", b"a b", b"\xff", b"\n", b"\xc5\xbf"]
    ),
)  # fmt: skip
_TARGET = st.one_of(
    st.tuples(
        st.sampled_from(
            [b"", b"", b"http://h", b"HTTPS://h:8080", b"ws://h", b"wss://h?x", b"ftp://h",
             b"http://", b"http:/", b"x", b"*", b"//", b"http://h?q"]
        ),
        st.sampled_from([b"/", b"//", b"", b"?"]),
        st.lists(_SEGMENT, max_size=5).map(b"/".join),
        st.sampled_from([b"", b"?", b"?a=1", b"?x=/proxy/2/", b"/", b"?/"]),
    ).map(b"".join),
    st.binary(max_size=24),
    st.binary(max_size=24).filter(lambda b: all(c in b"/?:%.pPrRoOxXyY1a" for c in b)),
)  # fmt: skip


@settings(max_examples=600)
@given(_TARGET)
@example(b"/proxy/8080")
@example(b"/PROXY/8080?q=/x")
@example(b"/proxy/8080/")
@example(b"/absproxy/1")
@example(b"/AbsProxy/1/x?y")
@example(b"/proxy/")
@example(b"/proxy//x")
@example(b"/proxy?/x/y")
@example(b"/proxy/a?b/c")
@example(b"http://h/proxy/1")
@example(b"/login?x")
@example(b"/")
@example(b"*")
def test_routes_are_the_references(target: bytes) -> None:
    route = parse_route(target)
    assert route == _ref_parse_route(target)
    assert type(route) is Route and isinstance(route.kind, RouteKind)
    assert origin_form(target) == _ref_origin_form(target)
    assert split_target(target) == _ref_split_target(target)
    assert absolute_form(target) == _ref_absolute_form(target)


def test_port_route_fields_read_by_name() -> None:
    route = parse_route(b"/Proxy/5173?x")
    assert (route.kind, route.port_label, route.prefix, route.rest, route.needs_slash) == (
        RouteKind.PROXY, b"5173", b"/Proxy/5173", b"?x", True,
    )  # fmt: skip

# -*- test-case-name: tests.test_headers -*-
"""Which request and response headers cross the proxy, and what portproxy adds.

Everything here is a pure function over Twisted's raw header pairs
(C{(name, [values])} from C{Headers.getAllRawHeaders()}), so the policy is tested
without a reactor. Hop-by-hop headers stay on their hop (RFC 9110 7.6.1), portproxy's
own session cookie never reaches an app, and X-Forwarded-* are only believed from a
configured trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from portproxy.http.cookies import strip_cookie
from portproxy.routing.hosts import parse_authority
from portproxy.routing.routes import absolute_form

__all__ = [
    "HOP_BY_HOP",
    "BadRequest",
    "ClientView",
    "RawHeaders",
    "client_view",
    "forward_request_headers",
    "forward_websocket_headers",
    "is_hop_by_hop",
    "is_trusted",
    "request_authority",
    "response_header_pairs",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RawHeaders = Iterable[tuple[bytes, Sequence[bytes]]]

#: RFC 9110 7.6.1 hop-by-hop fields (lower-case); every C{Proxy-*} name is dropped too.
HOP_BY_HOP: frozenset[bytes] = frozenset(
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

# The engine computes the body length itself and has already answered 100-continue.
# X-Portproxy-Token carries a portproxy machine token (portproxy.sharing): never the app's.
_REQUEST_ONLY_DROP = frozenset({b"content-length", b"expect", b"x-portproxy-token"})
#: Every share grant cookie's name starts so (C{portproxy-grant-<port>[-suffix]},
#: L{portproxy.sharing.grants}); like the session cookie, they never reach an app.
GRANT_COOKIE_PREFIX = b"portproxy-grant-"
_WEBSOCKET_DROP = frozenset({b"host", b"origin"})
# A Connection option may never remove Host: the upstream request needs exactly one.
_NEVER_CONNECTION_OPTION = frozenset({b"host"})

_XFF = b"X-Forwarded-For"
_XFP = b"X-Forwarded-Proto"
_XFH = b"X-Forwarded-Host"
_XFPREFIX = b"X-Forwarded-Prefix"

# A byte is looked for by its value (_COMMA in value): with a bytes needle, "in" first
# tries it as an int and raises and clears a TypeError (~90 ns a test in CPython 3.11).
_COMMA = 0x2C

# Passed on only from a trusted proxy, as X-Forwarded-* (nginx's realip module reads
# X-Real-IP like X-Forwarded-For).
_TRUSTED_ONLY = frozenset((b"forwarded", b"x-real-ip"))


def is_hop_by_hop(lower_name: bytes) -> bool:
    """Whether a lower-cased header name belongs to one hop only.

    C{Proxy} itself is included: no app should read it (the "httpoxy" CGI flaw).
    """
    return (
        lower_name in HOP_BY_HOP
        or lower_name.startswith(b"proxy-")
        or lower_name == b"proxy"
    )


# What _forward does with a field, by its lower-case name (L{_field_action}).
_ACT_KEEP = 0  # passed on as sent
_ACT_DROP = 1  # never passed on
_ACT_CONNECTION = 2  # dropped; its options name more fields to drop
_ACT_TRUSTED = 3  # passed on as sent from a trusted peer only
_ACT_COOKIE = 4  # merged, without portproxy's own cookies
_ACT_HOST = 5  # the first value only
_ACT_XFF = 6  # a trusted chain, appended to
_ACT_XFPREFIX = 7  # a trusted prefix, prepended to ours
_ACT_XFPROTO = 8  # passed on from a trusted peer, else ours
_ACT_XFHOST = 9  # passed on from a trusted peer, else ours
_ACT_FORWARDED = 10  # passed on as sent from a trusted peer only, read by client_view


def _field_action(lower: bytes, websocket: bool) -> int:
    """What the request policy does with a field called C{lower} (lower-case).

    This is the one statement of the per-name rules; L{_forward} looks its answers up in
    L{_FIELD_ACTIONS} (or learns them), so that a field costs one dict lookup.
    """
    if lower == b"connection":
        return _ACT_CONNECTION
    if (
        is_hop_by_hop(lower)
        or lower in _REQUEST_ONLY_DROP
        # CGI and WSGI read X_Forwarded_For as X-Forwarded-For (as nginx's
        # underscores_in_headers off, such names are dropped).
        or b"_" in lower
        # A WebSocket client sets these itself (see forward_websocket_headers).
        or (websocket and (lower in _WEBSOCKET_DROP or lower.startswith(b"sec-websocket-")))
    ):
        return _ACT_DROP
    if lower == b"cookie":
        return _ACT_COOKIE
    if lower == b"host":
        return _ACT_HOST
    if lower == b"x-forwarded-for":
        return _ACT_XFF
    if lower == b"x-forwarded-prefix":
        return _ACT_XFPREFIX
    if lower == b"x-forwarded-proto":
        return _ACT_XFPROTO
    if lower == b"x-forwarded-host":
        return _ACT_XFHOST
    if lower == b"forwarded":
        return _ACT_FORWARDED
    if lower in _TRUSTED_ONLY or lower.startswith(b"x-forwarded-"):
        return _ACT_TRUSTED
    return _ACT_KEEP


#: Request fields browsers, HTTP tools and front proxies send, lower-case.
_COMMON_REQUEST_FIELDS = (
    b"accept",
    b"accept-charset",
    b"accept-encoding",
    b"accept-language",
    b"access-control-request-headers",
    b"access-control-request-method",
    b"authorization",
    b"cache-control",
    b"connection",
    b"content-length",
    b"content-type",
    b"cookie",
    b"dnt",
    b"expect",
    b"forwarded",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"keep-alive",
    b"origin",
    b"pragma",
    b"priority",
    b"proxy-authorization",
    b"proxy-connection",
    b"purpose",
    b"range",
    b"referer",
    b"sec-ch-ua",
    b"sec-ch-ua-mobile",
    b"sec-ch-ua-platform",
    b"sec-fetch-dest",
    b"sec-fetch-mode",
    b"sec-fetch-site",
    b"sec-fetch-user",
    b"sec-purpose",
    b"sec-websocket-extensions",
    b"sec-websocket-key",
    b"sec-websocket-protocol",
    b"sec-websocket-version",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"upgrade-insecure-requests",
    b"user-agent",
    b"via",
    b"x-csrf-token",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-forwarded-prefix",
    b"x-forwarded-proto",
    b"x-forwarded-server",
    b"x-portproxy-token",
    b"x-real-ip",
    b"x-requested-with",
)


# Names whose usual spelling is not Header-Case (as twisted.web spells them too).
_ODD_SPELLINGS = {
    b"dnt": b"DNT",
    b"etag": b"ETag",
    b"te": b"TE",
    b"www-authenticate": b"WWW-Authenticate",
    b"x-xss-protection": b"X-XSS-Protection",
}


def _spellings(lower: bytes) -> tuple[bytes, ...]:
    """C{lower} as clients, apps and twisted.web write it: lower-case (HTTP/2, Node)
    and Header-Case (twisted.web's canonical form, and most of HTTP/1.1)."""
    title = b"-".join(part.capitalize() for part in lower.split(b"-"))
    return (lower, title, _ODD_SPELLINGS.get(lower, title))


def _action_table(websocket: bool) -> dict[bytes, int]:
    return {
        spelling: _field_action(lower, websocket)
        for lower in _COMMON_REQUEST_FIELDS
        for spelling in _spellings(lower)
    }


#: Raw name -> action for the common fields, for HTTP and for WebSocket.
_FIELD_ACTIONS = {False: _action_table(False), True: _action_table(True)}
_COMMON_REQUEST_LOWER = frozenset(_COMMON_REQUEST_FIELDS)
#: Raw name -> action for the names seen beyond the common ones, bounded: a client
#: inventing names fills it once, and then a new name costs a lower() more.
_LEARNED_ACTIONS: dict[bool, dict[bytes, int]] = {False: {}, True: {}}
_LEARNED_LIMIT = 512


def _learn_action(name: bytes, websocket: bool) -> int:
    learned = _LEARNED_ACTIONS[websocket]
    action = learned.get(name)
    if action is None:
        action = _field_action(name.lower(), websocket)
        if len(learned) < _LEARNED_LIMIT:
            learned[name] = action
    return action


def is_trusted(address: str, networks: Sequence[Network]) -> bool:
    """Whether the direct peer C{address} lies in one of the trusted C{networks}.

    An IPv4-mapped IPv6 address (C{::ffff:10.0.0.1}, what a dual-stack listener reports)
    matches the IPv4 network; a non-IP peer (a UNIX socket) is never trusted. Answers
    for a tuple of networks (the configuration's) are remembered: parsing the address
    costs more than the rest of the request's header policy.
    """
    if not networks or not address:
        return False
    if type(networks) is not tuple:
        return _is_trusted(address, networks)
    memo = _TRUST_MEMO
    if memo.networks is not networks:
        # Another configuration: holding it keeps its id from naming a new tuple.
        memo.networks = networks
        memo.answers = {}
    answer = memo.answers.get(address)
    if answer is None:
        answer = _is_trusted(address, networks)
        if len(address) <= _LONGEST_ADDRESS:
            if len(memo.answers) >= _TRUST_MEMO_LIMIT:
                memo.answers.clear()
            memo.answers[address] = answer
    return answer


def _is_trusted(address: str, networks: Sequence[Network]) -> bool:
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


class _TrustMemo:
    """The answers of L{is_trusted} for the last tuple of networks it was asked about."""

    def __init__(self) -> None:
        self.networks: object = None
        self.answers: dict[str, bool] = {}


_TRUST_MEMO = _TrustMemo()
_TRUST_MEMO_LIMIT = 4096
_LONGEST_ADDRESS = 64  # an IPv6 address with a zone and brackets fits


class ClientView(NamedTuple):
    """What portproxy believes about the client.

    Taken from the direct peer, or from X-Forwarded-*/Forwarded when the peer is a
    trusted proxy.

    @ivar peer: the direct peer address.
    @ivar trusted: whether C{peer} is within C{--trusted-proxies}.
    @ivar scheme: C{"http"} or C{"https"}, as the browser used it.
    @ivar host: the host (with C{:port} if any) as the browser used it, for routing and
        public URLs; C{None} when no well-formed host is known.
    """

    peer: str
    trusted: bool
    scheme: str
    host: str | None


def _valid_host(value: bytes | None) -> str | None:
    if value is None or parse_authority(value) is None:
        return None
    return value.strip(b" \t").decode("ascii")


class BadRequest(ValueError):
    """A request to answer with 400; the message says why, for the client."""


def request_authority(
    host_values: Sequence[bytes], target: bytes, *, version: bytes
) -> bytes | None:
    """The request's own host (RFC 9112 3.2): what it is routed by and forwarded with.

    That is the authority of an absolute-form target (C{GET http://h:8080/x}), whatever
    the C{Host} field says (3.2.2), else the C{Host} field. C{None} only for a request
    without either that may lack one (HTTP/1.0, or HTTP/2 without C{:authority}).

    @param host_values: every C{Host} field value of the request.
    @param version: the request line's version (C{b"HTTP/1.1"}, C{b"HTTP/2"}...).
    @raise BadRequest: for HTTP/1.1 without C{Host}, more than one C{Host}, a malformed
        C{Host} (see L{portproxy.routing.hosts.parse_authority}) or a malformed authority in
        an absolute-form target.
    """
    if len(host_values) > 1 and not (
        # An HTTP/2 client may send a Host equal to :authority (RFC 9113 8.3.1).
        version.startswith(b"HTTP/2") and len(set(host_values)) == 1
    ):
        raise BadRequest("More than one Host header")
    host = host_values[0] if host_values else None
    if host is None:
        if version == b"HTTP/1.1":
            raise BadRequest("Missing Host header")
    elif parse_authority(host) is None:
        raise BadRequest("Malformed Host header")
    absolute = absolute_form(target)
    if absolute is not None:
        if parse_authority(absolute[0]) is None:
            raise BadRequest("Malformed host in the request target")
        return absolute[0]
    return None if host is None else host.strip(b" \t")


def _valid_proto(value: bytes | None) -> str | None:
    if value is None:
        return None
    proto = value.strip(b" \t").lower()
    if proto in (b"http", b"https"):
        return proto.decode("ascii")
    return None


def _first_entry(values: Sequence[bytes]) -> bytes | None:
    for value in values:
        return value.split(b",", 1)[0]
    return None


def _forwarded_params(values: Iterable[bytes]) -> Iterable[tuple[bytes, bytes]]:
    """Yield C{(lower-name, value)} for every parameter of RFC 7239 C{Forwarded} values.

    Separators inside quoted strings do not split; quotes are removed (a value with a
    backslash escape keeps it and later fails validation).
    """
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


def client_view(
    headers: RawHeaders,
    *,
    peer: str,
    secure: bool,
    trusted_networks: Sequence[Network],
) -> ClientView:
    """Work out the client's scheme and host, believing forwarding headers only from a
    trusted proxy.

    From a trusted peer the host is the first C{host=} of C{Forwarded}, else the first
    C{X-Forwarded-Host} entry, else C{Host}; the scheme is C{proto=}, else the first
    C{X-Forwarded-Proto} entry, else the connection's own. Malformed values are ignored
    and the next source is used.

    @param secure: whether the connection to portproxy itself is TLS.
    """
    if not trusted_networks:
        # Nothing is believed from forwarding headers: only Host matters.
        for name, values in headers:
            if values and name.lower() == b"host":
                return ClientView(
                    peer, False, "https" if secure else "http", _valid_host(values[0])
                )
        return ClientView(peer, False, "https" if secure else "http", None)
    trusted = is_trusted(peer, trusted_networks)
    host_header: bytes | None = None
    forwarded: list[bytes] = []
    xf_host: bytes | None = None
    xf_proto: bytes | None = None
    # The names are told apart as _forward tells them, by one lookup.
    table = _FIELD_ACTIONS[False]
    for name, values in headers:
        action = table.get(name)
        if action is None:
            action = _learn_action(name, False)
        if action == _ACT_HOST:
            if host_header is None and values:
                host_header = values[0]
        elif not trusted:
            continue
        elif action == _ACT_FORWARDED:
            forwarded.extend(values)
        elif action == _ACT_XFHOST and xf_host is None:
            xf_host = _first_entry(values)
        elif action == _ACT_XFPROTO and xf_proto is None:
            xf_proto = _first_entry(values)

    scheme = "https" if secure else "http"
    host = None
    if trusted:
        fwd_host: bytes | None = None
        fwd_proto: bytes | None = None
        for key, val in _forwarded_params(forwarded) if forwarded else ():
            if key == b"host" and fwd_host is None:
                fwd_host = val
            elif key == b"proto" and fwd_proto is None:
                fwd_proto = val
        host = _valid_host(fwd_host) or _valid_host(xf_host)
        scheme = _valid_proto(fwd_proto) or _valid_proto(xf_proto) or scheme
    if host is None:
        host = _valid_host(host_header)
    return ClientView(peer, trusted, scheme, host)


def _connection_options(value: bytes, options: set[bytes]) -> None:
    # Every Connection field counts, each a comma list (RFC 9110 7.6.1); Twisted's own
    # persistence check reads only the first field.
    for token in value.split(b","):
        token = token.strip(b" \t").lower()
        if token:
            options.add(token)


#: Connection values that name only fields dropped anyway, as browsers send them.
_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"upgrade", b"Upgrade", b"keep-alive, Upgrade"}
)


def _inbound_prefix(values: list[bytes]) -> bytes | None:
    if not values:
        return None
    value = values[0].strip(b" \t")
    if value[:1] != b"/" or any(c <= 0x20 or c >= 0x7F for c in value):
        return None
    return value.rstrip(b"/")


def _ipv4_unmapped(peer: str) -> str:
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; apps expect a.b.c.d.
    if peer[:1] == ":" and peer[:7].lower() == "::ffff:" and "." in peer:
        return peer[7:]
    return peer


def _forward(
    headers: RawHeaders,
    view: ClientView,
    *,
    session_cookie: bytes | None,
    prefix: bytes | None,
    websocket: bool = False,
) -> list[tuple[bytes, list[bytes]]]:
    """The forwarding policy of L{forward_request_headers} and L{forward_websocket_headers}.

    Drop what must not pass (hop-by-hop fields and whatever a Connection field names,
    fields only for this hop (L{_REQUEST_ONLY_DROP}), Host, Origin and Sec-WebSocket-*
    for a WebSocket, names holding C{_}, and from an untrusted peer Forwarded,
    X-Forwarded-* and X-Real-IP: L{_field_action}); keep the rest in order, the fields
    that are merged into one (Cookie, X-Forwarded-For, X-Forwarded-Prefix) at the place
    of their first occurrence; then fill in the merged values and add the X-Forwarded-*
    fields that are missing.

    A Connection field may name a field that comes before it, so the names it lists
    are only known at the end: the one pass assumes they name no field it keeps (as
    C{keep-alive}, C{Upgrade} and C{close} do not), and only when a listed name may be
    a kept field's are the fields so named taken out and the pass run again.
    """
    if not isinstance(headers, list):
        headers = list(headers)
    out, options, uncommon = _forward_pass(headers, view, session_cookie, prefix, websocket)
    if options:
        # The options that would drop a field the pass kept (Host never goes).
        named = {
            option
            for option in options
            if option not in _NEVER_CONNECTION_OPTION
            and _field_action(option, websocket) not in (_ACT_DROP, _ACT_CONNECTION)
        }
        if named and (uncommon or not named.isdisjoint(_COMMON_REQUEST_LOWER)):
            kept = [(name, values) for name, values in headers if name.lower() not in named]
            out = _forward_pass(kept, view, session_cookie, prefix, websocket)[0]
    return out


def _forward_pass(
    headers: list[tuple[bytes, Sequence[bytes]]],
    view: ClientView,
    session_cookie: bytes | None,
    prefix: bytes | None,
    websocket: bool,
) -> tuple[list[tuple[bytes, list[bytes]]], set[bytes] | None, bool]:
    """L{_forward} without the Connection options: the fields to send, the options of
    the Connection fields (C{None} without any), and whether a field kept has a name
    outside L{_COMMON_REQUEST_FIELDS}."""
    out: list[tuple[bytes, list[bytes]]] = []
    table = _FIELD_ACTIONS[websocket]
    trusted = view.trusted
    options: set[bytes] | None = None
    uncommon = host_seen = have_proto = have_host = False
    # The merged fields: the list their values gather in (also in out, at the first
    # one's place), None until one is seen.
    cookies: list[bytes] | None = None
    xff: list[bytes] | None = None
    prefixes: list[bytes] | None = None
    for item in headers:
        name, values = item
        if not values:
            continue
        action = table.get(name)
        if action is None:
            action = _learn_action(name, websocket)
            uncommon = True
        # Kept fields go on as they came, value lists not copied: no caller changes them.
        if action == _ACT_KEEP:
            out.append(item)  # type: ignore[arg-type]
        elif action == _ACT_DROP:
            continue
        elif action == _ACT_CONNECTION:
            for value in values:
                if value not in _PLAIN_CONNECTION:
                    if options is None:
                        options = set()
                    _connection_options(value, options)
        elif action == _ACT_COOKIE:
            if cookies is None:
                cookies = list(values)
                out.append((name, cookies))
            else:
                cookies.extend(values)
        elif action == _ACT_HOST:
            if not host_seen:
                host_seen = True
                out.append((name, [values[0]]))
        elif not trusted:
            continue  # Forwarded, X-Forwarded-*, X-Real-IP
        elif action == _ACT_XFF:  # appended to
            if xff is None:
                xff = list(values)
                out.append((_XFF, xff))
            else:
                xff.extend(values)
        elif action == _ACT_XFPREFIX and prefix is not None:  # prepended
            if prefixes is None:
                prefixes = list(values)
                out.append((_XFPREFIX, prefixes))
            else:
                prefixes.extend(values)
        else:  # kept as sent
            if action == _ACT_XFPROTO:
                have_proto = True
            elif action == _ACT_XFHOST:
                have_host = True
            out.append(item)  # type: ignore[arg-type]

    empty = False
    if cookies is not None:
        cookies[:] = _merged_cookies(cookies, session_cookie)
        empty = not cookies
    chain = _forwarded_for(xff, view.peer)
    if xff is not None:
        xff[:] = chain
        empty = empty or not chain
    elif chain:
        out.append((_XFF, chain))
    if not have_proto:
        out.append((_XFP, [view.scheme.encode("ascii")]))
    if not have_host and view.host is not None:
        out.append((_XFH, [view.host.encode("ascii")]))
    if prefix is not None:
        # A trusted front proxy that mounted us under its own prefix said so; ours
        # follows.
        inbound = _inbound_prefix(prefixes) if prefixes is not None else None
        combined = inbound + prefix if inbound is not None else prefix
        if prefixes is not None:
            prefixes[:] = [combined]
        else:
            out.append((_XFPREFIX, [combined]))
    if empty:  # a merged field came to nothing: leave it out
        out = [entry for entry in out if entry[1]]
    return out, options, uncommon


def _merged_cookies(cookies: list[bytes], session_cookie: bytes | None) -> list[bytes]:
    """The Cookie fields as one value, without portproxy's session and grant cookies;
    or none."""
    # One substring search per request (find: "in" with a bytes needle costs more).
    joined_all = cookies[0] if len(cookies) == 1 else b";".join(cookies)
    if joined_all.find(GRANT_COOKIE_PREFIX) != -1:
        # Rare (a share link's visitor): the common path below stays one strip.
        joined: bytes | None = strip_cookie(
            cookies, session_cookie, prefix=GRANT_COOKIE_PREFIX
        )
    elif session_cookie is None:
        joined = b"; ".join(v for v in cookies if v.strip(b" \t;"))
    else:
        joined = strip_cookie(cookies, session_cookie)
    return [joined] if joined else []


def _forwarded_for(inbound: list[bytes] | None, peer: str) -> list[bytes]:
    """X-Forwarded-For: the trusted inbound chain, then the direct peer; or none."""
    address = _ipv4_unmapped(peer).encode("ascii", "replace")
    if not inbound:  # the direct client, as nearly always
        return [address] if address else []
    chain = b", ".join(e for e in (v.strip(b" \t") for v in inbound) if e)
    if address:
        chain = chain + b", " + address if chain else address
    return [chain] if chain else []


def forward_request_headers(
    headers: RawHeaders,
    *,
    view: ClientView,
    session_cookie: bytes | None,
    prefix: bytes | None,
) -> list[tuple[bytes, list[bytes]]]:
    """The headers to send upstream for an HTTP request, in their original order.

    Drops hop-by-hop fields, whatever any C{Connection} field names, C{Content-Length}
    and C{Expect}; joins the C{Cookie} fields into one without our C{session_cookie}
    (and sends none if nothing is left); keeps the first C{Host}; sets X-Forwarded-For,
    -Proto, -Host and (with C{prefix}, the C{/proxy/<port>} prefix as typed) -Prefix.
    From an untrusted peer inbound C{Forwarded}, C{X-Forwarded-*} and C{X-Real-IP} are
    replaced or dropped; from a trusted one X-Forwarded-For is appended to and the
    others are kept. Names holding C{_} are dropped (CGI and WSGI apps read them as
    dashes, so C{X_Forwarded_For} would pass for C{X-Forwarded-For}).

    The value lists of the fields passed on as they came are the caller's own, not
    copies (this runs on every request): the caller reads them and changes none.

    @param session_cookie: portproxy's cookie name, or C{None} when there is none.
    """
    return _forward(headers, view, session_cookie=session_cookie, prefix=prefix)


def forward_websocket_headers(
    headers: RawHeaders,
    *,
    view: ClientView,
    session_cookie: bytes | None,
    prefix: bytes | None,
) -> list[tuple[bytes, list[bytes]]]:
    """The application headers to send with a WebSocket upgrade, same policy as HTTP.

    C{Host}, C{Origin}, C{Upgrade}, C{Connection} and C{Sec-WebSocket-*} are left out:
    the WebSocket client sets them (Host and Origin from the client's, by the caller).
    """
    return _forward(
        headers, view, session_cookie=session_cookie, prefix=prefix, websocket=True
    )


#: Response fields apps send that pass through, lower-case.
_COMMON_RESPONSE_FIELDS = (
    b"accept-ranges",
    b"access-control-allow-credentials",
    b"access-control-allow-headers",
    b"access-control-allow-methods",
    b"access-control-allow-origin",
    b"access-control-expose-headers",
    b"access-control-max-age",
    b"age",
    b"allow",
    b"cache-control",
    b"content-disposition",
    b"content-encoding",
    b"content-language",
    b"content-length",
    b"content-location",
    b"content-range",
    b"content-security-policy",
    b"content-type",
    b"cross-origin-embedder-policy",
    b"cross-origin-opener-policy",
    b"cross-origin-resource-policy",
    b"date",
    b"etag",
    b"expires",
    b"last-modified",
    b"link",
    b"location",
    b"permissions-policy",
    b"pragma",
    b"referrer-policy",
    b"retry-after",
    b"server",
    b"server-timing",
    b"service-worker-allowed",
    b"set-cookie",
    b"strict-transport-security",
    b"timing-allow-origin",
    b"vary",
    b"www-authenticate",
    b"x-content-type-options",
    b"x-frame-options",
    b"x-powered-by",
    b"x-request-id",
    b"x-xss-protection",
)
#: Raw name -> lower-case name, for the response fields that pass (none is hop-by-hop):
#: the common ones in the spellings apps use, then up to L{_LEARNED_LIMIT} more as seen.
_PASSING_RESPONSE_NAMES: dict[bytes, bytes] = {
    spelling: lower for lower in _COMMON_RESPONSE_FIELDS for spelling in _spellings(lower)
}
_PASSING_RESPONSE_LIMIT = len(_PASSING_RESPONSE_NAMES) + _LEARNED_LIMIT


def response_header_pairs(
    pairs: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, list[bytes]]]:
    """The upstream's response headers to pass to the client, order and repeats kept.

    C{pairs} are the header fields as parsed off the wire. Hop-by-hop fields and the
    names in the upstream's C{Connection} are dropped. Repeated names are grouped
    (case-insensitively, first spelling and position kept) in the same pass; this runs
    once per proxied response. A repeated Content-Length, whose values
    L{portproxy.http.wire.body_framing} has found equal, is passed on once.
    """
    options: set[bytes] | None = None
    out: list[tuple[bytes, list[bytes]]] = []
    grouped: dict[bytes, list[bytes]] = {}  # lower-case name -> its values, in out
    passing = _PASSING_RESPONSE_NAMES
    known = passing.get
    for name, value in pairs:
        lower = known(name)
        if lower is None:
            lower = name.lower()
            if is_hop_by_hop(lower):
                if lower == b"connection":
                    if options is None:
                        options = set()
                    if value == b"keep-alive" or value == b"close":
                        options.add(value)
                    else:
                        for token in value.split(b","):
                            options.add(token.strip(b" \t").lower())
                elif lower == b"transfer-encoding":
                    # RFC 9112 6.3: Transfer-Encoding framed the body, so a
                    # Content-Length beside it is wrong and must not reach the client.
                    if options is None:
                        options = set()
                    options.add(b"content-length")
                continue
            if len(passing) < _PASSING_RESPONSE_LIMIT:
                passing[name] = lower
        if lower in grouped:
            grouped[lower].append(value)
        else:
            grouped[lower] = values = [value]
            out.append((name, values))
    length = grouped.get(b"content-length")
    if length is not None and (len(length) > 1 or _COMMA in length[0]):
        # RFC 9110 8.6: a recipient of "5, 5" or two equal fields may use it, but
        # must send a single "Content-Length: 5" on.
        length[:] = [length[0].split(b",", 1)[0].strip(b" \t")]
    if options is not None:
        for option in options:  # mostly one, keep-alive or close, naming nothing kept
            if option in grouped:
                out = [entry for entry in out if entry[0].lower() not in options]
                break
    return out


def client_address(
    headers: RawHeaders, *, peer: str, trusted_networks: Sequence[Network]
) -> str:
    """The address of the client itself, for rate limiting and logs.

    From an untrusted peer that is the peer. Behind trusted proxies it is the rightmost
    C{X-Forwarded-For} entry that is not itself a trusted proxy (entries to its left are
    whatever the client chose to send).
    """
    if not peer or not is_trusted(peer, trusted_networks):
        return _ipv4_unmapped(peer)
    chain: list[str] = []
    for name, values in headers:
        if name.lower() == b"x-forwarded-for":
            for value in values:
                chain.extend(part.strip().decode("latin-1") for part in value.split(b","))
    for entry in reversed(chain):
        if not entry:
            continue
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            return _ipv4_unmapped(peer)
        if not is_trusted(entry, trusted_networks):
            return _ipv4_unmapped(entry)
    return _ipv4_unmapped(peer)

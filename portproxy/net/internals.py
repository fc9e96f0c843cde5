# -*- test-case-name: tests.test_internals -*-
"""Every use of a private Twisted, Autobahn or h2 internal, in one module.

portproxy relies on a few things its libraries do not promise: private attributes
read or written, private modules imported, methods overridden or called that are not
part of any interface, bodies of library methods copied so that one step can change.
Each is here, named for what it means to portproxy, so that an upgrade that changes
one breaks one place, and C{tests/test_internals.py} says which.

Written against B{Twisted 26.10.0}, B{Autobahn 26.11.1} and B{h2 4.4.1}.

There are three kinds of entries:

 - a small typed function (or a re-exported class) for each private attribute read or
   written, and each private module imported: callers use these, never the names;
 - L{PRIVATE_HOOKS}: each (class, private or undocumented name) that a portproxy
   subclass overrides or calls on itself. The override stays in its class (that is
   what subclassing is for); the table says where it is and what it relies on;
 - L{COPIED}: library methods whose body a portproxy method repeats with a change,
   pinned by a fingerprint of their source: when the library's changes, ours must be
   read again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred

# Private modules and classes: the HTTP/2 server side and the HTTP/1.1-or-2 switch
# have no public names. twisted.web.http imports both already, so this costs nothing.
from twisted.web._http2 import H2Connection, H2Stream
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.http_headers import Headers, _nameEncoder

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime

__all__ = [
    "COPIED",
    "PRIVATE_HOOKS",
    "Copied",
    "GenericHTTPChannelProtocol",
    "H2Connection",
    "H2Stream",
    "PrivateHook",
    "arm_abort_timer",
    "at_request_boundary",
    "begin_parsed_request",
    "channel_network_producer",
    "channel_request_line",
    "current_channel",
    "h2_header_block_pending",
    "h2_reactor",
    "h2_register_stream",
    "h2_socket_full",
    "h2_stream_connection",
    "h2_stream_request",
    "h2_wake_sender",
    "handshake_status_line",
    "has_queued_writes",
    "install_h2_channel",
    "is_handling_request",
    "negotiated_protocol",
    "pause_stream_producer",
    "pending_client_bytes",
    "port_address",
    "queued_write_bytes",
    "set_header_values",
    "set_opening_request",
    "swap_class",
    "take_unparsed_bytes",
    "undecided_http11_channel",
    "unparsed_line_bytes",
]

T = TypeVar("T")

#: twisted.web's protocol that speaks HTTP/1.1 or, after ALPN, HTTP/2 (private:
#: C{twisted.web.http._GenericHTTPChannelProtocol}). Subclassed by
#: L{portproxy.web.channel} to see the switch.
GenericHTTPChannelProtocol = _GenericHTTPChannelProtocol


# -- any object -----------------------------------------------------------------------


def swap_class(obj: object, cls: type[T]) -> T:
    """Change C{obj}'s class to C{cls}, a subclass of its own that adds no state.

    Used to give a Twisted object new behaviour without wrapping it (a wrapper would
    cost every call a hop, and the object is shared: the reactor holds the transport)
    and without per-object attributes (an idle connection costs no more memory):
    L{portproxy.net.eager} (TCP transports), L{portproxy.web.request} (the HTTP/1.1
    channel on its first request). Python allows it only between classes of the same
    layout, which a subclass without C{__slots__} is.
    """
    if not issubclass(cls, type(obj)):
        raise TypeError(f"{cls!r} is not a subclass of {type(obj)!r}")
    obj.__class__ = cls
    return obj  # type: ignore[return-value]


# -- twisted.internet: TCP transports and ports ---------------------------------------


def has_queued_writes(transport: Any) -> bool:
    """Whether a TCP transport still holds bytes it has not handed to the kernel.

    C{dataBuffer} and the private C{_tempDataBuffer} (small writes collected before
    they are joined) of C{twisted.internet.abstract.FileDescriptor}: an eager write
    (L{portproxy.net.eager}) must not overtake them. No public API says whether a
    transport has anything queued.
    """
    return bool(transport.dataBuffer or transport._tempDataBuffer)


def queued_write_bytes(transport: Any) -> int:
    """How many bytes a TCP transport holds that the kernel has not taken yet.

    C{FileDescriptor.dataBuffer} past its C{offset}, plus the private C{_tempDataLen}
    (the bytes in C{_tempDataBuffer}). The send timeout (L{portproxy.net.limits})
    watches this shrink; Twisted has no public count.
    """
    queued = len(transport.dataBuffer) - getattr(transport, "offset", 0)
    return queued + int(getattr(transport, "_tempDataLen", 0))


def port_address(port: Any, addr: Any) -> IAddress:
    """The L{IAddress} a listening port gives a connection accepted from C{addr}.

    C{twisted.internet.tcp.Port._buildAddr} (also on UNIX ports): the accept loop of
    L{portproxy.net.limits} replaces the port's own C{doRead} (which spins or drops
    connections when descriptors run out) and must build the same address it would.
    """
    return port._buildAddr(addr)  # type: ignore[no-any-return]


# -- twisted.web: the HTTP/1.1 channel and the site -----------------------------------


def channel_request_line(channel: object) -> tuple[bytes, bytes, bytes] | None:
    """The request line (method, target, version) of the head being read, or C{None}.

    C{HTTPChannel} keeps it in the private C{_command}, C{_path} and C{_version} from
    the request line until the body is in, and hands it to the request only then (in
    C{requestReceived}). portproxy must route at the head, before the body (stream it,
    or refuse it unread), so it reads them here. portproxy's HTTP/2 stream
    (L{portproxy.http.http2.HardenedH2Stream}) keeps the same three fields.
    """
    command = getattr(channel, "_command", None)
    path = getattr(channel, "_path", None)
    version = getattr(channel, "_version", None)
    if command is None or path is None or version is None:
        return None
    return command, path, version


def pending_client_bytes(channel: HTTPChannel) -> list[bytes]:
    """The bytes of later (pipelined) requests that C{channel} holds, as its own list.

    C{HTTPChannel._dataBuffer}: what arrived while a request was being handled,
    replayed once it is answered. The list itself (not a copy): the site appends to
    it to bound it (L{portproxy.web.channel.ProxyChannel.rawDataReceived}), and a
    WebSocket bridge forwards what it holds (they were sent after the upgrade).
    """
    return channel._dataBuffer  # type: ignore[attr-defined,no-any-return]


def is_handling_request(channel: HTTPChannel) -> bool:
    """Whether C{channel} is between a request's head and its response's end.

    C{HTTPChannel._handlingRequest}: while true, bytes it reads are pipelined
    requests (buffered), otherwise they are the current request's body.
    """
    return bool(channel._handlingRequest)  # type: ignore[attr-defined]


def channel_network_producer(channel: HTTPChannel) -> IPushProducer:
    """The socket-side producer C{channel} registered itself with.

    C{HTTPChannel._networkProducer}: pausing it stops reading the socket (the site
    bounds pipelined bytes so), and the HTTP/2 switch unregisters the channel from it.
    """
    return channel._networkProducer  # type: ignore[attr-defined,no-any-return]


def unparsed_line_bytes(channel: HTTPChannel) -> bytes:
    """Bytes C{channel} has read but not yet parsed into lines.

    C{LineReceiver._buffer}: when a response ends with bytes here, the next request's
    head has started arriving (its deadline starts now, not when it is idle).
    """
    return channel._buffer  # type: ignore[attr-defined,no-any-return]


def at_request_boundary(channel: HTTPChannel) -> bool:
    """Whether C{channel} would read the next bytes as the first line of a new request.

    Nothing of a request is pending: no partial line (C{LineReceiver._buffer}), no
    request in progress or queued, the line parser at a request's start
    (C{_HTTPChannel__first_line == 1}, no header line held), no body decoder, and the
    connection kept alive and not closing. Only then may L{begin_parsed_request} stand
    in for the line parser.
    """
    own: Any = channel
    return (
        own.line_mode == 1
        and not own._buffer
        and not own._handlingRequest
        and not own.requests
        and own._HTTPChannel__first_line == 1
        and not own._HTTPChannel__header
        and own._transferDecoder is None
        and own.length == 0
        and own._receivedHeaderCount == 0
        and own._receivedHeaderSize == 0
        and bool(own.persistent)
        and own.transport is not None
        and not own.transport.disconnecting
    )


def begin_parsed_request(
    channel: HTTPChannel,
    method: bytes,
    target: bytes,
    version: bytes,
    fields: list[tuple[bytes, bytes]],
) -> None:
    """Hand C{channel} a whole request head parsed elsewhere, as its line parser would.

    What C{HTTPChannel.lineReceived} and C{headerReceived} do for a head without a body,
    in one step: make the request, store the request line in C{_command}, C{_path},
    C{_version}, add each field under its canonical name (the values are already
    checked free of control bytes, so Twisted's per-value sanitising is skipped), then
    call C{allHeadersReceived} and C{allContentReceived}, which run unchanged. Only for
    a channel L{at_request_boundary}.
    """
    own: Any = channel
    request = own.requestFactory(channel, len(own.requests))
    own.requests.append(request)
    own._HTTPChannel__first_line = 0
    own._command, own._path, own._version = method, target, version
    headers: Headers = request.requestHeaders
    raw: dict[bytes, list[bytes]] = headers._rawHeaders
    encode = _nameEncoder.encode
    for name, value in fields:
        key = encode(name)
        values = raw.get(key)
        if values is None:
            raw[key] = [value]
        else:
            values.append(value)
    channel.allHeadersReceived()
    if own.length == 0:
        channel.allContentReceived()


def set_header_values(headers: Headers, name: bytes, values: list[bytes]) -> None:
    """C{headers.setRawHeaders(name, values)} for values known to hold no CR or LF.

    C{Headers.setRawHeaders} rewrites every value to replace CR and LF (so that no value
    can end a line early); values the wire parser read off an app's response have been
    checked for both already (L{portproxy.http.wire}), so the copy is skipped. Anything
    else (a value portproxy built or rewrote) must go through C{setRawHeaders}. The list
    is stored as given: the caller must not change it afterwards.
    """
    headers._rawHeaders[_nameEncoder.encode(name)] = values


def arm_abort_timer(channel: HTTPChannel | H2Connection) -> None:
    """Abort C{channel}'s connection after its C{abortTimeout}, unless already armed.

    The private C{_abortingCall} of C{HTTPChannel} and C{H2Connection}: what their
    own C{timeoutConnection} sets after C{loseConnection}, so that a client which
    reads nothing cannot hold the connection open; portproxy closes for other reasons
    (a 408, GOAWAY) and wants the same guarantee. The channel cancels the call itself
    once the connection is lost.
    """
    own: Any = channel
    if own.abortTimeout is not None and own._abortingCall is None:
        own._abortingCall = own.callLater(own.abortTimeout, own.forceAbortClient)


def negotiated_protocol(generic: Any) -> bytes | None:
    """What twisted.web's generic channel decided to speak: C{None} until its first
    bytes, then C{b"http/1.1"} or C{b"h2"} (its private C{_negotiatedProtocol})."""
    return generic._negotiatedProtocol  # type: ignore[no-any-return]


def current_channel(generic: Any) -> Any:
    """The channel twisted.web's generic channel passes bytes to (private C{_channel}):
    an C{HTTPChannel}, or after the switch to HTTP/2 an C{H2Connection}."""
    return generic._channel


def undecided_http11_channel(protocol: object) -> HTTPChannel | None:
    """C{protocol}'s HTTP/1.1 channel, if it is twisted.web's generic channel and has
    not yet decided what to speak (it decides on its first bytes); else C{None}."""
    if getattr(protocol, "_negotiatedProtocol", True) is not None:
        return None
    return current_channel(protocol)  # type: ignore[no-any-return]


def install_h2_channel(
    generic: Any, h2conn: H2Connection, call_later: Callable[..., Any]
) -> None:
    """Make C{h2conn} the channel of twisted.web's generic channel, decided as h2.

    What its C{dataReceived} does when ALPN chose h2, with portproxy's connection
    class instead of the stock one (there is no factory hook for the class): the
    factory, site and request factory the generic channel was given (private
    C{_requestFactory}, C{_site}, C{_factory}, C{_callLater}) go to the new channel;
    C{call_later} stands in when none was given.
    """
    own: Any = h2conn
    own.requestFactory = generic._requestFactory
    own.site = generic._site
    own.factory = generic._factory
    own.callLater = generic._callLater or call_later
    generic._channel = h2conn
    generic._negotiatedProtocol = b"h2"


# -- twisted.web._http2: HTTP/2 connections and streams -------------------------------


def h2_stream_connection(stream: H2Stream) -> Any:
    """The C{H2Connection} a stream belongs to (C{H2Stream._conn})."""
    return stream._conn


def h2_stream_request(stream: H2Stream) -> Any:
    """The request object a stream built in its constructor (C{H2Stream._request})."""
    return stream._request


def pause_stream_producer(stream: H2Stream) -> None:
    """Pause the producer of a stream's response, if it is producing.

    C{H2Stream._producerProducing} is what the stream's own flow-control pause
    checks and sets; the connection's socket being full must pause the same way, or
    the stream would resume a producer it never paused.
    """
    own: Any = stream
    if own.producer is not None and own._producerProducing:
        own._producerProducing = False
        own.producer.pauseProducing()


def h2_socket_full(conn: H2Connection) -> bool:
    """Whether the connection's transport asked it to pause (private
    C{_consumerBlocked}, a Deferred while paused)."""
    return conn._consumerBlocked is not None


def h2_wake_sender(conn: H2Connection) -> None:
    """Wake the connection's send loop if it sleeps with nothing schedulable.

    C{H2Connection._sendPrioritisedData} waits on the private C{_sendingDeferred}
    when every stream is blocked; portproxy parks streams whose window is shut, so a
    WINDOW_UPDATE must wake it (unless the socket is full: then resuming does).
    """
    own: Any = conn
    if own._sendingDeferred is not None and own._consumerBlocked is None:
        d, own._sendingDeferred = own._sendingDeferred, None
        d.callback(None)


def h2_register_stream(conn: H2Connection, stream_id: int, stream: H2Stream) -> None:
    """Register a new stream with the connection as C{_requestReceived} does.

    The private per-stream C{_streamCleanupCallbacks} and C{_outboundStreamQueues}
    must exist for every stream in C{streams}, or sending and cleanup fail.
    """
    own: Any = conn
    own.streams[stream_id] = stream
    own._streamCleanupCallbacks[stream_id] = Deferred()
    own._outboundStreamQueues[stream_id] = deque()


def h2_reactor(conn: H2Connection) -> IReactorTime:
    """The reactor the connection was built with (private C{_reactor})."""
    return conn._reactor


def h2_header_block_pending(h2conn: Any) -> bool:
    """Whether h2 holds a header block it has not seen the end of.

    h2's C{FrameBuffer} keeps HEADERS and CONTINUATION frames in the private
    C{_headers_buffer} until END_HEADERS; nothing public says a block is under way,
    and a block trickled in forever must meet the head deadline.
    """
    return bool(getattr(h2conn.incoming_buffer, "_headers_buffer", None))


# -- Autobahn: the WebSocket legs -----------------------------------------------------


def take_unparsed_bytes(leg: Any) -> bytes:
    """The bytes an Autobahn protocol received but has not parsed, taken from it.

    C{WebSocketProtocol.data}, its receive buffer (not documented): after the
    opening handshake it holds whatever came right behind it (frames, or a pipelined
    request). The bridge forwards them itself once both sockets are spliced.
    """
    data: bytes = leg.data
    leg.data = b""
    return data


def handshake_status_line(leg: Any) -> str | None:
    """The status line of the upstream's answer to the opening handshake, if any.

    C{WebSocketClientProtocol.http_status_line} (not documented), set once the answer's
    head is parsed: a refused upgrade passes the app's status on to the client.
    """
    return getattr(leg, "http_status_line", None)


def set_opening_request(leg: Any, data: bytes) -> None:
    """Record C{data} as the opening request an Autobahn client leg sent.

    C{WebSocketClientProtocol.http_request_data} (not documented): Autobahn keeps the
    bytes it wrote, for its logs; portproxy rewrites them (the client's Host, Origin
    and headers) as they leave, so they must say what really went out.
    """
    leg.http_request_data = data


# -- the tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateHook:
    """A private or undocumented method of a library class that a subclass relies on.

    @ivar owner: the library class, as an import path (C{module.Class}).
    @ivar name: the method or attribute.
    @ivar use: C{"override"} (portproxy's subclass replaces it, and the library calls
        it), C{"call"} (portproxy calls the library's), or both joined by C{+}.
    @ivar params: the parameter names (after C{self}) portproxy's code passes or
        expects, or C{None} when it does not matter (an attribute).
    @ivar where: the portproxy class that relies on it.
    """

    owner: str
    name: str
    use: str
    params: tuple[str, ...] | None
    where: str


_HTTP11 = "twisted.web.http.HTTPChannel"
_REQUEST = "twisted.web.server.Request"
_H2C = "twisted.web._http2.H2Connection"
_H2S = "twisted.web._http2.H2Stream"
_H2 = "h2.connection.H2Connection"
_WS_SERVER = "autobahn.twisted.websocket.WebSocketServerProtocol"
_WS_CLIENT = "autobahn.twisted.websocket.WebSocketClientProtocol"
_CHANNEL = "portproxy.web.channel.ProxyChannel"
_PROXY_REQUEST = "portproxy.web.request.ProxyRequest"
_STREAM = "portproxy.http.http2.HardenedH2Stream"
_CONN = "portproxy.http.http2.HardenedH2Connection"

#: Every (library class, private or undocumented method) a portproxy subclass
#: overrides or calls (documented interface methods such as C{dataReceived} are not
#: listed). C{tests/test_internals.py} checks each exists with these parameters.
PRIVATE_HOOKS: tuple[PrivateHook, ...] = (
    # HTTP/1.1: twisted.web's channel and request (the hooks are not documented API).
    PrivateHook(_HTTP11, "rawDataReceived", "override+call", ("data",), _CHANNEL),
    PrivateHook(_HTTP11, "allHeadersReceived", "override+call", (), _CHANNEL),
    PrivateHook(_HTTP11, "allContentReceived", "override+call", (), _CHANNEL),
    PrivateHook(_HTTP11, "headerReceived", "override+call", ("line",), _CHANNEL),
    PrivateHook(_HTTP11, "requestDone", "override+call", ("request",), _CHANNEL),
    PrivateHook(_HTTP11, "_send100Continue", "override+call", (), _CHANNEL),
    PrivateHook(_HTTP11, "lineLengthExceeded", "override", ("line",), _CHANNEL),
    PrivateHook(
        "twisted.web.http._GenericHTTPChannelProtocol",
        "dataReceived",
        "override+call",
        ("data",),
        "portproxy.web.channel._ChannelProtocol",
    ),
    PrivateHook(_REQUEST, "gotLength", "override+call", ("length",), _PROXY_REQUEST),
    PrivateHook(_REQUEST, "handleContentChunk", "override+call", ("data",), _PROXY_REQUEST),
    PrivateHook(
        _REQUEST,
        "requestReceived",
        "override+call",
        ("command", "path", "version"),
        _PROXY_REQUEST,
    ),
    PrivateHook(_REQUEST, "processingFailed", "call", ("reason",), _PROXY_REQUEST),
    # HTTP/2: twisted.web._http2 (a private module: all of it is internal).
    PrivateHook(_H2S, "_convertHeaders", "override", ("headers",), _STREAM),
    PrivateHook(_H2S, "_send100Continue", "call", (), _STREAM),
    PrivateHook(
        _H2S,
        "receiveDataChunk",
        "override+call",
        ("data", "flowControlledLength"),
        _STREAM,
    ),
    PrivateHook(_H2S, "requestComplete", "override+call", (), _STREAM),
    PrivateHook(_H2S, "requestDone", "override+call", ("request",), _STREAM),
    PrivateHook(_H2S, "windowUpdated", "override+call", (), _STREAM),
    PrivateHook(_H2S, "flowControlBlocked", "override+call", (), _STREAM),
    PrivateHook(_H2C, "_requestReceived", "override", ("event",), _CONN),
    PrivateHook(_H2C, "_requestDataReceived", "override+call", ("event",), _CONN),
    PrivateHook(_H2C, "_requestEnded", "override+call", ("event",), _CONN),
    PrivateHook(_H2C, "_requestAborted", "override+call", ("event",), _CONN),
    PrivateHook(_H2C, "_requestDone", "override+call", ("streamID",), _CONN),
    PrivateHook(_H2C, "_handleWindowUpdate", "override+call", ("event",), _CONN),
    PrivateHook(_H2C, "_handlePriorityUpdate", "call", ("event",), _CONN),
    PrivateHook(_H2C, "_tryToWriteControlData", "call", (), _CONN),
    PrivateHook(_H2C, "_streamIsActive", "call", ("streamID",), _STREAM),
    PrivateHook(_H2C, "_terminate", "override", ("reason",), _CONN),
    PrivateHook(
        _H2C, "connectionLost", "override+call", ("reason", "_cancelTimeouts"), _CONN
    ),
    PrivateHook(_H2C, "remainingOutboundWindow", "call", ("streamID",), _STREAM),
    PrivateHook(_H2C, "abortRequest", "call", ("streamID",), _STREAM),
    # h2's state machine (portproxy.http.h2rules.ServerH2).
    PrivateHook(
        _H2,
        "_receive_headers_frame",
        "override+call",
        ("frame",),
        "portproxy.http.h2rules.ServerH2",
    ),
    PrivateHook(
        _H2,
        "_receive_data_frame",
        "override+call",
        ("frame",),
        "portproxy.http.h2rules.ServerH2",
    ),
    # Autobahn (portproxy.websocket.legs).
    PrivateHook(
        _WS_CLIENT,
        "sendData",
        "override+call",
        ("data", "sync", "chopsize"),
        "portproxy.websocket.legs.UpstreamLeg",
    ),
    PrivateHook(
        _WS_SERVER,
        "sendHttpErrorResponse",
        "override",
        ("code", "reason", "responseHeaders"),
        "portproxy.websocket.legs.ClientLeg",
    ),
)


@dataclass(frozen=True)
class Copied:
    """A library method whose body a portproxy method repeats, with a change.

    @ivar original: the library method, as an import path (C{module.Class.method}).
    @ivar fingerprint: the start of the SHA-256 of its dedented source when portproxy's
        copy was written.
    @ivar copy: the portproxy method that repeats it.
    @ivar change: what the copy does differently.
    """

    original: str
    fingerprint: str
    copy: str
    change: str


#: Library method bodies portproxy repeats. When one's source changes, read the
#: copy again against it, then update the fingerprint (tests/test_internals.py).
COPIED: tuple[Copied, ...] = (
    Copied(
        "twisted.web.server.Request.process",
        "f053ddf554a55988",
        "portproxy.web.request.ProxyRequest.process",
        "one dispatch on the raw target instead of the walk over decoded segments",
    ),
    Copied(
        "twisted.web._http2.H2Connection.dataReceived",
        "f80662635eac35b5",
        "portproxy.http.http2.HardenedH2Connection.dataReceived",
        "no parsing after GOAWAY, a frame budget, the head deadline",
    ),
    Copied(
        "twisted.web._http2.H2Connection._requestReceived",
        "98188be669e617a3",
        "portproxy.http.http2.HardenedH2Connection._requestReceived",
        "the head checked first, portproxy's stream class, started once registered",
    ),
    Copied(
        "twisted.web.http._GenericHTTPChannelProtocol.dataReceived",
        "c64227dd85cb58a3",
        "portproxy.http.h2install._HardenedSwitch._choose",
        "portproxy's H2Connection class, built before the first bytes",
    ),
)

# -*- test-case-name: tests.test_tls_live -*-
"""The Twisted side of TLS listeners: options, the TLS wrapper, and the HTTPS redirect.

L{ServerTLS} builds Twisted's C{CertificateOptions} once per instance and wraps a
C{tcp:} listener's factory in C{TLSMemoryBIOFactory}; twisted.web then offers HTTP/2
through ALPN when the h2 package is installed.
Like code-server, a TLS port also answers a plain-HTTP request, with a redirect to the
same URL over https (L{PlainOrTLSFactory}): a user who types C{localhost:8080} gets
the page instead of a reset connection. The first byte decides (a TLS record starts
with 0x16, an HTTP request with a letter); after it the connection belongs to the chosen
protocol, with no extra layer in between.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from portproxy.net.limits import ConnectionLimits
from portproxy.net.policy import peer_key
from portproxy.net.reactor import IInstanceReactor
from portproxy.runtime.tls import (
    SELF_SIGNED_CERT_FILE,
    KeyPair,
    TLSError,
    fingerprint,
    https_location,
    load_key_pair,
    load_or_create_self_signed,
    parse_cert_hosts,
)

if TYPE_CHECKING:
    from twisted.internet.ssl import CertificateOptions

    from portproxy.config import Config
    from portproxy.http.h2rules import H2Limits

__all__ = [
    "SNIFF_TIMEOUT",
    "PlainOrTLSFactory",
    "RedirectToHTTPS",
    "ServerTLS",
    "http2_available",
    "server_options",
]

#: A client that connects and sends nothing is dropped after this many seconds (when
#: no L{ConnectionLimits} give the header timeout instead).
SNIFF_TIMEOUT = 30.0
_TLS_HANDSHAKE = 0x16


def http2_available() -> bool:
    """Whether twisted.web can serve HTTP/2 here (the C{h2} package is installed)."""
    from twisted.web.http import H2_ENABLED

    return bool(H2_ENABLED)


def server_options(pair: KeyPair) -> CertificateOptions:
    """Twisted's C{CertificateOptions} for C{pair}; raises L{TLSError} if OpenSSL balks.

    ALPN needs nothing here: C{CertificateOptions} always installs the selection
    callback, and twisted.web's C{Site} (the wrapped factory) names what it speaks,
    C{h2} first when the h2 package is installed, then C{http/1.1}.
    """
    from OpenSSL import SSL
    from twisted.internet.ssl import CertificateOptions

    # pyOpenSSL takes cryptography's objects directly (its own X509 and PKey are
    # deprecated), though Twisted's annotations still name the old types.
    options = CertificateOptions(
        privateKey=cast(Any, pair.key),
        certificate=cast(Any, pair.certificate),
        extraCertChain=cast(Any, list(pair.chain)),
    )
    try:
        options.getContext()
    except SSL.Error as e:
        raise TLSError(f"--cert: OpenSSL refuses the certificate: {e}") from None
    return options


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class RedirectToHTTPS(Resource):
    """Answer every plain-HTTP request with a 307 to the same URL over https.

    307, not 301 or 308: browsers keep permanent redirects for good, and a port that
    serves TLS today may serve plain HTTP tomorrow (this is a developer's tool).
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        location = https_location(request.getHeader(b"host"), request.uri)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if location is None:
            request.setResponseCode(400)
            return b"This port speaks HTTPS.\n"
        request.setResponseCode(307)
        request.setHeader(b"location", location)
        return b"This port speaks HTTPS: " + location + b"\n"


class _Sniff(Protocol):
    """Wait for the first byte, then hand the connection to TLS or to the redirect.

    The wait is the start of the request head: with L{ConnectionLimits} it is one of
    their heads (the same deadline, and a greedy address's silent connections make
    room at the cap); without, a timer of its own ends it.
    """

    transport: ITCPTransport

    def __init__(self, factory: PlainOrTLSFactory, addr: IAddress | None) -> None:
        self.owner = factory
        self.addr = addr
        self.inner: IProtocol | None = None
        self.timer: IDelayedCall | None = None
        self.limits: ConnectionLimits | None = None
        #: The client's address group (L{portproxy.net.policy.address_key}).
        self.limit_key = peer_key(addr)

    def connectionMade(self) -> None:
        limits = self.owner.limits
        if limits is not None:
            self.limits = limits
            limits.head_started(self)
        else:
            self.timer = self.owner.clock.callLater(self.owner.timeout, self._drop)

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        if not data:
            return
        self._stop_waiting()
        owner = self.owner
        chosen = owner.tls if data[0] == _TLS_HANDSHAKE else owner.plain
        # Factory allows no address; a listening port always passes the peer's.
        inner = chosen.buildProtocol(cast(IAddress, self.addr))
        if inner is None:
            self.transport.abortConnection()
            return
        self.inner = inner
        # Any: its protocol attribute is not in ITCPTransport.
        transport: Any = self.transport
        if getattr(transport, "protocol", None) is self:
            transport.protocol = inner  # the reactor now calls it directly
        inner.makeConnection(transport)
        inner.dataReceived(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._stop_waiting()
        if self.inner is not None:
            self.inner.connectionLost(reason)

    def _stop_waiting(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None
        limits, self.limits = self.limits, None
        if limits is not None:
            limits.forget(self)

    def _drop(self) -> None:
        # No byte came: neither a TLS alert nor an HTTP 408 would be understood.
        self.timer = None
        self.limits = None
        if self.transport is not None:
            self.transport.abortConnection()

    # -- portproxy.net.limits.Limited ------------------------------------------------------

    def head_timed_out(self) -> None:
        """Nothing arrived by the header deadline (or room is needed): drop it."""
        self._drop()

    def reclaim(self) -> None:
        self._drop()

    def send_timed_out(self) -> None:
        self._drop()

    def unsent_bytes(self) -> int | None:
        return 0


class PlainOrTLSFactory(Factory):
    """Serve C{tls} (a TLS-wrapped factory) and send plain HTTP to C{plain}.

    @param limits: the process's L{ConnectionLimits}: the wait for the first byte
        then ends at their header timeout (C{timeout} is not used).
    @param timeout: seconds to wait for the first byte without C{limits}.
    """

    noisy = False

    def __init__(
        self,
        tls: IProtocolFactory,
        plain: IProtocolFactory,
        *,
        clock: IReactorTime,
        timeout: float = SNIFF_TIMEOUT,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.tls = tls
        self.plain = plain
        self.clock = clock
        self.timeout = timeout
        self.limits = limits

    def doStart(self) -> None:
        self.tls.doStart()
        self.plain.doStart()
        super().doStart()

    def doStop(self) -> None:
        self.tls.doStop()
        self.plain.doStop()
        super().doStop()

    def buildProtocol(self, addr: IAddress | None) -> _Sniff:
        return _Sniff(self, addr)


class ServerTLS:
    """The TLS settings shared by an instance's TLS listeners, built on first use.

    Built lazily so that a self-signed certificate is made at start-up (not when
    options are merely parsed, as for C{--print-url}), once for all listeners.
    """

    def __init__(
        self,
        *,
        cert: str | None,
        cert_key: str | None,
        self_signed: bool,
        cert_hosts: tuple[str, ...],
        data_dir: str,
        reactor: IInstanceReactor,
        redirect: IProtocolFactory,
        log: Logger,
        now: Callable[[], datetime.datetime] = _utcnow,
        http2_limits: H2Limits | Config | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.cert = cert
        self.cert_key = cert_key
        self.self_signed = self_signed
        self.cert_hosts = cert_hosts
        self.data_dir = data_dir
        self.reactor = reactor
        #: The factory that answers plain HTTP on a TLS port (a Site of L{RedirectToHTTPS}).
        self.redirect = redirect
        self.log = log
        self.now = now
        #: L{portproxy.http.h2rules.H2Limits} for HTTP/2 connections, or the Config to take
        #: them from (C{--header-timeout}, C{--send-timeout}); defaults when C{None}.
        self.http2_limits = http2_limits
        #: The process's connection limits: the first-byte wait is part of the head.
        self.limits = limits
        self.pair: KeyPair | None = None
        self._options: CertificateOptions | None = None

    def options(self) -> CertificateOptions:
        """The C{CertificateOptions}; raises L{TLSError} naming the option at fault."""
        if self._options is not None:
            return self._options
        now = self.now()
        if self.cert is not None:
            pair = load_key_pair(self.cert, self.cert_key)
            where = self.cert
        else:
            try:
                hosts = parse_cert_hosts(self.cert_hosts)
            except ValueError as e:
                raise TLSError(f"--cert-host: {e}") from None
            pair, new = load_or_create_self_signed(self.data_dir, hosts, now=now)
            where = os.path.join(self.data_dir, SELF_SIGNED_CERT_FILE)
            self.log.info(
                "{state} self-signed certificate for {hosts}",
                state="made a new" if new else "reusing the",
                hosts=", ".join(hosts),
            )
        self._options = server_options(pair)
        self.pair = pair
        self.log.info(
            "TLS certificate {path}, SHA-256 fingerprint {fingerprint}, "
            "valid until {end}; HTTP/2 {h2}",
            path=where,
            fingerprint=fingerprint(pair.certificate),
            end=pair.certificate.not_valid_after_utc.date().isoformat(),
            h2="on"
            if http2_available()
            else "off (the h2 package is missing: pip install 'h2>=4.3')",
        )
        if pair.certificate.not_valid_after_utc <= now:
            self.log.warn("the TLS certificate {path} has expired", path=where)
        return self._options

    def wrap(self, factory: IProtocolFactory) -> PlainOrTLSFactory:
        """C{factory} behind TLS, with the redirect for plain HTTP on the same port.

        With h2 installed, HTTP/2 connections get portproxy's hardened connection
        class (L{portproxy.http.http2}) instead of twisted.web's own.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        if http2_available():
            from portproxy.http.h2install import HTTP2Site
            from portproxy.http.h2rules import H2Limits

            limits = self.http2_limits
            if not isinstance(limits, H2Limits):
                limits = H2Limits.from_config(limits)
            # What --listen serves is always a twisted.web Site (ALPN asks it).
            factory = HTTP2Site(cast(Site, factory), limits, reactor=self.reactor)
        tls = TLSMemoryBIOFactory(self.options(), False, factory)
        first_byte = getattr(self.http2_limits, "header_timeout", None) or SNIFF_TIMEOUT
        return PlainOrTLSFactory(
            tls, self.redirect, clock=self.reactor, timeout=first_byte, limits=self.limits
        )

# -*- test-case-name: tests.test_service -*-
"""Services that bind the listening endpoints and close the upstream pool at shutdown."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from portproxy.config import StartupError
from portproxy.net.reactor import IInstanceReactor

__all__ = ["ListeningService", "PortProxyService"]

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.service")


class ListeningService(Service):
    """Listen on one endpoint string; record the TCP port so it is never proxied to.

    When the factory (the site) has C{limits}, they accept on the port: connection
    cap, back-off when file descriptors run out.

    C{wrap}, if given, turns the factory into the one that listens (TLS on a C{tcp:}
    listener); it may raise L{StartupError}. Binding happens in
    C{privilegedStartService} and fails synchronously (as C{strports.service} does), so
    a port in use stops start-up instead of being logged.
    """

    def __init__(
        self,
        reactor: IInstanceReactor,
        description: str,
        factory: IProtocolFactory,
        on_port: Callable[[int], None],
        wrap: Callable[[IProtocolFactory], IProtocolFactory] | None = None,
    ) -> None:
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.on_port = on_port
        self.wrap = wrap
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._listen()

    def endpoint(self) -> IStreamServerEndpoint:
        """The server endpoint to listen on (a worker adopts an inherited one)."""
        from portproxy.net.policy import with_backlog

        # A longer listen queue than Twisted's 50: clients wait there at the cap.
        return serverFromString(self.reactor, with_backlog(self.description))

    def _listen(self) -> None:
        try:
            endpoint = self.endpoint()
        except Exception as e:
            raise StartupError(f"--listen {self.description}: {e}") from None
        factory = self.factory if self.wrap is None else self.wrap(self.factory)
        outcome: list[IListeningPort | Failure] = []
        endpoint.listen(factory).addBoth(outcome.append)
        if not outcome:
            # An endpoint that binds asynchronously (rare): log failures later.
            return
        result = outcome[0]
        if isinstance(result, Failure):
            raise StartupError(f"--listen {self.description}: {result.getErrorMessage()}")
        self.port = result
        limits = getattr(self.factory, "limits", None)
        if limits is not None:
            # The connection cap and the accept back-off (portproxy.net.limits).
            limits.watch(result)
        host = result.getHost()
        port = getattr(host, "port", None)
        if isinstance(port, int):
            self.on_port(port)
        _log.info(
            "portproxy listening on {address}{tls}",
            address=_describe(host),
            tls=" (TLS)" if self.wrap is not None else "",
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is None:
            return None
        port, self.port = self.port, None
        limits = getattr(self.factory, "limits", None)
        if limits is not None:
            limits.unwatch(port)
        # No overload of maybeDeferred takes "a Deferred or None" (Twisted's own type).
        return maybeDeferred(port.stopListening)  # type: ignore[call-overload]


def _describe(host: Any) -> str:  # an IAddress: its fields depend on the family
    if hasattr(host, "port"):
        return f"{host.host}:{host.port}"
    name = getattr(host, "name", host)
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


class PortProxyService(MultiService):
    """The whole instance: listeners first, then a clean shutdown of the pool.

    A L{StartupError} while starting is printed as one line and ends the process with
    status 1, instead of a traceback.
    """

    def __init__(
        self,
        close: Callable[[], Deferred[None]],
        drain: Callable[[float], Deferred[None]] | None = None,
        drain_timeout: float = 10.0,
        close_clients: Callable[[float], Deferred[None]] | None = None,
    ) -> None:
        super().__init__()
        self._close = close
        self._drain = drain
        self._drain_timeout = drain_timeout
        self._close_clients = close_clients

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except StartupError as e:
            _fail(e)

    def startService(self) -> None:
        try:
            super().startService()
        except StartupError as e:
            _fail(e)

    def stopService(self) -> Deferred[None]:
        # Stop accepting first, then let in-flight requests finish (bounded), then
        # close the idle upstream connections.
        # Any: each step's result is dropped; the caller only waits for the end.
        d: Deferred[Any] = maybeDeferred(super().stopService)
        if self._drain is not None:
            drain = self._drain
            d.addBoth(lambda _: drain(self._drain_timeout))
        if self._close_clients is not None:
            close_clients = self._close_clients
            d.addBoth(lambda _: close_clients(2.0))
        d.addBoth(lambda _: self._close())
        return d


def _fail(error: StartupError) -> None:
    sys.stderr.write(f"portproxy: error: {error}\n")
    sys.stderr.flush()
    raise SystemExit(1)

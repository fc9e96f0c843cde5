# -*- test-case-name: tests.test_workers -*-
"""The worker side of C{--workers}: serve on sockets inherited from the supervisor.

A worker is a normal portproxy instance (L{portproxy.runtime.app.build_service}) whose
listeners adopt the descriptors named in L{portproxy.runtime.handoff.WORKER_ENV} instead
of binding; it tells the supervisor when it serves and stops by itself if the
supervisor is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from types import FrameType

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger

from portproxy.config import Config
from portproxy.net.reactor import IWorkerReactor, installed_reactor
from portproxy.runtime.handoff import WORKER_ENV, WorkerSpec
from portproxy.runtime.service import ListeningService

__all__ = ["AdoptedListener", "build_worker_service"]

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.worker")


class AdoptedListener(ListeningService):
    """In a worker: serve on a listening socket inherited from the supervisor.

    A L{ListeningService} (same arguments, plus the descriptor) whose endpoint adopts
    the descriptor instead of binding, so TLS wrapping, the own-port record and a clean
    start-up error work as in one process.
    """

    def __init__(
        self,
        reactor: IWorkerReactor,
        description: str,
        factory: IProtocolFactory,
        on_port: Callable[[int], None],
        wrap: Callable[[IProtocolFactory], IProtocolFactory] | None = None,
        *,
        fd: int,
        family: str,
    ) -> None:
        super().__init__(reactor, description, factory, on_port, wrap)
        self.fd = fd
        self.family = family

    def privilegedStartService(self) -> None:
        # Nothing to bind: the socket is adopted when the service starts.
        Service.privilegedStartService(self)

    def endpoint(self) -> IStreamServerEndpoint:
        from twisted.internet.endpoints import AdoptedStreamServerEndpoint

        return AdoptedStreamServerEndpoint(
            self.reactor, self.fd, getattr(socket, "AF_" + self.family)
        )


def _first_signal_only() -> None:
    """Wrap the reactor's SIGTERM and SIGINT handlers so that later signals are ignored."""
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.getsignal(number) for number in stops}

    def handle(number: int, frame: FrameType | None) -> None:
        for each in stops:
            signal.signal(each, signal.SIG_IGN)
        handler = previous[signal.Signals(number)]
        if callable(handler):
            handler(number, frame)

    for number in stops:
        if callable(previous[number]):
            signal.signal(number, handle)


class _WorkerDuties(Service):
    """Say "ready" once the listeners serve; stop if the supervisor is gone.

    Only the first SIGTERM or SIGINT counts: Ctrl-C and systemd reach every process
    of the group, then the supervisor signals its workers again, and a second stop
    request makes Twisted log a C{ReactorNotRunning} error.
    """

    def __init__(
        self,
        reactor: IWorkerReactor,
        spec: WorkerSpec,
        getppid: Callable[[], int] = os.getppid,
        check_every: float = 1.0,
    ) -> None:
        from twisted.internet.task import LoopingCall

        self.reactor = reactor
        self.spec = spec
        self.getppid = getppid
        self.watch = LoopingCall(self._check_parent)
        self.watch.clock = reactor
        self.check_every = check_every

    def startService(self) -> None:
        super().startService()
        try:
            os.write(self.spec.ready_fd, b"ready\n")
            os.close(self.spec.ready_fd)
        except OSError:
            pass  # the supervisor is gone; the watch below stops this worker
        _log.info(
            "worker {index} (pid {pid}) serving", index=self.spec.index, pid=os.getpid()
        )
        self.watch.start(self.check_every, now=True)
        self.reactor.callWhenRunning(_first_signal_only)

    def _check_parent(self) -> None:
        if self.getppid() != self.spec.supervisor:
            _log.warn("the supervisor is gone: worker {index} stops", index=self.spec.index)
            self.watch.stop()
            if self.reactor.running:
                self.reactor.stop()

    def stopService(self) -> None:
        super().stopService()
        if self.watch.running:
            self.watch.stop()


def build_worker_service(
    config: Config, *, environ: Mapping[str, str], reactor: IWorkerReactor | None = None
) -> MultiService:
    """The service a worker runs: a normal instance on the inherited listeners."""
    if reactor is None:
        reactor = installed_reactor()
    from portproxy.runtime.app import build_service

    try:
        spec = WorkerSpec.decode(environ[WORKER_ENV])
        if [d for d, _, _ in spec.listeners] != list(config.listen):
            raise ValueError(f"{WORKER_ENV} does not match --listen")
    except ValueError as e:
        sys.stderr.write(f"portproxy: error: {e}\n")
        raise SystemExit(1) from None
    pending = list(spec.listeners)

    def listener(
        reactor: IWorkerReactor,
        description: str,
        factory: IProtocolFactory,
        on_port: Callable[[int], None],
        wrap: Callable[[IProtocolFactory], IProtocolFactory] | None = None,
    ) -> AdoptedListener:
        _, fd, family = pending.pop(0)
        return AdoptedListener(
            reactor, description, factory, on_port, wrap, fd=fd, family=family
        )

    service = build_service(config, environ=environ, reactor=reactor, listener=listener)
    _WorkerDuties(reactor, spec).setServiceParent(service)
    return service

# -*- test-case-name: tests.test_workers -*-
"""C{--workers N}: one supervisor process binds the listeners, N worker processes serve.

The supervisor binds every C{--listen} endpoint itself (so a port in use fails start-up
once, and port 0 resolves to one port), then runs C{python -m twisted portproxy} N times
with the same options and hands each worker the listening sockets as inherited file
descriptors, described in the L{WORKER_ENV} environment variable. Every worker adopts
them, so the kernel gives each new connection to whichever worker accepts first. A
worker that dies is started again (with a growing delay if it keeps dying); SIGTERM or
SIGINT to the supervisor stops every worker gracefully. See docs/workers.rst.
"""

from __future__ import annotations

import atexit
import datetime
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IAddress, IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.tcp import Port

from portproxy.config import Config, StartupError
from portproxy.net.reactor import ISupervisorReactor, installed_reactor
from portproxy.runtime.handoff import WORKER_ENV, WorkerSpec
from portproxy.web.accesslog import ReopenOnSignal

__all__ = [
    "Backoff",
    "SharedListener",
    "WorkerSupervisor",
    "build_supervisor",
    "parse_workers",
    "prepare_shared",
    "unshareable",
    "worker_command",
]

# The namespace is pinned: log lines (and the docs that quote them) keep the name
# this module had before the package was split into folders.
_log = Logger(namespace="portproxy.workers")

# Descriptors systemd passes to the supervisor; a worker gets its own list instead.
_SYSTEMD_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_SHAREABLE = ("tcp", "tcp6", "systemd")
_FIRST_LISTENER_FD = 3


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except AttributeError:
        return os.cpu_count() or 1


def parse_workers(value: str, cpu_count: Callable[[], int] = _cpu_count) -> int:
    """Read C{--workers}: a positive whole number, or C{auto} for the number of CPUs.

    @raise ValueError: with a message for C{--workers: ...}.
    """
    text = value.strip().lower()
    if text == "auto":
        return max(1, cpu_count())
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number or 'auto'") from None
    if number <= 0:
        raise ValueError("must be greater than zero (or 'auto')")
    return number


def unshareable(description: str) -> str | None:
    """Why workers cannot share this C{--listen} endpoint, or C{None} if they can.

    Only plain stream sockets are handed over: C{tcp:}, C{tcp6:} and C{systemd:}
    (INET or INET6). C{ssl:} would lose its TLS (use C{--cert} on C{tcp:} instead);
    Twisted removes a C{unix:} socket's file when any one worker stops listening.
    """
    kind = description.split(":", 1)[0]
    if kind.isdigit() or kind in _SHAREABLE:
        return None
    hint = " (for TLS use tcp: with --cert)" if kind == "ssl" else ""
    return (
        f"--listen {description}: workers can share only tcp:, tcp6: and systemd: "
        f"listeners{hint}"
    )


def _is_twist(program: str) -> bool:
    path = program.replace(os.sep, "/")
    return os.path.basename(path) == "twist" or path.endswith("twisted/__main__.py")


def worker_command(
    executable: str, runner_argv: Sequence[str], argv: Sequence[str]
) -> list[str]:
    """The command line of a worker: C{executable -m twisted portproxy ARGV --workers 1}.

    Under C{twist}, its own options (C{--log-format}, C{--log-level}, C{--reactor}) are
    passed on so that workers log like the supervisor; under any other runner
    (twistd, a .tac) workers log text.

    @param runner_argv: the supervisor's C{sys.argv}.
    @param argv: the arguments C{portproxy} itself was given.
    """
    runner = ["--log-format", "text"]
    tail = list(runner_argv[len(runner_argv) - len(argv) - 1 :])
    if (
        runner_argv
        and len(runner_argv) > len(argv)
        and _is_twist(runner_argv[0])
        and tail == ["portproxy", *argv]
    ):
        runner = list(runner_argv[1 : len(runner_argv) - len(argv) - 1])
    return [executable, "-m", "twisted", *runner, "portproxy", *argv, "--workers", "1"]


class Backoff:
    """How long to wait before starting a worker again, so a crash loop does not spin.

    A worker that served at least C{stable} seconds is restarted at once; each quick
    death in a row doubles the delay, from C{first} up to C{ceiling}.
    """

    def __init__(self, first: float = 0.5, ceiling: float = 30.0, stable: float = 10.0):
        self.first = first
        self.ceiling = ceiling
        self.stable = stable
        self.failures = 0

    def delay(self, uptime: float) -> float:
        """The delay after a death following C{uptime} seconds of life."""
        if uptime >= self.stable:
            self.failures = 0
            return 0.0
        self.failures += 1
        return float(min(self.ceiling, self.first * 2 ** (self.failures - 1)))


@dataclass
class SharedListener:
    """A listening socket the supervisor holds (not reading) for its workers."""

    description: str
    port: Port  # a TCP port (a UNIX one is refused by bind_shared)
    fd: int
    family: str


def _family(host: IAddress) -> str | None:
    from twisted.internet.address import IPv4Address, IPv6Address

    if isinstance(host, IPv4Address):
        return "INET"
    if isinstance(host, IPv6Address):
        return "INET6"
    return None


def bind_shared(
    reactor: ISupervisorReactor, descriptions: Sequence[str]
) -> list[SharedListener]:
    """Bind every endpoint now; raise L{StartupError} (one line) if one cannot be."""
    from twisted.internet.endpoints import serverFromString

    from portproxy.net.policy import with_backlog

    bound: list[SharedListener] = []
    idle = ServerFactory.forProtocol(Protocol)
    idle.noisy = False
    try:
        for description in descriptions:
            try:
                # Workers wait at --max-connections in this queue (portproxy.net.limits).
                endpoint = serverFromString(reactor, with_backlog(description))
            except Exception as e:
                raise StartupError(f"--listen {description}: {e}") from None
            outcome: list[Any] = []  # the Port, or the Failure (checked below)
            endpoint.listen(idle).addBoth(outcome.append)
            if not outcome or isinstance(outcome[0], Failure):
                reason = outcome[0].getErrorMessage() if outcome else "did not bind"
                raise StartupError(f"--listen {description}: {reason}")
            port = outcome[0]
            # Workers accept; the supervisor only keeps the socket open for them.
            port.stopReading()
            family = _family(port.getHost())
            bound.append(SharedListener(description, port, port.fileno(), family or ""))
            if family is None:
                raise StartupError(
                    f"--listen {description}: workers can share only TCP sockets"
                )
            _log.info(
                "portproxy listening on {address} (shared by the workers)",
                address=f"{port.getHost().host}:{port.getHost().port}",
            )
    except StartupError:
        for listener in bound:
            listener.port.stopListening()
        raise
    return bound


def prepare_shared(
    config: Config, environ: Mapping[str, str], reactor: ISupervisorReactor
) -> list[SharedListener]:
    """What the supervisor does before any worker starts: anything that must happen
    once (the generated password, the self-signed certificate), then the binding."""
    if config.auth == "password":
        from portproxy.auth.passwords import resolve_credential

        resolve_credential(
            environ=environ, password_file=config.password_file, data_dir=config.data_dir
        )
    if config.self_signed:
        from portproxy.runtime.tls import (
            TLSError,
            load_or_create_self_signed,
            parse_cert_hosts,
        )

        try:
            _, new = load_or_create_self_signed(
                config.data_dir,
                parse_cert_hosts(config.cert_hosts),
                now=datetime.datetime.now(datetime.timezone.utc),
            )
        except (TLSError, ValueError) as e:
            raise StartupError(str(e)) from None
        if new:
            _log.info("made the self-signed certificate the workers share")
    return bind_shared(reactor, config.listen)


def _exit_at_end(code: int) -> None:
    """Make the process exit with C{code} once the runner has cleaned up (pid file)."""

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(leave)


def _describe_end(reason: Failure) -> str:
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exited with status 0"
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        return f"was killed by signal {value.signal}"
    if isinstance(value, ProcessTerminated):
        return f"exited with status {value.exitCode}"
    return f"ended: {reason.getErrorMessage()}"


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, slot: int, ready_fd: int) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.ready_fd = ready_fd
        self.ready = False
        self.started = supervisor.reactor.seconds()
        self.pid: int | None = None

    def connectionMade(self) -> None:
        process = cast(IProcessTransport, self.transport)
        self.pid = process.pid
        process.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self.ready_fd and not self.ready and b"ready" in data:
            self.ready = True
            self.supervisor._ready(self)

    def signal(self, name: str | int) -> None:
        process = cast(IProcessTransport, self.transport)
        try:
            process.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)


class WorkerSupervisor(Service):
    """Runs C{count} worker processes on the listeners that C{prepare} binds.

    @param command: the worker's command line (see L{worker_command}).
    @param prepare: binds the listeners (and does one-time set-up); may raise
        L{StartupError}, which ends start-up with one line and status 1.
    @param stop_timeout: how long workers get to finish after SIGTERM before SIGKILL.
    @param on_fatal: called with the exit status when workers cannot start at all.
    """

    def __init__(
        self,
        reactor: ISupervisorReactor,
        *,
        count: int,
        command: Sequence[str],
        environ: Mapping[str, str],
        prepare: Callable[[], list[SharedListener]],
        stop_timeout: float = 15.0,
        on_fatal: Callable[[int], None] = _exit_at_end,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.command = list(command)
        self.environ = dict(environ)
        self.prepare = prepare
        self.stop_timeout = stop_timeout
        self.on_fatal = on_fatal
        self.listeners: list[SharedListener] | None = None
        self.workers: dict[int, _Worker] = {}
        self.backoff = {slot: Backoff() for slot in range(1, count + 1)}
        self.restarts: dict[int, IDelayedCall] = {}
        self.served = False
        self.failed = False
        self.stopping = False
        self._all_ended: Deferred[None] | None = None
        #: Passes SIGUSR1 on to the workers (set with C{--access-log-file}).
        self.relay_reopen: ReopenOnSignal | None = None

    def signal_workers(self, name: str | int) -> None:
        """Send signal C{name} to every running worker (Twisted names only C{"HUP"},
        C{"INT"}, C{"KILL"}, C{"STOP"}, C{"TERM"}; other signals by number)."""
        for worker in list(self.workers.values()):
            worker.signal(name)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._prepare()

    def startService(self) -> None:
        super().startService()
        self._prepare()
        self.reactor.callWhenRunning(self._start_all)
        if self.relay_reopen is not None:
            self.relay_reopen.startService()

    def _prepare(self) -> None:
        if self.listeners is not None:
            return
        try:
            self.listeners = self.prepare()
        except StartupError as e:
            sys.stderr.write(f"portproxy: error: {e}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None

    def _start_all(self) -> None:
        for slot in range(1, self.count + 1):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self.restarts.pop(slot, None)
        if self.stopping:
            return
        listeners = self.listeners or []
        ready_fd = _FIRST_LISTENER_FD + len(listeners)
        spec = WorkerSpec(
            index=slot,
            supervisor=os.getpid(),
            ready_fd=ready_fd,
            listeners=tuple(
                (item.description, _FIRST_LISTENER_FD + i, item.family)
                for i, item in enumerate(listeners)
            ),
        )
        env = {k: v for k, v in self.environ.items() if k not in _SYSTEMD_ENV}
        env[WORKER_ENV] = spec.encode()
        child_fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2, ready_fd: "r"}
        for i, item in enumerate(listeners):
            child_fds[_FIRST_LISTENER_FD + i] = item.fd
        worker = _Worker(self, slot, ready_fd)
        self.workers[slot] = worker
        try:
            self.reactor.spawnProcess(
                worker, self.command[0], self.command, env=env, childFDs=child_fds
            )
        except Exception as e:
            worker.processEnded(Failure(e))
            return
        _log.info("worker {slot} started (pid {pid})", slot=slot, pid=worker.pid)

    def _ready(self, worker: _Worker) -> None:
        self.served = True

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        how = _describe_end(reason)
        if self.stopping or self.failed:
            _log.info("worker {slot} {how}", slot=worker.slot, how=how)
            ended = self._all_ended
            if not self.workers and ended is not None and not ended.called:
                ended.callback(None)
            return
        killed = isinstance(reason.value, ProcessTerminated) and reason.value.signal
        if not self.served and not killed:
            # It exited by itself before any worker could serve: a setting or the
            # environment is wrong, and restarting would only repeat the error.
            self._fail(f"--workers: worker {worker.slot} {how} before it could serve")
            return
        uptime = self.reactor.seconds() - worker.started
        delay = self.backoff[worker.slot].delay(uptime)
        _log.warn(
            "worker {slot} (pid {pid}) {how} after {uptime:.1f} s; "
            "starting it again in {delay:.1f} s",
            slot=worker.slot,
            pid=worker.pid,
            how=how,
            uptime=uptime,
            delay=delay,
        )
        self.restarts[worker.slot] = self.reactor.callLater(delay, self._spawn, worker.slot)

    def _fail(self, message: str) -> None:
        self.failed = True
        sys.stderr.write(f"portproxy: error: {message}\n")
        sys.stderr.flush()
        self.on_fatal(1)
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        """Close the shared sockets, SIGTERM every worker, SIGKILL the late ones."""
        super().stopService()
        if self.relay_reopen is not None and self.relay_reopen.running:
            self.relay_reopen.stopService()
        self.stopping = True
        for call in self.restarts.values():
            if call.active():
                call.cancel()
        self.restarts.clear()
        for listener in self.listeners or []:
            maybeDeferred(listener.port.stopListening)
        done: Deferred[None] = Deferred()
        if not self.workers:
            done.callback(None)
            return done
        self._all_ended = Deferred()
        for worker in list(self.workers.values()):
            worker.signal("TERM")
        kill = self.reactor.callLater(self.stop_timeout, self._kill_late)
        give_up = self.reactor.callLater(self.stop_timeout + 5.0, self._give_up)

        def finished(result: object) -> None:
            for call in (kill, give_up):
                if call.active():
                    call.cancel()
            if not done.called:
                done.callback(None)

        self._all_ended.addBoth(finished)
        return done

    def _kill_late(self) -> None:
        for worker in list(self.workers.values()):
            _log.warn("worker {slot} did not stop in time: killing it", slot=worker.slot)
            worker.signal("KILL")

    def _give_up(self) -> None:
        if self._all_ended is not None and not self._all_ended.called:
            _log.error("workers {slots} did not end", slots=sorted(self.workers))
            self._all_ended.callback(None)


def build_supervisor(
    config: Config, *, argv: Sequence[str], environ: Mapping[str, str]
) -> WorkerSupervisor:
    """The supervisor of C{config.workers} worker processes (C{--workers} above 1).

    L{portproxy.tap.makeService} decides which kind of process this is.
    """
    from portproxy.runtime.app import log_listener_warnings

    log_listener_warnings(config)
    reactor = installed_reactor()
    supervisor = WorkerSupervisor(
        reactor,
        count=config.workers,
        command=worker_command(sys.executable, sys.argv, argv),
        environ=environ,
        prepare=lambda: prepare_shared(config, environ, reactor),
    )
    if config.access_log_file is not None and config.access_log != "off":
        # logrotate signals the pid it knows, this one: each worker reopens its file.
        supervisor.relay_reopen = ReopenOnSignal(
            reactor, lambda: supervisor.signal_workers(signal.SIGUSR1)
        )
    return supervisor

"""C{--workers N}: a supervisor shares its listeners with N worker processes."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from portproxy.config import StartupError
from portproxy.runtime.handoff import WORKER_ENV, WorkerSpec
from portproxy.runtime.supervisor import (
    Backoff,
    SharedListener,
    WorkerSupervisor,
    bind_shared,
    parse_workers,
    prepare_shared,
    unshareable,
    worker_command,
)
from portproxy.runtime.worker import AdoptedListener, _WorkerDuties, build_worker_service
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent

# --- option parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1), ("4", 4), (" 2 ", 2), ("auto", 6), ("AUTO", 6)]
)
def test_workers_value_is_a_positive_number_or_auto(value: str, expected: int) -> None:
    assert parse_workers(value, cpu_count=lambda: 6) == expected


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5", "", "auto2", "2x"])
def test_bad_workers_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_workers(value, cpu_count=lambda: 6)


def test_auto_is_at_least_one_worker() -> None:
    assert parse_workers("auto", cpu_count=lambda: 0) == 1


@pytest.mark.parametrize(
    "description",
    ["tcp:8080", "tcp6:8080:interface=\\:\\:1", "systemd:domain=INET:name=http", "8080"],
)
def test_stream_listeners_can_be_shared(description: str) -> None:
    assert unshareable(description) is None


@pytest.mark.parametrize(
    "description", ["ssl:8443:privateKey=k.pem", "unix:/tmp/p.sock", "other:1"]
)
def test_other_listeners_cannot_be_shared(description: str) -> None:
    reason = unshareable(description)
    assert reason is not None and f"--listen {description}" in reason


def _parse(args: list[str]) -> Any:
    from portproxy.tap import Options

    options = Options()
    options.environ = {}
    options.parseOptions(["--auth", "none", *args])
    return options


@pytest.mark.parametrize(
    ("args", "expected"),
    [([], 1), (["--workers", "3"], 3), (["--workers=2", "--listen", "tcp6:0"], 2)],
)
def test_workers_option_reaches_the_config(args: list[str], expected: int) -> None:
    assert _parse(args).config.workers == expected


def test_options_keep_their_arguments_for_the_workers() -> None:
    assert _parse(["--workers", "2"]).argv == ["--auth", "none", "--workers", "2"]


@pytest.mark.parametrize(
    "args",
    [
        ["--workers", "0"],
        ["--workers", "lots"],
        ["--workers", "2", "--listen", "ssl:8443:privateKey=k.pem"],
        ["--workers", "2", "--listen", "unix:/tmp/portproxy.sock"],
    ],
)
def test_bad_workers_setting_stops_with_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        _parse(args)
    assert exit.value.code == 64
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portproxy: error: --workers:")


def test_one_process_may_listen_anywhere() -> None:
    assert _parse(["--listen", "unix:/tmp/portproxy.sock"]).config.workers == 1


# --- what is handed to a worker -------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.text(), st.integers(3, 1000), st.sampled_from(["INET", "INET6"])),
        max_size=4,
    ),
    st.integers(1, 64),
)
def test_worker_spec_survives_the_environment(
    listeners: list[tuple[str, int, str]], index: int
) -> None:
    spec = WorkerSpec(index, 4242, 9, tuple(listeners))
    assert WorkerSpec.decode(spec.encode()) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        "[1]",
        '{"index": 1, "supervisor": 2, "ready": 3, "listen": [["tcp:1", 3]]}',
        '{"index": 1, "supervisor": 2, "ready": 3, "listen": [["unix:/s", 3, "UNIX"]]}',
    ],
)
def test_malformed_worker_spec_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=WORKER_ENV):
        WorkerSpec.decode(text)


@pytest.mark.parametrize(
    ("runner", "expected_runner"),
    [
        (["/v/bin/twist", "--log-format", "json", "--log-level", "debug"],
         ["--log-format", "json", "--log-level", "debug"]),
        (["/usr/lib/python3/site-packages/twisted/__main__.py"], []),
        (["/v/bin/twistd", "-n", "--pidfile", ""], ["--log-format", "text"]),
    ],
)  # fmt: skip
def test_worker_command_repeats_the_arguments_and_the_twist_options(
    runner: list[str], expected_runner: list[str]
) -> None:
    argv = ["--auth", "none", "--workers", "2"]
    command = worker_command("/v/bin/python", [*runner, "portproxy", *argv], argv)
    assert command == [
        "/v/bin/python", "-m", "twisted", *expected_runner,
        "portproxy", *argv, "--workers", "1",
    ]  # fmt: skip


def test_worker_command_from_a_tac_file_logs_text() -> None:
    command = worker_command("/py", ["/v/bin/twistd", "-ny", "p.tac"], ["--auth", "none"])
    assert command == [
        "/py", "-m", "twisted", "--log-format", "text",
        "portproxy", "--auth", "none", "--workers", "1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("uptimes", "delays"),
    [
        ([1, 1, 1, 1], [0.5, 1, 2, 4]),
        ([1] * 10, [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]),
        ([1, 1, 60, 1], [0.5, 1, 0, 0.5]),
        ([100, 100], [0, 0]),
    ],
)
def test_backoff_grows_on_quick_deaths_and_resets_after_a_stable_run(
    uptimes: list[float], delays: list[float]
) -> None:
    backoff = Backoff()
    assert [backoff.delay(u) for u in uptimes] == delays


# --- the supervisor, on a fake reactor ------------------------------------------------


class FakeProcess:
    def __init__(self, protocol: Any, pid: int) -> None:
        self.protocol = protocol
        self.pid = pid
        self.signals: list[str] = []
        self.stdin_closed = False
        self.ended = False

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def ready(self) -> None:
        self.protocol.childDataReceived(self.protocol.ready_fd, b"ready\n")

    def end(self, code: int | None = 1, sig: int | None = None) -> None:
        self.ended = True
        if code == 0:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(exitCode=code, signal=sig))
        self.protocol.processEnded(reason)


class SpawningReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[FakeProcess, list[str], dict[str, str], Any]] = []

    def spawnProcess(
        self, protocol: Any, executable: str, args: list[str], env: Any, childFDs: Any
    ) -> FakeProcess:
        process = FakeProcess(protocol, 1000 + len(self.spawned))
        self.spawned.append((process, list(args), dict(env), childFDs))
        protocol.makeConnection(process)
        return process

    def processes(self) -> list[FakeProcess]:
        return [p for p, _, _, _ in self.spawned]


class FakePort:
    def __init__(self) -> None:
        self.closed = False

    def stopListening(self) -> None:
        self.closed = True


@pytest.fixture
def supervised() -> Iterator[tuple[SpawningReactor, WorkerSupervisor, list[int]]]:
    reactor = SpawningReactor()
    reactor.running = True
    fatal: list[int] = []
    supervisor = WorkerSupervisor(
        reactor,
        count=2,
        command=["/py", "-m", "twisted", "portproxy", "--workers", "1"],
        environ={"PATH": "/bin", "LISTEN_FDS": "1", "LISTEN_PID": "7"},
        prepare=lambda: [SharedListener("tcp:8080", FakePort(), 17, "INET")],
        on_fatal=fatal.append,
    )
    supervisor.startService()
    for hook, args, kwargs in reactor.whenRunningHooks:
        hook(*args, **kwargs)
    yield reactor, supervisor, fatal


def test_supervisor_starts_workers_on_the_inherited_listeners(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, _, _ = supervised
    assert len(reactor.spawned) == 2
    for index, (process, args, env, child_fds) in enumerate(reactor.spawned, 1):
        assert args == ["/py", "-m", "twisted", "portproxy", "--workers", "1"]
        assert child_fds == {0: "w", 1: 1, 2: 2, 3: 17, 4: "r"}
        spec = WorkerSpec.decode(env[WORKER_ENV])
        assert spec == WorkerSpec(index, os.getpid(), 4, (("tcp:8080", 3, "INET"),))
        assert env["PATH"] == "/bin"
        assert "LISTEN_FDS" not in env and "LISTEN_PID" not in env
        assert process.stdin_closed


def test_a_worker_that_dies_is_started_again_after_a_delay(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, supervisor, fatal = supervised
    first, second = reactor.processes()
    first.ready()
    second.ready()
    reactor.advance(1)
    first.end(sig=9)
    assert len(reactor.spawned) == 2
    reactor.advance(0.4)
    assert len(reactor.spawned) == 2
    reactor.advance(0.1)
    assert len(reactor.spawned) == 3
    assert WorkerSpec.decode(reactor.spawned[2][2][WORKER_ENV]).index == 1
    assert supervisor.workers[1].pid == reactor.spawned[2][0].pid
    assert fatal == []


def test_a_crash_loop_waits_longer_each_time(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, supervisor, _ = supervised
    reactor.processes()[0].ready()
    waits = []
    for _ in range(4):
        process: Any = supervisor.workers[2].transport
        process.end()
        (call,) = reactor.getDelayedCalls()
        waits.append(call.getTime() - reactor.seconds())
        reactor.advance(waits[-1])
    assert waits == [0.5, 1, 2, 4]


def test_workers_that_cannot_start_end_the_supervisor_with_status_1(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    reactor, supervisor, fatal = supervised
    reactor.processes()[0].end(code=1)
    assert fatal == [1]
    assert reactor.hasStopped
    assert reactor.getDelayedCalls() == []
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "portproxy: error: --workers: worker 1 exited with status 1 before it could serve"
    ]
    # The other worker is stopped like at any shutdown, and not restarted.
    supervisor.stopService()
    assert reactor.processes()[1].signals == ["TERM"]
    reactor.processes()[1].end(sig=15)
    assert len(reactor.spawned) == 2


def test_a_worker_killed_before_serving_is_started_again(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, _, fatal = supervised
    reactor.processes()[0].end(code=None, sig=9)
    reactor.advance(0.5)
    assert len(reactor.spawned) == 3
    assert fatal == [] and not reactor.hasStopped


def test_stop_terminates_every_worker_and_waits_for_them(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, supervisor, _ = supervised
    for process in reactor.processes():
        process.ready()
    done = supervisor.stopService()
    assert [p.signals for p in reactor.processes()] == [["TERM"], ["TERM"]]
    assert supervisor.listeners is not None and supervisor.listeners[0].port.closed
    reactor.processes()[0].end(sig=15)
    assert not done.called
    reactor.processes()[1].end(code=0)
    assert done.called
    assert reactor.getDelayedCalls() == []
    assert len(reactor.spawned) == 2


def test_stop_kills_a_worker_that_does_not_end_in_time(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, supervisor, _ = supervised
    slow, quick = reactor.processes()
    done = supervisor.stopService()
    quick.end(sig=15)
    reactor.advance(14.9)
    assert slow.signals == ["TERM"]
    reactor.advance(0.1)
    assert slow.signals == ["TERM", "KILL"]
    slow.end(sig=9)
    assert done.called


def test_stop_gives_up_on_a_worker_that_never_ends(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, supervisor, _ = supervised
    done = supervisor.stopService()
    reactor.advance(19.9)
    assert not done.called
    reactor.advance(0.1)
    assert done.called
    for process in reactor.processes():
        process.end(sig=9)  # at last: nothing more happens
    assert len(reactor.spawned) == 2


def test_stop_cancels_a_pending_restart(
    supervised: tuple[SpawningReactor, WorkerSupervisor, list[int]],
) -> None:
    reactor, supervisor, _ = supervised
    first, second = reactor.processes()
    first.ready()
    first.end()
    assert len(reactor.getDelayedCalls()) == 1
    supervisor.stopService()
    second.end(sig=15)
    reactor.advance(60)
    assert len(reactor.spawned) == 2


def test_a_failed_preparation_exits_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def prepare() -> list[SharedListener]:
        raise StartupError("--listen tcp:80: Address already in use")

    supervisor = WorkerSupervisor(
        SpawningReactor(), count=2, command=["/py"], environ={}, prepare=prepare
    )
    with pytest.raises(SystemExit) as exit:
        supervisor.startService()
    assert exit.value.code == 1
    assert capsys.readouterr().err == (
        "portproxy: error: --listen tcp:80: Address already in use\n"
    )


# --- what the supervisor does once ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_supervisor_binds_once_and_makes_the_shared_secrets(tmp_path: Path) -> None:
    from twisted.internet import reactor

    from portproxy.config import Config

    config = Config(
        listen=("tcp:0:interface=127.0.0.1",),
        self_signed=True,
        data_dir=str(tmp_path / "data"),
    )
    (listener,) = prepare_shared(config, {}, reactor)
    try:
        assert listener.family == "INET" and listener.port.getHost().port != 0
        assert listener.fd == listener.port.fileno()
        assert listener.port not in reactor.getReaders()  # only the workers accept
        names = sorted(p.name for p in (tmp_path / "data").iterdir())
        assert names == ["password", "self-signed-cert.pem", "self-signed-key.pem"]
    finally:
        await listener.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_supervisor_refuses_a_port_in_use_and_unix_sockets(tmp_path: Path) -> None:
    from twisted.internet import reactor

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"--listen tcp:{port}:.*in use"):
            bind_shared(reactor, ["tcp:0:interface=127.0.0.1", f"tcp:{port}"])
    path = tmp_path / "s.sock"
    with pytest.raises(StartupError, match="only TCP"):
        bind_shared(reactor, [f"unix:{path}"])
    await deferLater(reactor, 0.01, lambda: None)  # the refused ports close


def test_supervisor_refuses_a_bad_password_setting(tmp_path: Path) -> None:
    from portproxy.config import Config

    config = Config(data_dir=str(tmp_path))
    with pytest.raises(StartupError, match="HASHED_PASSWORD"):
        prepare_shared(config, {"HASHED_PASSWORD": "plain"}, MemoryReactorClock())


# --- the worker side ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_adopted_listener_serves_the_inherited_socket_and_records_its_port() -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        bound.listen()
        bound.setblocking(False)
        port = bound.getsockname()[1]
        seen: list[int] = []
        wrapped = Factory.forProtocol(Protocol)
        listener = AdoptedListener(
            reactor,
            f"tcp:{port}",
            Factory.forProtocol(Protocol),
            seen.append,
            lambda factory: wrapped,
            fd=os.dup(bound.fileno()),
            family="INET",
        )
        listener.startService()
    try:
        assert seen == [port]
        assert listener.port.factory is wrapped
        assert listener.port.getHost().port == port
    finally:
        stopped = listener.stopService()
        assert stopped is not None
        await stopped


def test_worker_says_ready_and_stops_when_its_supervisor_is_gone() -> None:
    reactor = MemoryReactorClock()
    reactor.running = True
    read_end, write_end = os.pipe()
    parents = iter([4242, 4242, 1])
    duties = _WorkerDuties(
        reactor, WorkerSpec(1, 4242, write_end, ()), getppid=lambda: next(parents)
    )
    duties.startService()
    try:
        assert os.read(read_end, 100) == b"ready\n"
        assert os.read(read_end, 100) == b""  # closed: the supervisor sees it once
    finally:
        os.close(read_end)
    reactor.advance(1)
    assert not reactor.hasStopped
    reactor.advance(1)
    assert reactor.hasStopped
    duties.stopService()


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        WorkerSpec(1, 2, 3, (("tcp:9999", 3, "INET"),)).encode(),
    ],
)
def test_worker_refuses_a_handover_that_does_not_match_its_options(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from portproxy.config import Config

    with pytest.raises(SystemExit) as exit:
        build_worker_service(
            Config(auth="none", listen=("tcp:8080",)),
            environ={WORKER_ENV: value},
            reactor=MemoryReactorClock(),
        )
    assert exit.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and WORKER_ENV in lines[0]


# --- real processes -------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    drop = ("PASSWORD", "HASHED_PASSWORD", WORKER_ENV, "LISTEN_FDS", "LISTEN_PID")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry))
    return found


def _server_side_inode(port: int, client_port: int) -> int:
    """The inode of the accepted socket of this connection (0 while not accepted)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    for row in rows:
        local, remote = row[1].split(":"), row[2].split(":")
        if int(local[1], 16) == port and int(remote[1], 16) == client_port:
            return int(row[9])
    return 0


def _owner(inode: int, pids: set[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def _connection_to(
    worker: int, supervisor: Supervisor, timeout: float = 10
) -> socket.socket:
    """Open connections until one is accepted by C{worker}; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = socket.create_connection(("127.0.0.1", supervisor.port), timeout=5)
        inode = _until(
            partial(_server_side_inode, supervisor.port, client.getsockname()[1]),
            5,
            "an accept",
        )
        if _owner(inode, _children(supervisor.proc.pid)) == worker:
            return client
        client.close()
    raise AssertionError(f"worker {worker} accepted no connection")


def _ask(client: socket.socket, request: bytes) -> bytes:
    with client:
        client.sendall(request)
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    return data


class Supervisor:
    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log = tmp_path / "portproxy.log"
        self.args = [
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--data-dir", str(tmp_path / "data"), *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twisted", "--log-format", "text", "portproxy",
             *self.args],
            cwd=tmp_path,
            env=env or _env(),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.seen: set[int] = set()

    def workers(self, count: int = 2) -> set[int]:
        def ready() -> set[int] | None:
            assert self.proc.poll() is None, self.log.read_text()
            found = _children(self.proc.pid)
            return found if len(found) == count else None

        found: set[int] = _until(ready, 15, "the workers")
        self.seen |= found
        return found

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []

    def run(*args: str, **kwargs: Any) -> Supervisor:
        supervisor = Supervisor(tmp_path, *args, **kwargs)
        started.append(supervisor)
        return supervisor

    yield run
    for supervisor in started:
        supervisor.close()


@pytest.fixture
def upstream() -> Iterator[int]:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_both_workers_serve_and_accept_one_session(
    start: Callable[..., Supervisor], upstream: int, tmp_path: Path
) -> None:
    """No password configured: both workers use the one generated, so a session
    cookie works whichever worker a connection lands on."""
    supervisor = start("--workers", "2")
    workers = supervisor.workers()
    cookie = subprocess.run(
        [sys.executable, "-m", "twisted", "portproxy", *supervisor.args,
         "--print-auth-cookie"],
        cwd=tmp_path, env=_env(), capture_output=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    request = b"GET /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (
        upstream
    )
    for worker in workers:
        signed_in = _ask(
            _connection_to(worker, supervisor),
            request + b"Cookie: " + cookie + b"\r\n\r\n",
        )
        assert signed_in.startswith(b"HTTP/1.1 200 ") and signed_in.endswith(b"hello")
        anonymous = _ask(_connection_to(worker, supervisor), request + b"\r\n")
        assert not anonymous.startswith(b"HTTP/1.1 200 ")
    assert len(list((tmp_path / "data").glob("password*"))) == 1


def test_a_killed_worker_is_replaced_and_service_continues(
    start: Callable[..., Supervisor],
) -> None:
    supervisor = start("--workers", "2", "--auth", "none")
    workers = supervisor.workers()
    victim, survivor = sorted(workers)
    healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    _ask(_connection_to(victim, supervisor), healthz)
    os.kill(victim, signal.SIGKILL)
    answer = _ask(_connection_to(survivor, supervisor), healthz)
    assert answer.startswith(b"HTTP/1.1 200 ")

    def replaced() -> set[int] | None:
        now = _children(supervisor.proc.pid) - {victim}
        return now if len(now) == 2 else None

    (newcomer,) = _until(replaced, 15, "a new worker") - {survivor}
    supervisor.seen.add(newcomer)
    answer = _ask(_connection_to(newcomer, supervisor), healthz)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert f"(pid {victim}) was killed by signal 9" in supervisor.log.read_text()


def test_sigterm_stops_the_supervisor_and_every_worker(
    start: Callable[..., Supervisor],
) -> None:
    supervisor = start("--workers", "2", "--auth", "none")
    workers = supervisor.workers()
    for worker in workers:
        _connection_to(worker, supervisor).close()
    supervisor.proc.send_signal(signal.SIGTERM)
    assert supervisor.proc.wait(20) in (0, -signal.SIGTERM)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", supervisor.port), timeout=1).close()
    log = supervisor.log.read_text()
    assert "Traceback" not in log and "critical" not in log, log


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--workers", "none"], b"--workers"), (["--listen", "tcp:{port}"], b"in use")],
)
def test_bad_start_up_fails_once_with_one_line(
    tmp_path: Path, args: list[str], named: bytes
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "twisted", "portproxy", "--auth", "none",
             "--workers", "2", *[a.format(port=port) for a in args]],
            cwd=tmp_path, env=_env(), capture_output=True, timeout=30,
        )  # fmt: skip
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if b"error" in line]
    assert len(errors) == 1 and named in errors[0], out.stderr
    assert b"worker 1 started" not in out.stdout + out.stderr

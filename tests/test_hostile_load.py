"""Hostile load against a real ``twist portproxy`` process (bounded: seconds, 127.0.0.1).

The proxy runs as a subprocess so that its file descriptors (and its file limit) are
its own; the app is a threaded stdlib HTTP server in this process.
"""

from __future__ import annotations

import errno
import http.server
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portproxy.net.policy import FD_RESERVE
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "hostile-load-test"


# -- helpers --------------------------------------------------------------------------------


def _twist() -> list[str]:
    path = BIN / "twist"
    return [str(path)] if path.exists() else [sys.executable, "-m", "twisted"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PASSWORD", "HASHED_PASSWORD")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _raise_own_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if 0 <= hard < wanted:
        pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
    if 0 <= soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


class Proxy:
    """A ``twist portproxy`` subprocess, stopped with SIGTERM at the end."""

    def __init__(
        self, tmp: Path, args: list[str], env: dict[str, str], **popen: Any
    ) -> None:
        self.port = free_port()
        self.log = tmp / "portproxy.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                *_twist(),
                "portproxy",
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1",
                "--data-dir",
                str(tmp),
                "--access-log",
                "off",
                *args,
            ],
            cwd=tmp,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            **popen,
        )
        deadline = time.monotonic() + 20
        while not self.ready():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def ready(self) -> bool:
        """Whether the proxy answers /healthz."""
        try:
            return _request(self.port, b"/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read one Content-Length framed response from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return int(head.split(b" ")[1]), body


def _request(
    port: int, path: bytes, cookie: bytes = b"", timeout: float = 10
) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        cookie_line = b"Cookie: " + cookie + b"\r\n" if cookie else b""
        sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n"
            % (path, cookie_line)
        )
        return _read_response(sock)


class Attackers:
    """Many non-blocking connections that send a request head slowly, or nothing."""

    def __init__(self, port: int, count: int, *, bind: bool = False) -> None:
        self.socks: list[socket.socket] = []
        self.closed: dict[int, bytes] = {}
        self.started: set[int] = set()
        for i in range(count):
            s = socket.socket()
            s.setblocking(False)
            if bind:
                # One loopback address each (127.1.x.y): no address holds two.
                s.bind((f"127.1.{i // 250}.{i % 250 + 1}", 0))
            s.connect_ex(("127.0.0.1", port))
            self.socks.append(s)

    def trickle(self, first: bytes, then: bytes) -> None:
        """Send the start of a head once, then one byte more each call."""
        for i, s in enumerate(self.socks):
            if i in self.closed:
                continue
            try:
                s.send(then if i in self.started else first)
                self.started.add(i)
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno in (errno.ENOTCONN, errno.EAGAIN):
                    continue  # still in the listen queue
                self.closed[i] = b""

    def reap(self) -> None:
        """Note the connections the server closed (EOF or reset), with what it sent."""
        for i, s in enumerate(self.socks):
            if i in self.closed:
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.ENOTCONN:
                    continue
                self.closed[i] = b""
                continue
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                self.closed[i] = data

    @property
    def open(self) -> int:
        return len(self.socks) - len(self.closed)

    def close(self) -> None:
        for s in self.socks:
            s.close()


class Reconnecting:
    """Slow heads from many addresses, one connection each, reconnecting when cut.

    Runs in a thread of its own: each socket sends the start of a head once connected,
    and is replaced by a new one from the same address as soon as the server closes it.
    """

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.addresses = [f"127.3.{i // 250}.{i % 250 + 1}" for i in range(count)]
        self.selector = selectors.DefaultSelector()
        self.stopped = threading.Event()
        self.cuts = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for address in self.addresses:
            self._open(address)
        self.thread.start()

    def _open(self, address: str) -> None:
        s = socket.socket()
        s.setblocking(False)
        s.bind((address, 0))
        s.connect_ex(("127.0.0.1", self.port))
        self.selector.register(s, selectors.EVENT_WRITE, address)

    def _run(self) -> None:
        while not self.stopped.is_set():
            for key, events in self.selector.select(0.1):
                s: Any = key.fileobj
                if events & selectors.EVENT_WRITE:
                    try:
                        s.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    except OSError:
                        self._cut(s, key.data)
                        continue
                    self.selector.modify(s, selectors.EVENT_READ, key.data)
                    continue
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._cut(s, key.data)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()

    def _cut(self, s: socket.socket, address: str) -> None:
        self.selector.unregister(s)
        s.close()
        self.cuts += 1
        self._open(address)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.slow
def test_signed_in_user_is_served_while_slow_heads_exceed_the_cap(
    tmp_path: Path, app: int
) -> None:
    """2,000 slow heads against --max-connections 1500: the user still gets in at once."""
    _raise_own_fd_limit(2600)
    env = _env(PASSWORD=PASSWORD)
    cookie = subprocess.run(
        [*_twist(), "portproxy", "--print-auth-cookie", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    proxy = Proxy(tmp_path, ["--max-connections", "1500", "--header-timeout", "2"], env)
    attackers = Attackers(proxy.port, 2000)
    try:
        started = time.monotonic()
        while len(attackers.started) + len(attackers.closed) < 2000:
            attackers.trickle(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a")
            assert time.monotonic() - started < 10, "the attack could not connect"
            time.sleep(0.01)
        fds_under_attack = proxy.open_fds()
        held_during_user = []
        for _ in range(5):
            before = time.monotonic()
            status, body = _request(proxy.port, b"/proxy/%d/" % app, cookie)
            assert (status, body) == (200, b"hello")
            assert time.monotonic() - before < 2.0, "not served within --header-timeout"
            attackers.reap()
            held_during_user.append(attackers.open)
            attackers.trickle(b"", b"a")
        # The attack was still on while the user was served...
        assert min(held_during_user) >= 1000, held_during_user
        # ...and the proxy never held more than its cap (plus its own descriptors).
        assert fds_under_attack <= 1500 + FD_RESERVE
        # After the deadline every slow connection was closed by the server.
        deadline = time.monotonic() + 8
        while attackers.open and time.monotonic() < deadline:
            attackers.trickle(b"", b"a")
            attackers.reap()
            time.sleep(0.2)
        assert attackers.open == 0, f"{attackers.open} slow connections still open"
        assert (
            sum(1 for d in attackers.closed.values() if d.startswith(b"HTTP/1.1 408")) > 0
        )
        assert proxy.proc.poll() is None
    finally:
        attackers.close()
        proxy.stop()


@pytest.mark.slow
def test_under_ulimit_256_the_proxy_keeps_serving_and_accepts_again(
    tmp_path: Path, app: int
) -> None:
    """400 clients connect and hold under a 256-descriptor limit; nothing spins."""
    _raise_own_fd_limit(1024)

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proxy = Proxy(tmp_path, ["--auth", "none"], _env(), preexec_fn=limit_files)
    held = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    keepalive = b"GET /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % app
    held.sendall(keepalive)
    assert _read_response(held) == (200, b"hello")
    attackers = Attackers(proxy.port, 400, bind=True)
    try:
        time.sleep(1.0)  # let the proxy take what it can
        cpu_before, wall_before = proxy.cpu_seconds(), time.monotonic()
        for _ in range(6):
            held.sendall(keepalive)  # a connection it holds is still served
            assert _read_response(held) == (200, b"hello")
            time.sleep(0.5)
        cpu = proxy.cpu_seconds() - cpu_before
        wall = time.monotonic() - wall_before
        assert cpu < 0.5 * wall, f"the proxy used {cpu:.2f} s of CPU in {wall:.2f} s"
        attackers.reap()
        # Nobody was refused: those over the limit waited in the listen queue, and the
        # silent ones that made room for them got a 408 (oldest head first).
        assert all(d.startswith(b"HTTP/1.1 408 ") for d in attackers.closed.values())
        assert proxy.proc.poll() is None
        log = proxy.log.read_text()
        assert "--max-connections" in log  # the lowered cap is reported
    finally:
        attackers.close()
    held.close()
    try:
        # Once they left, new clients get in again.
        deadline = time.monotonic() + 15
        while True:
            try:
                assert _request(proxy.port, b"/proxy/%d/" % app, timeout=3) == (
                    200,
                    b"hello",
                )
                break
            except OSError:
                assert time.monotonic() < deadline, proxy.log.read_text()
    finally:
        proxy.stop()


@pytest.mark.slow
def test_signed_in_user_is_served_while_slow_heads_come_from_many_addresses(
    tmp_path: Path, app: int
) -> None:
    """300 addresses, one slow head each, reconnecting at once, against a cap of 100."""
    _raise_own_fd_limit(1024)
    proxy = Proxy(
        tmp_path,
        ["--auth", "none", "--max-connections", "100", "--header-timeout", "3"],
        _env(),
    )
    attack = Reconnecting(proxy.port, 300)
    try:
        attack.start()
        time.sleep(1.5)  # the cap is full and the listen queue holds the rest
        for _ in range(3):
            # A socket timeout of --header-timeout: served within it, or an error.
            status, body = _request(proxy.port, b"/proxy/%d/" % app, timeout=3)
            assert (status, body) == (200, b"hello")
        assert attack.cuts > 0  # the attack was on (and made room)
        assert proxy.proc.poll() is None
    finally:
        attack.stop()
        proxy.stop()


@pytest.mark.slow
@pytest.mark.parametrize("path", [b"/login", b"/proxy/1/"])
def test_signed_in_user_is_served_while_unsigned_bodies_trickle_in(
    tmp_path: Path, app: int, path: bytes
) -> None:
    """150 complete heads with 60000-byte bodies sent a byte at a time, cap 100."""
    _raise_own_fd_limit(1024)
    env = _env(PASSWORD=PASSWORD)
    cookie = subprocess.run(
        [*_twist(), "portproxy", "--print-auth-cookie", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    proxy = Proxy(tmp_path, ["--max-connections", "100", "--header-timeout", "3"], env)
    attackers = Attackers(proxy.port, 150, bind=True)
    head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\n" % path
    try:
        for _ in range(10):
            attackers.trickle(head, b"a")
            time.sleep(0.05)
        status, body = _request(proxy.port, b"/proxy/%d/" % app, cookie, timeout=3)
        assert (status, body) == (200, b"hello")
        assert proxy.proc.poll() is None
    finally:
        attackers.close()
        proxy.stop()

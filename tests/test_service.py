"""Start-up and shutdown as a user runs it: twist, twistd (foreground and daemon), .tac."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> list[str]:
    path = BIN / name
    if path.exists():
        return [str(path)]
    module = {"twist": "twisted", "twistd": "twisted.scripts.twistd"}[name]
    if name == "twistd":
        return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return [sys.executable, "-m", module]


def _twist_portproxy(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run C{twist portproxy ARGS} to completion (for options that exit at once)."""
    return subprocess.run(
        [*_tool("twist"), "portproxy", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        timeout=60,
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PASSWORD", "HASHED_PASSWORD")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _wait_healthy(port: int, timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                import json

                return dict(json.loads(r.read()))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    return proc.wait(timeout=timeout)


def test_help_works_from_another_directory(tmp_path: Path) -> None:
    out = subprocess.run(
        [*_tool("twist"), "portproxy", "--help"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert b"--proxy-domain" in out.stdout and b"--listen" in out.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--upstream-timeout", "soon"], b"--upstream-timeout"),
        (["--auth", "maybe"], b"--auth"),
        (["--abs-proxy-base-path", "/a b"], b"--abs-proxy-base-path"),
        (["--trusted-proxies", "10.0.0.0/33"], b"--trusted-proxies"),
        (["--proxy-domain", ""], b"--proxy-domain"),
        (["--password", "hunter2"], b"--password"),
        (["--max-body-size", "lots"], b"--max-body-size"),
        (["--header-timeout", "0"], b"--header-timeout"),
        (["--header-timeout", "nan"], b"--header-timeout"),
        (["--send-timeout", "-1"], b"--send-timeout"),
        (["--max-connections", "x"], b"--max-connections"),
        (["--max-connections", "0"], b"--max-connections"),
    ],
)
def test_bad_option_stops_startup_with_one_line_naming_it(
    tmp_path: Path, args: list[str], named: bytes
) -> None:
    out = _twist_portproxy(tmp_path, "--auth", "none", *args)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert named in lines[0]
    assert b"Traceback" not in out.stderr


def test_port_in_use_stops_startup_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                *_tool("twist"),
                "portproxy",
                "--auth",
                "none",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert b"Traceback" not in out.stderr
    assert b"Address already in use" in out.stderr
    assert f"--listen tcp:{port}".encode() in out.stderr


def test_twistd_foreground_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *_tool("twistd"),
            "-n",
            "--pidfile",
            "",
            "portproxy",
            "--auth",
            "none",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert _wait_healthy(port)["status"] == "expired"
        proc.send_signal(signal.SIGTERM)
        assert _wait_exit(proc) in (
            0,
            -signal.SIGTERM,
        )  # twistd re-raises the signal after a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_twistd_daemon_writes_pidfile_and_sigterm_stops_it(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "portproxy.pid"
    logfile = tmp_path / "portproxy.log"
    out = subprocess.run(
        [
            *_tool("twistd"),
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(logfile),
            "portproxy",
            "--auth",
            "none",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    pid = int(pidfile.read_text())
    try:
        _wait_healthy(port)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pidfile.exists()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert "portproxy listening on" in logfile.read_text()


def test_tac_example_runs_under_twistd(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *_tool("twistd"),
            "-n",
            "--pidfile",
            "",
            "-y",
            str(ROOT / "docs" / "portproxy.tac"),
        ],
        cwd=tmp_path,
        env=_env(PORTPROXY_LISTEN=f"tcp:{port}:interface=127.0.0.1", PORTPROXY_AUTH="none"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(port)
        proc.send_signal(signal.SIGTERM)
        assert _wait_exit(proc) in (
            0,
            -signal.SIGTERM,
        )  # twistd re-raises the signal after a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_sigterm_finishes_an_in_flight_request(tmp_path: Path) -> None:
    """A request waiting on its upstream is answered (not dropped) when told to stop."""
    import http.server
    import threading

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(1.0)
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"done")

        def log_message(self, *args: object) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    proc = subprocess.Popen(
        [
            *_tool("twist"),
            "portproxy",
            "--auth",
            "none",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(port)
        result: list[bytes] = []

        def fetch() -> None:
            url = f"http://127.0.0.1:{port}/proxy/{upstream.server_address[1]}/"
            with urllib.request.urlopen(url, timeout=10) as r:
                result.append(r.read())

        t = threading.Thread(target=fetch)
        t.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        t.join(10)
        assert result == [b"done"]
        assert _wait_exit(proc) in (
            0,
            -signal.SIGTERM,
        )  # twistd re-raises the signal after a clean stop
    finally:
        upstream.shutdown()
        upstream.server_close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--print-url", "5173"], b"http://localhost:8080/proxy/5173/"),
        (
            ["--proxy-domain", "*.dev.example.com", "--print-url", "5173"],
            b"http://5173.dev.example.com:8080/",
        ),
        (
            [
                "--proxy-domain",
                "dev-{{port}}.example.com",
                "--listen",
                "ssl:8443:privateKey=k.pem",
                "--print-url",
                "3000",
            ],
            b"https://dev-3000.example.com:8443/",
        ),
    ],
)
def test_print_url_names_the_public_address_of_a_port(
    tmp_path: Path, args: list[str], expected: bytes
) -> None:
    out = _twist_portproxy(tmp_path, "--auth", "none", *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected + b"\n"


def test_print_url_refuses_a_bad_port(tmp_path: Path) -> None:
    out = _twist_portproxy(tmp_path, "--auth", "none", "--print-url", "70000")
    assert out.returncode != 0
    assert b"--print-url" in out.stderr


def test_startup_logs_the_url_template(tmp_path: Path) -> None:
    from twisted.logger import globalLogPublisher

    from portproxy.config import Config
    from portproxy.runtime.app import build_service

    seen: list[str] = []

    def observer(event: dict[str, object]) -> None:
        if "template" in event:
            seen.append(str(event["template"]))

    globalLogPublisher.addObserver(observer)
    try:
        build_service(
            Config(auth="none", proxy_domains=("{{port}}.example.com",)),
            environ={},
            reactor=_memory_reactor(),
        )
    finally:
        globalLogPublisher.removeObserver(observer)
    assert seen == ["http://{{port}}.example.com:8080/"]  # the listener's port


def _memory_reactor() -> object:
    from twisted.internet.testing import MemoryReactorClock

    return MemoryReactorClock()

"""The parts of the browser tests that are not fixtures: finding Chromium, running
portproxy and apps as subprocesses, and saving screenshots for the docs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]
DOCS_IMAGES = REPO / "docs" / "images"

# Every *.test host (a name RFC 6761 reserves for testing) resolves to loopback inside
# the browser, so a test can use a proxy domain such as dev.example.test: unlike
# *.localhost, which dev servers (Vite) trust by default, it proves the Host handling.
HOST_RESOLVER_RULES = "MAP *.test 127.0.0.1, MAP test 127.0.0.1"

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start.
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules={HOST_RESOLVER_RULES}",
]

# Playwright's per-action wait: generous, since CI shares two cores among several jobs;
# nothing asserts on speed, this only bounds a hang.
ACTION_TIMEOUT_MS = 15_000
# How long a subprocess may take to listen on its port.
START_TIMEOUT = 30.0

# Environment that would change what portproxy does under test: removed unless a test
# passes it explicitly.
_PORTPROXY_ENV = (
    "PASSWORD",
    "HASHED_PASSWORD",
    "PORTPROXY_DISABLE_PROXY",
    "CS_DISABLE_PROXY",
)


def find_chromium() -> str | None:
    """The Chromium binary to drive, or None: PORTPROXY_TEST_CHROMIUM, then the Debian
    path, then `chromium` on PATH."""
    configured = os.environ.get("PORTPROXY_TEST_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@dataclass
class Process:
    """A subprocess this test started, listening on C{port}; its output goes to C{log_path}."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        """Everything the process has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the process group this process leads, then SIGKILL after 5 s."""
        if self.popen.poll() is not None:
            return
        # start_new_session made the child the leader of its own group: the group id is
        # the child's own pid, so this reaches it and its children (npm, node workers)
        # and nothing else.
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        except ProcessLookupError:
            pass


def _accepts(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(0.5)
        try:
            s.connect((host, port))
        except OSError:
            return False
        return True


@dataclass
class Processes:
    """Starts portproxy and app subprocesses for one test and stops them all at teardown."""

    workdir: Path
    started: list[Process] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        hosts: Sequence[str] = ("127.0.0.1",),
    ) -> Process:
        """Run C{argv} and wait until it accepts connections on C{port} at one of
        C{hosts}; fail with its log if it exits or does not listen in time."""
        log_path = self.workdir / f"{name}-{port}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, port, log_path)
        self.started.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        while not any(_accepts(host, port) for host in hosts):
            if popen.poll() is not None:
                pytest.fail(
                    f"{name} exited with {popen.returncode} before listening on {port}:\n"
                    + process.log()
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not listen on {port} in time:\n" + process.log())
            time.sleep(0.05)
        return process

    def portproxy(self, *args: str, env: Mapping[str, str] | None = None) -> Process:
        """Start `twist portproxy ARGS` on a free 127.0.0.1 port with its own data dir;
        C{env} adds variables (PASSWORD for sign-in tests) to a clean environment."""
        port = free_port()
        environ = {k: v for k, v in os.environ.items() if k not in _PORTPROXY_ENV}
        environ.update(env or {})
        argv = [
            sys.executable,
            "-m",
            "twisted",
            "--log-format",
            "text",
            "portproxy",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--data-dir",
            str(self.workdir / f"portproxy-data-{port}"),
            *args,
        ]
        return self.start("portproxy", argv, port=port, cwd=REPO, env=environ)

    def static_app(self, name: str, html: str) -> Process:
        """Serve C{html} as / with Python's http.server on a free 127.0.0.1 port."""
        root = self.workdir / f"{name}-root"
        root.mkdir()
        (root / "index.html").write_text(html, encoding="utf-8")
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(root),
            str(port),
        ]
        return self.start(name, argv, port=port)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


def save_screenshot(page: Page, name: str) -> Path | None:
    """Save C{page} as docs/images/NAME.png when PORTPROXY_SCREENSHOTS=1, else do nothing.

    The docs' pictures are taken by the same tests that prove what they show, on request
    only, so an ordinary test run never rewrites files in the tree:
    `PORTPROXY_SCREENSHOTS=1 python -m pytest tests/browser -k NAME`.
    """
    if os.environ.get("PORTPROXY_SCREENSHOTS") != "1":
        return None
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    path = DOCS_IMAGES / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

"""The docs keep the promises a newcomer's walkthrough found broken.

- every code-server flag and environment variable that concerns the proxy, and every
  option portproxy has, appears in docs/migrating.rst's table;
- an C{ExecStart=} line quoted in the docs is the shipped unit's, or the shipped one
  plus options that the sentence before it says to add;
- security.rst's nginx sample, run by a real nginx in front of a real portproxy on a
  port other than 443, keeps WebSocket upgrades working (skipped without nginx).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from portproxy.tap import Options
from tests.support import free_port
from tests.test_docs import (
    _env,
    _signed_value,
    _stop,
    _wait_healthy,
    commands_in,
    literal_block_lines,
    systemd_exec_start,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: code-server's proxy-related flags and variables (src/node/cli.ts at 88c2b7432e93).
CODE_SERVER = [
    "--bind-addr",
    "--host",
    "--port",
    "$CODE_SERVER_HOST",
    "$PORT",
    "--socket",
    "--socket-mode",
    "--socket-fd",
    "config.yaml",
    "$CODE_SERVER_CONFIG",
    "--auth",
    "$PASSWORD",
    "$HASHED_PASSWORD",
    "--password",
    "--hashed-password",
    "--proxy-domain",
    "--disable-proxy",
    "$CS_DISABLE_PROXY",
    "--skip-auth-preflight",
    "--abs-proxy-base-path",
    "--trusted-origins",
    "--cookie-suffix",
    "$CODE_SERVER_COOKIE_SUFFIX",
    "--cert",
    "--cert-key",
    "--cert-host",
    "--user-data-dir",
    "$VSCODE_PROXY_URI",
    "--app-name",
    "--welcome-text",
    "--github-auth",
]


def _migration_table() -> str:
    text = (DOCS / "migrating.rst").read_text(encoding="utf-8")
    start = text.index(".. list-table::")
    end = text.index("\n\n", text.index("   * - (none)", start))
    return text[start:end]


def _first_column(table: str) -> str:
    return "\n".join(re.findall(r"^   \* - (.*)$", table, re.MULTILINE))


def test_migration_table_names_every_code_server_proxy_setting() -> None:
    column = _first_column(_migration_table())
    missing = [
        name
        for name in CODE_SERVER
        if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", column)
    ]
    assert missing == []
    # The bare flag that means "self-signed" in code-server is its own row.
    assert "``--cert`` (no value" in column


def test_migration_table_names_every_portproxy_option() -> None:
    table = _migration_table()
    options = {o.rstrip("=") for o in Options().longOpt} - {"help", "version"}
    missing = sorted(
        o for o in options if f"--{o}`" not in table and f"--{o} " not in table
    )
    assert missing == []


def _exec_start_lines(text: str) -> list[tuple[str, str]]:
    """Each quoted C{ExecStart=} line with the paragraph that introduces it."""
    paragraphs = text.split("\n\n")
    return [
        (" ".join(paragraph.split()), paragraphs[i - 1])
        for i, paragraph in enumerate(paragraphs)
        if paragraph.strip().startswith("ExecStart=")
    ]


def test_quoted_unit_lines_are_the_shipped_unit_or_say_what_to_add() -> None:
    shipped = systemd_exec_start()
    quoted = [
        (path.name, line, before)
        for path in sorted(DOCS.glob("*.rst"))
        for line, before in _exec_start_lines(path.read_text(encoding="utf-8"))
    ]
    assert any(name == "workers.rst" for name, _, _ in quoted)
    for name, line, before in quoted:
        argv = shlex.split(line.removeprefix("ExecStart="))
        assert argv[: len(shipped)] == shipped, f"{name}: {line}"
        extra = shlex.join(argv[len(shipped) :])
        if extra:
            # Not in the shipped unit: the text must say to add it.
            assert f"add ``{extra}``" in " ".join(before.split()), f"{name}: {before}"


# -- the nginx sample of security.rst, run ------------------------------------------------


def _code_blocks(text: str, language: str) -> list[str]:
    """The bodies of the C{.. code-block:: LANGUAGE} blocks of a reST document, dedented."""
    blocks = []
    lines = text.splitlines()
    for at, line in enumerate(lines):
        if line.strip() != f".. code-block:: {language}":
            continue
        body = []
        for current in lines[at + 1 :]:
            if current.strip() and not current.startswith(" "):
                break
            body.append(current)
        blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
    return blocks


def _nginx_config(sample: str, listen: int, portproxy: int, scratch: Path) -> str:
    """security.rst's nginx sample on a plain port of its own, in a scratch prefix."""
    kept = []
    for line in sample.splitlines():
        stripped = line.strip()
        if stripped.startswith("ssl_"):
            continue  # the certificate files of the sample do not exist here
        if stripped.startswith("listen "):
            line = f"        listen 127.0.0.1:{listen};"
        line = line.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{portproxy}")
        kept.append(line)
    temp = " ".join(
        f"{kind}_temp_path {scratch / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"pid {scratch / 'nginx.pid'};\nerror_log {scratch / 'error.log'};\n"
        "events {}\n"
        f"http {{\n access_log off;\n {temp}\n" + "\n".join(kept) + "\n}\n"
    )


def _upgrade_status(port: int, host: str, origin: str, cookie: str, path: str) -> int:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request.encode())
        head = s.recv(4096)
    return int(head.split(b" ", 2)[1])


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_sample_keeps_websockets_working_off_port_443(tmp_path: Path) -> None:
    """The sample's Host header keeps the port, so an upgrade through nginx on a port
    other than 443 passes portproxy's Origin check (code-server's rule: Origin = Host).

    Nothing listens behind C{/proxy/<port>/}, so a passed check answers 502; the check
    refusing it answers 403.
    """
    text = (DOCS / "security.rst").read_text(encoding="utf-8")
    [sample] = _code_blocks(text, "nginx")[:1]
    [command] = [
        c
        for line in literal_block_lines(text)
        for c in commands_in(line, "security.rst")
        if "--trusted-proxies" in c.args
    ][:1]
    assert "$http_host" in sample

    home = tmp_path / "home"
    home.mkdir()
    proxy_port, nginx_port, dead = free_port(), free_port(), free_port()
    args = list(command.args)
    at = args.index("--listen")
    args[at + 1] = f"tcp:{proxy_port}:interface=127.0.0.1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "twisted", "--log-format", "text", "portproxy", *args],
        cwd=tmp_path,
        env=_env(home, PASSWORD="nginx-test"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    nginx = None
    try:
        _wait_healthy(proxy_port, proc)
        scratch = tmp_path / "nginx"
        scratch.mkdir()

        def start_nginx(config: str) -> subprocess.Popen[bytes]:
            (scratch / "nginx.conf").write_text(config)
            started = subprocess.Popen(
                ["nginx", "-p", str(scratch), "-c", str(scratch / "nginx.conf")]
                + ["-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 20
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", nginx_port)) == 0:
                        return started
                if started.poll() is not None or time.monotonic() > deadline:
                    log = (scratch / "error.log").read_text()
                    raise AssertionError(f"nginx did not start: {log}")
                time.sleep(0.1)

        cookie = "portproxy-session=" + _signed_value("nginx-test")
        host = f"dev.example.com:{nginx_port}"
        origin = f"http://{host}"
        path = f"/proxy/{dead}/"

        nginx = start_nginx(_nginx_config(sample, nginx_port, proxy_port, scratch))
        assert _upgrade_status(nginx_port, host, origin, cookie, path) == 502
        nginx.terminate()
        nginx.wait(20)

        # The sample as it was ($host drops the port): the upgrade is refused.
        dropped = sample.replace("$http_host", "$host")
        nginx = start_nginx(_nginx_config(dropped, nginx_port, proxy_port, scratch))
        assert _upgrade_status(nginx_port, host, origin, cookie, path) == 403
    finally:
        if nginx is not None and nginx.poll() is None:
            nginx.terminate()
            nginx.wait(20)
        _stop(proc)

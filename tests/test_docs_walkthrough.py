"""The docs keep the promises a newcomer's walkthrough found broken.

- every code-server flag and environment variable that concerns the proxy, and every
  option portproxy has, appears in docs/migrating.rst's table;
- an C{ExecStart=} line quoted in the docs is the shipped unit's, or the shipped one
  plus options that the sentence before it says to add.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from portproxy.tap import Options
from tests.test_docs import systemd_exec_start

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

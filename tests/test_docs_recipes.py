"""docs/recipes.rst works: each marked recipe runs against the real app through portproxy.

A recipe block is the code block that follows a C{.. recipe: NAME} comment in
docs/recipes.rst. The tests take the commands, settings and configuration files from
those blocks (the documented port numbers replaced by free ones), start the app and a
real C{twist portproxy} subprocess with the documented options, and check that the app's
pages answer through the proxy. So the docs cannot drift from what works.

Where the machine lacks an app the test is skipped with the reason, never passed:

- Django, Flask, Jupyter: the interpreter in C{PORTPROXY_RECIPE_PYTHON} (default: the one
  running the tests) must import C{django}, C{flask}, C{jupyter_server} (and
  C{ipykernel} for the kernel test); the apps run as its subprocesses, so they need not
  be installed in portproxy's own environment;
- Vite: C{tests/apps/vite/node_modules} (or the C{node_modules} directory named by
  C{PORTPROXY_RECIPE_VITE}) must hold C{vite}, and C{npx} must be on the C{PATH}.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port
from tests.test_docs import _env, _signed_value, commands_in

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "docs" / "recipes.rst"
PASSWORD = "recipe-test"
DOMAIN = "dev.example.com"

#: Starts an app: argv, the port it will listen on, its directory and environment.
StartApp = Callable[[list[str], int, Path, dict[str, str]], None]

_MARKER = re.compile(r"^\.\. recipe: (\S+)\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\. code-block::")


# -- reading the recipes ------------------------------------------------------------------


def recipe_blocks(text: str) -> dict[str, str]:
    """Each C{.. recipe: NAME} comment's following code block, dedented, by NAME."""
    lines = text.splitlines()
    blocks: dict[str, str] = {}
    for at, line in enumerate(lines):
        marker = _MARKER.match(line)
        if marker is None:
            continue
        i = at + 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        assert i < len(lines) and _DIRECTIVE.match(lines[i]), f"{line}: no code block"
        i += 1
        while i < len(lines) and lines[i].strip().startswith(":"):
            i += 1  # the directive's options
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            body.append(lines[i])
            i += 1
        name = marker.group(1)
        assert name not in blocks, f"recipe {name} marked twice"
        blocks[name] = textwrap.dedent("\n".join(body)).strip() + "\n"
    return blocks


BLOCKS = recipe_blocks(RECIPES.read_text(encoding="utf-8"))


def block(name: str, **ports: int) -> str:
    """Recipe C{name} with each documented port (a key, C{p8000}) replaced by its value."""
    text = BLOCKS[name]
    for documented, port in ports.items():
        text = re.sub(rf"\b{documented.removeprefix('p')}\b", str(port), text)
    return text


def one_command(name: str, **ports: int) -> list[str]:
    """The single shell command of a console recipe, as an argument list."""
    lines = [x for x in block(name, **ports).splitlines() if x.strip()]
    assert len(lines) == 1, f"recipe {name} should be one command: {lines}"
    return shlex.split(lines[0], comments=True)


def portproxy_args(name: str) -> list[str]:
    """The options of the C{twist portproxy} command in recipe C{name}."""
    found = commands_in(BLOCKS[name].strip(), RECIPES.name)
    assert len(found) == 1, f"recipe {name} should hold one twist portproxy command"
    return list(found[0].args)


def test_every_recipe_the_tests_run_is_marked_in_the_docs() -> None:
    assert set(BLOCKS) == {
        "rewrite-host",
        "vite",
        "vite-absproxy",
        "jupyter",
        "jupyter-absproxy",
        "django",
        "django-settings",
        "django-proxy-settings",
        "django-proxy-urls",
        "flask",
    }
    assert "--rewrite-host" in portproxy_args("rewrite-host")


def test_recipe_blocks_keep_their_indentation() -> None:
    text = (
        "x\n\n.. recipe: a\n\n.. code-block:: python\n   :caption: c\n\n"
        "    if x:\n        y()\n\n    z()\nafter\n"
    )
    assert recipe_blocks(text) == {"a": "if x:\n    y()\n\nz()\n"}


# -- running things -----------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _tls_client() -> ssl.SSLContext:
    """A client context that accepts portproxy's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_opener = urllib.request.build_opener(
    _NoRedirect(), urllib.request.HTTPSHandler(context=_tls_client())
)


@dataclass
class Proxy:
    """A running C{twist portproxy} and a signed-in cookie for it."""

    port: int
    cookie: str
    scheme: str = "http"

    def get(
        self,
        path: str,
        host: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Request C{path} from portproxy with this C{Host} (its port appended)."""
        sent = {"Host": f"{host}:{self.port}", "Cookie": self.cookie, **(headers or {})}
        url = f"{self.scheme}://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, data=data, headers=sent)
        try:
            with _opener.open(request, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def websocket(self, path: str, host: str, headers: dict[str, str]) -> int:
        """The status portproxy answers a WebSocket upgrade with."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Cookie: {self.cookie}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as raw:
            s = raw
            if self.scheme == "https":
                s = _tls_client().wrap_socket(raw, server_hostname="localhost")
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
        return int(head.split(b" ", 2)[1])


#: The proxies the tests use: the recipe's command, the same without
#: C{--rewrite-host}, and the recipe's command serving TLS (a self-signed certificate).
_PROXIES: dict[str, tuple[str, bool, list[str]]] = {
    "rewrite": ("http", False, []),
    "plain": ("http", True, []),
    "tls": ("https", False, ["--self-signed"]),
}


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proxy]]:
    """Real C{twist portproxy} subprocesses, signed in with one cookie (see L{_PROXIES})."""
    home = tmp_path_factory.mktemp("proxy-home")
    cookie = "portproxy-session=" + _signed_value(PASSWORD)
    documented = portproxy_args("rewrite-host")
    running: dict[str, Proxy] = {}
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for name, (scheme, without_rewrite, extra) in _PROXIES.items():
            args = [
                a for a in documented if not (without_rewrite and a == "--rewrite-host")
            ]
            port = free_port()
            log = home / f"portproxy-{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "twisted", "--log-format", "text", "portproxy"]
                    + [*args, *extra, "--listen", f"tcp:{port}:interface=127.0.0.1"],
                    cwd=home,
                    env=_env(home, PASSWORD=PASSWORD),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            processes.append((proc, log))
            proxy = Proxy(port, cookie, scheme)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if proxy.get("/healthz", "127.0.0.1")[0] == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"portproxy did not start: {log.read_text()}")
                time.sleep(0.1)
            running[name] = proxy
        yield running
    finally:
        for proc, _ in processes:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _recipe_python() -> str:
    return os.environ.get("PORTPROXY_RECIPE_PYTHON") or sys.executable


def _python_with(module: str) -> str:
    python = _recipe_python()
    found = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, timeout=60
    )
    if found.returncode != 0:
        pytest.skip(f"{python} cannot import {module} (set PORTPROXY_RECIPE_PYTHON)")
    return python


def _listening(port: int) -> bool:
    for family, address in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]:
        with socket.socket(family) as s:
            s.settimeout(1)
            if s.connect_ex((address, port)) == 0:
                return True
    return False


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[StartApp]:
    """Start an app's command; it is stopped (and its log shown on failure) afterwards."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(argv: list[str], port: int, cwd: Path, env: dict[str, str]) -> None:
        log = tmp_path / f"app-{len(started)}.log"
        with log.open("wb") as out:
            # A session of its own: `npx vite` and `jupyter` start children that a
            # signal to the parent alone would leave running; the group is stopped.
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append((proc, log))
        deadline = time.monotonic() + 90
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{argv} did not listen:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    yield start
    for proc, log in started:
        _stop_group(proc)
        sys.stderr.write(f"--- {log.name}\n{log.read_text()[-3000:]}\n")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop C{proc} and every process of its session (it was started as a leader)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children that ignored SIGTERM get SIGKILL.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break


def _app_env(tmp_path: Path, python: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PASSWORD", "LISTEN_"))}
    env["HOME"] = str(tmp_path)
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _with_python(argv: list[str], python: str) -> list[str]:
    """A documented C{python ...} command, run by the recipe interpreter."""
    return [python, *argv[1:]] if argv[0] in ("python", "python3") else argv


def _html_links(page: bytes, suffix: str) -> list[str]:
    return re.findall(rf'(?:href|src)="([^"]*{re.escape(suffix)})"', page.decode())


# -- Vite ---------------------------------------------------------------------------------


@pytest.fixture
def vite(tmp_path: Path) -> Path:
    """A copy of tests/apps/vite sharing its node_modules; skip without Vite or npx."""
    modules = Path(
        os.environ.get("PORTPROXY_RECIPE_VITE") or ROOT / "tests/apps/vite/node_modules"
    )
    if not (modules / "vite" / "package.json").is_file():
        pytest.skip(f"no Vite in {modules} (npm ci in tests/apps/vite)")
    if shutil.which("npx") is None:
        pytest.skip("npx is not on the PATH")
    app = tmp_path / "vite-app"
    app.mkdir()
    for name in ("index.html", "main.js", "package.json"):
        shutil.copy(ROOT / "tests/apps/vite" / name, app / name)
    (app / "node_modules").symlink_to(modules.resolve())
    return app


def _start_vite(start_app: StartApp, app: Path, port: int, config: str | None) -> None:
    """The documented C{npx vite} command, with C{config} as vite.config.js.

    Vite writes its dependency cache into node_modules/.vite, which is shared: a test
    configuration, which imports the documented one, moves it into the copy.
    """
    if config is not None:
        (app / "vite.config.js").write_text(config)
        base = "import documented from './vite.config.js';\n"
    else:
        base = "const documented = {};\n"
    (app / "vite.test.config.js").write_text(
        base + "export default { ...documented, cacheDir: '.vite-cache' };\n"
    )
    argv = one_command("vite", p5173=port)
    assert argv[:2] == ["npx", "vite"], argv
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSWORD")}
    env["HOME"] = str(app.parent)
    start_app([*argv, "--strictPort", "--config", "vite.test.config.js"], port, app, env)


def test_vite_on_a_proxy_host_needs_no_configuration_with_rewrite_host(
    vite: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    port = free_port()
    _start_vite(start_app, vite, port, None)
    host = f"{port}.{DOMAIN}"
    html = {"Accept": "text/html"}

    status, _, page = proxies["rewrite"].get("/", host, html)
    assert status == 200, page[:500]
    assert b"/@vite/client" in page and b"/main.js" in page
    status, _, script = proxies["rewrite"].get("/main.js", host)
    assert status == 200 and b"vite module ran" in script
    # The hot-module-reloading socket: the client's own token, the page's own Origin.
    status, _, client = proxies["rewrite"].get("/@vite/client", host)
    assert status == 200
    token = re.search(rb'wsToken = "([^"]+)"', client)
    assert token is not None, client[:2000]
    origin = f"http://{host}:{proxies['rewrite'].port}"
    ws_path = "/?token=" + urllib.parse.quote(token.group(1).decode())
    upgrade = {"Origin": origin, "Sec-WebSocket-Protocol": "vite-hmr"}
    assert proxies["rewrite"].websocket(ws_path, host, upgrade) == 101

    # Without the option Vite refuses the public host: what --rewrite-host saves.
    status, _, page = proxies["plain"].get("/", host, html)
    assert status == 403 and b"Blocked request" in page


def test_vite_on_absproxy_with_rewrite_host_needs_only_its_base(
    vite: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    port = free_port()
    config = block("vite-absproxy", p5173=port)
    assert "allowedHosts" not in config
    _start_vite(start_app, vite, port, config)

    status, _, page = proxies["rewrite"].get(f"/absproxy/{port}/", DOMAIN)
    assert status == 200, page[:500]
    assert f"/absproxy/{port}/@vite/client".encode() in page
    status, _, script = proxies["rewrite"].get(f"/absproxy/{port}/main.js", DOMAIN)
    assert status == 200 and b"vite module ran" in script


# -- Jupyter ------------------------------------------------------------------------------


def _start_jupyter(
    start_app: StartApp, tmp_path: Path, python: str, argv: list[str], port: int
) -> dict[str, str]:
    """Run a documented C{jupyter lab ...} command; the headers that authenticate to it.

    Without JupyterLab the same options go to C{jupyter server}, the server JupyterLab
    runs on. The test adds a known token (Jupyter generates one otherwise), keeps
    Jupyter's files in the test's directory, and C{--allow-root} when run as root.
    """
    assert argv[:2] == ["jupyter", "lab"], argv
    lab = subprocess.run([python, "-c", "import jupyterlab"], capture_output=True)
    app = "jupyterlab" if lab.returncode == 0 else "jupyter_server"
    token = "recipe-token"
    env = _app_env(tmp_path, python)
    for name in ("CONFIG", "DATA", "RUNTIME"):
        env[f"JUPYTER_{name}_DIR"] = str(tmp_path / f"jupyter-{name.lower()}")
    extra = [
        f"--IdentityProvider.token={token}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={tmp_path}",
    ]
    if os.geteuid() == 0:
        extra.append("--allow-root")
    start_app([python, "-m", app, *argv[2:], *extra], port, tmp_path, env)
    return {"Authorization": f"token {token}"}


def test_jupyter_on_a_proxy_host_needs_no_configuration_with_rewrite_host(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    python = _python_with("jupyter_server")
    port = free_port()
    auth = _start_jupyter(
        start_app, tmp_path, python, one_command("jupyter", p8888=port), port
    )
    host = f"{port}.{DOMAIN}"

    status, _, body = proxies["rewrite"].get("/api/status", host, auth)
    assert status == 200, body[:500]
    # Jupyter's WebSockets check Origin against Host; the page's own Origin passes.
    origin = {"Origin": f"http://{host}:{proxies['rewrite'].port}", **auth}
    assert proxies["rewrite"].websocket("/api/events/subscribe", host, origin) == 101

    # Without the option Jupyter blocks the non-local Host.
    assert proxies["plain"].get("/api/status", host, auth)[0] == 403


def test_jupyter_kernel_opens_on_a_proxy_host_with_rewrite_host(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    python = _python_with("jupyter_server")
    _python_with("ipykernel")
    port = free_port()
    argv = one_command("jupyter", p8888=port)
    auth = _start_jupyter(start_app, tmp_path, python, argv, port)
    host = f"{port}.{DOMAIN}"
    proxy = proxies["rewrite"]
    origin = f"http://{host}:{proxy.port}"

    sent = {**auth, "Origin": origin, "Content-Type": "application/json"}
    status, _, body = proxy.get("/api/kernels", host, sent, b"{}")
    assert status == 201, body[:500]
    kernel = json.loads(body)["id"]
    channels = f"/api/kernels/{kernel}/channels"
    assert proxy.websocket(channels, host, {"Origin": origin, **auth}) == 101


def test_jupyter_on_absproxy_runs_with_its_documented_options(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    python = _python_with("jupyter_server")
    port = free_port()
    argv = one_command("jupyter-absproxy", p8888=port)
    auth = _start_jupyter(start_app, tmp_path, python, [*argv, f"--port={port}"], port)

    status, _, body = proxies["plain"].get(f"/absproxy/{port}/api/status", DOMAIN, auth)
    assert status == 200, body[:500]
    origin = {"Origin": f"http://{DOMAIN}:{proxies['plain'].port}", **auth}
    path = f"/absproxy/{port}/api/events/subscribe"
    assert proxies["plain"].websocket(path, DOMAIN, origin) == 101


# -- Django -------------------------------------------------------------------------------


def _django_project(tmp_path: Path, python: str) -> Path:
    """A stock C{django-admin startproject mysite .}, its database migrated."""
    project = tmp_path / "site"
    project.mkdir()
    env = _app_env(tmp_path, python)
    for argv in (
        [python, "-m", "django", "startproject", "mysite", "."],
        [python, "manage.py", "migrate", "-v", "0"],
    ):
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
    return project


def _start_django(
    start_app: StartApp, project: Path, python: str, port: int, tmp_path: Path
) -> None:
    argv = _with_python(one_command("django", p8000=port), python)
    # The autoreloader forks a child; without it the test stops the server it started.
    start_app([*argv, "--noreload"], port, project, _app_env(tmp_path, python))


def _admin_login_works(proxy: Proxy, prefix: str, host: str, origin: str) -> None:
    """The admin's login page, its stylesheet and a form post, through the proxy."""
    status, headers, _ = proxy.get(f"{prefix}/admin/", host, {"Accept": "text/html"})
    assert status == 302
    assert headers["location"] == f"{prefix}/admin/login/?next={prefix}/admin/"

    status, headers, page = proxy.get(f"{prefix}/admin/login/", host)
    assert status == 200, page[:500]
    stylesheets = _html_links(page, "base.css")
    assert stylesheets == [f"{prefix}/static/admin/css/base.css"]
    assert proxy.get(stylesheets[0], host)[0] == 200

    csrf_cookie = re.search(r"csrftoken=([^;]+)", headers["set-cookie"])
    csrf_field = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf_cookie and csrf_field
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": csrf_field.group(1).decode(),
            "username": "nobody",
            "password": "wrong",
        }
    ).encode()
    sent = {
        "Cookie": f"{proxy.cookie}; csrftoken={csrf_cookie.group(1)}",
        "Origin": origin,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    status, _, page = proxy.get(f"{prefix}/admin/login/", host, sent, form)
    # Past the CSRF check (a 403 otherwise): the form answers that the login is wrong.
    assert status == 200 and b"Please enter the correct username" in page, page[:800]


def test_django_on_a_proxy_host_needs_no_configuration_with_rewrite_host(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    python = _python_with("django")
    project = _django_project(tmp_path, python)
    port = free_port()
    _start_django(start_app, project, python, port, tmp_path)
    host = f"{port}.{DOMAIN}"
    proxy = proxies["rewrite"]

    _admin_login_works(proxy, "", host, f"http://{host}:{proxy.port}")
    # Without the option Django refuses the public host (DisallowedHost).
    assert proxies["plain"].get("/admin/login/", host)[0] == 400


def test_django_form_posts_over_tls_with_rewrite_host_need_no_proxy_ssl_header(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    """The CSRF check that fails over HTTPS without C{SECURE_PROXY_SSL_HEADER}: with
    C{--rewrite-host} the page's https Origin reaches Django as C{http://localhost:P},
    the origin Django believes it serves."""
    python = _python_with("django")
    project = _django_project(tmp_path, python)
    port = free_port()
    _start_django(start_app, project, python, port, tmp_path)
    host = f"{port}.{DOMAIN}"
    proxy = proxies["tls"]

    _admin_login_works(proxy, "", host, f"https://{host}:{proxy.port}")


def test_django_settings_for_a_proxy_host_without_rewrite_host(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    python = _python_with("django")
    project = _django_project(tmp_path, python)
    with (project / "mysite" / "settings.py").open("a") as f:
        f.write("\n" + block("django-settings"))
    port = free_port()
    _start_django(start_app, project, python, port, tmp_path)
    host = f"{port}.{DOMAIN}"
    proxy = proxies["plain"]

    _admin_login_works(proxy, "", host, f"http://{host}:{proxy.port}")


def test_django_on_the_proxy_route_serves_its_static_files(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    python = _python_with("django")
    project = _django_project(tmp_path, python)
    port = free_port()
    with (project / "mysite" / "settings.py").open("a") as f:
        f.write("\n" + block("django-proxy-settings", p8000=port))
    with (project / "mysite" / "urls.py").open("a") as f:
        f.write("\n" + block("django-proxy-urls", p8000=port))
    _start_django(start_app, project, python, port, tmp_path)
    proxy = proxies["plain"]

    _admin_login_works(
        proxy, f"/proxy/{port}", "127.0.0.1", f"http://127.0.0.1:{proxy.port}"
    )


# -- Flask --------------------------------------------------------------------------------

_FLASK_ROUTES = """
from flask import redirect, url_for


@app.route("/where")
def where():
    return url_for("where") + " " + url_for("where", _external=True)


@app.route("/go")
def go():
    return redirect(url_for("where"))
"""


def test_flask_with_proxyfix_writes_urls_under_the_proxy_route(
    tmp_path: Path, proxies: dict[str, Proxy], start_app: StartApp
) -> None:
    python = _python_with("flask")
    (tmp_path / "app.py").write_text(block("flask") + _FLASK_ROUTES)
    port = free_port()
    argv = [python, "-m", "flask", "--app", "app", "run", "--port", str(port)]
    start_app(argv, port, tmp_path, _app_env(tmp_path, python))
    proxy = proxies["plain"]
    prefix = f"/proxy/{port}"

    status, _, body = proxy.get(f"{prefix}/where", DOMAIN)
    public = f"http://{DOMAIN}:{proxy.port}{prefix}/where"
    assert (status, body.decode()) == (200, f"{prefix}/where {public}")
    status, headers, _ = proxy.get(f"{prefix}/go", DOMAIN)
    assert (status, headers["location"]) == (302, f"{prefix}/where")

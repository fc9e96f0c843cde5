"""The documentation builds, and every command it shows works as it says.

- C{sphinx-build -W} builds docs/ (skipped when Sphinx is not installed; CI installs
  docs/requirements.txt);
- the command-line reference is generated from L{portproxy.tap.Options} and lists
  exactly the options C{twist portproxy --help} prints;
- every C{twist ... portproxy ...} and C{twistd ... portproxy ...} command in
  README.rst and docs/*.rst, the systemd unit's C{ExecStart} and the container image's
  C{ENTRYPOINT}/C{CMD} parse with the real option parser;
- the quick start and the getting-started walk-through run: generated password, sign-in,
  C{--print-auth-cookie}, an app opened by path; the systemd unit serves on a socket
  passed the way systemd passes it;
- README.rst's commands are the ones the docs give.

The example .tac file is run by L{tests.test_service.test_tac_example_runs_under_twistd}.
"""

from __future__ import annotations

import getopt
import http.server
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from portproxy.tap import Options
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import portproxy_options  # noqa: E402

# Options of the runners that may stand before "portproxy" (getopt syntax).
_TWIST_LONG = ["log-file=", "log-format=", "log-level=", "reactor=", "help", "version"]


# -- finding the commands in the documents ----------------------------------------------


def _documents() -> list[Path]:
    return [ROOT / "README.rst", *sorted(DOCS.glob("*.rst"))]


_CODE_DIRECTIVE = re.compile(r"\s*\.\. (?:code-block|code|sourcecode)::")


def literal_block_lines(text: str) -> list[str]:
    """The lines of the literal blocks (C{::} and code-block) of a reST document.

    Lines continued with a trailing backslash are joined.
    """
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        starts = bool(_CODE_DIRECTIVE.match(line)) or (
            line.rstrip().endswith("::") and not line.lstrip().startswith("..")
        )
        i += 1
        if not starts:
            continue
        indent = len(line) - len(line.lstrip())
        # Options of a directive (":language: ini") come first.
        while i < len(lines) and lines[i].strip().startswith(":"):
            i += 1
        block: list[str] = []
        while i < len(lines):
            current = lines[i]
            if current.strip() and len(current) - len(current.lstrip()) <= indent:
                break
            block.append(current.strip())
            i += 1
        joined: list[str] = []
        for item in block:
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1] + " " + item
            else:
                joined.append(item)
        out.extend(x for x in joined if x)
    return out


def inline_literals(text: str) -> list[str]:
    """The contents of every C{``inline literal``} of a reST document."""
    return [m.group(1) for m in re.finditer(r"``([^`]+)``", text)]


_RUNNER = re.compile(r"(?:^|(?<=[\s(]))(?:[^\s()'\"]*/)?(twistd?)(?=\s)")
_STOPS = {";", "&&", "||", "|", "&", ")", "(", ">", ">>", "<"}


@dataclass(frozen=True)
class Command:
    """One C{twist}/C{twistd} command found in a document."""

    runner: str  # "twist" or "twistd"
    runner_args: tuple[str, ...]
    args: tuple[str, ...]  # what comes after "portproxy"
    where: str

    def __str__(self) -> str:
        return shlex.join([self.runner, *self.runner_args, "portproxy", *self.args])


def commands_in(snippet: str, where: str) -> list[Command]:
    """Every C{twist[d] [runner options] portproxy [options]} in a line of shell."""
    found = []
    for match in _RUNNER.finditer(snippet):
        rest = snippet[match.end() :]
        if snippet[: match.start()].endswith("$("):
            rest = rest.split(")", 1)[0]
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: not a shell line
            continue
        for index, token in enumerate(tokens):
            if token in _STOPS:
                tokens = tokens[:index]
                break
        if "portproxy" not in tokens or any(t.startswith("[") for t in tokens):
            continue  # not a command, or a synopsis ("[options]")
        at = tokens.index("portproxy")
        found.append(
            Command(match.group(1), tuple(tokens[:at]), tuple(tokens[at + 1 :]), where)
        )
    return found


def documented_commands() -> list[Command]:
    """Every command of README.rst and docs/*.rst, literal blocks and inline literals."""
    found: list[Command] = []
    for path in _documents():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT).as_posix()
        for snippet in literal_block_lines(text) + inline_literals(text):
            found.extend(commands_in(snippet, name))
    found.extend(container_commands())
    found.append(systemd_command())
    return found


def systemd_exec_start() -> list[str]:
    text = (DOCS / "portproxy.service").read_text(encoding="utf-8")
    lines = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    assert len(lines) == 1, "portproxy.service must have one ExecStart="
    return shlex.split(lines[0].removeprefix("ExecStart="))


def systemd_command() -> Command:
    argv = systemd_exec_start()
    assert Path(argv[0]).name == "twist", argv
    at = argv.index("portproxy")
    return Command("twist", tuple(argv[1:at]), tuple(argv[at + 1 :]), "portproxy.service")


def container_commands() -> list[Command]:
    """The image's default command, and each C{docker run ... portproxy ARGS} shown."""
    text = (DOCS / "deployment.rst").read_text(encoding="utf-8")
    lines = literal_block_lines(text)
    entrypoint = [
        json.loads(x.split(None, 1)[1]) for x in lines if x.startswith("ENTRYPOINT ")
    ]
    cmd = [json.loads(x.split(None, 1)[1]) for x in lines if x.startswith("CMD ")]
    assert len(entrypoint) == 1 and len(cmd) == 1, "one ENTRYPOINT and one CMD"
    runner, *head = entrypoint[0]
    at = head.index("portproxy")
    found = [Command(runner, tuple(head[:at]), (*head[at + 1 :], *cmd[0]), "Dockerfile")]
    for line in lines:
        if line.startswith("docker run "):
            tokens = shlex.split(line)
            args = tokens[tokens.index("portproxy") + 1 :]
            found.append(
                Command(
                    runner,
                    tuple(head[:at]),
                    (*head[at + 1 :], *(args or cmd[0])),
                    "deployment.rst (docker run)",
                )
            )
    return found


# -- checking a command -----------------------------------------------------------------


def _check_runner(command: Command) -> None:
    args = list(command.runner_args)
    if command.runner == "twist":
        getopt.getopt(args, "", _TWIST_LONG)
    else:
        from twisted.scripts.twistd import ServerOptions

        server = ServerOptions()
        getopt.getopt(args, server.shortOpt, server.longOpt)


def _stand_ins(args: tuple[str, ...], tmp: Path) -> list[str]:
    """Replace paths that only exist on the reader's machine with files that exist here."""
    secret = tmp / "password"
    secret.write_text("docs-example\n")
    pem = Path(importlib.util.find_spec("twisted").origin).parent / "test" / "server.pem"  # type: ignore[arg-type, union-attr]
    files = {"password-file": secret, "cert": pem, "cert-key": pem}
    out: list[str] = []
    pending: str | None = None
    for arg in args:
        if pending is not None:
            out.append(_replace(pending, arg, files, tmp))
            pending = None
            continue
        name, eq, value = arg.partition("=")
        option = name.removeprefix("--")
        if name.startswith("--") and (option in files or option == "data-dir"):
            if eq:
                out.append(f"{name}={_replace(option, value, files, tmp)}")
            else:
                out.append(arg)
                pending = option
            continue
        out.append(arg)
    return out


def _replace(option: str, value: str, files: dict[str, Path], tmp: Path) -> str:
    if option == "data-dir":
        return str(tmp / "data")
    if os.path.exists(value):
        return value
    return str(files[option])


def parse(args: list[str]) -> tuple[int, str]:
    """Parse C{args} as C{twist portproxy} would; return the exit status and stderr.

    0 when parsing succeeds or an option that exits (--help, --print-url) succeeds.
    """
    from io import StringIO

    options = Options()
    options.environ = {"PASSWORD": "docs-example"}
    err, out = StringIO(), StringIO()
    saved = sys.stderr, sys.stdout
    sys.stderr, sys.stdout = err, out
    try:
        options.parseOptions(args)
    except SystemExit as e:
        return (0 if e.code in (0, None) else int(e.code or 1)), err.getvalue()  # type: ignore[arg-type]
    except Exception as e:  # UsageError from twisted.python.usage
        return 2, f"{type(e).__name__}: {e}"
    finally:
        sys.stderr, sys.stdout = saved
    return 0, err.getvalue()


DOCUMENTED = documented_commands()


def test_commands_are_found_in_the_docs() -> None:
    where = {c.where for c in DOCUMENTED}
    assert len(DOCUMENTED) >= 20, DOCUMENTED
    assert {"README.rst", "docs/getting-started.rst", "docs/security.rst"} <= where
    assert {"portproxy.service", "Dockerfile"} <= where
    shown = {str(c) for c in DOCUMENTED}
    assert "twist portproxy --print-auth-cookie" in shown
    assert "twistd -n portproxy" in shown


@pytest.mark.parametrize("command", DOCUMENTED, ids=lambda c: f"{c.where}: {c}")
def test_documented_command_parses(
    command: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _check_runner(command)
    status, stderr = parse(_stand_ins(command.args, tmp_path))
    assert status == 0, f"{command} ({command.where}): {stderr}"


@pytest.mark.parametrize(
    "args",
    [
        ["--upstream-timeout", "soon"],
        ["--listen", "foo"],
        ["--password", "hunter2"],
        ["--no-such-option"],
        ["--print-url", "0"],
    ],
)
def test_bad_command_is_caught_by_the_check(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse(args)[0] != 0


def test_unknown_runner_option_is_caught_by_the_check() -> None:
    with pytest.raises(getopt.GetoptError):
        _check_runner(Command("twist", ("--log-colour", "red"), (), "test"))
    with pytest.raises(getopt.GetoptError):
        _check_runner(Command("twistd", ("--daemonize",), (), "test"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("twist portproxy", ["twist portproxy"]),
        (
            'curl -H "Cookie: $(twist portproxy --print-auth-cookie)" http://h/proxy/1/',
            ["twist portproxy --print-auth-cookie"],
        ),
        (
            "PASSWORD=x twist --log-format text portproxy --auth none  # comment",
            ["twist --log-format text portproxy --auth none"],
        ),
        (
            "pip install . && twist portproxy --listen 'tcp6:8080:interface=\\:\\:' | tee l",
            ["twist portproxy --listen 'tcp6:8080:interface=\\:\\:'"],
        ),
        ("/opt/pp/bin/twistd -n portproxy", ["twistd -n portproxy"]),
        ("twistd -ny docs/portproxy.tac", []),
        ("twist --help", []),
        ("a twisty portproxy", []),
        ("twist [twist options] portproxy [options]", []),
    ],
)
def test_commands_are_extracted_from_shell_lines(line: str, expected: list[str]) -> None:
    assert [str(c) for c in commands_in(line, "test")] == expected


def test_literal_blocks_are_read_and_continuations_joined() -> None:
    text = (
        "Run::\n\n    twist portproxy \\\n      --auth none\n\nprose twist portproxy x\n\n"
        ".. code-block:: console\n   :caption: c\n\n   twistd -n portproxy\n"
    )
    assert literal_block_lines(text) == [
        "twist portproxy  --auth none",
        "twistd -n portproxy",
    ]


# -- the options reference ------------------------------------------------------------


def _long_names() -> set[str]:
    return {o.rstrip("=") for o in Options().longOpt}


def test_reference_lists_every_option_the_parser_accepts() -> None:
    entries = portproxy_options.option_entries(Options)
    assert {e.name for e in entries} == _long_names()
    assert len(entries) == len(_long_names())
    by_name = {e.name: e for e in entries}
    assert by_name["listen"].repeatable and by_name["listen"].takes_value
    assert by_name["auth"].default == "password"
    assert not by_name["disable-proxy"].takes_value
    assert by_name["disable-proxy"].metavar is None


def test_reference_matches_help_output(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "twisted", "portproxy", "--help"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    shown = set(re.findall(r"^ {2,8}--([a-z0-9-]+)", out.stdout.decode(), re.MULTILINE))
    assert shown == {e.name for e in portproxy_options.option_entries(Options)}


def test_reference_text_is_escaped_for_rst() -> None:
    entry = portproxy_options.OptionEntry(
        name="xx",
        aliases=("y",),
        takes_value=True,
        default="a b",
        help="`ps` *b* c_ |d|",
        repeatable=True,
    )
    lines = portproxy_options.render_rst([entry])
    assert ".. option:: --xx VALUE, -y VALUE" in lines
    assert "   \\`ps\\` \\*b\\* c\\_ \\|d\\|" in lines
    assert "   Repeatable. Default: ``a b``." in lines


def test_every_environment_variable_read_is_documented() -> None:
    read = set()
    for path in (ROOT / "portproxy").rglob("*.py"):
        read |= set(re.findall(r"environ\.get\(\s*\"([A-Z_]+)\"", path.read_text()))
    documented = set(
        re.findall(r"^\.\. envvar:: (\S+)", (DOCS / "options.rst").read_text(), re.M)
    )
    assert {"PASSWORD", "HASHED_PASSWORD"} <= read
    assert read <= documented


# -- the build --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("Sphinx is not installed (pip install -r docs/requirements.txt)")
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", "html"]
        + [str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_docs_build_without_warnings(built_docs: Path) -> None:
    for name in ("index", "getting-started", "options", "security", "tls", "performance"):
        assert (built_docs / f"{name}.html").is_file()


def test_built_reference_has_an_entry_per_option(built_docs: Path) -> None:
    page = (built_docs / "options.html").read_text(encoding="utf-8")
    for name in _long_names():
        assert f'id="cmdoption-twist-portproxy-{name}"' in page, name


# -- README and the docs agree ----------------------------------------------------------


def _readme_commands() -> list[str]:
    lines = literal_block_lines((ROOT / "README.rst").read_text(encoding="utf-8"))
    return [x for x in lines if x.startswith("python3 -m venv")]


def test_readme_commands_are_the_documented_ones() -> None:
    readme = _readme_commands()
    assert len(readme) == 2, readme
    install, develop = readme
    assert install.endswith("pip install . && twist portproxy")
    assert "pytest" in develop
    guide = literal_block_lines((DOCS / "getting-started.rst").read_text(encoding="utf-8"))
    index = literal_block_lines((DOCS / "index.rst").read_text(encoding="utf-8"))
    assert install in guide and develop in guide
    assert install in index


# -- running what the guides say --------------------------------------------------------


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PASSWORD", "HASHED_PASSWORD", "PORTPROXY_DISABLE_PROXY")
        and not k.startswith("LISTEN_")
    }
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(home)
    env.update(extra)
    return env


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _get(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _opener.open(request, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            output = proc.communicate()[0] if proc.poll() is not None else b""
            raise AssertionError(f"portproxy did not come up: {output.decode()[-2000:]}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        output = proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
    return output.decode("utf-8", "replace")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[int]:
    """A local app as in the guide: Python's http.server serving a directory."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<h1>hello from the app</h1>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_quick_start_walkthrough(tmp_path: Path, app: int) -> None:
    """getting-started.rst: first run, generated password, sign-in, curl, by path.

    The quick start's C{twist portproxy} runs as documented, plus C{--listen} on a free
    port instead of 8080 (which the test machine may be using).
    """
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "twisted", "--log-format", "text", "portproxy"]
        + ["--listen", f"tcp:{port}:interface=127.0.0.1"],
        cwd=tmp_path,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(port, proc)
        base = f"http://127.0.0.1:{port}"
        password_file = home / ".local" / "share" / "portproxy" / "password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(password_file.parent.stat().st_mode) == 0o700
        password = password_file.read_text().strip()
        assert len(password) == 24

        # A browser is sent to the sign-in page, carrying where it wanted to go.
        status, headers, _ = _get(f"{base}/proxy/{app}/", {"Accept": "text/html"})
        assert status == 302
        # Relative, so that it stays under a front proxy's path prefix.
        assert headers["location"] == f"./../../login?to=/proxy/{app}/"
        # curl without a session gets 401 JSON.
        status, _, body = _get(f"{base}/proxy/{app}/")
        assert (status, json.loads(body)) == (401, {"error": "Unauthorized"})
        # A wrong password is refused; the right one signs in and goes back.
        form = urllib.parse.urlencode({"password": "wrong", "to": f"/proxy/{app}/"})
        assert _get(f"{base}/login", data=form.encode())[0] == 401
        form = urllib.parse.urlencode({"password": password, "to": f"/proxy/{app}/"})
        status, headers, _ = _get(f"{base}/login", data=form.encode())
        assert (status, headers["location"]) == (302, f"./proxy/{app}/")
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert cookie.startswith("portproxy-session=")
        status, _, body = _get(f"{base}/proxy/{app}/", {"Cookie": cookie})
        assert (status, body) == (200, b"<h1>hello from the app</h1>")
        # /proxy/<port> without the slash redirects.
        status, headers, _ = _get(f"{base}/proxy/{app}", {"Cookie": cookie})
        assert (status, headers["location"]) == (302, f"./../proxy/{app}/")

        # curl -H "Cookie: $(twist portproxy --print-auth-cookie)" ...
        printed = subprocess.run(
            [sys.executable, "-m", "twisted", "portproxy", "--print-auth-cookie"],
            cwd=tmp_path,
            env=_env(home),
            capture_output=True,
            timeout=60,
        )
        assert printed.returncode == 0, printed.stderr
        line = printed.stdout.decode().strip()
        assert re.fullmatch(r"portproxy-session=[\w.-]+", line)
        status, _, body = _get(f"{base}/proxy/{app}/", {"Cookie": line})
        assert (status, body) == (200, b"<h1>hello from the app</h1>")
    finally:
        log = _stop(proc)
    assert f"using the generated one in {password_file}" in log
    assert f"portproxy listening on 127.0.0.1:{port}" in log
    # Absolute, from the listener (getting-started.rst shows port 8080).
    assert "apps open at http://localhost:%d/proxy/{{port}}/" % port in log


_LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="http")
os.execv(sys.executable, [sys.executable, "-m", "twisted", *sys.argv[2:]])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux-only")
def test_systemd_unit_serves_on_the_socket_systemd_passes(tmp_path: Path, app: int) -> None:
    """docs/portproxy.service's ExecStart, run the way systemd runs it for the socket."""
    argv = systemd_exec_start()
    at = argv.index("portproxy")
    args = _stand_ins(tuple(argv[at + 1 :]), tmp_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(listener.fileno())]
        + [*argv[1:at], "portproxy", *args],
        cwd=tmp_path,
        env=_env(tmp_path, PASSWORD="unit-test"),
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    listener.close()
    try:
        _wait_healthy(port, proc)
        base = f"http://127.0.0.1:{port}"
        cookie = "portproxy-session=" + _signed_value("unit-test")
        assert _get(f"{base}/proxy/{app}/", {"Cookie": cookie})[0] == 200
        # The adopted socket's port counts as portproxy's own.
        assert _get(f"{base}/proxy/{port}/", {"Cookie": cookie})[0] == 403
    finally:
        log = _stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM), log
    assert f"portproxy listening on 127.0.0.1:{port}" in log


def _signed_value(password: str) -> str:
    from portproxy.auth.passwords import resolve_credential, session_key_material
    from portproxy.auth.sessions import SessionSigner

    credential = resolve_credential(
        environ={"PASSWORD": password}, password_file=None, data_dir="/nonexistent"
    )
    return SessionSigner(session_key_material(credential), 3600).issue(time.time())

"""Run the remote page-load benchmark: every target, interleaved, over the shaped link.

Generates the page, builds the link (link.py), starts the origin, two portproxy instances
(plain HTTP/1.1, and TLS offering h2) and code-server's engine (codeserver_engine.js), loads
the page once through each target to warm it, then ROUNDS times through every target in a
rotated order, and prints a markdown table: median time to the last module, ratios to
code-server's engine and to direct, and bytes on the wire. Every run goes to a JSON file in
/tmp. Everything it starts is stopped, and the namespaces removed, however it ends.

Usage (root, from the repository with its virtualenv active):
    benchmarks/pageload/run.sh --rounds 5
"""

from __future__ import annotations

import argparse
import atexit
import html
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import genpage  # noqa: E402
import link  # noqa: E402

PROCESSES: list[subprocess.Popen[bytes]] = []
PIDS: dict[str, int] = {}


@dataclass
class Target:
    name: str
    url: str
    protocol: str
    what: str
    flags: tuple[str, ...] = ()
    server: str = ""  # the log name of the process serving it, for its CPU time
    browser: tuple[str, ...] | None = None  # Chromium's extra flags when Chromium loads it


def cleanup() -> None:
    """Stop what this run started (by process group) and remove the link."""
    for proc in reversed(PROCESSES):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    for proc in PROCESSES:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    PROCESSES.clear()
    link.down()


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    out = log.open("wb")
    proc = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    PROCESSES.append(proc)
    PIDS[log.stem] = proc.pid


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process PID so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((link.SERVER_ADDR, 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 20.0) -> None:
    """Wait until URL answers 200 (fetched from the root namespace, off the shaped link)."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        for proc in PROCESSES:
            if proc.poll() is not None:
                sys.exit(f"a process exited early: {proc.args!r}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def counters() -> tuple[int, int]:
    """Bytes sent towards the client and received from it, at the server's veth."""
    base = Path("/sys/class/net") / link.SERVER_IF / "statistics"
    return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())


# Resource Timing of the page, put in the title by Chromium's load handler: the time of
# the last module's last byte (from navigation start), how many there were, and their sizes.
PROBE_HEAD = "<script>performance.setResourceTimingBufferSize(5000)</script>"
PROBE_TAIL = """<script>
addEventListener("load", () => {
  const r = performance.getEntriesByType("resource");
  const sum = (k) => r.reduce((a, e) => a + e[k], 0);
  document.title = JSON.stringify({
    last: Math.max(...r.map((e) => e.responseEnd)), n: r.length,
    protocol: r.length ? r[0].nextHopProtocol : "",
    encoded: sum("encodedBodySize"), decoded: sum("decodedBodySize"),
  });
});
</script>"""
CHROMIUM = [
    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--ignore-certificate-errors", "--dump-dom",
]  # fmt: skip


def write_probe(page: Path) -> None:
    """probe.html: index.html plus the Resource Timing probe, for the Chromium targets."""
    html = (page / "index.html").read_text()
    html = html.replace("<head>", "<head>\n    " + PROBE_HEAD, 1)
    html = html.replace("</head>", PROBE_TAIL + "\n  </head>", 1)
    (page / "probe.html").write_text(html)


def run_chromium(
    target: Target, work: Path
) -> tuple[subprocess.CompletedProcess[str], str]:
    profile = work / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    url = target.url.replace("/index.html", "/probe.html")
    command = [*CHROMIUM, f"--user-data-dir={profile}", *(target.browser or ()), url]
    done = subprocess.run(
        ["nice", "-n", "-5", "ip", "netns", "exec", link.CLIENT_NS, *command],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done, url


def browser_result(
    target: Target, done: subprocess.CompletedProcess[str], modules: int
) -> str:
    """Client-style JSON from Chromium's dumped DOM, or "" when the title has no result."""
    match = re.search(r"<title>(.*?)</title>", done.stdout, re.S)
    if not match or not match.group(1).startswith("{"):
        return ""
    timing = json.loads(html.unescape(match.group(1)))
    errors = [] if timing["n"] == modules else [f"{timing['n']} of {modules} modules"]
    return json.dumps(
        {
            "seconds": timing["last"] / 1000,
            "files": timing["n"] + 1,
            "decoded_bytes": timing["decoded"],
            "body_bytes": timing["encoded"],
            "encodings": {f"({timing['protocol']})": timing["n"]},
            "errors": errors,
        }
    )


def load(target: Target, manifest: Path, work: Path, modules: int) -> dict[str, Any]:
    """One page load through TARGET by a fresh client process in the client namespace."""
    # Each load starts cold: no TCP metrics (ssthresh, RTT) cached from an earlier load.
    subprocess.run(["ip", "tcp_metrics", "flush", link.CLIENT_ADDR], capture_output=True)
    subprocess.run(
        ["ip", "netns", "exec", link.CLIENT_NS, "ip", "tcp_metrics", "flush", "all"],
        capture_output=True,
    )
    before = counters()
    cpu_before = cpu_seconds(PIDS[target.server])
    if target.browser is not None:
        done, _ = run_chromium(target, work)
        done.stdout = browser_result(target, done, modules)
    else:
        done = load_with_client(target, manifest)
    after = counters()
    cpu = cpu_seconds(PIDS[target.server]) - cpu_before
    if done.returncode != 0 or not done.stdout.strip():
        sys.exit(f"{target.name}: client failed\n{done.stdout}{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["wire_down"] = after[0] - before[0]
    result["wire_up"] = after[1] - before[1]
    result["server_cpu"] = cpu
    if result["errors"]:
        sys.exit(f"{target.name}: {result['errors']}")
    return result


def load_with_client(target: Target, manifest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # The client stands for a browser on another computer: ahead of the servers for CPU.
        [
            "nice",
            "-n",
            "-5",
            "ip",
            "netns",
            "exec",
            link.CLIENT_NS,
            sys.executable,
            str(HERE / "client.py"),
            target.url,
            str(manifest),
            "--protocol",
            target.protocol,
            *target.flags,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def node_modules(work: Path) -> Path:
    """The packages of code-server's engine, at the versions pinned here, under WORK."""
    given = os.environ.get("PAGELOAD_NODE_MODULES")
    if given:
        return Path(given)
    prefix = work / "node"
    if not (prefix / "node_modules" / "compression").is_dir():
        prefix.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, prefix / name)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=prefix, check=True)
    return prefix / "node_modules"


def versions(modules: Path) -> dict[str, str]:
    found = {
        "node": subprocess.run(
            ["node", "--version"], capture_output=True, text=True
        ).stdout.strip()
    }
    for name in ("compression", "http-proxy"):
        found[name] = json.loads((modules / name / "package.json").read_text())["version"]
    head = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    found["portproxy"] = head
    return found


def table(targets: list[Target], runs: dict[str, list[dict[str, Any]]]) -> str:
    median = {
        t.name: statistics.median(r["seconds"] for r in runs[t.name]) for t in targets
    }
    lines = [
        "| target | protocol | median s | min-max s | x code-server | x direct "
        "| on the wire down / up KiB | bodies KiB | server CPU s | encodings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        rs = runs[t.name]
        secs = [r["seconds"] for r in rs]
        down = statistics.median(r["wire_down"] for r in rs) / 1024
        up = statistics.median(r["wire_up"] for r in rs) / 1024
        body = statistics.median(r["body_bytes"] for r in rs) / 1024
        cpu = statistics.median(r["server_cpu"] for r in rs)
        codings = ", ".join(f"{k} {v}" for k, v in sorted(rs[-1]["encodings"].items()))
        # Chromium's rows are compared with Chromium's loads of the baselines.
        prefix = "chromium:" if t.browser is not None else ""
        base_cs = median.get(prefix + "code-server")
        base_direct = median.get(prefix + "direct")
        cs = f"{median[t.name] / base_cs:.2f}" if base_cs else "-"
        dr = f"{median[t.name] / base_direct:.2f}" if base_direct else "-"
        cells = [
            t.name,
            t.protocol,
            f"{median[t.name]:.3f}",
            f"{min(secs):.3f}-{max(secs):.3f}",
            cs,
            dr,
            f"{down:,.0f} / {up:,.0f}",
            f"{body:,.0f}",
            f"{cpu:.2f}",
            codings,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modules", type=int, default=300)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--delay-ms", type=float, default=20.0, help="one way (RTT is twice)"
    )
    parser.add_argument("--rate-mbit", type=float, default=20.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pageload"))
    parser.add_argument(
        "--targets",
        default="direct,portproxy-h1,portproxy-h2,code-server,portproxy-h1-tls,code-server-tls,"
        "portproxy-h2-flat",
    )
    parser.add_argument(
        "--portproxy-args", default="", help="extra options for both portproxy instances"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results JSON (default /tmp)"
    )
    parser.add_argument(
        "--chromium",
        action="store_true",
        help="also load the page with headless Chromium through each target: chromium:NAME",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark makes network namespaces")
    for tool in ("ip", "ethtool", "node", "npm", "twist"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH (twist: activate the project's virtualenv)")

    args.work.mkdir(parents=True, exist_ok=True)
    page = args.work / "page"
    shutil.rmtree(page, ignore_errors=True)
    genpage.generate(page, args.modules, args.seed)
    write_probe(page)
    manifest = page / "manifest.json"
    modules = node_modules(args.work)

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    link.up()
    logs = args.work / "logs"
    logs.mkdir(exist_ok=True)
    # The link is hardware in the story: a real-time priority keeps its timing exact while
    # the shared machine is busy (it sleeps in epoll between frames, a few % of a core).
    start(
        [
            "chrt",
            "-f",
            "20",
            "ip",
            "netns",
            "exec",
            link.LINK_NS,
            sys.executable,
            str(HERE / "link.py"),
            "bridge",
            "pl-rc",
            "pl-rs",
            "--delay-ms",
            str(args.delay_ms),
            "--rate-mbit",
            str(args.rate_mbit),
        ],
        logs / "bridge.log",
    )
    addr = link.SERVER_ADDR
    origin, pp_plain, pp_tls, engine, engine_tls = (free_port() for _ in range(5))
    start(
        [
            sys.executable,
            str(HERE / "origin.py"),
            str(page),
            str(origin),
            "127.0.0.1",
            addr,
        ],
        logs / "origin.log",
    )
    extra = args.portproxy_args.split()
    data = args.work / "data"
    start(
        [
            "twist",
            "portproxy",
            "--auth",
            "none",
            "--data-dir",
            str(data),
            "--listen",
            f"tcp:{pp_plain}:interface={addr}",
            *extra,
        ],
        logs / "portproxy-h1.log",
    )
    start(
        [
            "twist",
            "portproxy",
            "--auth",
            "none",
            "--data-dir",
            str(data),
            "--self-signed",
            "--listen",
            f"tcp:{pp_tls}:interface={addr}",
            *extra,
        ],
        logs / "portproxy-h2.log",
    )
    env = dict(os.environ, NODE_PATH=str(modules))
    start(
        ["node", str(HERE / "codeserver_engine.js"), str(engine), addr],
        logs / "engine.log",
        env,
    )
    # The TLS engine serves portproxy's self-signed certificate: same key, same handshake.
    wait_ready(f"https://{addr}:{pp_tls}/proxy/{origin}/index.html")
    start(
        [
            "node",
            str(HERE / "codeserver_engine.js"),
            str(engine_tls),
            addr,
            str(data / "self-signed-cert.pem"),
            str(data / "self-signed-key.pem"),
        ],
        logs / "engine-tls.log",
        env,
    )

    page_path = f"/proxy/{origin}/index.html"
    plain, tls = f"http://{addr}", f"https://{addr}"
    all_targets = [
        Target(
            "direct",
            f"{plain}:{origin}/index.html",
            "h1",
            "the origin (a dev server: no compression) over the link",
            server="origin",
        ),
        Target(
            "portproxy-h1",
            f"{plain}:{pp_plain}{page_path}",
            "h1",
            "twist portproxy --auth none, plain HTTP/1.1",
            server="portproxy-h1",
        ),
        Target(
            "portproxy-h2",
            f"{tls}:{pp_tls}{page_path}",
            "h2",
            "twist portproxy --auth none --self-signed, HTTP/2 over TLS",
            server="portproxy-h2",
        ),
        Target(
            "code-server",
            f"{plain}:{engine}{page_path}",
            "h1",
            "node: compression() then http-proxy proxy.web(), HTTP/1.1",
            server="engine",
        ),
        Target(
            "portproxy-h1-tls",
            f"{tls}:{pp_tls}{page_path}",
            "h1",
            "the portproxy-h2 instance, client offering only http/1.1 (6 TLS connections)",
            server="portproxy-h2",
        ),
        Target(
            "code-server-tls",
            f"{tls}:{engine_tls}{page_path}",
            "h1",
            "code-server's engine over HTTPS (HTTP/1.1 only, as code-server --cert)",
            server="engine-tls",
        ),
        Target(
            "portproxy-h2-flat",
            f"{tls}:{pp_tls}{page_path}",
            "h2",
            "portproxy-h2 with a client sending no priorities (all streams equal)",
            ("--no-priorities",),
            server="portproxy-h2",
        ),
    ]
    # Chromium cannot be told to send no HTTP/2 priorities: portproxy-h2-flat has no twin.
    browser_flags = {"portproxy-h1-tls": ("--disable-http2",), "portproxy-h2-flat": None}
    if args.chromium:
        for t in list(all_targets):
            flags = browser_flags.get(t.name, ())
            if flags is not None:
                twin = Target(f"chromium:{t.name}", t.url, t.protocol, "headless Chromium: "
                              + t.what, server=t.server, browser=flags)  # fmt: skip
                all_targets.append(twin)
    wanted = args.targets.split(",")
    if args.chromium:
        twins = {t.name for t in all_targets if t.browser is not None}
        wanted += [f"chromium:{name}" for name in wanted if f"chromium:{name}" in twins]
    unknown = set(wanted) - {t.name for t in all_targets}
    if unknown:
        sys.exit(f"--targets: unknown {', '.join(sorted(unknown))}")
    targets = [t for t in all_targets if t.name in wanted]
    for t in targets:
        wait_ready(t.url)
    print(
        f"page: {args.modules} modules, seed {args.seed}; link: "
        f"{2 * args.delay_ms:.0f} ms RTT, {args.rate_mbit:g} Mbit/s; one warm-up each",
        flush=True,
    )
    for t in targets:
        load(t, manifest, args.work, args.modules)
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for round_no in range(args.rounds):
        order = targets[round_no % len(targets) :] + targets[: round_no % len(targets)]
        for t in order:
            result = load(t, manifest, args.work, args.modules)
            runs[t.name].append(result)
            print(
                f"round {round_no + 1} {t.name}: {result['seconds']:.3f} s, "
                f"{result['wire_down'] / 1024:,.0f} KiB down, "
                f"server CPU {result['server_cpu']:.2f} s",
                flush=True,
            )

    out = args.out or Path(f"/tmp/pageload-results-{time.strftime('%Y%m%d-%H%M%S')}.json")
    report = {
        "command": " ".join(sys.argv),
        "versions": versions(modules),
        "link": {
            "rtt_ms": 2 * args.delay_ms,
            "rate_mbit": args.rate_mbit,
            "queue": link.QUEUE_LIMIT,
        },
        "page": {k: v for k, v in json.loads(manifest.read_text()).items() if k != "files"},
        "targets": {
            t.name: {"url": t.url, "protocol": t.protocol, "what": t.what} for t in targets
        },
        "load": os.getloadavg(),
        "runs": runs,
    }
    out.write_text(json.dumps(report, indent=1))
    print()
    print(table(targets, runs))
    print(f"\nruns: {out}")


if __name__ == "__main__":
    main()

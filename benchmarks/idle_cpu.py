"""The proxy's CPU while the home page is open and nothing happens (issue 16).

Starts ``twist portproxy`` on 127.0.0.1, opens the ports event stream as the home page
does (so the watcher polls every second), and after a warm-up measures the proxy
process's CPU time (user + system, from /proc/<pid>/stat) over an idle minute. The
target is under 2 % of one core.

    python benchmarks/idle_cpu.py [--seconds 60]

Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of C{pid} so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing paren.
        fields = f.read().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"portproxy did not listen on {port}")


def open_stream(port: int) -> tuple[socket.socket, list[bytes]]:
    """Open the ports event stream; a thread keeps reading it (as a browser would)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"GET /.portproxy/api/ports/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Accept: text/event-stream\r\n\r\n" % port
    )
    received: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            received.append(data)

    threading.Thread(target=read, daemon=True).start()
    return sock, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "portproxy",
                "--auth",
                "none",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--data-dir",
                data_dir,
                "--access-log",
                "off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port)
            sock, received = open_stream(port)
            time.sleep(args.warmup)
            if not any(b"event: ports" in chunk for chunk in received):
                raise SystemExit("no ports event arrived on the stream")
            start_cpu, start = cpu_seconds(proxy.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu, wall = cpu_seconds(proxy.pid) - start_cpu, time.monotonic() - start
            events = sum(chunk.count(b"event: ports") for chunk in received)
            keepalives = sum(chunk.count(b": keep-alive") for chunk in received)
            sock.close()
        finally:
            proxy.terminate()
            proxy.wait(10)
    print(
        f"idle with the ports stream open: {cpu:.3f} s CPU in {wall:.1f} s = "
        f"{100 * cpu / wall:.2f} % of a core "
        f"({events} ports events, {keepalives} keep-alives; target < 2 %)"
    )


if __name__ == "__main__":
    main()

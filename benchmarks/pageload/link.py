"""The shaped link of the page-load benchmark: 40 ms round trip, 20 Mbit/s each way.

The client runs in a network namespace (`pl-client`); the servers stay in the root
namespace. Between them sits a third namespace (`pl-link`) holding two veth ends and a small
userspace bridge that moves every Ethernet frame to the other side after the link's delay
and at the link's rate: what `tc qdisc add ... netem delay 20ms rate 20mbit` on each side
would do, for kernels without sch_netem (this sandbox has tbf and htb but no netem). Both
hosts' kernel TCP sees the real round trip, slow start and queueing; bytes on the wire are
counted at the server's veth (`/sys/class/net/pl-srv/statistics`).

    pl-client ns: pl-cli 10.231.0.2 <-> pl-rc [bridge, pl-link ns] pl-rs <->
    root ns: pl-srv 10.231.0.1

Usage (root): python link.py up | down | bridge IF_A IF_B --delay-ms 20 --rate-mbit 20
"""

from __future__ import annotations

import argparse
import collections
import select
import signal
import socket
import subprocess
import sys
import time

CLIENT_NS = "pl-client"
LINK_NS = "pl-link"
SERVER_IF = "pl-srv"
CLIENT_IF = "pl-cli"
SERVER_ADDR = "10.231.0.1"
CLIENT_ADDR = "10.231.0.2"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
# netem's default queue limit; a frame arriving at a full queue is dropped (tail drop).
QUEUE_LIMIT = 1000


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def in_ns(ns: str, *args: str) -> None:
    sh("ip", "netns", "exec", ns, *args)


def offloads_off(iface: str, ns: str | None = None) -> None:
    """Frames must be MTU-sized with finished checksums for the bridge to copy them."""
    prefix = ["ip", "netns", "exec", ns] if ns else []
    # No IPv6 chatter (router solicitations, MLD) in the byte counts.
    sh(*prefix, "sysctl", "-q", "-w", f"net.ipv6.conf.{iface}.disable_ipv6=1", check=False)
    features = ["tx", "rx", "tso", "gso", "gro", "sg"]
    sh(
        *prefix,
        "ethtool",
        "-K",
        iface,
        *(x for f in features for x in (f, "off")),
        check=False,
    )


def up() -> None:
    """Create the namespaces and veth pairs (the bridge is started separately)."""
    down()
    sh("ip", "netns", "add", CLIENT_NS)
    sh("ip", "netns", "add", LINK_NS)
    sh("ip", "link", "add", SERVER_IF, "type", "veth", "peer", "name", "pl-rs")
    sh("ip", "link", "add", CLIENT_IF, "type", "veth", "peer", "name", "pl-rc")
    sh("ip", "link", "set", "pl-rs", "netns", LINK_NS)
    sh("ip", "link", "set", "pl-rc", "netns", LINK_NS)
    sh("ip", "link", "set", CLIENT_IF, "netns", CLIENT_NS)
    sh("ip", "addr", "add", f"{SERVER_ADDR}/24", "dev", SERVER_IF)
    sh("ip", "link", "set", SERVER_IF, "up")
    offloads_off(SERVER_IF)
    for iface in ("pl-rs", "pl-rc"):
        in_ns(LINK_NS, "ip", "link", "set", iface, "promisc", "on", "up")
        offloads_off(iface, LINK_NS)
    in_ns(CLIENT_NS, "ip", "addr", "add", f"{CLIENT_ADDR}/24", "dev", CLIENT_IF)
    in_ns(CLIENT_NS, "ip", "link", "set", CLIENT_IF, "up")
    in_ns(CLIENT_NS, "ip", "link", "set", "lo", "up")
    offloads_off(CLIENT_IF, CLIENT_NS)


def down() -> None:
    """Remove everything up() made; deleting a namespace deletes its veth ends and peers."""
    sh("ip", "netns", "del", CLIENT_NS, check=False)
    sh("ip", "netns", "del", LINK_NS, check=False)
    sh("ip", "link", "del", SERVER_IF, check=False)


class Direction:
    """One direction of the link: a FIFO serialising frames at RATE, then delaying them."""

    def __init__(self, out: socket.socket, delay: float, rate_bps: float) -> None:
        self.out = out
        self.delay = delay
        self.rate = rate_bps
        self.busy_until = 0.0
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.dropped = 0

    def push(self, frame: bytes, now: float) -> None:
        if len(self.queue) >= QUEUE_LIMIT:
            self.dropped += 1
            return
        start = max(now, self.busy_until)
        self.busy_until = start + len(frame) * 8 / self.rate
        self.queue.append((self.busy_until + self.delay, frame))

    def flush(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            frame = self.queue.popleft()[1]
            try:
                self.out.send(frame)
            except OSError:
                self.dropped += 1

    def due(self) -> float | None:
        return self.queue[0][0] if self.queue else None


def bridge(if_a: str, if_b: str, delay_ms: float, rate_mbit: float) -> None:
    """Copy frames between IF_A and IF_B through two Direction queues until SIGTERM."""
    socks = {}
    for iface in (if_a, if_b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((iface, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        socks[iface] = s
    a, b = socks[if_a], socks[if_b]
    towards = {
        a.fileno(): Direction(b, delay_ms / 1000, rate_mbit * 1e6),
        b.fileno(): Direction(a, delay_ms / 1000, rate_mbit * 1e6),
    }
    source = {a.fileno(): a, b.fileno(): b}
    poller = select.epoll()
    for fd in source:
        poller.register(fd, select.EPOLLIN)
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"bridge {if_a} <-> {if_b}: {delay_ms} ms each way, {rate_mbit} Mbit/s", flush=True
    )
    while running:
        due = [d for d in (x.due() for x in towards.values()) if d is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else 0.5
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in events:
            sock, direction = source[fd], towards[fd]
            while True:
                try:
                    frame, address = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                if address[2] != PACKET_OUTGOING:  # our own sends show up here too
                    direction.push(frame, now)
        now = time.monotonic()
        for direction in towards.values():
            direction.flush(now)
    dropped = sum(d.dropped for d in towards.values())
    print(f"bridge stopped, {dropped} frames dropped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "bridge"])
    parser.add_argument("interfaces", nargs="*")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--rate-mbit", type=float, default=20.0)
    args = parser.parse_args()
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    else:
        if len(args.interfaces) != 2:
            sys.exit("bridge needs two interfaces")
        bridge(args.interfaces[0], args.interfaces[1], args.delay_ms, args.rate_mbit)


if __name__ == "__main__":
    main()

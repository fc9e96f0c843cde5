"""Port discovery, the HTTP probe and the watcher (SPEC 13), without the API."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from portproxy.ports.discovery import (
    Discovery,
    Found,
    Listener,
    ProcessInfo,
    address_warnings,
    diag_request,
    parse_diag_messages,
    parse_tcp_table,
    read_listeners_netlink,
)
from portproxy.ports.probe import (
    MAX_BYTES,
    HttpProbe,
    ProbeResult,
    ProbeSchedule,
    answers_http,
    extract_title,
)
from portproxy.ports.watch import (
    INTERVAL,
    LINGER,
    PUBLISH_DELAY,
    PortsWatcher,
    build_entries,
)
from tests.support import Recorder, free_port, get_reactor

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _line(
    address: str, port: int, state: str = "0A", uid: int = 1000, inode: int = 1
) -> str:
    return (
        f"   0: {address}:{port:04X} 00000000:0000 {state} 00000000:00000000 "
        f"00:00000000 00000000  {uid}        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


# -- the kernel tables ----------------------------------------------------------------


def test_listening_sockets_on_loopback_and_wildcard_are_found_with_uid_and_inode() -> None:
    table = (
        HEAD
        + _line("0100007F", 8080, uid=1000, inode=11)  # 127.0.0.1
        + _line("00000000", 5173, uid=0, inode=12)  # 0.0.0.0
        + _line("0100007F", 8081, state="01", inode=13)  # a connection, not a listener
        + _line("0A00000A", 80, inode=14)  # 10.0.0.10: not reachable over loopback
        + _line("0200007F", 9000, inode=15)  # 127.0.0.2: loopback too
    )
    assert parse_tcp_table(table, "ipv4", byteorder="little") == [
        Listener(8080, "127.0.0.1", "ipv4", 1000, 11),
        Listener(5173, "0.0.0.0", "ipv4", 0, 12),
        Listener(9000, "127.0.0.2", "ipv4", 1000, 15),
    ]


def test_ipv6_words_are_decoded_in_host_byte_order() -> None:
    table = (
        HEAD
        + _line("00000000000000000000000001000000", 5349, inode=21)  # ::1
        + _line("00000000000000000000000000000000", 22, inode=22)  # ::
        + _line("0000000000000000FFFF00000100007F", 3000, inode=23)  # ::ffff:127.0.0.1
        + _line("000080FE00000000FF005002F0E1D2C3", 4000, inode=24)  # fe80::...: skipped
    )
    assert [
        (x.port, x.address) for x in parse_tcp_table(table, "ipv6", byteorder="little")
    ] == [
        (5349, "::1"),
        (22, "::"),
        (3000, "127.0.0.1"),
    ]
    big = HEAD + _line("7F000001", 8080) + _line("00000000000000000000000000000001", 81)
    assert [(x.port, x.address) for x in parse_tcp_table(big, "ipv4", byteorder="big")] == [
        (8080, "127.0.0.1")
    ]
    assert [x.address for x in parse_tcp_table(big, "ipv6", byteorder="big")] == ["::1"]


@given(st.text())
def test_any_table_text_parses_without_error_into_valid_ports(text: str) -> None:
    for listener in parse_tcp_table(HEAD + text, "ipv4"):
        assert 0 < listener.port < 65536


def _diag(
    family: int, state: int, port: int, address: bytes, uid: int, inode: int
) -> bytes:
    body = struct.pack(
        "=BBBB2s2s16s16sI8sIIIII",
        family, state, 0, 0, port.to_bytes(2, "big"), b"\0\0",
        address.ljust(16, b"\0"), b"\0" * 16, 0, b"\0" * 8, 0, 0, 0, uid, inode,
    )  # fmt: skip
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def test_sock_diag_answers_are_parsed_like_the_tables() -> None:
    data = (
        _diag(2, 10, 8080, bytes([127, 0, 0, 1]), 1000, 41)
        + _diag(2, 10, 80, bytes([10, 0, 0, 10]), 0, 42)  # not loopback: skipped
        + _diag(10, 10, 5173, bytes(15) + b"\1", 1000, 43)  # ::1
        + _diag(2, 1, 9000, bytes([127, 0, 0, 1]), 0, 44)  # established: skipped
    )
    assert parse_diag_messages(data) == (
        [
            Listener(8080, "127.0.0.1", "ipv4", 1000, 41),
            Listener(5173, "::1", "ipv6", 1000, 43),
        ],
        False,
    )
    done = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0\0\0\0"
    assert parse_diag_messages(done) == ([], True)
    error = struct.pack("=IHHIIi", 20, 2, 0, 1, 0, -95)
    with pytest.raises(OSError):
        parse_diag_messages(error)
    assert len(diag_request(2)) == 16 + 56


def test_sock_diag_and_the_tables_agree_on_this_machine() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        by_netlink = read_listeners_netlink()
        if by_netlink is None:
            pytest.skip("no sock_diag netlink here")
        tables = Discovery().read_listeners()
    assert tables is not None
    assert [x for x in by_netlink if x.port == port] == [
        x for x in tables if x.port == port
    ]
    assert any(x.port == port and x.address == "127.0.0.1" for x in by_netlink)


def test_warnings_name_wildcard_binds_and_ipv6_loopback_only() -> None:
    assert address_warnings([("127.0.0.1", "ipv4"), ("::1", "ipv6")]) == []
    (wide,) = address_warnings([("0.0.0.0", "ipv4"), ("::", "ipv6")])
    assert "0.0.0.0 and ::" in wide and "without portproxy's sign-in" in wide
    (v6,) = address_warnings([("::1", "ipv6")])
    assert "::1" in v6 and "127.0.0.1" in v6


def test_a_socket_of_this_process_is_found_with_pid_command_and_cwd() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = Discovery().discover()
    (mine,) = [x for x in found.listeners if x.port == port]
    info = found.owners[mine]
    assert info.pid == os.getpid()
    assert info.cwd == os.getcwd()
    assert info.command is not None and "pytest" in info.command
    assert found.users[mine] == info.user is not None


def test_processes_are_looked_up_only_for_sockets_not_seen_before(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    table.write_text(HEAD + _line("0100007F", 3000, inode=31))
    asked: list[int] = []

    def info(pid: int, uid: int | None) -> ProcessInfo:
        asked.append(pid)
        return ProcessInfo(pid, "node", "node server.js", "/srv", "dev")

    fake_proc = tmp_path / "proc"
    (fake_proc / "42" / "fd").mkdir(parents=True)
    os.symlink("socket:[31]", fake_proc / "42" / "fd" / "3")
    discovery = Discovery(
        tables=[(str(table), "ipv4")], proc=str(fake_proc), process_info=info
    )
    listeners = discovery.read_listeners()
    assert listeners is not None and discovery.needs_lookup(listeners)
    first = discovery.resolve(listeners)
    assert first.owners[listeners[0]].pid == 42
    assert discovery.cached(listeners) == first  # no second lookup
    assert asked == [42]
    # An unowned socket (another user's process) keeps only its user, and is not
    # looked up again on every poll.
    table.write_text(
        HEAD + _line("0100007F", 3000, inode=31) + _line("00000000", 22, uid=0, inode=32)
    )
    listeners = discovery.read_listeners()
    assert listeners is not None
    found = discovery.resolve(listeners)
    other = listeners[1]
    assert other not in found.owners and found.users[other] == "root"
    assert discovery.cached(listeners) is not None and asked == [42]


# -- the probe's pure parts -------------------------------------------------------------


def test_title_is_decoded_collapsed_and_capped() -> None:
    assert (
        extract_title(b"<html><TITLE lang=en>\n Vite  &amp; React\t</title>")
        == "Vite & React"
    )
    assert extract_title(b"<title>&lt;script&gt;</title>") == "<script>"
    assert extract_title(b"<title>   </title>") is None
    assert extract_title(b"<h1>no title</h1>") is None
    long = extract_title(b"<title>" + b"x" * 500 + b"</title>")
    assert long is not None and len(long) == 120 and long.endswith("\u2026")
    # Only the first 16 KiB count.
    assert extract_title(b" " * MAX_BYTES + b"<title>late</title>") is None


@given(st.binary(max_size=2000), st.text(max_size=300))
def test_any_page_gives_a_short_clean_title_or_none(noise: bytes, title: str) -> None:
    for data in (
        noise,
        b"<title>" + title.encode("utf-8", "surrogatepass") + b"</title>" + noise,
    ):
        found = extract_title(data)
        if found is not None:
            assert 0 < len(found) <= 120
            assert found == found.strip()
            assert all(c.isprintable() for c in found)


def test_only_an_http_status_line_counts_as_http() -> None:
    assert answers_http(b"HTTP/1.1 200 OK\r\n")
    assert answers_http(b"HTTP/1.0 404 Not Found\r\n")
    assert not answers_http(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert not answers_http(b"")


def test_a_port_is_probed_at_most_once_a_minute() -> None:
    schedule = ProbeSchedule()
    assert schedule.due(3000, 100.0)
    schedule.started(3000, 100.0)
    assert not schedule.due(3000, 100.5)  # running
    schedule.finished(3000)
    assert not schedule.due(3000, 159.9)
    assert schedule.due(3000, 160.0)
    # Gone and back within the minute (an app restarting on save): still not due.
    schedule.forget_older_than(120.0, keep=set())
    assert not schedule.due(3000, 130.0)


# -- the probe on real sockets ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_probe_says_who_it_is_sends_no_cookie_and_reads_the_title(
    upstream,
) -> None:
    def page(request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html")
        return b"<!doctype html><title>My &amp; app</title>"

    recorder = Recorder(page, record_probes=True)
    site = upstream(recorder)
    result = await HttpProbe(get_reactor()).probe(site.port)
    assert result == ProbeResult(True, "My & app")
    (request,) = recorder.requests
    assert request["method"] == b"GET" and request["uri"] == b"/"
    assert recorder.header(0, b"user-agent") == [b"portproxy-probe"]
    assert recorder.header(0, b"cookie") == []


@pytest_twisted.ensureDeferred
async def test_the_probe_reads_at_most_16_kib(upstream) -> None:
    sent: list[int] = []

    class Big(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> int:
            from twisted.web.server import NOT_DONE_YET

            request.write(b"x" * (4 * MAX_BYTES))
            sent.append(1)
            return NOT_DONE_YET  # never finishes: the probe must stop by itself

    site = upstream(Big())
    result = await HttpProbe(get_reactor()).probe(site.port)
    assert result.http is True and result.title is None and sent


@pytest_twisted.ensureDeferred
async def test_a_closed_port_or_a_silent_server_is_not_http() -> None:
    from twisted.internet.protocol import Factory, Protocol

    reactor = get_reactor()
    assert await HttpProbe(reactor).probe(free_port()) == ProbeResult(False)
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        result = await HttpProbe(reactor).probe(silent.getHost().port)  # waits 1 s
    finally:
        await silent.stopListening()
    assert result == ProbeResult(False)


# -- the watcher, on a fake clock -------------------------------------------------------


class Tables:
    """A fake /proc/net/tcp whose listeners a test sets."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "tcp"
        self.proc = tmp_path / "proc"
        self.proc.mkdir()
        self.set()

    def set(self, *ports: int, hidden: tuple[int, ...] = ()) -> None:
        """Listen on C{ports} (pid = port) and C{hidden} (another user's process)."""
        lines = [_line("0100007F", p, inode=p) for p in (*ports, *hidden)]
        self.path.write_text(HEAD + "".join(lines))
        for port in ports:
            fd = self.proc / str(port) / "fd"
            if not fd.exists():
                fd.mkdir(parents=True)
                os.symlink(f"socket:[{port}]", fd / "3")

    def discovery(self) -> Discovery:
        def info(pid: int, uid: int | None) -> ProcessInfo:
            return ProcessInfo(pid, "app", f"app --port {pid}", "/srv", "dev")

        return Discovery(
            tables=[(str(self.path), "ipv4")], proc=str(self.proc), process_info=info
        )


class Probes:
    """A fake probe: records each call; answers when the test says."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.pending: dict[int, Deferred[ProbeResult]] = {}

    def __call__(self, port: int, *, ipv6: bool = False) -> Deferred[ProbeResult]:
        self.calls.append(port)
        d: Deferred[ProbeResult] = Deferred()
        self.pending[port] = d
        return d


def _watcher(
    tmp_path: Path, own_ports: set[int] | None = None
) -> tuple[PortsWatcher, Clock, Tables, Probes]:
    clock = Clock()
    tables = Tables(tmp_path)
    probes = Probes()
    watcher = PortsWatcher(
        clock,
        run_blocking=lambda work: succeed(work()),
        probe=probes,
        own_ports=own_ports or set(),
        discovery=tables.discovery(),
    )
    return watcher, clock, tables, probes


def test_nobody_watching_means_no_timer_at_all(tmp_path: Path) -> None:
    watcher, clock, tables, probes = _watcher(tmp_path)
    assert clock.getDelayedCalls() == [] and not watcher.running
    watcher.touch()  # a page or API request
    assert watcher.running and len(clock.getDelayedCalls()) == 1
    clock.pump([1.0] * int(LINGER + 1))
    assert clock.getDelayedCalls() == [] and not watcher.running
    # A subscriber keeps it polling however long it stays; its leaving stops it.
    unsubscribe = watcher.subscribe(lambda entries: None)
    clock.pump([1.0] * 60)
    assert watcher.running
    unsubscribe()
    clock.pump([1.0] * int(LINGER + 1))
    assert clock.getDelayedCalls() == [] and not watcher.running


def test_subscribers_see_a_port_arrive_and_leave_within_one_poll(tmp_path: Path) -> None:
    watcher, clock, tables, probes = _watcher(tmp_path)
    seen: list[list[int]] = []
    watcher.subscribe(lambda entries: seen.append([e["port"] for e in entries]))
    assert seen == [[]]
    tables.set(3000)
    clock.advance(1.0)
    assert seen[-1] == [3000]
    clock.advance(1.0)
    assert len(seen) == 2  # nothing changed, nothing sent
    tables.set()
    clock.advance(1.0)
    assert seen[-1] == []
    watcher.stop()
    assert clock.getDelayedCalls() == []


def test_the_probe_runs_once_a_minute_per_port_and_never_holds_up_a_snapshot(
    tmp_path: Path,
) -> None:
    watcher, clock, tables, probes = _watcher(tmp_path, own_ports={8080})
    tables.set(3000, 8080)
    seen: list[Any] = []
    watcher.subscribe(seen.append)
    # The snapshot is there while the probe is still out.
    snapshot: list[Any] = []
    watcher.snapshot().addCallback(snapshot.append)
    (entries,) = snapshot
    assert [(e["port"], e["self"], e["http"]) for e in entries] == [
        (3000, False, None),
        (8080, True, None),
    ]
    assert probes.calls == [3000]  # never portproxy's own port
    probes.pending[3000].callback(ProbeResult(True, "Vite App"))
    clock.advance(PUBLISH_DELAY)  # probe answers reach subscribers together, a moment on
    assert (seen[-1][0]["http"], seen[-1][0]["title"]) == (True, "Vite App")
    clock.pump([1.0] * 59)
    assert probes.calls == [3000]
    clock.pump([1.0] * 2)
    assert probes.calls == [3000, 3000]
    watcher.stop()


def test_ports_of_processes_portproxy_may_not_see_are_not_probed(tmp_path: Path) -> None:
    # Another user's service (a database, sshd) is listed but not poked every minute.
    watcher, clock, tables, probes = _watcher(tmp_path)
    tables.set(3000, hidden=(5432,))
    watcher.touch()
    assert probes.calls == [3000]
    entries = watcher.entries
    assert entries is not None
    assert [(e["port"], e["pid"]) for e in entries] == [(3000, 3000), (5432, None)]
    watcher.stop()


def test_the_probe_stops_when_nobody_watches(tmp_path: Path) -> None:
    watcher, clock, tables, probes = _watcher(tmp_path)
    tables.set(3000)
    watcher.touch()
    assert probes.calls == [3000]
    probes.pending[3000].callback(ProbeResult(False))
    clock.pump([1.0] * 600)
    assert probes.calls == [3000] and clock.getDelayedCalls() == []


def test_entries_group_addresses_and_take_label_and_access_from_hooks() -> None:
    v4 = Listener(5173, "127.0.0.1", "ipv4", 1000, 1)
    v6 = Listener(5173, "::1", "ipv6", 1000, 2)
    own = Listener(8080, "0.0.0.0", "ipv4", 1000, 3)
    info = ProcessInfo(7, "node", "node vite", "/app", "dev")
    found = Found((v6, v4, own), {v4: info, v6: info}, {v4: "dev", v6: "dev", own: "dev"})
    entries = build_entries(
        found,
        {},
        own_ports={8080},
        label_of=lambda port: "web" if port == 5173 else None,
        access_of=lambda port: "public",
    )
    assert entries[0] == {
        "port": 5173,
        "addresses": [
            {"address": "127.0.0.1", "family": "ipv4"},
            {"address": "::1", "family": "ipv6"},
        ],
        "pid": 7,
        "process": "node",
        "command": "node vite",
        "cwd": "/app",
        "user": "dev",
        "http": None,
        "title": None,
        "label": "web",
        "access": "public",
        "self": False,
        "warnings": [],
    }
    assert entries[1]["self"] is True and entries[1]["warnings"] == []
    assert entries[1]["pid"] is None and entries[1]["user"] == "dev"


def test_only_portproxys_own_listeners_are_self_not_other_sockets_of_its_process() -> None:
    listener = Listener(9999, "127.0.0.1", "ipv4", 0, 1)
    info = ProcessInfo(os.getpid(), "python", None, None, None)
    found = Found((listener,), {listener: info}, {listener: None})
    (entry,) = build_entries(found, {}, own_ports=set())
    assert entry["self"] is False
    (entry,) = build_entries(found, {}, own_ports={9999})
    assert entry["self"] is True


# -- many ports: bounded work (issue 16) ------------------------------------------------


def _answer_all(probes: Probes, clock: Clock, step: float = 0.0) -> int:
    """Answer the probes as they come (each one on its own, lowest port first),
    advancing the clock by C{step} after each; the most that were out at once."""
    most = 0
    while probes.pending:
        most = max(most, len(probes.pending))
        port = min(probes.pending)
        probes.pending.pop(port).callback(ProbeResult(True, f"app {port}"))
        if step:
            clock.advance(step)
    return most


def test_many_ports_are_probed_16_at_a_time_and_only_the_lowest_256(
    tmp_path: Path,
) -> None:
    watcher, clock, tables, probes = _watcher(tmp_path)
    tables.set(*range(20000, 21000))
    watcher.touch()
    assert probes.calls == list(range(20000, 20016))  # the rest wait their turn
    assert _answer_all(probes, clock) == 16
    clock.advance(0.5)
    assert probes.calls == list(range(20000, 20256))
    entries = watcher.entries
    assert entries is not None and len(entries) == 1000
    assert [e["title"] for e in entries[:256]] == [f"app {p}" for p in range(20000, 20256)]
    for entry in entries[256:]:
        assert entry["http"] is None
        assert any("not probed" in w.lower() for w in entry["warnings"]), entry["warnings"]
    assert all(e["warnings"] == [] for e in entries[:256])
    watcher.stop()


def test_probe_answers_cost_a_bounded_number_of_rebuilds_not_one_per_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portproxy.ports import watch

    builds: list[int] = []
    real_build = watch.build_entries

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(watch, "build_entries", counting_build)
    watcher, clock, tables, probes = _watcher(tmp_path)
    tables.set(*range(20000, 21000))
    published: list[Any] = []
    watcher.subscribe(published.append)
    builds.clear()
    published.clear()
    # Every answer in the same instant: one rebuild and one event for all of them.
    _answer_all(probes, clock)
    clock.advance(0.5)
    assert len(builds) <= 2 and len(published) == 1
    # Answers spread over time (one every 10 ms, for 256 ports): the rebuilds follow
    # the clock (a few a second), not the number of answers.
    clock.advance(60.0)  # a minute on: every port is due again
    builds.clear()
    published.clear()
    start = clock.seconds()
    _answer_all(probes, clock, step=0.01)
    elapsed = clock.seconds() - start
    assert 2.0 < elapsed < 3.0
    per_second = 1 / PUBLISH_DELAY + 1 / INTERVAL  # answers gathered, and the polls
    assert len(builds) <= per_second * elapsed + 2
    assert len(published) <= per_second * elapsed + 2
    watcher.stop()


def test_queued_probes_are_dropped_when_nobody_watches_or_at_stop(
    tmp_path: Path,
) -> None:
    watcher, clock, tables, probes = _watcher(tmp_path)
    tables.set(*range(20000, 20100))
    watcher.touch()
    assert len(probes.calls) == 16
    clock.pump([1.0] * int(LINGER + 1))  # the probes hang; the page is closed
    _answer_all(probes, clock)
    clock.advance(PUBLISH_DELAY)  # their answers are shown once, then all is quiet
    assert len(probes.calls) == 16 and clock.getDelayedCalls() == []
    watcher.touch()  # looked at again, a minute later: the next 16 go out
    clock.pump([1.0] * 60)
    calls = len(probes.calls)
    assert 16 < calls <= 32
    watcher.stop()
    assert probes.pending == {} or all(d.called for d in probes.pending.values())
    _answer_all(probes, clock)
    assert len(probes.calls) == calls and clock.getDelayedCalls() == []


def test_command_cwd_and_process_name_are_capped_with_an_ellipsis() -> None:
    listener = Listener(3000, "127.0.0.1", "ipv4", 1000, 1)
    info = ProcessInfo(7, "p" * 1000, "node " + "x" * 10_000, "/" + "d" * 10_000, "dev")
    found = Found((listener,), {listener: info}, {listener: "dev"})
    (entry,) = build_entries(found, {}, own_ports=set())
    assert len(entry["command"]) == 4096 and entry["command"].endswith("…")
    assert entry["command"].startswith("node xxx")
    assert len(entry["cwd"]) == 4096 and entry["cwd"].endswith("…")
    assert len(entry["process"]) <= 256 and entry["process"].endswith("…")
    short = ProcessInfo(7, "node", "node vite", "/app", "dev")
    (entry,) = build_entries(Found((listener,), {listener: short}, {}), {}, own_ports=())
    assert (entry["process"], entry["command"], entry["cwd"]) == (
        "node",
        "node vite",
        "/app",
    )

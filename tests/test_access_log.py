"""The access log (issue 14, SPEC 10): the same lines as before, for less, to the
Twisted log or a file that survives rotation."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    jsonFileLogObserver,
)
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel

from portproxy.net.reactor import ISiteReactor
from portproxy.web.accesslog import (
    FileSink,
    LogClock,
    TwistedLogSink,
    combined_line,
    escape,
    json_line,
    log_timestamp,
    log_uri,
)
from portproxy.web.site import ACCESS_LOG_NAMESPACE, ProxySite
from tests.support import free_port, get, parse_response, raw_request

# -- the lines, as the code before issue 14 wrote them ------------------------------------

#: The time every fixture line was written at (its second: 00:40:07).
T = 1796604007.75

CASES: dict[str, tuple[Any, bytes, bytes, bytes, int, int, bytes | None, bytes | None]] = {
    "plain": (
        IPv4Address("TCP", "203.0.113.9", 50000),
        b"GET", b"/proxy/5173/", b"HTTP/1.1", 200, 15,
        b"https://example.test/", b"curl/7.88.1",
    ),
    "no_referrer_agent_empty_body": (
        IPv4Address("TCP", "127.0.0.1", 1),
        b"HEAD", b"/proxy/3000/x", b"HTTP/1.0", 304, 0, None, None,
    ),
    "forged_agent": (
        IPv4Address("TCP", "198.51.100.7", 2),
        b"GET", b"/", b"HTTP/1.1", 200, 1, None,
        b'x" 200 1 "-" "-"\n"10.0.0.1" - - [01/Jan/2026:00:00:00 +0000]'
        b' "GET /admin HTTP/1.1" 200 9 "-" "y',
    ),
    "both_quotes": (
        IPv4Address("TCP", "198.51.100.7", 2),
        b"GET", b"/proxy/8080/it's", b"HTTP/1.1", 404, 9, b"it's \"q\"", b"a'b",
    ),
    "odd_uri": (
        IPv6Address("TCP", "::1", 3),
        b"GET", b"/proxy/3000/caf\xc3\xa9 \\x\t%22?q=\"x\"&y='z'", b"HTTP/1.1", 200,
        1048576, b"\xff\xfe", b"Mozilla/5.0 (X11; Linux x86_64) \xe2\x80\x94 \r\x7f",
    ),
    "unix_peer": (
        UNIXAddress(b"/run/pp.sock"),
        b"DELETE", b"/absproxy/9000/api/items/7", b"HTTP/1.1", 204, 0, b"-",
        b"python-requests/2.31",
    ),
    "http2_post": (
        IPv4Address("TCP", "192.0.2.44", 4),
        b"POST", b"/proxy/5000/upload?name={x}", b"HTTP/2", 413, 23,
        b"https://a.test/p?{y}", b"{z}",
    ),
    "websocket": (
        IPv6Address("TCP", "2001:db8::1", 5),
        b"GET", b"/proxy/8081/ws", b"HTTP/1.1", 101, 0, None, b"node",
    ),
}  # fmt: skip

# Captured from commit e2c1b86 (twisted.web's combinedLogFormatter and portproxy's
# _json_log_formatter, through access_log_line) for the requests above.
BEFORE = {
    ("combined", "plain"): '"203.0.113.9" - - [07/Dec/2026:00:40:07 +0000] "GET /proxy/5173/ HTTP/1.1" 200 15 "https://example.test/" "curl/7.88.1"',
    ("combined", "no_referrer_agent_empty_body"): '"127.0.0.1" - - [07/Dec/2026:00:40:07 +0000] "HEAD /proxy/3000/x HTTP/1.0" 304 - "-" "-"',
    ("combined", "forged_agent"): '"198.51.100.7" - - [07/Dec/2026:00:40:07 +0000] "GET / HTTP/1.1" 200 1 "-" "x\\" 200 1 \\"-\\" \\"-\\" \\"10.0.0.1\\" - - [01/Jan/2026:00:00:00 +0000] \\"GET /admin HTTP/1.1\\" 200 9 \\"-\\" \\"y"',
    ("combined", "both_quotes"): '"198.51.100.7" - - [07/Dec/2026:00:40:07 +0000] "GET /proxy/8080/it\'s HTTP/1.1" 404 9 "it\'s \\"q\\"" "a\'b"',
    ("combined", "odd_uri"): '"::1" - - [07/Dec/2026:00:40:07 +0000] "GET /proxy/3000/caf\\xc3\\xa9 \\\\x\\t%22?q=\\"x\\"&y=\'z\' HTTP/1.1" 200 1048576 "\\xff\\xfe" "Mozilla/5.0 (X11; Linux x86_64) \\xe2\\x80\\x94  \\x7f"',
    ("combined", "unix_peer"): '"-" - - [07/Dec/2026:00:40:07 +0000] "DELETE /absproxy/9000/api/items/7 HTTP/1.1" 204 - "-" "python-requests/2.31"',
    ("combined", "http2_post"): '"192.0.2.44" - - [07/Dec/2026:00:40:07 +0000] "POST /proxy/5000/upload?name={x} HTTP/2" 413 23 "https://a.test/p?{y}" "{z}"',
    ("combined", "websocket"): '"2001:db8::1" - - [07/Dec/2026:00:40:07 +0000] "GET /proxy/8081/ws HTTP/1.1" 101 - "-" "node"',
    ("json", "plain"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "203.0.113.9", "method": "GET", "uri": "/proxy/5173/", "protocol": "HTTP/1.1", "status": 200, "bytes": 15, "referrer": "https://example.test/", "agent": "curl/7.88.1"}',
    ("json", "no_referrer_agent_empty_body"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "127.0.0.1", "method": "HEAD", "uri": "/proxy/3000/x", "protocol": "HTTP/1.0", "status": 304, "bytes": 0, "referrer": "", "agent": ""}',
    ("json", "forged_agent"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "198.51.100.7", "method": "GET", "uri": "/", "protocol": "HTTP/1.1", "status": 200, "bytes": 1, "referrer": "", "agent": "x\\" 200 1 \\"-\\" \\"-\\" \\"10.0.0.1\\" - - [01/Jan/2026:00:00:00 +0000] \\"GET /admin HTTP/1.1\\" 200 9 \\"-\\" \\"y"}',
    ("json", "both_quotes"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "198.51.100.7", "method": "GET", "uri": "/proxy/8080/it\'s", "protocol": "HTTP/1.1", "status": 404, "bytes": 9, "referrer": "it\'s \\"q\\"", "agent": "a\'b"}',
    ("json", "odd_uri"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "::1", "method": "GET", "uri": "/proxy/3000/caf\\u00c3\\u00a9 \\\\x\\t%22?q=\\"x\\"&y=\'z\'", "protocol": "HTTP/1.1", "status": 200, "bytes": 1048576, "referrer": "\\u00ff\\u00fe", "agent": "Mozilla/5.0 (X11; Linux x86_64) \\u00e2\\u0080\\u0094  \\u007f"}',
    ("json", "unix_peer"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "-", "method": "DELETE", "uri": "/absproxy/9000/api/items/7", "protocol": "HTTP/1.1", "status": 204, "bytes": 0, "referrer": "-", "agent": "python-requests/2.31"}',
    ("json", "http2_post"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "192.0.2.44", "method": "POST", "uri": "/proxy/5000/upload?name={x}", "protocol": "HTTP/2", "status": 413, "bytes": 23, "referrer": "https://a.test/p?{y}", "agent": "{z}"}',
    ("json", "websocket"): '{"time": "[07/Dec/2026:00:40:07 +0000]", "client": "2001:db8::1", "method": "GET", "uri": "/proxy/8081/ws", "protocol": "HTTP/1.1", "status": 101, "bytes": 0, "referrer": "", "agent": "node"}',
}  # fmt: skip


class Lines:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False

    def write(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _request(name: str) -> http.Request:
    client, method, uri, proto, code, sent, referrer, agent = CASES[name]
    request = http.Request(cast(http.HTTPChannel, DummyChannel()))
    request.client = client
    request.method, request.uri, request.clientproto = method, uri, proto
    request.code, request.sentLength = code, sent
    if referrer is not None:
        request.requestHeaders.setRawHeaders(b"referer", [referrer])
    if agent is not None:
        request.requestHeaders.setRawHeaders(b"user-agent", [agent])
    return request


def _observer(events: list[dict[str, Any]]) -> ILogObserver:
    """C{events.append} as the log observer it is (a plain callable to mypy)."""
    return cast(ILogObserver, events.append)


def _site_reactor(clock: Clock) -> ISiteReactor:
    """A task Clock stands in for the reactor: the site only schedules calls on it."""
    return cast(ISiteReactor, clock)


def _site(access_log: str, sink: Any) -> ProxySite:
    clock = Clock()
    clock.advance(T)
    return ProxySite(
        Resource(),
        reactor=_site_reactor(clock),
        access_log=access_log,
        access_log_sink=sink,
    )


@pytest.mark.parametrize(("fmt", "case"), sorted(BEFORE))
def test_the_site_logs_the_same_line_as_before_issue_14(fmt: str, case: str) -> None:
    sink = Lines()
    _site(fmt, sink).log(_request(case))
    assert sink.lines == [BEFORE[fmt, case]]


def test_access_log_off_writes_nothing() -> None:
    sink = Lines()
    site = _site("off", sink)
    for case in CASES:
        site.log(_request(case))
    assert sink.lines == []


@given(st.binary(max_size=64))
def test_escape_quotes_like_twisted_web_for_any_bytes(value: bytes) -> None:
    from twisted.web.http import _escape  # the oracle: what the log used before

    assert escape(value) == _escape(value)


_COMBINED = re.compile(
    r'"(?P<client>[^"]*)" - - \[(?P<time>[^\]]+)\] '
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<length>\d+|-) '
    r'"(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"'
)


@given(uri=st.binary(), referrer=st.binary(), agent=st.binary())
def test_no_request_field_can_forge_or_split_a_combined_line(
    uri: bytes, referrer: bytes, agent: bytes
) -> None:
    # The request that must be refused: quotes, newlines and a fake second entry in
    # any header or target still give exactly one line, with its own status.
    line = combined_line(
        "203.0.113.9", "[07/Dec/2026:00:40:07 +0000]", b"GET", uri, b"HTTP/1.1",
        418, 7, referrer, agent,
    )  # fmt: skip
    assert "\n" not in line and "\r" not in line
    match = _COMBINED.fullmatch(line)
    assert match is not None, line
    assert match["status"] == "418" and match["length"] == "7"


def test_a_forged_user_agent_stays_inside_its_field() -> None:
    agent = (
        b'x" 200 1 "-" "-"\n"10.0.0.1" - - [01/Jan/2026:00:00:00 +0000] "GET /a HTTP/1.1'
    )
    line = combined_line(
        "198.51.100.7", "[07/Dec/2026:00:40:07 +0000]", b"GET", b"/", b"HTTP/1.1",
        200, 1, None, agent,
    )  # fmt: skip
    match = _COMBINED.fullmatch(line)
    assert match is not None and match["client"] == "198.51.100.7"
    assert match["agent"].startswith('x\\" 200') and "\n" not in line


_text = st.one_of(st.none(), st.binary(max_size=40))


@given(
    client=st.one_of(st.none(), st.sampled_from(["127.0.0.1", "::1", "fe80::1%eth0"])),
    method=st.binary(max_size=10),
    uri=st.binary(max_size=60),
    status=st.integers(100, 599),
    length=st.integers(0, 2**40),
    referrer=_text,
    agent=_text,
)
def test_json_line_is_what_json_dumps_wrote(
    client: str | None,
    method: bytes,
    uri: bytes,
    status: int,
    length: int,
    referrer: bytes | None,
    agent: bytes | None,
) -> None:
    stamp = "[07/Dec/2026:00:40:07 +0000]"
    before = json.dumps(
        {
            "time": stamp,
            "client": client if client is not None else "-",
            "method": method.decode("latin-1"),
            "uri": uri.decode("latin-1"),
            "protocol": "HTTP/1.1",
            "status": status,
            "bytes": length,
            "referrer": (referrer or b"").decode("latin-1"),
            "agent": (agent or b"").decode("latin-1"),
        }
    )
    now = json_line(
        client, stamp, method, uri, b"HTTP/1.1", status, length, referrer, agent
    )
    assert now == before
    assert "\n" not in now


@given(st.floats(0, 4102444800))
def test_the_timestamp_is_twisted_webs(seconds: float) -> None:
    from twisted.web.http import datetimeToLogString

    assert log_timestamp(seconds) == datetimeToLogString(seconds)


def test_the_log_clock_formats_once_per_second_and_follows_the_clock() -> None:
    clock = Clock()
    clock.advance(T)
    stamp = LogClock(clock.seconds)
    first = stamp()
    assert first == "[07/Dec/2026:00:40:07 +0000]"
    assert stamp() is first  # the same second: the cached string
    clock.advance(0.25)
    assert stamp() == "[07/Dec/2026:00:40:08 +0000]"


# -- the Twisted log sink ------------------------------------------------------------------


def test_without_a_reactor_each_line_is_one_info_event_in_the_namespace() -> None:
    events: list[dict[str, Any]] = []
    sink = TwistedLogSink(ACCESS_LOG_NAMESPACE, _observer(events), clock=lambda: T)
    sink.write('a "line" with {braces}')
    sink.write("another")
    assert [formatEvent(e) for e in events] == ['a "line" with {braces}', "another"]
    event = events[0]
    assert event["log_namespace"] == "portproxy.site.ProxySite"
    assert event["log_level"] is LogLevel.info
    assert event["log_time"] == T
    text = formatEventAsClassicLogText(event, formatTime=lambda t: "TIME")
    assert text == 'TIME [portproxy.site.ProxySite#info] a "line" with {braces}\n'


def test_a_line_alone_in_its_reactor_turn_is_one_event_as_before() -> None:
    clock = Clock()
    events: list[dict[str, Any]] = []
    sink = TwistedLogSink(ACCESS_LOG_NAMESPACE, _observer(events), reactor=clock)
    sink.write("GET one")
    assert events == [], "written at the end of the reactor turn"
    clock.advance(0)
    sink.write("GET two")
    clock.advance(0)
    assert [e["line"] for e in events] == ["GET one", "GET two"]
    assert not clock.getDelayedCalls()


def test_the_lines_of_one_reactor_turn_go_out_as_one_event() -> None:
    # Under load many requests end in one turn: one event for all of them is what
    # keeps the observers' per-event cost off each request.
    clock = Clock()
    events: list[dict[str, Any]] = []
    sink = TwistedLogSink(ACCESS_LOG_NAMESPACE, _observer(events), reactor=clock)
    for i in range(3):
        sink.write(f"GET /{i}")
    clock.advance(0)
    [event] = events
    assert formatEvent(event) == "GET /0\nGET /1\nGET /2"
    assert event["log_level"] is LogLevel.info
    assert event["log_namespace"] == "portproxy.site.ProxySite"
    text = formatEventAsClassicLogText(event, formatTime=lambda t: "TIME")
    assert text == "TIME [portproxy.site.ProxySite#info] GET /0\n\tGET /1\n\tGET /2\n"


def test_a_turn_with_many_lines_is_cut_into_bounded_events() -> None:
    clock = Clock()
    events: list[dict[str, Any]] = []
    sink = TwistedLogSink(
        ACCESS_LOG_NAMESPACE, _observer(events), reactor=clock, max_lines=4
    )
    for i in range(10):
        sink.write(f"{i}")
    assert [e["line"] for e in events] == ["0\n1\n2\n3", "4\n5\n6\n7"]
    sink.close()  # shutdown: what is left goes out at once
    assert events[-1]["line"] == "8\n9"
    assert not clock.getDelayedCalls()


def test_the_sites_lines_reach_the_twisted_log_at_the_end_of_the_turn() -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(_observer(events))
    try:
        clock = Clock()
        clock.advance(T)
        site = ProxySite(Resource(), reactor=_site_reactor(clock))
        site.log(_request("plain"))
        site.log(_request("websocket"))
        assert not [e for e in events if e.get("log_namespace") == ACCESS_LOG_NAMESPACE]
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(_observer(events))
    [event] = [e for e in events if e.get("log_namespace") == ACCESS_LOG_NAMESPACE]
    assert event["line"].split("\n") == [
        BEFORE["combined", "plain"],
        BEFORE["combined", "websocket"],
    ]


def test_the_twisted_log_event_keeps_the_fields_twists_json_output_had() -> None:
    # twist writes JSON events when its output is not a terminal: the access log's
    # event keeps the format and the "line" field that consumers read.
    out: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            out.append(text)

        def flush(self) -> None:
            pass

    sink = TwistedLogSink(
        ACCESS_LOG_NAMESPACE, jsonFileLogObserver(cast(IO[Any], Out())), clock=lambda: T
    )
    sink.write(BEFORE["combined", "plain"])
    event = json.loads(out[0].strip("\x1e\n"))
    assert event["line"] == BEFORE["combined", "plain"]
    assert event["log_format"] == "{line}"
    assert event["log_namespace"] == "portproxy.site.ProxySite"
    assert event["log_level"]["name"] == "info"


def test_the_sites_default_sink_is_the_twisted_log() -> None:
    site = ProxySite(Resource(), reactor=_site_reactor(Clock()))
    assert isinstance(site._access_log, TwistedLogSink)
    assert site._access_log.namespace == ACCESS_LOG_NAMESPACE


# -- the file sink ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "access.log"


def _sink(path: Path, clock: Clock, **kw: Any) -> FileSink:
    return FileSink(str(path), reactor=clock, **kw)


def test_the_file_gets_lines_in_batches_a_second_after_the_first(
    log_path: Path, clock: Clock
) -> None:
    sink = _sink(log_path, clock)
    sink.write("one")
    sink.write("two")
    assert log_path.read_text() == ""  # buffered
    clock.advance(0.9)
    sink.write("three")
    assert log_path.read_text() == ""
    clock.advance(0.1)
    assert log_path.read_text() == "one\ntwo\nthree\n"
    assert not clock.getDelayedCalls(), "no timer while the buffer is empty"
    sink.close()


def test_a_full_buffer_is_written_at_once(log_path: Path, clock: Clock) -> None:
    sink = _sink(log_path, clock, flush_bytes=100)
    for i in range(12):
        sink.write(f"line {i:04}")  # 9 characters and a newline each
    assert log_path.read_text().splitlines() == [f"line {i:04}" for i in range(10)]
    sink.close()
    assert len(log_path.read_text().splitlines()) == 12


def test_close_writes_what_is_buffered_and_cancels_the_timer(
    log_path: Path, clock: Clock
) -> None:
    sink = _sink(log_path, clock)
    sink.write("last words")
    sink.close()
    assert log_path.read_text() == "last words\n"
    assert not clock.getDelayedCalls()
    # A request that ends after the close is still written, at once.
    sink.write("straggler")
    assert log_path.read_text() == "last words\nstraggler\n"
    sink.close()


def test_lines_are_appended_to_an_existing_file(log_path: Path, clock: Clock) -> None:
    log_path.write_text("from yesterday\n")
    sink = _sink(log_path, clock)
    sink.write("today")
    sink.close()
    assert log_path.read_text() == "from yesterday\ntoday\n"


def test_a_new_file_is_created_0640_at_most(
    log_path: Path, clock: Clock, tmp_path: Path
) -> None:
    old = os.umask(0o022)
    try:
        _sink(log_path, clock).close()
        other = tmp_path / "strict.log"
        os.umask(0o077)
        _sink(other, clock).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o640
    assert stat.S_IMODE(other.stat().st_mode) == 0o600


def test_a_file_renamed_away_is_followed_by_a_new_one(log_path: Path, clock: Clock) -> None:
    # logrotate without copytruncate: rename, (maybe create), then the next batch.
    sink = _sink(log_path, clock)
    sink.write("before rotation")
    sink.flush()
    rotated = log_path.with_name("access.log.1")
    log_path.rename(rotated)
    sink.write("after rotation")
    sink.flush()
    assert rotated.read_text() == "before rotation\n"
    assert log_path.read_text() == "after rotation\n"
    # logrotate's "create": a new empty file at the path is used as well.
    log_path.rename(log_path.with_name("access.log.2"))
    log_path.touch()
    sink.write("third")
    sink.close()
    assert log_path.read_text() == "third\n"


def test_a_removed_file_is_created_again(log_path: Path, clock: Clock) -> None:
    sink = _sink(log_path, clock)
    sink.write("one")
    sink.flush()
    log_path.unlink()
    sink.write("two")
    sink.close()
    assert log_path.read_text() == "two\n"


def test_reopen_writes_the_buffer_to_the_old_file_then_opens_the_path(
    log_path: Path, clock: Clock
) -> None:
    # SIGUSR1 after logrotate renamed the file: what was buffered belongs to the
    # old file's period, the rest to the new file.
    sink = _sink(log_path, clock)
    sink.write("one")
    sink.flush()
    rotated = log_path.with_name("access.log.1")
    log_path.rename(rotated)
    log_path.write_text("")  # logrotate's create
    sink.reopen()
    sink.write("two")
    sink.close()
    assert log_path.read_text() == "two\n"
    assert rotated.read_text() == "one\n"


def test_the_signal_handler_asks_the_reactor_to_reopen_and_is_removed_at_stop() -> None:
    from portproxy.web.accesslog import ReopenOnSignal

    class Reactor:
        calls: list[Any] = []

        def callFromThread(self, f: Any, *args: Any) -> None:
            self.calls.append(f)

    reactor = Reactor()
    reopened: list[bool] = []
    before = signal.getsignal(signal.SIGUSR1)
    service = ReopenOnSignal(reactor, lambda: reopened.append(True))  # type: ignore[arg-type]
    service.startService()
    try:
        assert signal.getsignal(signal.SIGUSR1) == service.handle
        service.handle(signal.SIGUSR1, None)
        assert reopened == [], "nothing happens inside the signal handler itself"
        [call] = reactor.calls
        call()
        assert reopened == [True]
    finally:
        service.stopService()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_write_error_is_logged_once_and_never_raised(clock: Clock) -> None:
    events: list[dict[str, Any]] = []
    from twisted.logger import Logger

    log = Logger(observer=_observer(events), namespace="portproxy.accesslog")
    sink = FileSink("/dev/full", reactor=clock, log=log)  # every write: ENOSPC
    for _ in range(3):
        sink.write("lost")
        sink.flush()
    errors = [e for e in events if e["log_level"] is LogLevel.error]
    assert len(errors) == 1
    assert "/dev/full" in formatEvent(errors[0])
    sink.close()


def test_a_folder_that_cannot_hold_the_file_stops_start_up(tmp_path: Path) -> None:
    from portproxy.config import Config, StartupError
    from portproxy.runtime.app import build_service

    folder = tmp_path / "folder"
    folder.mkdir()
    config = Config(
        auth="none", access_log_file=str(folder), data_dir=str(tmp_path / "d"), listen=()
    )
    with pytest.raises(StartupError, match="--access-log-file"):
        build_service(config, environ={}, reactor=Clock())  # type: ignore[arg-type]


# -- sign-in tickets never reach the log ------------------------------------------------


def _logged_uri(uri: bytes, fmt: str = "combined") -> str:
    line = {"combined": combined_line, "json": json_line}[fmt]
    text = line("127.0.0.1", "[t]", b"GET", uri, b"HTTP/1.1", 302, 0, None, None)
    if fmt == "json":
        return str(json.loads(text)["uri"])
    return text.split('"')[3].split(" ")[1]


@pytest.mark.parametrize("fmt", ["combined", "json"])
@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        (
            b"/.portproxy/ticket/accept?t=v1.SECRET.sig&to=%2Fx",
            "/.portproxy/ticket/accept?t=[redacted]&to=%2Fx",
        ),
        (
            b"/.portproxy/ticket/accept?to=/&t=SECRET",
            "/.portproxy/ticket/accept?to=/&t=[redacted]",
        ),
        # Every spelling that reaches the ticket page (its path matches without case,
        # an absolute-form target is reduced to it, Twisted reads ';' and %-escapes).
        (b"/.PortProxy/Ticket/Accept?t=SECRET", "/.PortProxy/Ticket/Accept?t=[redacted]"),
        (
            b"http://5173.dev.test/.portproxy/ticket/accept?t=SECRET",
            "http://5173.dev.test/.portproxy/ticket/accept?t=[redacted]",
        ),
        (
            b"/.portproxy/ticket/accept?x=1;%74=SECRET&t=SECRET2#f",
            "/.portproxy/ticket/accept?x=1;%74=[redacted]&t=[redacted]",
        ),
        (b"/.portproxy/ticket/accept?t=a=SECRET", "/.portproxy/ticket/accept?t=[redacted]"),
    ],
)
def test_the_ticket_in_the_accept_url_is_redacted_and_the_rest_kept(
    fmt: str, uri: bytes, logged: str
) -> None:
    assert _logged_uri(uri, fmt) == logged
    assert "SECRET" not in _logged_uri(uri, fmt)


@pytest.mark.parametrize(
    "uri",
    [
        b"/proxy/5173/?t=kept",  # an app's own t parameter
        b"/proxy/5173/.portproxy/ticket/accept?t=kept",  # the app's path, not ours
        b"/.portproxy/ticket?t=kept",
        b"/.portproxy/ticket/accept/?t=kept",
        b"/.portproxy/ticket/accept?tt=kept&xt=kept",
    ],
)
def test_other_urls_with_a_t_parameter_are_logged_as_they_came(uri: bytes) -> None:
    assert _logged_uri(uri) == uri.decode()


async def test_a_ticket_accept_request_is_logged_without_its_ticket(
    make_proxy: Any, tmp_path: Path
) -> None:
    path = tmp_path / "access.log"
    proxy = make_proxy(
        access_log="combined", access_log_file=str(path), data_dir=str(tmp_path / "d")
    )
    await raw_request(
        proxy.port, get(b"/.portproxy/ticket/accept?t=v1.SECRET.sig&to=%2Fapp%2F")
    )
    proxy.instance.access_log.close()
    line = path.read_text()
    assert '"GET /.portproxy/ticket/accept?t=[redacted]&to=%2Fapp%2F HTTP/1.1"' in line
    assert "SECRET" not in line


# -- wired into a running instance -----------------------------------------------------------


async def test_a_proxied_request_is_logged_to_the_file(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    app = upstream()
    path = tmp_path / "access.log"
    proxy = make_proxy(
        access_log="combined", access_log_file=str(path), data_dir=str(tmp_path / "d")
    )
    raw = await raw_request(
        proxy.port,
        get(
            b'/proxy/%d/hello?x="1"' % app.port,
            headers=b'User-Agent: ua "quoted"\r\nReferer: http://r.test/\r\n',
        ),
    )
    assert parse_response(raw)[0] == 200
    sink = proxy.instance.access_log
    sink.close()
    line = path.read_text()
    assert re.fullmatch(
        r'"127\.0\.0\.1" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
        r'"GET /proxy/%d/hello\?x=\\"1\\" HTTP/1\.1" 200 \d+ '
        r'"http://r\.test/" "ua \\"quoted\\""\n' % app.port,
        line,
    ), line


async def test_off_writes_nothing_even_with_a_file(
    make_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    app = upstream()
    path = tmp_path / "access.log"
    proxy = make_proxy(access_log="off", access_log_file=str(path))
    raw = await raw_request(proxy.port, get(b"/proxy/%d/" % app.port))
    assert parse_response(raw)[0] == 200
    assert proxy.instance.access_log is None
    assert not path.exists()


# -- the real thing: twist portproxy, a signal, a rotation, a stop ---------------------------


def _twist(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PASSWORD", "HASHED_PASSWORD")}
    env["PYTHONPATH"] = str(root)
    return subprocess.Popen(
        [sys.executable, "-m", "twisted", "portproxy", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _fetch(port: int, path: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _wait_for(path: Path, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.05)


@pytest.mark.no_reactor_check
def test_twist_reopens_on_sigusr1_and_flushes_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "access.log"
    proc = _twist(
        "--auth", "none", "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--access-log-file", str(path), "--data-dir", str(tmp_path / "d"),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _fetch(port, "/healthz?first")
        assert "/healthz?first" in _wait_for(path, "/healthz?first")
        rotated = tmp_path / "access.log.1"
        path.rename(rotated)
        proc.send_signal(signal.SIGUSR1)  # logrotate's postrotate
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.exists(), "SIGUSR1 opens the path again"
        _fetch(port, "/healthz?second")
        proc.send_signal(signal.SIGTERM)  # before the 1 s batch timer
        proc.wait(timeout=15)
        assert proc.returncode in (0, -signal.SIGTERM)  # twist re-raises the signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            output = proc.stdout.read()
            proc.stdout.close()
    assert "/healthz?second" in path.read_text()
    assert "/healthz?second" not in rotated.read_text()
    assert b"/healthz?" not in output, "lines go to the file, not to the Twisted log"


@pytest.mark.no_reactor_check
def test_with_workers_sigusr1_to_the_supervisor_reaches_every_worker(
    tmp_path: Path,
) -> None:
    # logrotate signals the pid it knows (the supervisor's): it must pass the signal
    # on, not die of it (SIGUSR1's default action ends a process).
    port = free_port()
    path = tmp_path / "access.log"
    proc = _twist(
        "--auth", "none", "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--workers", "2", "--access-log-file", str(path),
        "--data-dir", str(tmp_path / "d"),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _fetch(port, "/healthz?first")
        assert "/healthz?first" in _wait_for(path, "/healthz?first")
        rotated = tmp_path / "access.log.1"
        path.rename(rotated)
        time.sleep(0.5)  # both workers up and their handlers installed
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the supervisor survives SIGUSR1"
        assert path.exists(), "the workers opened the path again"
        for i in range(6):
            _fetch(port, f"/healthz?after{i}")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    after = path.read_text()
    assert all(f"/healthz?after{i}" in after for i in range(6)), after
    assert "after" not in rotated.read_text()


@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        (b"/.portproxy/share/k3y.s1gn?x=1", b"/.portproxy/share/[redacted]"),
        (b"/.PORTPROXY/Share/k3y", b"/.PORTPROXY/Share/[redacted]"),
        (b"http://h:8/.portproxy/share/k3y", b"http://h:8/.portproxy/share/[redacted]"),
        (b"/proxy/3000/.portproxy/share/k3y", b"/proxy/3000/.portproxy/share/k3y"),
    ],
)
def test_a_share_links_token_is_never_logged(uri: bytes, logged: bytes) -> None:
    # A share link opens its port until it expires or is revoked: a log reader must
    # not be able to use it. An app's own path that looks alike is logged as it came.
    assert log_uri(uri) == logged


def test_a_long_junk_query_on_the_ticket_page_is_logged_short() -> None:
    # Final review: each 't=1' of a 12 KB query became 't=[redacted]', a log line
    # four times the request; the whole query is redacted at once instead.
    uri = b"/.portproxy/ticket/accept?" + b";".join([b"t=1"] * 3000)
    assert log_uri(uri) == b"/.portproxy/ticket/accept?[redacted]"

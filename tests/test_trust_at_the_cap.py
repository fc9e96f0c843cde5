"""At --max-connections, connections that never signed in make room first (third review).

SPEC 9: a signed-in user's request is served within --header-timeout even while an
attacker holds more connections than --max-connections allows. The attacker here has no
password: it holds its places by reading answers slowly over HTTP/2 (finding 1), by a
trickle of 401s on kept-alive connections (finding 2), or by churning empty connections
from many addresses (finding 3). The first part checks the order of eviction on a fake
clock (L{portproxy.net.limits.ConnectionLimits}); the second runs C{twist portproxy} as a
subprocess against real attacking sockets on 127.0.0.1 (bounded: seconds each).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from h2.settings import SettingCodes
from hyperframe.frame import WindowUpdateFrame
from twisted.internet.task import Clock

from portproxy.net.limits import IDLE_RECLAIM_AFTER, ConnectionLimits
from portproxy.net.policy import HEAD_GRACE
from tests.support import FakeConnection, fake_clock_limits
from tests.test_hostile_load import (
    PASSWORD,
    Proxy,
    _env,
    _raise_own_fd_limit,
    _request,
    _twist,
    app,
)
from tests.test_lockout import FakeH2
from tests.test_tls import write_pair

__all__ = ["app"]  # the fixture, imported so that the live tests can use it


# -- the order of eviction, on a fake clock -------------------------------------------------


Conn = FakeConnection
_limits = fake_clock_limits


def _idle(limits: ConnectionLimits, conn: Conn, *, trusted: bool) -> Conn:
    """C{conn} served one request (signed in or not) and is kept alive."""
    limits.head_started(conn)
    limits.head_done(conn)
    if trusted:
        limits.trusted(conn)
    limits.idle_started(conn)
    return conn


def _evicted(limits: ConnectionLimits) -> list[Conn]:
    """Make room until nothing may be closed; the connections closed, in order."""
    order: list[Any] = []
    while True:
        victim = limits._room_candidate()
        if victim is None:
            return order
        limits._evict(victim)
        limits.forget(victim)
        order.append(victim)


def test_untrusted_idle_connections_make_room_at_once_before_any_head() -> None:
    clock = Clock()
    limits = _limits(clock)
    old_head = Conn("198.51.100.9")
    limits.head_started(old_head)
    clock.advance(10)
    first = _idle(limits, Conn(), trusted=False)
    second = _idle(limits, Conn(), trusted=False)
    # No wait of IDLE_RECLAIM_AFTER: a connection that never signed in goes at once,
    # the one idle longest first, and only then the (old) head.
    assert _evicted(limits) == [first, second, old_head]
    assert first.events == second.events == ["reclaimed"]
    assert old_head.events == ["408"]


def test_a_trusted_idle_connection_goes_last_and_only_after_idle_reclaim_after() -> None:
    clock = Clock()
    limits = _limits(clock)
    user = _idle(limits, Conn(), trusted=True)
    head = Conn("198.51.100.9")
    limits.head_started(head)
    clock.advance(IDLE_RECLAIM_AFTER - 0.1)
    assert _evicted(limits) == [head]  # the head, old enough, and not the user
    assert user.events == []
    clock.advance(0.1)
    assert _evicted(limits) == [user]


def test_a_trusted_connection_with_a_request_under_way_is_never_closed() -> None:
    clock = Clock()
    limits = _limits(clock)
    busy = _idle(limits, Conn(), trusted=True)
    limits.idle_ended(busy)
    limits.head_started(busy)  # its next request
    limits.head_done(busy)  # ... is under way
    clock.advance(3600)
    assert _evicted(limits) == []
    assert busy.events == []


def test_a_head_younger_than_the_grace_is_never_closed_to_make_room() -> None:
    clock = Clock()
    limits = _limits(clock, header_timeout=30.0)
    assert limits.head_grace == HEAD_GRACE
    heads = [Conn(f"198.51.100.{i}") for i in range(3)]
    for head in heads:
        limits.head_started(head)
    clock.advance(HEAD_GRACE - 0.1)
    assert _evicted(limits) == []
    # Accepting waits, and looks again when the oldest head passes its grace.
    assert limits._recheck_after() == pytest.approx(0.1)
    clock.advance(0.1)
    assert _evicted(limits) == heads  # all as old: the oldest first


def test_the_grace_is_a_quarter_of_a_short_header_timeout() -> None:
    clock = Clock()
    limits = _limits(clock, header_timeout=2.0)
    head = Conn()
    limits.head_started(head)
    clock.advance(0.4)
    assert _evicted(limits) == []
    clock.advance(0.1)
    assert _evicted(limits) == [head]


def test_among_old_heads_an_address_holding_several_goes_first() -> None:
    clock = Clock()
    limits = _limits(clock)
    lone = Conn("198.51.100.1")
    limits.head_started(lone)
    clock.advance(0.5)
    greedy = [Conn("203.0.113.7") for _ in range(2)]
    for head in greedy:
        limits.head_started(head)
    young = Conn("203.0.113.7")
    clock.advance(HEAD_GRACE)
    limits.head_started(young)  # same address, but within its grace
    victim = limits._room_candidate()
    assert victim is greedy[0]


def test_trust_gained_while_idle_moves_the_connection_to_the_last_resort() -> None:
    clock = Clock()
    limits = _limits(clock)
    conn = _idle(limits, Conn(), trusted=False)
    limits.trusted(conn)
    clock.advance(1)
    assert _evicted(limits) == []


def test_with_auth_none_every_connection_is_trusted_as_before() -> None:
    clock = Clock()
    limits = _limits(clock, trust_all=True)
    conn = _idle(limits, Conn(), trusted=False)
    clock.advance(IDLE_RECLAIM_AFTER - 0.1)
    assert _evicted(limits) == []
    clock.advance(0.1)
    assert _evicted(limits) == [conn]


def test_a_closed_connection_leaves_no_trust_behind() -> None:
    clock = Clock()
    limits = _limits(clock)
    conn = _idle(limits, Conn(), trusted=True)
    limits.forget(conn)
    assert not limits.is_trusted(conn)
    assert limits._signed_in == set()


def test_an_untrusted_h2_connection_idle_after_a_stream_is_evicted_at_once() -> None:
    clock = Clock()
    limits = _limits(clock)
    h2 = FakeH2()
    limits.h2_idle(h2)
    limits.h2_opened(h2)
    limits.h2_busy(h2)
    limits.h2_idle(h2)  # its answer only waits for the client to read it
    assert limits._make_room()
    assert h2.evicted == 1


def test_a_trusted_h2_connection_is_evicted_only_after_idle_reclaim_after() -> None:
    clock = Clock()
    limits = _limits(clock)
    h2 = FakeH2()
    limits.h2_idle(h2)
    limits.h2_opened(h2)
    limits.h2_busy(h2)
    limits.h2_trusted(h2)
    limits.h2_idle(h2)
    clock.advance(IDLE_RECLAIM_AFTER - 0.1)
    assert not limits._make_room()
    clock.advance(0.1)
    assert limits._make_room()
    assert h2.evicted == 1


def test_an_h2_connection_whose_first_stream_waits_on_its_body_is_no_head() -> None:
    clock = Clock()
    limits = _limits(clock, header_timeout=2.0)
    h2 = FakeH2()
    limits.h2_idle(h2)  # the preface: a head still to come
    limits.h2_opened(h2)  # a stream opened; its body is the stream's deadline's
    clock.advance(10)
    assert h2.evicted == 0  # no connection-wide 408 at the head deadline


# -- live: twist portproxy against attackers without a password ------------------------------


CAP = 40
HEADER_TIMEOUT = 4.0


def _cookie(tmp_path: Path, env: dict[str, str]) -> bytes:
    return subprocess.run(
        [*_twist(), "portproxy", "--print-auth-cookie", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.strip()


class TLSProxy(Proxy):
    """L{Proxy} on a TLS port: ready once a TLS client gets its /healthz."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str], ca: str) -> None:
        self.ca = ca
        super().__init__(tmp, args, env)

    def ready(self) -> bool:
        try:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            context = ssl.create_default_context(cafile=self.ca)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return tls.recv(100).startswith(b"HTTP/1.1 200 ")
        except OSError:
            return False


def _password_proxy(tmp_path: Path, *, tls: bool) -> tuple[Proxy, bytes, str]:
    """A password-protected proxy (TLS or plain); its cookie and CA file."""
    _raise_own_fd_limit(2048)
    env = _env(PASSWORD=PASSWORD)
    cookie = _cookie(tmp_path, env)
    args = ["--max-connections", str(CAP), "--header-timeout", str(HEADER_TIMEOUT)]
    if not tls:
        return Proxy(tmp_path, args, env), cookie, ""
    cert, key, ca = write_pair(tmp_path)
    return (
        TLSProxy(tmp_path, [*args, "--cert", cert, "--cert-key", key], env, ca),
        cookie,
        ca,
    )


@pytest.fixture
def password_proxy(tmp_path: Path) -> Iterator[tuple[Proxy, bytes, str]]:
    proxy, cookie, ca = _password_proxy(tmp_path, tls=False)
    try:
        yield proxy, cookie, ca
    finally:
        proxy.stop()


@pytest.fixture
def tls_password_proxy(tmp_path: Path) -> Iterator[tuple[Proxy, bytes, str]]:
    proxy, cookie, ca = _password_proxy(tmp_path, tls=True)
    try:
        yield proxy, cookie, ca
    finally:
        proxy.stop()


def _h2_context(cafile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    return context


class SlowH2Reader(threading.Thread):
    """One HTTP/2 connection without a cookie: GET /login with a shut window, then
    WINDOW_UPDATE +100 every second (slow but steady: the send timeout never fires)."""

    def __init__(self, port: int, cafile: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.cafile, self.stop = port, cafile, stop
        self.connected = threading.Event()

    def run(self) -> None:
        try:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            tls = _h2_context(self.cafile).wrap_socket(raw, server_hostname="localhost")
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            # Before any request: the answer may not send a byte until WINDOW_UPDATE.
            conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
            conn.send_headers(
                1,
                [
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "localhost"),
                    (":path", "/login"),
                ],
                end_stream=True,
            )
            tls.sendall(conn.data_to_send())
            self.connected.set()
            tls.settimeout(0.05)
            while not self.stop.wait(1.0):
                for stream in (0, 1):
                    frame = WindowUpdateFrame(stream)
                    frame.window_increment = 100
                    tls.sendall(frame.serialize())
                try:
                    if tls.recv(65536) == b"":
                        return
                except (TimeoutError, ssl.SSLWantReadError):
                    pass
        except OSError:
            return
        finally:
            self.connected.set()


def _h2_get(port: int, cafile: str, path: bytes, cookie: bytes, timeout: float) -> int:
    """The status of one signed-in HTTP/2 GET (socket timeout C{timeout})."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with _h2_context(cafile).wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path),
                (b"cookie", cookie),
            ],
            end_stream=True,
        )
        tls.sendall(conn.data_to_send())
        while True:
            data = tls.recv(65536)
            if not data:
                raise ConnectionError("closed before the answer")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            tls.sendall(conn.data_to_send())


@pytest.mark.slow
def test_signed_in_h2_user_is_served_while_untrusted_h2_connections_read_slowly(
    tls_password_proxy: tuple[Proxy, bytes, str], app: int
) -> None:
    """Finding 1: CAP + 10 h2 connections read their /login answer 100 bytes a second."""
    proxy, cookie, ca = tls_password_proxy
    stop = threading.Event()
    readers = [SlowH2Reader(proxy.port, ca, stop) for _ in range(CAP + 10)]
    try:
        for reader in readers:
            reader.start()
        for reader in readers[:CAP]:
            assert reader.connected.wait(20)
        time.sleep(1.5)  # every place is taken; the rest wait in the listen queue
        for _ in range(2):
            status = _h2_get(proxy.port, ca, b"/proxy/%d/" % app, cookie, HEADER_TIMEOUT)
            assert status == 200
        assert proxy.proc.poll() is None
    finally:
        stop.set()
        for reader in readers:
            reader.join(5)


@pytest.mark.slow
def test_signed_in_user_is_served_while_kept_alive_connections_trickle_401s(
    password_proxy: tuple[Proxy, bytes, str], app: int
) -> None:
    """Finding 2: CAP + 10 kept-alive connections from 50 addresses, no cookie, one
    request a second each (never unused for IDLE_RECLAIM_AFTER)."""
    proxy, cookie, _ = password_proxy
    head = b"GET /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % app
    socks = []
    for i in range(CAP + 10):
        s = socket.socket()
        s.setblocking(False)
        s.bind((f"127.0.4.{10 + i % 50}", 0))
        s.connect_ex(("127.0.0.1", proxy.port))
        socks.append(s)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for s in socks:
                try:
                    s.send(head)
                    s.recv(65536)
                except OSError:
                    pass  # still queued, nothing to read yet, or closed by the server

    pump = threading.Thread(target=trickle, daemon=True)
    try:
        pump.start()
        time.sleep(2.5)
        for _ in range(3):
            status, body = _request(
                proxy.port, b"/proxy/%d/" % app, cookie, timeout=HEADER_TIMEOUT
            )
            assert (status, body) == (200, b"hello")
        assert proxy.proc.poll() is None
    finally:
        stop.set()
        pump.join(5)
        for s in socks:
            s.close()


@pytest.mark.slow
def test_a_signed_in_head_sent_after_a_delay_is_served_while_addresses_churn(
    password_proxy: tuple[Proxy, bytes, str], app: int
) -> None:
    """Finding 3: 200 empty connections a second from 240 addresses (each closed after
    3 s); the user sends its head 0.6 s after connecting and gets 200, not 408."""
    proxy, cookie, _ = password_proxy
    stop = threading.Event()

    def churn() -> None:
        held: list[socket.socket] = []
        i = 0
        while not stop.is_set():
            for _ in range(10):
                s = socket.socket()
                s.setblocking(False)
                s.bind((f"127.0.5.{10 + i % 240}", 0))
                s.connect_ex(("127.0.0.1", proxy.port))
                held.append(s)
                i += 1
            while len(held) > 600:
                held.pop(0).close()
            time.sleep(0.05)
        for s in held:
            s.close()

    attack = threading.Thread(target=churn, daemon=True)
    try:
        attack.start()
        time.sleep(3)
        for _ in range(3):
            with socket.socket() as user:
                user.bind(("127.0.0.3", 0))
                user.settimeout(15)
                user.connect(("127.0.0.1", proxy.port))
                time.sleep(0.6)  # a distant client, or one in a TLS handshake
                user.sendall(
                    b"GET /proxy/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: %s\r\n"
                    b"Connection: close\r\n\r\n" % (app, cookie)
                )
                answer = user.recv(100)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert proxy.proc.poll() is None
    finally:
        stop.set()
        attack.join(10)

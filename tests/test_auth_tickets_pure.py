"""The pure parts of sign-in tickets: origins, signing, origin binding, expiry, main host,
where a ticket may go, nonces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.auth.nonces import (
    RETRY_INTERVAL,
    FileNonces,
    MemoryNonces,
    NoNonces,
    nonce_store,
)
from portproxy.auth.origins import Origin, origin, url_origin
from portproxy.auth.sessions import SessionSigner, derive_key
from portproxy.auth.tickets import (
    TICKET_TTL,
    Refusal,
    Ticket,
    TicketSigner,
    main_host,
    sign_in_base,
    ticket_destination,
)
from portproxy.routing.domains import DomainMatcher

KEY = b"k" * 32
NOW = 1_750_000_000.0
NONCE = bytes(range(16))
P = "http://7001.localhost:8080"


def signer() -> TicketSigner:
    return TicketSigner(KEY)


def test_a_ticket_is_accepted_for_its_host_until_it_expires() -> None:
    token = signer().issue(P, NOW, NONCE)
    found = signer().verify(token, P, NOW + TICKET_TTL - 1)
    assert isinstance(found, Ticket)
    assert found.origin == P and found.expires == int(NOW) + TICKET_TTL
    assert 30 <= TICKET_TTL <= 60


def test_origin_binding_ignores_case_but_not_the_port_or_the_scheme() -> None:
    token = signer().issue(Origin("http", "7001.LocalHost", 8080), NOW, NONCE)
    assert isinstance(signer().verify(token, "http://7001.localhost:8080", NOW), Ticket)
    for other in (
        "http://7001.localhost:8081",
        "http://7001.localhost:80",
        "https://7001.localhost:8080",  # the ticket went out over http: not for https
        "http://7002.localhost:8080",
        "http://7001.localhost.:8080",
        None,  # a request whose origin cannot be told
    ):
        assert signer().verify(token, other, NOW) is Refusal.WRONG_HOST, other


@pytest.mark.parametrize("later", [TICKET_TTL, TICKET_TTL + 1, 3600])
def test_an_expired_ticket_is_refused(later: int) -> None:
    token = signer().issue(P, NOW, NONCE)
    assert signer().verify(token, P, NOW + later) is Refusal.EXPIRED


def test_a_ticket_from_too_far_in_the_future_is_refused() -> None:
    token = signer().issue(P, NOW + 3600, NONCE)
    assert signer().verify(token, P, NOW) is Refusal.EXPIRED


def test_a_ticket_signed_with_another_password_is_forged() -> None:
    token = TicketSigner(b"other" * 8).issue(P, NOW, NONCE)
    assert signer().verify(token, P, NOW) is Refusal.FORGED


def test_tampering_with_any_field_is_detected() -> None:
    token = signer().issue(P, NOW, NONCE)
    head, authority, expires, nonce, mac = token.split(".")
    other = TicketSigner(KEY).issue("http://5173.localhost:8080", NOW, NONCE).split(".")[1]
    for forged in (
        f"{head}.{other}.{expires}.{nonce}.{mac}",
        f"{head}.{authority}.{int(expires) + 600}.{nonce}.{mac}",
        f"{head}.{authority}.{expires}.{nonce[::-1]}.{mac}",
        f"{head}.{authority}.{expires}.{nonce}.{mac[::-1]}",
    ):
        assert signer().verify(forged, "http://5173.localhost:8080", NOW) is Refusal.FORGED
        assert signer().verify(forged, P, NOW) is Refusal.FORGED


def test_a_session_cookie_and_a_ticket_cannot_pass_for_each_other() -> None:
    session = SessionSigner(KEY, 3600).issue(NOW)
    ticket = signer().issue(P, NOW, NONCE)
    assert signer().verify(session, P, NOW) is Refusal.MALFORMED
    assert not SessionSigner(KEY, 3600).verify(ticket, NOW)
    # A ticket-shaped value MAC'd with the session key (same material) is refused.
    import base64
    import hashlib
    import hmac

    payload = ticket.rsplit(".", 1)[0].encode()
    mac = hmac.new(derive_key(KEY), payload, hashlib.sha256).digest()
    session_mac = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert signer().verify(f"{payload.decode()}.{session_mac}", P, NOW) is Refusal.FORGED


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_verify_never_raises_and_refuses_garbage(token: str | bytes) -> None:
    assert isinstance(signer().verify(token, P, NOW), Refusal)


@pytest.mark.parametrize(
    ("scheme", "authority", "expected"),
    [
        ("http", "5173.LocalHost", "http://5173.localhost:80"),
        ("HTTPS", "5173.localhost", "https://5173.localhost:443"),
        ("http", "5173.localhost:8123", "http://5173.localhost:8123"),
        ("http", "5173.localhost.:8123", "http://5173.localhost.:8123"),  # another origin
        ("https", "[::1]:8443", "https://[::1]:8443"),
        ("http", "5173.localhost:08123", None),  # a browser would use 8123
        ("http", "5173.localhost:0", None),
        ("http", "5173.localhost:65536", None),
        ("http", "5173.localhost:", None),
        ("ftp", "5173.localhost", None),
        ("http", "user@5173.localhost", None),
        ("http", " 5173.localhost", None),
    ],
)
def test_an_origin_writes_its_port_and_refuses_ports_a_browser_would_read_otherwise(
    scheme: str, authority: str, expected: str | None
) -> None:
    found = origin(scheme, authority)
    assert (None if found is None else str(found)) == expected


def test_an_origin_in_a_url_leaves_out_the_default_port() -> None:
    assert url_origin("http://5173.localhost:80/x?y") == Origin(
        "http", "5173.localhost", 80
    )
    assert Origin("http", "5173.localhost", 80).url == "http://5173.localhost"
    assert Origin("https", "a.test", 8443).url == "https://a.test:8443"
    assert url_origin("//5173.localhost/") is None
    assert url_origin("javascript:alert(1)") is None


@pytest.mark.parametrize(
    ("host", "patterns", "expected"),
    [
        ("7001.localhost:8080", ("{{port}}.localhost",), "localhost"),
        ("5173.myhost", ("{{port}}.{{host}}",), "myhost"),
        ("5173.box.lan:8080", ("{{port}}.{{host}}",), "box.lan"),
        ("dev-5173.example.com", ("dev-{{port}}.example.com",), "example.com"),
        ("5173.example.com", ("{{port}}.example.com",), "example.com"),
        ("5173-box.example.com", ("{{port}}-{{host}}.example.com",), None),
        ("example.com", ("{{port}}.example.com",), None),
        ("[::1]:8080", ("{{port}}.localhost",), None),
    ],
)
def test_main_host_is_the_pattern_without_its_port_label(
    host: str, patterns: tuple[str, ...], expected: str | None
) -> None:
    assert main_host(host, patterns) == expected


def _base(
    host: str,
    patterns: tuple[str, ...],
    public_url: str | None = None,
    scheme: str = "http",
) -> str | None:
    return sign_in_base(
        host,
        scheme,
        patterns,
        public_url,
        redirect_allowed=DomainMatcher(patterns).redirect_allowed,
    )


def test_sign_in_base_keeps_the_proxy_hosts_scheme_and_port() -> None:
    assert _base("7001.localhost:8080", ("{{port}}.localhost",)) == "http://localhost:8080"
    assert _base("5173.myhost", ("{{port}}.{{host}}",), scheme="https") == "https://myhost"


def test_sign_in_base_is_the_public_url_when_set() -> None:
    got = _base("5173.apps.test", ("{{port}}.apps.test",), "https://main.test/pp")
    assert got == "https://main.test/pp"


def test_no_ticket_where_the_main_hosts_cookie_covers_the_proxy_host() -> None:
    assert _base("5173.example.test", ("{{port}}.example.test",)) is None
    assert (
        _base("5173.dev.example.com", ("dev.example.com",), "https://dev.example.com")
        is None
    )


def test_no_ticket_when_no_main_host_can_be_told() -> None:
    assert _base("5173-box.example.com", ("{{port}}-{{host}}.example.com",)) is None


def test_no_ticket_through_a_main_host_that_could_not_send_the_browser_back() -> None:
    # {{host}} patterns: from main.test a redirect may not reach another {{host}} value.
    assert _base("5173.other.test", ("{{port}}.{{host}}",), "https://main.test") is None


# --- Where the main host may send a ticket --------------------------------------------

MAIN = Origin("http", "localhost", 8123)


def _destination(
    to: str,
    here: Origin = MAIN,
    patterns: tuple[str, ...] = ("{{port}}.localhost",),
    public_url: str | None = None,
) -> tuple[Origin, str] | None:
    return ticket_destination(
        to,
        here,
        patterns,
        public_url,
        redirect_allowed=DomainMatcher(patterns).redirect_allowed,
    )


def test_a_ticket_goes_to_a_proxy_host_on_the_scheme_and_port_the_browser_used() -> None:
    assert _destination("http://5173.localhost:8123/app?x=1") == (
        Origin("http", "5173.localhost", 8123),
        "/app?x=1",
    )
    assert _destination("http://5173.LOCALHOST:8123") == (
        Origin("http", "5173.localhost", 8123),
        "/",
    )
    tls = Origin("https", "localhost", 443)
    assert _destination("https://5173.localhost/x", tls) == (
        Origin("https", "5173.localhost", 443),
        "/x",
    )
    assert _destination("https://5173.localhost:443/x", tls) is not None


@pytest.mark.parametrize(
    "to",
    [
        "http://5173.localhost:36555/x",  # another listener: maybe someone else's
        "http://5173.localhost:80/x",
        "http://5173.localhost/x",
        "http://5173.localhost:0/x",
        "http://5173.localhost:08123/x",  # the browser goes to 8123, the text differs
        "https://5173.localhost:8123/x",  # another scheme than the browser used
        "http://5173.localhost.:8123/x",  # a trailing dot: no clean label
        "http://localhost:8123/x",  # the main host itself
        "http://5173.evil.test:8123/x",
        "//5173.localhost:8123/x",
        "/proxy/5173/",
    ],
)
def test_no_ticket_for_another_port_scheme_or_host(to: str) -> None:
    assert _destination(to) is None


def test_no_ticket_where_none_is_needed_or_the_host_signs_in_elsewhere() -> None:
    # The main host's cookie (Domain=example.test) covers the proxy host.
    here = Origin("http", "example.test", 8123)
    assert _destination("http://5173.example.test:8123/", here, ("example.test",)) is None
    # 5173.localhost signs in through localhost, not through 127.0.0.1.
    alias = Origin("http", "127.0.0.1", 8123)
    assert _destination("http://5173.localhost:8123/", alias) is None
    # With --public-url the main host is that URL's, and only that.
    public = "https://main.test/pp"
    patterns = ("{{port}}.apps.test",)
    got = _destination(
        "https://5173.apps.test/x", Origin("https", "main.test", 443), patterns, public
    )
    assert got == (Origin("https", "5173.apps.test", 443), "/x")
    assert (
        _destination(
            "https://5173.apps.test/x", Origin("https", "other.test", 443), patterns, public
        )
        is None
    )


# --- Nonces: single use -------------------------------------------------------------------


def test_memory_nonces_are_single_use_until_expiry() -> None:
    nonces = MemoryNonces(limit=2)
    assert nonces.use("a", 100, 50)
    assert not nonces.use("a", 100, 50)
    assert nonces.use("b", 100, 50)
    assert not nonces.use("c", 100, 50)  # full of live nonces: fail closed
    assert nonces.use("c", 200, 150)  # expired ones make room
    assert not nonces.use("c", 200, 150)


def test_file_nonces_hold_across_processes_sharing_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "tickets"
    first, second = FileNonces(str(directory)), FileNonces(str(directory))
    assert first.use("abc", 100, 50)
    assert not second.use("abc", 100, 50)
    assert not first.use("abc", 100, 50)
    assert os.stat(directory).st_mode & 0o077 == 0  # private to the user


def test_file_nonces_of_expired_tickets_are_swept(tmp_path: Path) -> None:
    nonces = FileNonces(str(tmp_path / "t"))
    assert nonces.use("old", 100, 50)
    assert nonces.use("new", 1000, 50)
    nonces.sweep(500)
    assert sorted(os.listdir(tmp_path / "t")) == ["1000-new"]


def test_file_nonces_refuse_a_nonce_that_is_not_a_file_name(tmp_path: Path) -> None:
    nonces = FileNonces(str(tmp_path))
    assert not nonces.use("../x", 100, 50)
    assert not nonces.use("", 100, 50)
    assert os.listdir(tmp_path) == []


def test_an_unwritable_directory_falls_back_to_memory_in_a_lone_process(
    tmp_path: Path,
) -> None:
    from twisted.logger import Logger

    events: list[dict[str, object]] = []
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = nonce_store(str(blocker / "tickets"), Logger(observer=events.append))
    assert isinstance(store, MemoryNonces)
    assert events and "Cannot keep used sign-in tickets" in str(events[0]["log_format"])
    assert store.use("n", 100, 50) and not store.use("n", 100, 50)


def test_an_unwritable_directory_turns_tickets_off_for_one_of_several_processes(
    tmp_path: Path,
) -> None:
    from twisted.logger import Logger

    events: list[dict[str, object]] = []
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = nonce_store(str(blocker / "t"), Logger(observer=events.append), shared=True)
    assert isinstance(store, NoNonces)
    assert not store.available(50)
    assert not store.use("n", 100, 50)  # a ticket is never good once per process
    assert "sign-in tickets are off" in str(events[0]["log_format"])


def test_a_nonce_that_cannot_be_written_is_refused_not_remembered(tmp_path: Path) -> None:
    from twisted.logger import Logger

    events: list[dict[str, object]] = []
    directory = tmp_path / "t"
    nonces = FileNonces(str(directory), Logger(observer=events.append))
    assert nonces.available(50)
    directory.rmdir()  # gone (or full): nothing can be recorded
    assert not nonces.use("n", 100, 50)
    assert not nonces.use("n", 100, 51)
    assert not nonces.available(51)
    assert len(events) == 1  # logged once, not per ticket
    # Once the directory works again, so do tickets.
    directory.mkdir()
    assert nonces.available(51 + RETRY_INTERVAL)
    assert nonces.use("n", 500, 51 + RETRY_INTERVAL)
    assert not nonces.use("n", 500, 51 + RETRY_INTERVAL)

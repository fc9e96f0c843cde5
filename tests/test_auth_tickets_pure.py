"""The pure parts of sign-in tickets: signing, host binding, expiry, main host, nonces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.auth.nonces import FileNonces, MemoryNonces, nonce_store
from portproxy.auth.sessions import SessionSigner, derive_key
from portproxy.auth.tickets import (
    TICKET_TTL,
    Refusal,
    Ticket,
    TicketSigner,
    main_host,
    sign_in_base,
)
from portproxy.routing.domains import DomainMatcher

KEY = b"k" * 32
NOW = 1_750_000_000.0
NONCE = bytes(range(16))
P = "7001.localhost:8080"


def signer() -> TicketSigner:
    return TicketSigner(KEY)


def test_a_ticket_is_accepted_for_its_host_until_it_expires() -> None:
    token = signer().issue(P, NOW, NONCE)
    found = signer().verify(token, P, NOW + TICKET_TTL - 1)
    assert isinstance(found, Ticket)
    assert found.authority == P and found.expires == int(NOW) + TICKET_TTL
    assert 30 <= TICKET_TTL <= 60


def test_host_binding_ignores_case_but_not_the_port() -> None:
    token = signer().issue("7001.LocalHost:8080", NOW, NONCE)
    assert isinstance(signer().verify(token, "7001.localhost:8080", NOW), Ticket)
    assert signer().verify(token, "7001.localhost:8081", NOW) is Refusal.WRONG_HOST
    assert signer().verify(token, "7001.localhost", NOW) is Refusal.WRONG_HOST
    assert signer().verify(token, "7002.localhost:8080", NOW) is Refusal.WRONG_HOST


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
    other = TicketSigner(KEY).issue("5173.localhost:8080", NOW, NONCE).split(".")[1]
    for forged in (
        f"{head}.{other}.{expires}.{nonce}.{mac}",
        f"{head}.{authority}.{int(expires) + 600}.{nonce}.{mac}",
        f"{head}.{authority}.{expires}.{nonce[::-1]}.{mac}",
        f"{head}.{authority}.{expires}.{nonce}.{mac[::-1]}",
    ):
        assert signer().verify(forged, "5173.localhost:8080", NOW) is Refusal.FORGED
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
    assert _base(P, ("{{port}}.localhost",)) == "http://localhost:8080"
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


def test_an_unwritable_directory_falls_back_to_memory_with_a_warning(
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

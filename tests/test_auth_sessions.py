"""Signed session values: issued, checked, and refused when forged, tampered or old."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.auth.sessions import MAX_CLOCK_SKEW, SessionSigner

NOW = 1_750_000_000.0
TTL = 3600


def signer(key: bytes = b"password-key", ttl: int = TTL) -> SessionSigner:
    return SessionSigner(key, ttl)


def test_issued_value_is_accepted_until_it_expires() -> None:
    value = signer().issue(NOW)
    assert signer().verify(value, NOW)
    assert signer().verify(value, NOW + TTL - 1)
    assert signer().verify(value.encode(), NOW)


@pytest.mark.parametrize("later", [TTL, TTL + 1, 10 * TTL])
def test_expired_cookie_is_refused(later: int) -> None:
    assert not signer().verify(signer().issue(NOW), NOW + later)


def test_two_signers_with_the_same_password_agree() -> None:
    one, two = SessionSigner(b"shared", TTL), SessionSigner(b"shared", TTL)
    assert two.verify(one.issue(NOW), NOW + 5)
    assert one.verify(two.issue(NOW), NOW + 5)


def test_cookie_signed_with_another_password_key_is_refused() -> None:
    assert not signer(b"new password").verify(signer(b"old password").issue(NOW), NOW)


def test_forged_cookie_with_a_made_up_signature_is_refused() -> None:
    forged = f"1.{int(NOW)}.{int(NOW) + TTL}." + "A" * 43
    assert not signer().verify(forged, NOW)


def _resign(payload: bytes, key: bytes) -> str:
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return (payload + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def test_cookie_signed_with_the_raw_password_instead_of_the_derived_key_is_refused() -> (
    None
):
    payload = b"1.%d.%d" % (NOW, NOW + TTL)
    assert not signer(b"pw").verify(_resign(payload, b"pw"), NOW)


@pytest.mark.parametrize("field", [1, 2])
def test_tampered_time_is_refused(field: int) -> None:
    value = signer().issue(NOW)
    parts = value.split(".")
    parts[field] = str(int(parts[field]) + 10 * TTL)
    assert not signer().verify(".".join(parts), NOW)


def test_tampered_signature_is_refused() -> None:
    value = signer().issue(NOW)
    flipped = value[:-1] + ("B" if value[-1] != "B" else "C")
    assert not signer().verify(flipped, NOW)


def test_value_from_the_future_beyond_the_skew_is_refused() -> None:
    value = signer().issue(NOW + MAX_CLOCK_SKEW + 10)
    assert not signer().verify(value, NOW)
    assert signer().verify(signer().issue(NOW + MAX_CLOCK_SKEW - 10), NOW)


def test_value_issued_for_longer_than_the_ttl_is_refused() -> None:
    long_lived = signer(ttl=10 * TTL).issue(NOW)
    assert not signer(ttl=TTL).verify(long_lived, NOW + 1)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "1",
        "1...",
        "2.1.2." + "A" * 43,
        "1.-5.10." + "A" * 43,
        "1.1.2." + "A" * 44,
        "1.1.2." + "A=" * 22,
        "1.1.2.\u00e9" + "A" * 42,
        "1.1.2." + "A" * 43 + "\n",
        "x" * 10_000_000,
        b"\xff\xfe",
        b"1.1.2." + b"\x00" * 43,
        "1.\u0661.2." + "A" * 43,  # an Arabic-Indic digit
    ],
)
def test_malformed_values_are_refused_without_raising(
    value: str | bytes | None,
) -> None:
    assert signer().verify(value, NOW) is False


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_input_never_raises_and_is_refused(value: str | bytes) -> None:
    assert signer().verify(value, NOW) is False


@given(st.integers(min_value=0, max_value=70))
def test_any_single_character_change_is_refused(index: int) -> None:
    value = signer().issue(NOW)
    index %= len(value)
    replacement = "0" if value[index] != "0" else "1"
    tampered = value[:index] + replacement + value[index + 1 :]
    assert not signer().verify(tampered, NOW)


def test_value_is_a_valid_cookie_value() -> None:
    value = signer().issue(NOW)
    assert value.isascii() and all(c.isalnum() or c in "._-" for c in value)


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SessionSigner(b"k", 0)


# --- Sessions a ticket gives: bound to one origin ---------------------------------------

ORIGIN = "http://5173.localhost:8080"


def test_a_bound_session_carries_its_origin_and_is_no_session_for_every_host() -> None:
    value = signer().issue(NOW, origin=ORIGIN)
    assert value.startswith("2.")
    session = signer().check(value, NOW + 5)
    assert session is not None and session.origin == ORIGIN
    assert session.expires == int(NOW) + TTL
    assert not signer().verify(value, NOW + 5)  # only check() knows where it is good
    assert signer().check(value, NOW + TTL) is None
    assert signer().check(signer().issue(NOW), NOW).origin is None  # type: ignore[union-attr]


def test_a_bound_session_with_its_origin_swapped_or_signed_with_the_session_key_is_refused() -> (
    None
):
    value = signer().issue(NOW, origin=ORIGIN)
    version, bound, issued, expires, mac = value.split(".")
    other = signer().issue(NOW, origin="http://localhost:8080").split(".")[1]
    assert signer().check(f"{version}.{other}.{issued}.{expires}.{mac}", NOW) is None
    # The same payload MAC'd under the unbound session key: the keys are separate.
    payload = f"{version}.{bound}.{issued}.{expires}".encode()
    key = signer()._key  # the session cookie key
    resigned = base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest())
    forged = payload.decode() + "." + resigned.rstrip(b"=").decode()
    assert signer().check(forged, NOW) is None
    # And an unbound value MAC'd under the bound key is no session either.
    plain = signer().issue(NOW).rsplit(".", 1)[0].encode()
    bound_mac = hmac.new(signer()._bound_key, plain, hashlib.sha256).digest()
    forged = (
        plain.decode() + "." + base64.urlsafe_b64encode(bound_mac).rstrip(b"=").decode()
    )
    assert signer().check(forged, NOW) is None


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-:/[]", max_size=120))
def test_any_origin_round_trips_and_a_changed_character_is_refused(origin: str) -> None:
    value = signer().issue(NOW, origin=origin or "x")
    session = signer().check(value, NOW)
    assert session is not None and session.origin == (origin or "x").lower()
    flipped = value[:2] + ("A" if value[2] != "A" else "B") + value[3:]
    assert signer().check(flipped, NOW) is None

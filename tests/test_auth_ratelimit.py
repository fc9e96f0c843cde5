"""Per-address login rate limiting with two token buckets (2/minute, 12/hour)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from portproxy.auth.ratelimit import LoginRateLimiter

A = "192.0.2.1"
B = "192.0.2.2"


def fail(limiter: LoginRateLimiter, address: str, times: int) -> None:
    """Fail C{times} logins as the login page does: a token taken, never given back."""
    for _ in range(times):
        assert limiter.take(address) is not None


def may_try(limiter: LoginRateLimiter, address: str) -> bool:
    """Whether the login page would check a password from C{address} now (no 429)."""
    return limiter.retry_after(address) == 0


def test_fourteen_failures_pass_and_the_fifteenth_is_refused() -> None:
    limiter = LoginRateLimiter(Clock())
    fail(limiter, A, 14)
    assert not may_try(limiter, A)
    assert limiter.take(A) is None


def test_thirteen_failures_still_allow_a_try() -> None:
    limiter = LoginRateLimiter(Clock())
    fail(limiter, A, 13)
    assert may_try(limiter, A)


def test_minute_bucket_is_used_first_then_the_hour_bucket() -> None:
    limiter = LoginRateLimiter(Clock())
    assert [limiter.take(A) for _ in range(3)] == ["minute", "minute", "hour"]


def test_another_address_is_still_allowed() -> None:
    limiter = LoginRateLimiter(Clock())
    fail(limiter, A, 14)
    assert not may_try(limiter, A)
    assert may_try(limiter, B)
    assert limiter.retry_after(B) == 0


def test_retry_after_is_positive_and_a_token_comes_back_then() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(clock)
    fail(limiter, A, 14)
    wait = limiter.retry_after(A)
    assert 0 < wait <= 30  # the minute bucket refills one token every 30 s
    clock.advance(wait - 1)
    assert not may_try(limiter, A)
    clock.advance(1)
    assert may_try(limiter, A)
    limiter.take(A)
    assert not may_try(limiter, A)


def test_tokens_come_back_fully_after_an_hour_and_the_address_is_forgotten() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(clock)
    fail(limiter, A, 14)
    clock.advance(3600)
    assert may_try(limiter, A)
    assert len(limiter) == 0
    fail(limiter, A, 14)
    assert not may_try(limiter, A)


def test_successes_take_no_token() -> None:
    limiter = LoginRateLimiter(Clock())
    for _ in range(50):
        bucket = limiter.take(A)
        assert bucket is not None
        limiter.give_back(A, bucket)
    fail(limiter, A, 14)
    assert not may_try(limiter, A)


def test_full_buckets_are_not_kept_in_memory() -> None:
    limiter = LoginRateLimiter(Clock())
    bucket = limiter.take(A)
    assert bucket is not None and len(limiter) == 1
    limiter.give_back(A, bucket)
    assert len(limiter) == 0
    assert may_try(limiter, B) and len(limiter) == 0


def test_table_size_is_capped_evicting_the_oldest() -> None:
    limiter = LoginRateLimiter(Clock(), max_addresses=100)
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    newest, oldest = "10.0.3.231", "10.0.0.0"
    assert [limiter.take(newest), limiter.take(newest)] == ["minute", "hour"]
    assert [limiter.take(oldest), limiter.take(oldest)] == ["minute", "minute"]


def test_stale_entries_are_dropped_when_time_passes() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(clock)
    for i in range(50):
        limiter.take(f"10.1.0.{i}")
    clock.advance(3601)
    limiter.take(A)
    assert len(limiter) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"),  # same /64
        ("::ffff:192.0.2.1", "192.0.2.1"),  # IPv4-mapped
        ("[2001:db8::1]", "2001:db8::2"),
    ],
)
def test_addresses_of_one_client_share_buckets(first: str, second: str) -> None:
    limiter = LoginRateLimiter(Clock())
    fail(limiter, first, 14)
    assert not may_try(limiter, second)


def test_ipv6_addresses_in_different_64s_are_separate() -> None:
    limiter = LoginRateLimiter(Clock())
    fail(limiter, "2001:db8:1:1::1", 14)
    assert may_try(limiter, "2001:db8:1:2::1")


def test_simultaneous_attempts_cannot_outrun_the_limit() -> None:
    limiter = LoginRateLimiter(Clock())
    taken = [limiter.take(A) for _ in range(100)]  # all checked before any result
    assert sum(t is not None for t in taken) == 14


def test_clock_going_backwards_does_not_add_tokens() -> None:
    clock = Clock()
    clock.advance(10_000)
    limiter = LoginRateLimiter(clock)
    fail(limiter, A, 14)
    clock.rightNow -= 5000
    assert not may_try(limiter, A)

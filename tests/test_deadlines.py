"""One timer for many deadlines of the same length."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from twisted.internet.testing import MemoryReactorClock

from portproxy.net.deadlines import Deadlines


def _deadlines(
    timeout: float = 10,
) -> tuple[MemoryReactorClock, Deadlines[Hashable], list[Hashable]]:
    clock = MemoryReactorClock()
    expired: list[Hashable] = []
    return clock, Deadlines(clock, timeout, expired.append), expired


def test_a_watched_key_expires_after_the_timeout_and_not_before() -> None:
    clock, deadlines, expired = _deadlines()
    deadlines.watch("a")
    clock.advance(9.99)
    assert expired == []
    clock.advance(0.01)
    assert expired == ["a"]
    assert "a" not in deadlines


def test_a_cancelled_key_never_expires_and_the_next_one_keeps_its_time() -> None:
    clock, deadlines, expired = _deadlines()
    deadlines.watch("a")
    clock.advance(3)
    deadlines.watch("b")
    deadlines.cancel("a")
    clock.advance(7)  # a's time: nothing is due, the timer moves on to b's
    assert expired == []
    clock.advance(2.99)
    assert expired == []
    clock.advance(0.01)
    assert expired == ["b"]


def test_many_keys_share_one_timer() -> None:
    clock, deadlines, expired = _deadlines()
    for key in range(1000):
        deadlines.watch(key)
        clock.advance(0.001)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(10)
    assert expired == list(range(1000))
    assert clock.getDelayedCalls() == []


def test_watching_again_restarts_the_deadline() -> None:
    clock, deadlines, expired = _deadlines()
    deadlines.watch("a")
    clock.advance(5)
    deadlines.watch("a")
    clock.advance(9)
    assert expired == []
    clock.advance(1)
    assert expired == ["a"]


def test_a_key_watched_while_others_expire_gets_its_full_time() -> None:
    clock = MemoryReactorClock()
    expired: list[Hashable] = []
    deadlines: Deadlines[Hashable]

    def on_expired(key: Hashable) -> None:
        expired.append(key)
        if key == "a":
            deadlines.watch("late")  # e.g. a retry started from the expiry

    deadlines = Deadlines(clock, 10, on_expired)
    deadlines.watch("a")
    clock.advance(4)
    deadlines.watch("b")
    clock.advance(6)
    assert expired == ["a"]
    clock.advance(4)
    assert expired == ["a", "b"]
    clock.advance(5.99)
    assert expired == ["a", "b"]
    clock.advance(0.01)
    assert expired == ["a", "b", "late"]


def test_no_timer_is_left_once_every_key_is_cancelled() -> None:
    clock, deadlines, expired = _deadlines()
    deadlines.watch("a")
    deadlines.watch("b")
    deadlines.cancel("a")
    assert len(clock.getDelayedCalls()) == 1  # b still waits
    deadlines.cancel("b")
    assert clock.getDelayedCalls() == []
    deadlines.watch("c")
    clock.advance(10)
    assert expired == ["c"]


def test_an_expiry_that_raises_leaves_the_later_deadlines_on_time() -> None:
    clock = MemoryReactorClock()
    expired: list[Hashable] = []

    def on_expired(key: Hashable) -> None:
        expired.append(key)
        if key == "bad":
            raise RuntimeError("an expiry failed")

    deadlines: Deadlines[Hashable] = Deadlines(clock, 10, on_expired)
    deadlines.watch("bad")
    clock.advance(4)
    deadlines.watch("next")
    with pytest.raises(RuntimeError):
        clock.advance(6)
    clock.advance(4)
    assert expired == ["bad", "next"]

# -*- test-case-name: tests.test_deadlines -*-
"""Many deadlines of the same length on one timer.

A C{callLater} per request (and a C{cancel} when the answer comes, almost always first)
costs a DelayedCall, two heap operations and the cancelled call's clean-up, a few
microseconds per request. Deadlines that all run for the same time end in the order
they started, so an insertion-ordered dict holds them sorted for free, and one timer,
set for the earliest, serves them all. Used for the wait for an app's answer
(L{portproxy.http.engine}).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Deadlines"]

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Call C{expired(key)} for each key still watched C{timeout} seconds after L{watch}."""

    def __init__(
        self, clock: IReactorTime, timeout: float, expired: Callable[[K], None]
    ) -> None:
        self._clock = clock
        self.timeout = timeout
        self._expired = expired
        #: Key -> when it expires, in the order watched (so, of expiry).
        self._due: dict[K, float] = {}
        self._timer: IDelayedCall | None = None
        self._firing = False

    def watch(self, key: K) -> None:
        """Start C{key}'s deadline now (again, if it was watched already)."""
        due = self._due
        due.pop(key, None)
        due[key] = self._clock.seconds() + self.timeout
        if self._timer is None and not self._firing:
            self._timer = self._clock.callLater(self.timeout, self._fire)

    def cancel(self, key: K) -> None:
        """Stop watching C{key} (nothing happens if it was not watched).

        The timer stays for the keys left (it may fire early, and then waits again);
        with none left it goes too, so that an idle process has no timer pending.
        """
        due = self._due
        if due.pop(key, None) is not None and not due:
            timer = self._timer
            if timer is not None and not self._firing:
                self._timer = None
                timer.cancel()

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def _fire(self) -> None:
        self._timer = None
        due = self._due
        now = self._clock.seconds()
        self._firing = True
        try:
            while due:
                key = next(iter(due))
                if due[key] > now:
                    break  # the earliest left (a cancelled one made this call early)
                del due[key]
                self._expired(key)
        finally:
            # Also when an expiry raised: the deadlines left still need their timer.
            self._firing = False
            if due and self._timer is None:
                first = due[next(iter(due))]
                self._timer = self._clock.callLater(
                    max(0.0, first - self._clock.seconds()), self._fire
                )

# -*- test-case-name: tests.test_auth_ratelimit -*-
"""Per-address login rate limiting with code-server's two token buckets.

Each client address has a bucket of 2 tokens refilled at 2 per minute and one of 12
refilled at 12 per hour. A failed login takes a token, from the minute bucket first;
while both are empty the address may not try at all (so 14 failures pass before the
first refusal). Unlike code-server's single process-wide limiter, an attacker cannot
lock the owner out from another address.

Memory stays bounded: an address is forgotten once its buckets are full again, and the
table has a size cap beyond which the least recently seen address is dropped. IPv6
clients are grouped by /64, the block one subscriber usually gets.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Bucket", "Clock", "LoginRateLimiter"]

Bucket = Literal["minute", "hour"]

_MINUTE_CAPACITY = 2.0
_MINUTE_RATE = 2.0 / 60.0
_HOUR_CAPACITY = 12.0
_HOUR_RATE = 12.0 / 3600.0
# After this long without a failure both buckets are full again, whatever they held.
_FORGET_AFTER = max(_MINUTE_CAPACITY / _MINUTE_RATE, _HOUR_CAPACITY / _HOUR_RATE)


class Clock(Protocol):
    def seconds(self) -> float: ...


@dataclass
class _Buckets:
    minute: float
    hour: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.minute = min(_MINUTE_CAPACITY, self.minute + elapsed * _MINUTE_RATE)
        self.hour = min(_HOUR_CAPACITY, self.hour + elapsed * _HOUR_RATE)
        self.updated = max(self.updated, now)

    def full(self) -> bool:
        return self.minute >= _MINUTE_CAPACITY and self.hour >= _HOUR_CAPACITY


def _key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginRateLimiter:
    """Count failed logins per client address.

    @param clock: anything with C{seconds()} (the reactor, or a test clock).
    @param max_addresses: how many addresses to remember at most.
    """

    def __init__(self, clock: Clock, *, max_addresses: int = 10_000) -> None:
        self._clock = clock
        self._max = max_addresses
        self._table: OrderedDict[str, _Buckets] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def _lookup(self, address: str) -> _Buckets | None:
        now = self._clock.seconds()
        self._forget_old(now)
        key = _key(address)
        buckets = self._table.get(key)
        if buckets is None:
            return None
        buckets.refill(now)
        if buckets.full():
            del self._table[key]
            return None
        return buckets

    def _forget_old(self, now: float) -> None:
        # The table is kept in order of last change, so the stale entries are in front.
        while self._table:
            buckets = next(iter(self._table.values()))
            if now - buckets.updated < _FORGET_AFTER:
                break
            self._table.popitem(last=False)

    def retry_after(self, address: str) -> int:
        """Whole seconds until C{address} may try again (0 when it may now)."""
        buckets = self._lookup(address)
        if buckets is None or buckets.minute >= 1 or buckets.hour >= 1:
            return 0
        wait = min((1 - buckets.minute) / _MINUTE_RATE, (1 - buckets.hour) / _HOUR_RATE)
        return max(1, math.ceil(wait))

    def take(self, address: str) -> Bucket | None:
        """Take a token for an attempt from C{address}; C{None} when it is refused.

        Taking before the password is checked, and L{give_back} after a success, counts
        only failures yet cannot be outrun by many simultaneous attempts.
        """
        now = self._clock.seconds()
        key = _key(address)
        buckets = self._lookup(address)
        if buckets is None:
            buckets = _Buckets(_MINUTE_CAPACITY, _HOUR_CAPACITY, now)
        if buckets.minute >= 1:
            buckets.minute -= 1
            taken: Bucket = "minute"
        elif buckets.hour >= 1:
            buckets.hour -= 1
            taken = "hour"
        else:
            return None
        self._table[key] = buckets
        self._table.move_to_end(key)
        while len(self._table) > self._max:
            self._table.popitem(last=False)
        return taken

    def give_back(self, address: str, bucket: Bucket) -> None:
        """Return a token taken by L{take}, after the attempt turned out to succeed."""
        buckets = self._lookup(address)
        if buckets is None:
            return
        if bucket == "minute":
            buckets.minute = min(_MINUTE_CAPACITY, buckets.minute + 1)
        else:
            buckets.hour = min(_HOUR_CAPACITY, buckets.hour + 1)
        if buckets.full():
            del self._table[_key(address)]

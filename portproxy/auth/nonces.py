# -*- test-case-name: tests.test_auth_tickets_pure -*-
"""Single use for sign-in tickets: each nonce is recorded until its ticket expires.

With C{--workers}, several processes share the listeners, and a replayed ticket may
reach another process than the first use did. L{FileNonces} records each nonce as a
file created with C{O_CREAT|O_EXCL} under the data directory, which the kernel makes
atomic across processes; L{MemoryNonces} holds for one process only.

Single use fails closed: when the directory cannot be made, a lone process keeps
nonces in memory, but one of several processes has no store at all (L{NoNonces});
and a nonce that cannot be written (disk full, directory gone) is refused, never
remembered in one process only. A store that is not L{available<NonceStore.available>}
tells the proxy hosts to ask for the password on their own sign-in page instead.
"""

from __future__ import annotations

import os
import re
from typing import Protocol

from twisted.logger import Logger

__all__ = ["FileNonces", "MemoryNonces", "NoNonces", "NonceStore", "nonce_store"]

#: Recorded nonces kept in memory at most; tickets are minted only for signed-in users.
MAX_MEMORY_NONCES = 100_000
#: Seconds between sweeps of expired nonce files.
SWEEP_INTERVAL = 60
#: Seconds a store that failed to write a nonce counts as unavailable.
RETRY_INTERVAL = 60

_NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FILE = re.compile(r"([0-9]{1,12})-[A-Za-z0-9_-]{1,64}")


class NonceStore(Protocol):
    """Where used nonces are recorded."""

    def use(self, nonce: str, expires: int, now: float) -> bool:
        """Record C{nonce} (valid until C{expires}); C{False} if it was used before, or
        if it cannot be recorded."""

    def available(self, now: float) -> bool:
        """Tell whether tickets can be used at all (else: sign in on the proxy host)."""


class NoNonces:
    """No store: every ticket is refused (several processes, no shared directory)."""

    def use(self, nonce: str, expires: int, now: float) -> bool:
        return False

    def available(self, now: float) -> bool:
        return False


class MemoryNonces:
    """Used nonces in a dict, for one process."""

    def __init__(self, limit: int = MAX_MEMORY_NONCES) -> None:
        self._used: dict[str, int] = {}
        self._limit = limit

    def use(self, nonce: str, expires: int, now: float) -> bool:
        used = self._used
        if nonce in used:
            return False
        if len(used) >= self._limit:
            for old in [n for n, until in used.items() if until <= now]:
                del used[old]
            if len(used) >= self._limit:
                return False  # fail closed: a flood of live tickets is not normal
        used[nonce] = expires
        return True

    def available(self, now: float) -> bool:
        return True


class FileNonces:
    """Used nonces as empty files C{<expires>-<nonce>} in one directory (mode 0700).

    Files of expired tickets are removed at most every L{SWEEP_INTERVAL} seconds; an
    expired ticket is refused for its expiry, so its nonce need not be kept. After a
    failed write the store is unavailable for L{RETRY_INTERVAL} seconds.
    """

    def __init__(self, directory: str, log: Logger | None = None) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{directory} is not writable")
        self.directory = directory
        self._log = log or Logger()
        self._next_sweep = 0.0
        self._failed_until = 0.0

    def available(self, now: float) -> bool:
        return now >= self._failed_until

    def use(self, nonce: str, expires: int, now: float) -> bool:
        if not _NONCE.fullmatch(nonce):
            return False
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            self.sweep(now)
        path = os.path.join(self.directory, f"{int(expires)}-{nonce}")
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            os.close(os.open(path, flags, 0o600))
        except FileExistsError:
            return False
        except OSError as e:
            # Remembering it in this process only would let another --workers process
            # take the same ticket again: refuse it.
            if self.available(now):
                self._log.warn(
                    "Cannot record a sign-in ticket in {directory} ({error}): tickets "
                    "are refused, proxy hosts ask for the password on their own page",
                    directory=self.directory,
                    error=e.strerror or str(e),
                )
            self._failed_until = now + RETRY_INTERVAL
            return False
        self._failed_until = 0.0
        return True

    def sweep(self, now: float) -> None:
        """Remove the files of tickets that have expired."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            found = _FILE.fullmatch(name)
            if found is not None and int(found.group(1)) <= now:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass


def nonce_store(directory: str, log: Logger, *, shared: bool = False) -> NonceStore:
    """A L{FileNonces} in C{directory}; if it cannot be made, a warning and
    L{MemoryNonces}, or L{NoNonces} when C{shared} (this is one of several processes).
    """
    try:
        return FileNonces(directory, log)
    except OSError as e:
        error = e.strerror or str(e)
        if shared:
            log.warn(
                "Cannot keep used sign-in tickets in {directory} ({error}): with "
                "--workers, sign-in tickets are off, and proxy hosts ask for the "
                "password on their own page",
                directory=directory,
                error=error,
            )
            return NoNonces()
        log.warn(
            "Cannot keep used sign-in tickets in {directory} ({error}): they are kept "
            "in memory (one process)",
            directory=directory,
            error=error,
        )
        return MemoryNonces()

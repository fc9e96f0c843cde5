# -*- test-case-name: tests.test_workers -*-
"""What the supervisor of C{--workers} hands each worker process, and how.

The supervisor (L{portproxy.runtime.supervisor}) writes a L{WorkerSpec} into the
worker's environment under L{WORKER_ENV}; the worker (L{portproxy.runtime.worker})
reads it back. Both import this module and neither imports the other: which of the
two a process is gets decided once, in L{portproxy.tap.makeService}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["WORKER_ENV", "WorkerSpec"]

#: Set in a worker's environment only: which inherited descriptors to serve on.
WORKER_ENV = "PORTPROXY_WORKER"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker inherits, as passed in L{WORKER_ENV}.

    @ivar listeners: C{(description, fd, family)} for each C{--listen}, in order;
        family is C{"INET"} or C{"INET6"}.
    @ivar ready_fd: the pipe on which the worker says it serves.
    @ivar supervisor: the supervisor's pid; a worker whose parent changes stops.
    """

    index: int
    supervisor: int
    ready_fd: int
    listeners: tuple[tuple[str, int, str], ...]

    def encode(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "supervisor": self.supervisor,
                "ready": self.ready_fd,
                "listen": [list(item) for item in self.listeners],
            }
        )

    @classmethod
    def decode(cls, text: str) -> WorkerSpec:
        """Parse L{encode}'s output; raise C{ValueError} for anything else."""
        try:
            data = json.loads(text)
            listeners = tuple(
                (str(d), int(fd), str(family)) for d, fd, family in data["listen"]
            )
            spec = cls(
                int(data["index"]), int(data["supervisor"]), int(data["ready"]), listeners
            )
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{WORKER_ENV} is malformed: {e}") from None
        if any(family not in ("INET", "INET6") for _, _, family in listeners):
            raise ValueError(f"{WORKER_ENV} is malformed: unknown address family")
        return spec

"""The reactor (and a TCP transport) as portproxy types them: Twisted's interfaces,
combined in this one place.

A part that calls one kind of reactor method takes the narrowest Twisted interface
for it (C{IReactorTime} for C{callLater} and C{seconds}, C{IReactorFDSet},
C{IReactorProcess}, ...). The objects that are handed one reactor and pass it on to
several such parts need the sum of what those parts call; Python typing has no
intersection type, so each sum is a zope interface here that extends the ones it
combines (mypy-zope checks it). Real reactors provide all of them; tests pass
C{MemoryReactorClock} and the like, which provide the methods the tested path calls.

A TCP connection's transport is the same case: C{ITCPTransport} for the socket, and
the C{IConsumer} and C{IPushProducer} the reactor's connection also is (flow control).
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IConsumer,
    IPushProducer,
    IReactorCore,
    IReactorFDSet,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    ITCPTransport,
)
from zope.interface import Attribute

__all__ = [
    "IClientReactor",
    "IInstalledReactor",
    "IInstanceReactor",
    "ISiteReactor",
    "ISupervisorReactor",
    "ITCPConnection",
    "IWorkerReactor",
    "installed_reactor",
]


class IClientReactor(IReactorTime, IReactorTCP):
    """What connects to the apps and times them out: the upstream pool, the engine and
    the WebSocket relay."""


class ISiteReactor(IReactorTime, IReactorFDSet):
    """What the site calls: timers, and at shutdown the writers still sending."""


class IInstanceReactor(IReactorCore, IClientReactor, IReactorThreads, ISiteReactor):
    """What one instance's parts call: timers (everywhere), upstream TCP connections
    (the pool, the WebSocket legs), the thread pool (password checks), the writers
    (the drain at shutdown) and the listeners' endpoints."""


class IWorkerReactor(IInstanceReactor, IReactorSocket):
    """An instance in a C{--workers} worker: it also adopts inherited sockets."""


class ISupervisorReactor(IReactorCore, IReactorTime, IReactorTCP, IReactorProcess):
    """The C{--workers} supervisor: binds the TCP listeners, spawns and times workers."""


class IInstalledReactor(IWorkerReactor, ISupervisorReactor):
    """The process's own reactor, which provides each of the above."""


class ITCPConnection(ITCPTransport, IConsumer, IPushProducer):
    """The transport of a TCP connection: the socket, the consumer of what is written
    to it (a producer streams there) and the producer of what it reads."""

    disconnecting = Attribute(
        "True once loseConnection was called (Twisted's connections and TLS wrappers "
        "have it; no Twisted interface names it)."
    )


def installed_reactor() -> IInstalledReactor:
    """The process's reactor (imported here, when called, never at module level).

    C{twisted.internet.reactor} is a module attribute replaced at install time, so its
    type is not visible to mypy: this is the one cast that states what it provides.
    """
    from twisted.internet import reactor

    return cast(IInstalledReactor, reactor)

# -*- test-case-name: tests.test_eager -*-
"""Sending a turn's bytes with one C{send()} per socket, without Twisted's write queue.

A Twisted transport's C{write} queues the bytes and registers for writability; they
leave on the next reactor turn, at the price of two C{epoll_ctl} calls and a loop
iteration per write. L{send_eagerly} gives a TCP transport a C{write} that holds the
bytes of the current reactor turn instead and sends them with one C{send()} when the
turn's events have all been handled (a C{callLater(0)}, which runs before the next
poll), falling back to Twisted's own buffering (and producer pausing) for whatever the
kernel did not take.

Why at the end of the turn and not at once: on loopback each C{send()} wakes the
process that reads it, and a process that had gone idle on another core costs an
inter-processor interrupt to wake (measured: half of portproxy's system time per
request when it sent at once). Sending the turn's responses together wakes each
reader once per turn. A turn with one event (one client) sends as soon as that event
is handled, so latency stays where it was. It changes the transport's class rather
than storing functions on it, so an idle connection costs no more memory than before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime, ITransport

from portproxy.net.internals import has_queued_writes, swap_class

__all__ = ["eager_writer", "send_eagerly"]


class _TurnSender:
    """The transports of one reactor with bytes held for the end of the current turn."""

    __slots__ = ("clock", "held", "scheduled")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.held: list[_EagerWrites] = []
        self.scheduled = False

    def hold(self, transport: _EagerWrites) -> None:
        self.held.append(transport)
        if not self.scheduled:
            self.scheduled = True
            self.clock.callLater(0, self.send_all)

    def send_all(self) -> None:
        self.scheduled = False
        held, self.held = self.held, []
        for transport in held:
            transport.send_held()


_SENDERS: WeakKeyDictionary[IReactorTime, _TurnSender] = WeakKeyDictionary()
#: The last reactor asked for and its sender: a process runs one reactor.
_last: tuple[IReactorTime | None, _TurnSender | None] = (None, None)


def _turn_sender(clock: IReactorTime) -> _TurnSender:
    global _last
    last_clock, sender = _last
    if last_clock is clock and sender is not None:
        return sender
    sender = _SENDERS.get(clock)
    if sender is None:
        sender = _SENDERS[clock] = _TurnSender(clock)
    _last = (clock, sender)
    return sender


class _EagerWrites:
    """C{write}/C{writeSequence} that send once per reactor turn (mixed into tcp classes).

    A response's head and first body bytes, written apart by twisted.web, so leave in
    one C{send()} too.
    """

    #: The bytes written during this turn, sent at its end by L{send_held}; C{None}
    #: when there are none (a class default).
    _held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            held.append(data)  # after what this turn wrote already
            return
        # Whether Twisted's queue must take them instead is decided when they leave
        # (send_held): bytes queued before these still go first.
        self._held = [data]
        # Any: a mixin; what it reads is the tcp.Connection's it is mixed into.
        own: Any = self
        _turn_sender(own.reactor).hold(self)

    def _queue_instead(self) -> bool:
        """Whether bytes must go through Twisted's own queue rather than C{send()}.

        Anything already queued must go first; a closing transport handles itself; a
        pull producer is driven by the buffer draining, so it keeps the buffer; TLS
        started on the connection encrypts in write().
        """
        own: Any = self
        producer = own.producer
        return bool(
            (producer is not None and not own.streamingProducer)
            or has_queued_writes(own)
            or own.disconnecting
            or not own.connected
            or getattr(own, "TLS", False)
        )

    def send_held(self) -> None:
        """Send what this turn wrote, in one C{send()}; queue what the kernel refuses."""
        held = self._held
        if held is None:
            return
        del self._held
        data = held[0] if len(held) == 1 else b"".join(held)
        if self._queue_instead():
            super().write(data)  # type: ignore[misc]
            return
        own: Any = self
        try:
            sent = own.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            super().write(data)  # type: ignore[misc]  # let Twisted report it
            return
        if sent < len(data):
            super().write(data[sent:])  # type: ignore[misc]

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self, *args: Any) -> None:
        # Twisted closes once its own queue is empty: the held bytes go there first.
        self.send_held()
        super().loseConnection(*args)  # type: ignore[misc]

    def abortConnection(self) -> None:
        # As Twisted's own queue: whatever is not sent yet is dropped.
        if self._held is not None:
            del self._held
        super().abortConnection()  # type: ignore[misc]

    def loseWriteConnection(self) -> None:
        self.send_held()
        super().loseWriteConnection()  # type: ignore[misc]

    def startTLS(self, *args: Any) -> None:
        # Bytes written before TLS starts are plaintext, and leave before it does.
        self.send_held()
        super().startTLS(*args)  # type: ignore[misc]


class _EagerServer(_EagerWrites, tcp.Server):
    pass


class _EagerClient(_EagerWrites, tcp.Client):
    pass


_EAGER: dict[type, type] = {tcp.Server: _EagerServer, tcp.Client: _EagerClient}


def send_eagerly(transport: object) -> bool:
    """Make C{transport} send once per turn, without Twisted's queue when it can.

    C{False} if it cannot be made to.

    Only Twisted's plain TCP transports (and subclasses of them, such as the counted
    ones of L{portproxy.net.accept}) are changed: TLS and other wrapped transports keep
    their own buffering.
    """
    cls = type(transport)
    if issubclass(cls, _EagerWrites):
        return True
    eager = _EAGER.get(cls)
    if eager is None:
        if not issubclass(cls, (tcp.Server, tcp.Client)):
            return False
        # One eager subclass per transport class, made once.
        eager = _EAGER[cls] = type("Eager" + cls.__name__, (_EagerWrites, cls), {})
    swap_class(transport, eager)
    return True


def eager_writer(transport: ITransport) -> Callable[[bytes], None]:
    """C{transport.write}, made to send once per turn where possible."""
    send_eagerly(transport)
    return transport.write

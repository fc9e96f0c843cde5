# -*- test-case-name: tests.test_eager -*-
"""Sending bytes now instead of on the next reactor turn.

A Twisted transport's C{write} always queues the bytes and registers for writability;
they leave on the next reactor turn, at the price of two C{epoll_ctl} calls and a loop
iteration per write. For a proxy that is most of the latency of a small request and
much of the cost of relaying small WebSocket frames. L{send_eagerly} gives a TCP
transport a C{write} that sends at once when nothing is queued and falls back to
Twisted's own (with its buffering and producer pausing) for whatever the kernel did not
take. It changes the transport's class rather than storing functions on it, so an idle
connection costs no more memory than before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport

from portproxy.net.internals import has_queued_writes, swap_class

__all__ = ["eager_writer", "send_eagerly"]


class _EagerWrites:
    """C{write}/C{writeSequence} that try C{send()} first (mixed into tcp classes).

    L{cork} holds the writes that follow until L{uncork} sends them in one call: a
    response's head and its first body bytes, written separately by twisted.web, then
    leave in one segment, for one C{send()} instead of two.
    """

    #: The writes held by L{cork}, or C{None} (a class default: no per-connection cost).
    _corked: list[bytes] | None = None

    def cork(self) -> None:
        """Hold writes until L{uncork}."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        """Send what L{cork} held, in one write."""
        held = self._corked
        if held is None:
            return
        del self._corked
        if held:
            self.write(held[0] if len(held) == 1 else b"".join(held))

    def write(self, data: bytes) -> None:
        held = self._corked
        if held is not None:
            held.append(data)
            return
        # Any: a mixin; what it reads is the tcp.Connection's it is mixed into.
        own: Any = self
        producer = own.producer
        # Anything already queued must go first; a closing transport handles itself;
        # a pull producer is driven by the buffer draining, so it keeps the buffer;
        # TLS started on the connection encrypts in write().
        if (
            (producer is not None and not own.streamingProducer)
            or has_queued_writes(own)
            or own.disconnecting
            or not own.connected
            or getattr(own, "TLS", False)
        ):
            super().write(data)  # type: ignore[misc]
            return
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
        held = self._corked
        if held is not None:
            held.extend(data)
            return
        self.write(b"".join(data))


class _EagerServer(_EagerWrites, tcp.Server):
    pass


class _EagerClient(_EagerWrites, tcp.Client):
    pass


_EAGER: dict[type, type] = {tcp.Server: _EagerServer, tcp.Client: _EagerClient}


def send_eagerly(transport: object) -> bool:
    """Make C{transport} send at once when it can; C{False} if it cannot be made to.

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
    """C{transport.write}, made eager where possible."""
    send_eagerly(transport)
    return transport.write

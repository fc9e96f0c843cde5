# -*- test-case-name: tests.test_splice -*-
"""Sending bytes now instead of on the next reactor turn.

A Twisted transport's C{write} always queues the bytes and registers for writability;
they leave on the next reactor turn, at the price of two C{epoll_ctl} calls and a loop
iteration per write. For a proxy that is most of the latency of a small request and
much of the cost of relaying small WebSocket frames, so L{eager_writer} sends at once
when nothing is queued and falls back to C{write} (with its buffering and producer
pausing) for whatever the kernel did not take. L{send_eagerly} installs it on a
transport, for code (twisted.web's channel) that calls C{transport.write} itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import tcp

__all__ = ["eager_writer", "send_eagerly"]

_MARK = "_portproxy_eager"


def eager_writer(transport: Any) -> Callable[[bytes], None]:
    """A function that writes C{data} to C{transport}, sending it now if it can."""
    if not isinstance(transport, tcp.Connection) or getattr(transport, _MARK, False):
        # TLS and other wrapped transports keep their own buffering; an eager
        # transport already is one.
        return transport.write  # type: ignore[no-any-return]
    sock = transport.socket
    write = transport.write

    def send(data: bytes) -> None:
        # Anything already queued must go first; a closing transport handles itself;
        # a pull producer is driven by the buffer draining, so it keeps the buffer.
        if (
            (transport.producer is not None and not transport.streamingProducer)
            or transport.dataBuffer
            or transport._tempDataBuffer
            or transport.disconnecting
            or not transport.connected
        ):
            write(data)
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            write(data)  # let Twisted notice and report the broken connection
            return
        if sent < len(data):
            write(data[sent:])

    return send


def send_eagerly(transport: Any) -> None:
    """Make C{transport.write} and C{writeSequence} send at once when they can."""
    if not isinstance(transport, tcp.Connection) or getattr(transport, _MARK, False):
        return
    send = eager_writer(transport)

    def send_sequence(data: Iterable[bytes]) -> None:
        send(b"".join(data))

    transport.write = send  # type: ignore[method-assign]
    transport.writeSequence = send_sequence  # type: ignore[method-assign]
    setattr(transport, _MARK, True)

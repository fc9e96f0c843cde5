# -*- test-case-name: tests.test_websocket_relay -*-
"""Copying bytes from one socket to another with as few reactor turns as possible.

A Twisted transport's C{write} always queues the bytes and registers for writability;
they leave on the next reactor turn, at the price of two C{epoll_ctl} calls and a loop
iteration per message. Relaying small WebSocket frames that is most of the work, so
L{eager_writer} sends at once when nothing is queued and falls back to C{write} (with
its buffering and producer pausing) for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp

__all__ = ["eager_writer"]


def eager_writer(transport: Any) -> Callable[[bytes], None]:
    """A function that writes C{data} to C{transport}, sending it now if it can."""
    if not isinstance(transport, tcp.Connection):
        # TLS and other wrapped transports keep their own buffering.
        return transport.write  # type: ignore[no-any-return]
    sock = transport.socket
    write = transport.write

    def send(data: bytes) -> None:
        # Anything already queued must go first; a closing transport handles itself.
        if transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting:
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

# -*- test-case-name: tests.test_access_log -*-
"""The access log: one line per request, formatted from the request's fields, written
to a cheap sink.

It is on by default, so it is on the path of every request the benchmarks measure.
The line is built directly from the fields (no C{twisted.logger} formatting, no
C{json.dumps} of a dict), the timestamp is formatted once per second, and the sinks
do the least they can per line: L{TwistedLogSink} hands the log's observers one ready
event per reactor turn, L{FileSink} appends lines to a buffer and writes it in batches.

The lines are the ones twisted.web's C{combinedLogFormatter} (and portproxy's JSON
formatter before this module) wrote, byte for byte; C{tests/test_access_log.py} holds
them as fixtures.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from types import FrameType
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher

from portproxy.auth.guard import RESERVED_TICKET_ACCEPT
from portproxy.routing.routes import split_target
from portproxy.sharing.grants import SHARE_PATH

__all__ = [
    "FLUSH_BYTES",
    "FLUSH_SECONDS",
    "REDACTED",
    "FileSink",
    "LogClock",
    "ReopenOnSignal",
    "Sink",
    "TwistedLogSink",
    "combined_line",
    "escape",
    "json_line",
    "log_timestamp",
    "log_uri",
]

#: A file sink writes its buffer once it holds this many characters...
FLUSH_BYTES = 64 * 1024
#: ...or this many seconds after its first unwritten line, whichever comes first.
FLUSH_SECONDS = 1.0

_MONTHS = "- Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()

#: Printable ASCII but C{"} and C{\\}: the bytes L{escape} leaves as they are.
_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')


def log_timestamp(seconds: float) -> str:
    """The combined log format's time, C{[07/Dec/2026:00:39:13 +0000]} (UTC)."""
    t = time.gmtime(seconds)
    return "[%02d/%s/%04d:%02d:%02d:%02d +0000]" % (
        t.tm_mday,
        _MONTHS[t.tm_mon],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


class LogClock:
    """The current L{log_timestamp}, formatted again only when the second changes.

    twisted.web keeps the same cache behind a one-second timer, which lags up to a
    second; asking the clock on each line costs a C{time()} call and is exact.
    """

    def __init__(self, seconds: Callable[[], float]) -> None:
        self._seconds = seconds
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        second = int(self._seconds())
        if second != self._second:
            self._second = second
            self._text = log_timestamp(second)
        return self._text


def escape(value: bytes) -> str:
    """C{value} as the combined log format quotes it: like a Python C{repr} inside
    double quotes (C{\\"}, C{\\\\}, C{\\n}, C{\\xNN}).

    No byte a client sends can end the quoted field or the line, so a header cannot
    forge a second log line. Plain values (almost all) skip the C{repr}.
    """
    if not value.translate(None, _PLAIN):
        return value.decode("ascii")
    text = repr(value)[1:]
    if text[0] == "'":
        # repr chose single quotes: a double quote inside is bare, a single one escaped.
        return text[1:-1].replace('"', '\\"').replace("\\'", "'")
    # Double quotes: the value holds a single quote and no double quote.
    return text[1:-1]


#: What a sign-in ticket's value is logged as.
REDACTED = b"[redacted]"
#: A ticket-page query longer than this is logged as a whole as L{REDACTED}.
_LONGEST_REDACTED_QUERY = 1024


def log_uri(uri: bytes) -> bytes:
    """C{uri} as the access log records it: secrets in portproxy's own URLs redacted.

    A share link's token (C{/.portproxy/share/<token>}, any query dropped) is logged
    as C{/.portproxy/share/[redacted]}.

    C{/.portproxy/ticket/accept?t=<ticket>} carries a ticket that signs a browser in
    on a proxy host; a log reader must not be able to replay one. Every C{t} of that
    page's query (names read as Twisted reads them: split on C{&} and C{;},
    %-decoded, C{+} as a space) is logged as C{t=[redacted]}; the rest, and every
    other URI, byte for byte. Almost every URI holds no C{/.} and is returned after
    one substring search.
    """
    if b"/." not in uri:
        return uri
    path = split_target(uri)[0]
    lowered = path.lower()
    if lowered.startswith(SHARE_PATH):
        # A share link works until it expires or is revoked: its token is a secret.
        authority = uri[: uri.find(path)]  # absolute-form: scheme://host kept
        return authority + path[: len(SHARE_PATH)] + REDACTED
    if b"?" not in uri or lowered != RESERVED_TICKET_ACCEPT:
        return uri
    head, _, query = uri.partition(b"?")
    if len(query) > _LONGEST_REDACTED_QUERY:
        # No real ticket URL is this long; redacting each value of a junk query would
        # make its line grow several times over.
        return head + b"?" + REDACTED
    items = []
    for part in query.split(b"&"):
        pieces = []
        for item in part.split(b";"):
            name, eq, _value = item.partition(b"=")
            if eq and unquote_to_bytes(name.replace(b"+", b" ")) == b"t":
                item = name + b"=" + REDACTED
            pieces.append(item)
        items.append(b";".join(pieces))
    return head + b"?" + b"&".join(items)


def combined_line(
    client: str | None,
    timestamp: str,
    method: bytes,
    uri: bytes,
    protocol: bytes,
    status: int,
    length: int,
    referrer: bytes | None,
    agent: bytes | None,
) -> str:
    """One line of the combined log format (C{"-"} for what is unknown or empty).

    The URI is the one L{log_uri} gives: a sign-in ticket is never logged.

    @param client: the peer's IP address, C{None} when it has none (a UNIX socket).
    @param length: the body bytes sent.
    """
    return '"%s" - - %s "%s %s %s" %d %s "%s" "%s"' % (
        escape(client.encode("ascii")) if client is not None else "-",
        timestamp,
        escape(method),
        escape(log_uri(uri)),
        escape(protocol),
        status,
        length or "-",
        escape(referrer) if referrer else "-",
        escape(agent) if agent else "-",
    )


def json_line(
    client: str | None,
    timestamp: str,
    method: bytes,
    uri: bytes,
    protocol: bytes,
    status: int,
    length: int,
    referrer: bytes | None,
    agent: bytes | None,
) -> str:
    """One JSON object: what C{json.dumps} makes of the fields (bytes read as
    Latin-1, absent headers as C{""}), built without the dict and the encoder; the
    URI as L{log_uri} gives it."""
    q = encode_basestring_ascii
    return (
        '{"time": %s, "client": %s, "method": %s, "uri": %s, "protocol": %s, '
        '"status": %d, "bytes": %d, "referrer": %s, "agent": %s}'
        % (
            q(timestamp),
            q(client if client is not None else "-"),
            q(method.decode("latin-1")),
            q(log_uri(uri).decode("latin-1")),
            q(protocol.decode("latin-1")),
            status,
            length,
            q(referrer.decode("latin-1")) if referrer else '""',
            q(agent.decode("latin-1")) if agent else '""',
        )
    )


class Sink(Protocol):
    """Where access-log lines go."""

    def write(self, line: str) -> None:
        """Take one line (no newline)."""

    def flush(self) -> None:
        """Write out what is buffered."""

    def close(self) -> None:
        """Flush and let go of what the sink holds."""


class TwistedLogSink:
    """Lines as C{twisted.logger} events at level info in C{namespace}, as
    C{Logger.info("{line}", line=...)} emits them, so C{twist}'s output looks the
    same and filters on the namespace keep working.

    The observers' work per event (C{twist}'s JSON output flattens and serialises
    each one) is most of the cost, so the lines that end in one reactor turn go out
    as one event, their C{line} field holding them one per row. At a few requests a
    second that is one line per event, as before; under load it is several, and the
    log costs a fraction of what it did. The event is built here and handed to the
    observer directly: C{Logger.emit} would copy its arguments and add C{log_logger}
    and C{log_source}, which the observers serialise only as "unpersistable".

    @param reactor: runs the end-of-turn write; C{None} writes each line at once.
    """

    def __init__(
        self,
        namespace: str,
        observer: ILogObserver = globalLogPublisher,
        clock: Callable[[], float] = time.time,
        reactor: IReactorTime | None = None,
        max_lines: int = 256,
    ) -> None:
        self.namespace = namespace
        self._observer = observer
        self._clock = clock
        self._reactor = reactor
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._call: IDelayedCall | None = None

    def write(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if self._reactor is None or len(lines) >= self._max_lines:
            self.flush()
        elif self._call is None:
            self._call = self._reactor.callLater(0, self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._call = None
        self.flush()

    def flush(self) -> None:
        """Emit what this turn logged, as one event."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        lines = self._lines
        if not lines:
            return
        self._lines = []
        self._observer(
            {
                "log_namespace": self.namespace,
                "log_level": LogLevel.info,
                "log_format": "{line}",
                "line": lines[0] if len(lines) == 1 else "\n".join(lines),
                "log_time": self._clock(),
            }
        )

    def close(self) -> None:
        """Emit what is left."""
        self.flush()


class FileSink:
    """Lines appended to a file in batches, the file reopened when it is rotated.

    A batch is written when the buffer passes L{FLUSH_BYTES}, L{FLUSH_SECONDS} after
    its first line, on L{flush} and on L{close}; each batch is one C{write} of whole
    lines to a descriptor opened with C{O_APPEND}, so processes sharing the file
    (C{--workers}) never split each other's lines (on a local file system the append
    and the write are one step). Before each batch the path is checked: a file renamed
    or removed (logrotate without C{copytruncate}) is closed and the path opened anew.
    L{reopen} (SIGUSR1) does the same at once.

    A failed write is logged once (then once more when writing works again); its
    batch is dropped rather than kept, so a full disk costs lines, never memory, and
    never stops a request.

    @param path: an absolute path; created C{0640} (less what the umask takes).
    @raise OSError: when the file cannot be opened at first.
    """

    def __init__(
        self,
        path: str,
        *,
        reactor: IReactorTime,
        log: Logger | None = None,
        flush_bytes: int = FLUSH_BYTES,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._log = log if log is not None else Logger(namespace="portproxy.accesslog")
        self._flush_bytes = flush_bytes
        self._flush_seconds = flush_seconds
        self._lines: list[str] = []
        self._size = 0
        self._timer: IDelayedCall | None = None
        self._failing = False
        self._fd: int | None = None
        self._identity: tuple[int, int] = (0, 0)
        self._open()

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self._flush_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = self._reactor.callLater(self._flush_seconds, self._timed)

    def _timed(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines = self._lines
        self._lines = []
        self._size = 0
        lines.append("")
        data = "\n".join(lines).encode("utf-8")
        try:
            if self._fd is None or self._rotated():
                self._reopen_now()
            assert self._fd is not None
            _write_all(self._fd, data)
        except OSError as e:
            if not self._failing:
                self._failing = True
                self._log.error(
                    "access log {path}: {error}; lines are dropped until it works",
                    path=self.path,
                    error=e.strerror or e,
                )
            return
        if self._failing:
            self._failing = False
            self._log.info("access log {path}: writing again", path=self.path)

    def reopen(self) -> None:
        """Write what is buffered, then close the file and open the path again: what
        logrotate's C{postrotate} asks for with SIGUSR1."""
        self.flush()
        try:
            self._reopen_now()
        except OSError as e:
            self._log.error(
                "access log {path}: cannot reopen: {error}",
                path=self.path,
                error=e.strerror or e,
            )

    def close(self) -> None:
        """Write what is buffered and close the file. A line that comes later (a
        request that ends during shutdown) opens it again and is written at once."""
        self.flush()
        self._close_fd()
        self._flush_bytes = 0

    def _rotated(self) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (now.st_dev, now.st_ino) != self._identity

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o640)
        info = os.fstat(fd)
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)

    def _reopen_now(self) -> None:
        self._close_fd()
        self._open()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of C{data}; a regular file takes it in one call unless it fails."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class ReopenOnSignal(Service):
    """While running, C{signum} (SIGUSR1) calls C{reopen} in the reactor's thread.

    The handler itself only asks the reactor to call (C{callFromThread} is what
    Twisted's own SIGINT handler uses: safe from a signal handler); the reopen runs
    between events, never inside a half-done flush. Stopping puts the previous
    handler back.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        reopen: Callable[[], None],
        signum: int = signal.SIGUSR1,
    ) -> None:
        self._reactor = reactor
        self._reopen = reopen
        self._signum = signum
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(self._signum, self.handle)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(self._signum, self._previous)
            self._previous = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler."""
        self._reactor.callFromThread(self._reopen)

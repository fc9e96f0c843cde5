# -*- test-case-name: tests.test_ports -*-
"""Which TCP ports listen on this machine, and which process owns each (SPEC 13).

Two costs, kept apart. Reading the kernel's socket tables (C{/proc/net/tcp} and
C{tcp6}) is cheap and done on every poll; finding the process behind a socket means
looking through every process's open files, so it is done only for sockets not seen
before (the answer is cached per socket inode, which the kernel never reuses while the
socket lives). Sockets of processes portproxy may not inspect (another user's) are
listed with their port, address and user, and no process details.

On systems without C{/proc/net} (macOS, Windows) psutil gives both answers at once.

The parsing and the shaping of the results are plain functions; L{Discovery} does the
reading, and is meant to run off the reactor thread when it looks for processes.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Discovery",
    "Listener",
    "ProcessInfo",
    "address_warnings",
    "parse_tcp_table",
]

Family = Literal["ipv4", "ipv6"]

_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """One listening socket: its port, bind address, family, owner's uid and inode.

    C{inode} is C{None} (and C{uid} may be) when the system does not tell (psutil on
    macOS, Windows).
    """

    port: int
    address: str
    family: Family
    uid: int | None = None
    inode: int | None = None


@dataclass(frozen=True)
class ProcessInfo:
    """What a developer needs to recognise the process behind a port.

    C{command} is the command line as one shell-quoted string (C{shlex.join} of argv):
    readable, and exact enough to paste back into a shell.
    """

    pid: int
    process: str | None
    command: str | None
    cwd: str | None
    user: str | None


def _decode_address(
    hex_address: str, byteorder: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A C{/proc/net/tcp*} address: 32-bit words, each in the host's byte order."""
    try:
        raw = bytes.fromhex(hex_address)
    except ValueError:
        return None
    if len(raw) not in (4, 16):
        return None
    if byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    return ipaddress.IPv6Address(raw)


def _reachable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for loopback and wildcard binds: the ones portproxy reaches through
    127.0.0.1 or ::1 (an IPv4-mapped IPv6 address counts as its IPv4 one)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _show(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_tcp_table(
    table: str, family: Family, *, byteorder: str = sys.byteorder
) -> list[Listener]:
    """The listening sockets of a C{/proc/net/tcp} (or C{tcp6}) table on loopback or
    wildcard addresses; connections, other addresses and malformed lines are skipped."""
    found: list[Listener] = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        address, _, port_hex = fields[1].partition(":")
        try:
            port = int(port_hex, 16)
        except ValueError:
            continue
        ip = _decode_address(address, byteorder)
        if ip is None or len(address) != (8 if family == "ipv4" else 32):
            continue
        if not 0 < port < 65536 or not _reachable(ip):
            continue
        uid = _int(fields[7]) if len(fields) > 7 else None
        inode = _int(fields[9]) if len(fields) > 9 else None
        found.append(Listener(port, _show(ip), family, uid, inode))
    return found


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def address_warnings(addresses: Iterable[tuple[str, str]]) -> list[str]:
    """What a developer should know about where a port listens (SPEC 13).

    @param addresses: C{(address, family)} pairs of one port's listening sockets.
    """
    addresses = list(addresses)
    warnings = []
    wildcard = sorted({a for a, _ in addresses if a in ("0.0.0.0", "::")})
    if wildcard:
        where = " and ".join(wildcard)
        warnings.append(
            f"Listens on {where} (all interfaces): reachable from the network "
            "without portproxy's sign-in. Bind it to 127.0.0.1 to keep it private."
        )
    if addresses and all(a == "::1" for a, _ in addresses):
        warnings.append(
            "Listens on ::1 (IPv6 loopback) only: portproxy reaches it, but tools "
            "that use 127.0.0.1 do not."
        )
    return warnings


# -- sock_diag netlink (what ss -lt uses) ---------------------------------------------

# The kernel filters by state here, so the cost does not grow with the machine's
# connections the way /proc/net/tcp's does (a table of every TIME_WAIT socket).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_AF_INET, _AF_INET6 = 2, 10
_NLMSG_HEADER = struct.Struct("=IHHII")
# inet_diag_msg: family, state, timer, retrans; the socket id (ports and addresses in
# network byte order, interface, cookie); expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")


def diag_request(family: int, seq: int = 1) -> bytes:
    """A dump request for the listening TCP sockets of one address family."""
    body = struct.pack("=BBBxI48x", family, 6, 0, 1 << _TCP_LISTEN)  # 6: IPPROTO_TCP
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + len(body),
        _SOCK_DIAG_BY_FAMILY,
        _NLM_F_REQUEST | _NLM_F_DUMP,
        seq,
        0,
    )
    return header + body


def parse_diag_messages(data: bytes) -> tuple[list[Listener], bool]:
    """The reachable listeners in one netlink read, and whether the dump is done.

    @raise OSError: the kernel answered with an error (no sock_diag support).
    """
    found: list[Listener] = []
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            break
        body = offset + _NLMSG_HEADER.size
        offset += (length + 3) & ~3
        if kind == _NLMSG_DONE:
            return found, True
        if kind == _NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, body)
            if error:
                raise OSError(-error, "sock_diag refused the request")
            continue
        if kind != _SOCK_DIAG_BY_FAMILY or body + _DIAG_MSG.size > len(data):
            continue
        family, state, _, _, sport, _, src, _, _, _, _, _, _, uid, inode = (
            _DIAG_MSG.unpack_from(data, body)
        )
        if state != _TCP_LISTEN or family not in (_AF_INET, _AF_INET6):
            continue
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address
        if family == _AF_INET:
            ip = ipaddress.IPv4Address(src[:4])
        else:
            ip = ipaddress.IPv6Address(src)
        port = int.from_bytes(sport, "big")
        if not 0 < port < 65536 or not _reachable(ip):
            continue
        kind_name: Family = "ipv4" if family == _AF_INET else "ipv6"
        found.append(Listener(port, _show(ip), kind_name, uid, inode))
    return found, False


def read_listeners_netlink() -> list[Listener] | None:
    """The listening sockets through sock_diag, or C{None} where it is unavailable
    (not Linux, or a sandbox that forbids netlink)."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        return None
    found: list[Listener] = []
    try:
        with socket.socket(family, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
            sock.settimeout(1.0)
            for seq, address_family in enumerate((_AF_INET, _AF_INET6), start=1):
                sock.send(diag_request(address_family, seq))
                done = False
                while not done:
                    listeners, done = parse_diag_messages(sock.recv(65536))
                    found.extend(listeners)
    except OSError:
        return None
    return found


# -- reading the system ------------------------------------------------------------


def _psutil() -> Any:
    import psutil

    return psutil


def _process_info(pid: int, uid: int | None) -> ProcessInfo | None:
    """C{pid}'s name, command line, cwd and user, or C{None} when it is gone or not
    ours to inspect (another user's: only the socket's own user is known then)."""
    psutil = _psutil()
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            name = proc.name() or None
            argv = proc.cmdline()
            try:
                cwd = proc.cwd() or None
            except (psutil.AccessDenied, psutil.ZombieProcess):
                cwd = None
            try:
                user = proc.username()
            except (psutil.AccessDenied, KeyError):
                user = _user_name(uid)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return None
    return ProcessInfo(pid, name, shlex.join(argv) if argv else None, cwd, user)


def _user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        import pwd
    except ImportError:  # Windows
        return str(uid)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def scan_socket_owners(inodes: set[int], proc: str = "/proc") -> dict[int, int]:
    """Socket inode -> the lowest pid holding it, by reading C{/proc/<pid>/fd}.

    Processes whose descriptors cannot be read (another user's) are skipped, so their
    sockets stay unowned. Stops early once every inode is found.
    """
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    owners: dict[int, int] = {}
    try:
        pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return owners
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in owners:
                owners[inode] = pid
        if len(owners) == len(wanted):
            break
    return owners


@dataclass(frozen=True)
class Found:
    """One poll's result: the listening sockets and the processes owning them."""

    listeners: tuple[Listener, ...]
    #: Listener -> its process, for those portproxy may inspect.
    owners: Mapping[Listener, ProcessInfo]
    #: The user owning each listener's socket, also where the process is not visible.
    users: Mapping[Listener, str | None]


class Discovery:
    """Reads the machine's listening sockets; caches the process behind each.

    @param tables: the C{/proc/net/tcp}-style tables and their families; when none can
        be read, psutil answers instead.
    @param netlink: ask the kernel through sock_diag first (Linux; the tables when it
        is unavailable). Off by default so that tests can hand in their tables.
    """

    def __init__(
        self,
        *,
        tables: Iterable[tuple[str, Family]] = (
            ("/proc/net/tcp", "ipv4"),
            ("/proc/net/tcp6", "ipv6"),
        ),
        proc: str = "/proc",
        process_info: Callable[[int, int | None], ProcessInfo | None] = _process_info,
        netlink: bool = False,
    ) -> None:
        self._netlink = netlink
        self._tables = tuple(tables)
        self._proc = proc
        self._process_info = process_info
        #: inode -> its process (or None: not ours to see), for the sockets of the
        #: last poll only, so the cache never outgrows the machine's listeners.
        self._cache: dict[int, ProcessInfo | None] = {}

    def read_listeners(self) -> list[Listener] | None:
        """The cheap part: the listening sockets from the kernel tables, or C{None}
        when there are no tables (not Linux)."""
        if self._netlink:
            found = read_listeners_netlink()
            if found is not None:
                return found
            self._netlink = False  # not here: the tables from now on
        found = None
        for path, family in self._tables:
            try:
                with open(path, encoding="ascii", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            found = (found or []) + parse_tcp_table(text, family)
        return found

    def needs_lookup(self, listeners: Iterable[Listener]) -> bool:
        """True when some socket's process is not cached yet (the expensive part)."""
        return any(
            listener.inode is not None and listener.inode not in self._cache
            for listener in listeners
        )

    def resolve(self, listeners: list[Listener]) -> Found:
        """Attach processes to C{listeners}, scanning only for sockets not seen before.

        Blocking (it reads every process's descriptors): run it off the reactor thread.
        """
        new = {
            listener.inode
            for listener in listeners
            if listener.inode is not None and listener.inode not in self._cache
        }
        owners_by_inode = scan_socket_owners(new, self._proc) if new else {}
        uid_of = {listener.inode: listener.uid for listener in listeners}
        cache = {
            inode: info
            for inode, info in self._cache.items()
            if inode in uid_of  # forget sockets that closed
        }
        for inode in new:
            pid = owners_by_inode.get(inode)
            cache[inode] = (
                None if pid is None else self._process_info(pid, uid_of.get(inode))
            )
        self._cache = cache
        owners: dict[Listener, ProcessInfo] = {}
        users: dict[Listener, str | None] = {}
        for listener in listeners:
            info = cache.get(listener.inode) if listener.inode is not None else None
            if info is not None:
                owners[listener] = info
            users[listener] = info.user if info is not None else _user_name(listener.uid)
        return Found(tuple(listeners), owners, users)

    def partial(self, listeners: list[Listener]) -> Found:
        """C{listeners} with the processes already known, without any scan (for a
        page that must render now; the next poll fills in the rest)."""
        owners: dict[Listener, ProcessInfo] = {}
        users: dict[Listener, str | None] = {}
        for listener in listeners:
            info = self._cache.get(listener.inode) if listener.inode is not None else None
            if info is not None:
                owners[listener] = info
            users[listener] = info.user if info is not None else _user_name(listener.uid)
        return Found(tuple(listeners), owners, users)

    def cached(self, listeners: list[Listener]) -> Found | None:
        """C{resolve}'s answer without any scan, when every socket is cached."""
        if self.needs_lookup(listeners):
            return None
        return self.resolve(listeners)

    def discover(self) -> Found:
        """Everything at once (blocking): the tables and the processes, or psutil's
        answer on systems without the tables."""
        listeners = self.read_listeners()
        if listeners is None:
            return discover_with_psutil(self._process_info)
        return self.resolve(listeners)


def discover_with_psutil(
    process_info: Callable[[int, int | None], ProcessInfo | None] = _process_info,
) -> Found:
    """Listening sockets and their processes through psutil (macOS, Windows, BSD).

    Where the whole-system call needs privileges (macOS), each process the user may
    inspect is asked for its own sockets instead.
    """
    psutil = _psutil()
    pairs: list[tuple[Any, int | None]] = []
    try:
        pairs = [(c, c.pid) for c in psutil.net_connections(kind="tcp")]
    except psutil.AccessDenied:
        for proc in psutil.process_iter():
            try:
                pairs.extend((c, proc.pid) for c in proc.net_connections(kind="tcp"))
            except (psutil.Error, OSError):
                continue
    listeners: list[Listener] = []
    owners: dict[Listener, ProcessInfo] = {}
    users: dict[Listener, str | None] = {}
    infos: dict[int, ProcessInfo | None] = {}
    for conn, pid in pairs:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        try:
            ip = ipaddress.ip_address(conn.laddr.ip.split("%")[0])
        except ValueError:
            continue
        if not _reachable(ip):
            continue
        family: Family = "ipv6" if isinstance(ip, ipaddress.IPv6Address) else "ipv4"
        listener = Listener(int(conn.laddr.port), _show(ip), family)
        if listener in users:
            continue
        listeners.append(listener)
        info = None
        if pid:
            if pid not in infos:
                infos[pid] = process_info(pid, None)
            info = infos[pid]
        if info is not None:
            owners[listener] = info
        users[listener] = info.user if info is not None else None
    return Found(tuple(listeners), owners, users)

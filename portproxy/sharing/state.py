# -*- test-case-name: tests.test_sharing_state -*-
"""The sharing state of an instance: port access levels, share links and tokens (SPEC 12).

One L{SharingState} per process, backed by C{<data dir>/sharing.json}. Every process
that shares the data dir (C{--workers}, the C{share} and C{token} commands) reads the
same file: a change is written under a lock (C{sharing.lock}) as a new file (temporary
file in the same folder, fsync, rename, fsync of the folder, mode 0600), and each
process looks at the file's (mtime, size, inode) at most once a second, lazily when it
is asked something, so a change reaches every process within 2 s without a stat per
request. A file that cannot be read or parsed is logged, kept aside as
C{sharing.json.corrupt}, and treated as empty: a bad file never stops start-up.

Secrets are never stored: a token is kept as C{HMAC(token key, secret)}, and link
tokens and grant cookies are MACs over a share id (L{portproxy.sharing.grants}), checked
against the state on every use. All keys derive from the password
(L{portproxy.sharing.keys}).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import secrets
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from twisted.logger import Logger

from portproxy.config import DEFAULT_MAX_SHARE_TTL
from portproxy.files import write_private_file
from portproxy.sharing.access import (
    Verdict,
    check_methods,
    check_path_prefix,
    check_port,
    check_ports,
    method_allowed,
    path_in_scope,
)
from portproxy.sharing.durations import format_duration
from portproxy.sharing.grants import (
    grant_cookie_name,
    grant_value,
    grant_value_id,
    link_token,
    link_token_id,
    new_share_id,
)
from portproxy.sharing.keys import SharingKeys
from portproxy.sharing.tokens import new_secret

__all__ = [
    "DEFAULT_MAX_SHARE_TTL",
    "DEFAULT_SHARE_TTL",
    "ROUTES",
    "STATE_FILE",
    "LinkRefusal",
    "Share",
    "SharingState",
    "Token",
]

STATE_FILE = "sharing.json"
LOCK_FILE = "sharing.lock"
DEFAULT_SHARE_TTL = 86400.0
#: Which URL a share link opens: C{/proxy/<port>/}, C{/absproxy/<port>/} or the port's
#: proxy host.
ROUTES = ("proxy", "absproxy", "domain")
#: How often a process looks at the file for changes by others (seconds).
REFRESH_INTERVAL = 1.0
#: A token's last use is written at most this often (seconds), per token.
LAST_USED_INTERVAL = 60.0
MAX_SHARES = 1000
MAX_TOKENS = 1000
MAX_NAME = 64
MAX_LABEL = 64

T = TypeVar("T")


class Clock(Protocol):
    def seconds(self) -> float: ...


@dataclass(frozen=True)
class Share:
    """A share link's grant: one port, a path prefix, methods, until C{expires}."""

    id: str
    port: int
    path: str
    methods: tuple[str, ...] | None
    #: C{"proxy"}, C{"absproxy"} or C{"domain"}: which URL the link opens.
    route: str
    created: float
    expires: float


@dataclass(frozen=True)
class Token:
    """A machine token's scope and bookkeeping (never its secret)."""

    id: str
    name: str
    ports: tuple[int, ...]
    path: str
    methods: tuple[str, ...] | None
    created: float
    expires: float | None
    last_used: float | None


class LinkRefusal(Exception):
    """A share link that cannot be opened.

    @ivar status: 403 for a link that is not genuine, 410 for one revoked or expired.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Data:
    """What the file holds, parsed."""

    #: Port -> {"access": ..., "label": ...} as set at run time.
    ports: dict[int, dict[str, Any]] = field(default_factory=dict)
    shares: dict[str, Share] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    #: Token id -> hex HMAC of its secret.
    hashes: dict[str, str] = field(default_factory=dict)


class SharingState:
    """Port access levels, share links and tokens, shared through the data dir.

    Validation errors raise C{ValueError("<field>: <reason>")}, C{<field>} being the
    API's field name (C{port}, C{path}, C{methods}, C{ttl}, C{route}, C{name},
    C{ports}, C{access}, C{label}).

    @param key_material: the password's session key material; see L{SharingKeys}.
    @param clock: gives the time (the reactor, or a fake in tests).
    @param public_ports: C{--public-port}: public unless set otherwise at run time.
    @param max_share_ttl: C{--max-share-ttl}, the longest a share link may live.
    @param cookie_suffix: C{--cookie-suffix}, also put on grant cookies' names.
    """

    def __init__(
        self,
        data_dir: str,
        key_material: bytes,
        *,
        clock: Clock,
        log: Logger,
        public_ports: Iterable[int] = (),
        max_share_ttl: float = DEFAULT_MAX_SHARE_TTL,
        cookie_suffix: str = "",
    ) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, STATE_FILE)
        self.keys = SharingKeys.derive(key_material)
        self.clock = clock
        self.log = log
        self.public_ports = frozenset(public_ports)
        self.max_share_ttl = max_share_ttl
        self.cookie_suffix = cookie_suffix
        self._data = _Data()
        self._by_hash: dict[str, str] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked = -math.inf
        self._corrupt = False
        #: Token id -> last use not yet written to the file.
        self._used: dict[str, float] = {}
        self._load()

    # -- reading ---------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the file if another process changed it; looks at most once a second."""
        now = self.clock.seconds()
        if 0 <= now - self._checked < REFRESH_INTERVAL:
            return
        self._checked = now
        signature = self._stat()
        if signature != self._signature:
            self._load(signature)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, signature: tuple[int, int, int] | None = None) -> None:
        self._checked = self.clock.seconds()
        if signature is None:
            signature = self._stat()
        data, corrupt = self._read()
        self._signature = signature
        self._corrupt = corrupt
        self._data = data
        self._by_hash = {h: i for i, h in data.hashes.items()}

    def _read(self) -> tuple[_Data, bool]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(16 * 1024 * 1024)
        except FileNotFoundError:
            return _Data(), False
        except OSError as e:
            self.log.error(
                "sharing state {path} cannot be read ({why}); treated as empty",
                path=self.path,
                why=e.strerror,
            )
            return _Data(), True
        try:
            return _parse(json.loads(raw)), False
        # Any failure (RecursionError from deep nesting too): a file another process
        # can write must never stop start-up, a command or a request.
        except Exception as e:
            self.log.error(
                "sharing state {path} is corrupt ({why}); treated as empty",
                path=self.path,
                why=str(e) or type(e).__name__,
            )
            return _Data(), True

    def access(self, port: int) -> str:
        """C{"public"} or C{"private"}: run-time setting, else C{--public-port}."""
        self.refresh()
        setting = self._data.ports.get(port)
        if setting is not None and "access" in setting:
            return str(setting["access"])
        return "public" if port in self.public_ports else "private"

    def label(self, port: int) -> str | None:
        """The label set for C{port}, if any."""
        self.refresh()
        setting = self._data.ports.get(port)
        return None if setting is None else setting.get("label")

    def configured_ports(self) -> dict[int, tuple[str, str | None]]:
        """Every port with a setting or C{--public-port}: C{port -> (access, label)}."""
        self.refresh()
        ports = set(self._data.ports) | self.public_ports
        return {p: (self.access(p), self.label(p)) for p in sorted(ports)}

    def shares(self) -> list[Share]:
        """The live share links, oldest first."""
        self.refresh()
        now = self.clock.seconds()
        return sorted(
            (s for s in self._data.shares.values() if s.expires > now),
            key=lambda s: (s.created, s.id),
        )

    def tokens(self) -> list[Token]:
        """The live tokens, oldest first, with their latest use (also not yet written)."""
        self.refresh()
        now = self.clock.seconds()
        out = []
        for t in self._data.tokens.values():
            if t.expires is not None and t.expires <= now:
                continue
            used = self._used.get(t.id)
            if used is not None and (t.last_used is None or used > t.last_used):
                t = replace(t, last_used=used)
            out.append(t)
        return sorted(out, key=lambda t: (t.created, t.id))

    # -- changing --------------------------------------------------------------

    def set_port(
        self,
        port: int,
        *,
        access: str | None = None,
        label: str | types.EllipsisType | None = ...,
    ) -> None:
        """Set C{port}'s access level and/or label (C{...}: unchanged, C{None}: cleared)."""
        check_port(port)
        if access is not None and access not in ("public", "private"):
            raise ValueError(f"access: {access!r} is not one of: public, private")
        new_label: str | types.EllipsisType | None = label
        if isinstance(label, str):
            new_label = label.strip() or None
            if new_label is not None and (
                len(new_label) > MAX_LABEL or not new_label.isprintable()
            ):
                raise ValueError(f"label: at most {MAX_LABEL} printable characters")
        elif label is not None and label is not ...:
            raise ValueError("label: must be a string or null")

        def change(data: _Data) -> None:
            setting = dict(data.ports.get(port, {}))
            if access is not None:
                setting["access"] = access
            if new_label is None:
                setting.pop("label", None)
            elif isinstance(new_label, str):
                setting["label"] = new_label
            if setting:
                data.ports[port] = setting
            else:
                data.ports.pop(port, None)

        self._mutate(change)

    def create_share(
        self,
        *,
        port: int,
        path: str = "/",
        methods: Sequence[str] | None = None,
        ttl: float | None = None,
        route: str = "proxy",
    ) -> tuple[Share, str]:
        """Make a share link; return it and the token for its URL (L{share_path}).

        @param ttl: seconds it lives; C{None}: 24 h, or C{--max-share-ttl} if shorter.
        """
        check_port(port)
        prefix = check_path_prefix(path)
        allowed = check_methods(methods)
        if route not in ROUTES:
            raise ValueError(f"route: {route!r} is not one of: {', '.join(ROUTES)}")
        if ttl is None:
            ttl = min(DEFAULT_SHARE_TTL, self.max_share_ttl)
        lifetime = _seconds(ttl, "ttl")
        if lifetime > self.max_share_ttl:
            raise ValueError(
                f"ttl: at most {format_duration(self.max_share_ttl)} (--max-share-ttl)"
            )
        now = self.clock.seconds()
        share = Share(
            id=new_share_id(secrets.token_hex(8)),
            port=port,
            path=prefix,
            methods=allowed,
            route=route,
            created=now,
            expires=now + lifetime,
        )

        def change(data: _Data) -> None:
            if len(data.shares) >= MAX_SHARES:
                raise ValueError(f"port: already {MAX_SHARES} share links; revoke some")
            data.shares[share.id] = share

        self._mutate(change)
        return share, link_token(self.keys.link, share.id)

    def revoke_share(self, id: str) -> bool:
        """Remove a share link (its link and cookies stop working); C{False} if unknown."""
        return self._mutate(lambda data: data.shares.pop(id, None) is not None)

    def create_token(
        self,
        *,
        name: str,
        ports: Sequence[int],
        path: str = "/",
        methods: Sequence[str] | None = None,
        ttl: float | None = None,
    ) -> tuple[Token, str]:
        """Make a token; return it and its secret (C{ppt_...}), which is kept nowhere."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("name: give the token a name")
        name = name.strip()
        if len(name) > MAX_NAME or not name.isprintable():
            raise ValueError(f"name: at most {MAX_NAME} printable characters")
        scope_ports = check_ports(ports)
        prefix = check_path_prefix(path)
        allowed = check_methods(methods)
        now = self.clock.seconds()
        expires = None if ttl is None else now + _seconds(ttl, "ttl")
        secret = new_secret()
        token = Token(
            id=secrets.token_hex(8),
            name=name,
            ports=scope_ports,
            path=prefix,
            methods=allowed,
            created=now,
            expires=expires,
            last_used=None,
        )
        digest = self._hash(secret)

        def change(data: _Data) -> None:
            if len(data.tokens) >= MAX_TOKENS:
                raise ValueError(f"name: already {MAX_TOKENS} tokens; revoke some")
            data.tokens[token.id] = token
            data.hashes[token.id] = digest

        self._mutate(change)
        return token, secret

    def revoke_token(self, id: str) -> bool:
        """Remove a token (it stops working); C{False} if unknown."""

        def change(data: _Data) -> bool:
            data.hashes.pop(id, None)
            return data.tokens.pop(id, None) is not None

        self._used.pop(id, None)
        return self._mutate(change)

    # -- checking requests -------------------------------------------------------

    def check_token(
        self, secret: str, port: int, path: bytes, method: bytes, *, upgrade: bool = False
    ) -> Verdict:
        """What token C{secret} allows for C{method path} on C{port}.

        C{path} is below the port's URL (see L{portproxy.sharing.access}); C{upgrade}:
        the request opens a WebSocket.
        """
        self.refresh()
        token_id = self._by_hash.get(self._hash(secret))
        token = None if token_id is None else self._data.tokens.get(token_id)
        if token is None:
            return Verdict.INVALID
        now = self.clock.seconds()
        if token.expires is not None and token.expires <= now:
            return Verdict.INVALID
        if (
            port not in token.ports
            or not path_in_scope(token.path, path)
            or not method_allowed(token.methods, method, upgrade=upgrade)
        ):
            return Verdict.FORBIDDEN
        self._record_use(token, now)
        return Verdict.ALLOW if token.methods is None else Verdict.ALLOW_LIMITED

    def check_grant(
        self, value: str, port: int, path: bytes, method: bytes, *, upgrade: bool = False
    ) -> Verdict:
        """What a grant cookie's C{value} allows for C{method path} on C{port}."""
        share_id = grant_value_id(self.keys.grant, value, port)
        if share_id is None:
            return Verdict.INVALID
        self.refresh()
        share = self._data.shares.get(share_id)
        if share is None or share.port != port or share.expires <= self.clock.seconds():
            return Verdict.INVALID
        if not path_in_scope(share.path, path) or not method_allowed(
            share.methods, method, upgrade=upgrade
        ):
            return Verdict.FORBIDDEN
        return Verdict.ALLOW if share.methods is None else Verdict.ALLOW_LIMITED

    def open_link(self, token: str) -> Share:
        """The share a link token opens; raises L{LinkRefusal} (403 or 410)."""
        share_id = link_token_id(self.keys.link, token)
        if share_id is None:
            raise LinkRefusal(403, "This share link is not valid")
        self.refresh()
        share = self._data.shares.get(share_id)
        if share is None or share.expires <= self.clock.seconds():
            raise LinkRefusal(410, "This share link has expired or was revoked")
        return share

    def grant_cookie(self, share: Share) -> tuple[str, str]:
        """The grant cookie a share's link sets: C{(name, value)}."""
        return (
            grant_cookie_name(share.port, self.cookie_suffix),
            grant_value(self.keys.grant, share.id, share.port),
        )

    def grant_cookie_name(self, port: int) -> bytes:
        """The name of C{port}'s grant cookie, as found in a Cookie header."""
        return grant_cookie_name(port, self.cookie_suffix).encode("ascii")

    def link_token(self, share: Share) -> str:
        """The token of C{share}'s link (the same as when it was made)."""
        return link_token(self.keys.link, share.id)

    # -- internals ---------------------------------------------------------------

    def _hash(self, secret: str) -> str:
        return hmac.new(self.keys.token, secret.encode("ascii"), hashlib.sha256).hexdigest()

    def _record_use(self, token: Token, now: float) -> None:
        self._used[token.id] = now
        if token.last_used is not None and now - token.last_used < LAST_USED_INTERVAL:
            return
        try:
            self._mutate(self._write_uses)
        except OSError as e:
            self.log.error(
                "sharing state {path}: cannot record a token's use ({why})",
                path=self.path,
                why=e.strerror,
            )

    def _write_uses(self, data: _Data) -> None:
        for token_id, used in self._used.items():
            token = data.tokens.get(token_id)
            if token is not None and (token.last_used is None or used > token.last_used):
                data.tokens[token_id] = replace(token, last_used=used)
        self._used.clear()

    def _mutate(self, change: Callable[[_Data], T]) -> T:
        """Apply C{change} to the file's latest content under the lock, and write it."""
        _ensure_dir(self.data_dir)
        lock_path = os.path.join(self.data_dir, LOCK_FILE)
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._load()
            if self._corrupt and os.path.exists(self.path):
                os.replace(self.path, self.path + ".corrupt")
            data = self._data
            result = change(data)
            _prune(data, self.clock.seconds())
            write_private_file(self.path, _serialise(data))
            self._load()
        finally:
            os.close(lock)  # releases the lock
        return result


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: give a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a positive number of seconds")
    return float(value)


def _prune(data: _Data, now: float) -> None:
    for share_id in [i for i, s in data.shares.items() if s.expires <= now]:
        del data.shares[share_id]
    for token_id in [
        i for i, t in data.tokens.items() if t.expires is not None and t.expires <= now
    ]:
        del data.tokens[token_id]
        data.hashes.pop(token_id, None)


def _ensure_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)


def _methods_out(methods: tuple[str, ...] | None) -> list[str] | None:
    return None if methods is None else list(methods)


def _serialise(data: _Data) -> bytes:
    document = {
        "version": 1,
        "ports": {str(p): s for p, s in sorted(data.ports.items())},
        "shares": [
            {
                "id": s.id,
                "port": s.port,
                "path": s.path,
                "methods": _methods_out(s.methods),
                "route": s.route,
                "created": s.created,
                "expires": s.expires,
            }
            for s in data.shares.values()
        ],
        "tokens": [
            {
                "id": t.id,
                "name": t.name,
                "ports": list(t.ports),
                "path": t.path,
                "methods": _methods_out(t.methods),
                "created": t.created,
                "expires": t.expires,
                "last_used": t.last_used,
                "hash": data.hashes[t.id],
            }
            for t in data.tokens.values()
        ],
    }
    return json.dumps(document, indent=1, sort_keys=True).encode("utf-8") + b"\n"


def _number(value: object) -> float:
    # json reads NaN and Infinity: an expiry of NaN would never come.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int) and abs(value) > _LARGEST:
        raise ValueError(f"{value!r} is out of range")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


_LARGEST = 10**300


def _optional_number(value: object) -> float | None:
    return None if value is None else _number(value)


def _parse(document: Any) -> _Data:
    """The file's JSON as L{_Data}; entries are checked as strictly as new ones."""
    if not isinstance(document, dict) or document.get("version") != 1:
        raise ValueError("not a version 1 sharing state")
    data = _Data()
    for key, setting in dict(document.get("ports") or {}).items():
        port = check_port(int(key))
        kept: dict[str, Any] = {}
        if setting.get("access") in ("public", "private"):
            kept["access"] = setting["access"]
        if isinstance(setting.get("label"), str):
            kept["label"] = setting["label"][:MAX_LABEL]
        if kept:
            data.ports[port] = kept
    for entry in list(document.get("shares") or []):
        share = Share(
            id=new_share_id(str(entry["id"])),
            port=check_port(entry["port"]),
            path=check_path_prefix(entry["path"]),
            methods=check_methods(entry["methods"]),
            route=str(entry["route"]) if entry["route"] in ROUTES else "proxy",
            created=_number(entry["created"]),
            expires=_number(entry["expires"]),
        )
        data.shares[share.id] = share
    for entry in list(document.get("tokens") or []):
        digest = str(entry["hash"])
        if len(digest) != 64:
            raise ValueError("a token hash is not 64 hex digits")
        token = Token(
            id=str(entry["id"]),
            name=str(entry["name"]),
            ports=check_ports(entry["ports"]),
            path=check_path_prefix(entry["path"]),
            methods=check_methods(entry["methods"]),
            created=_number(entry["created"]),
            expires=_optional_number(entry["expires"]),
            last_used=_optional_number(entry.get("last_used")),
        )
        data.tokens[token.id] = token
        data.hashes[token.id] = digest
    return data


def share_path(token: str) -> str:
    """The path (on the main host, or the port's proxy host for a C{domain} share)
    where a link with C{token} is opened: C{/.portproxy/share/<token>}."""
    return "/.portproxy/share/" + token

# -*- test-case-name: tests.test_sharing_cli -*-
"""The C{share} and C{token} commands: share links and machine tokens from a shell.

They work on the data dir and password of the configuration given, like
C{--print-auth-cookie}: the state file they change is the one a running instance
re-reads (within 2 s), and the keys derive from the same password, so a link or
token printed here opens the instance. Each command is a function from parsed
arguments to the lines it prints; a bad value raises L{CommandError} naming the
option, which the command line turns into one line and exit 64.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portproxy.config import Config
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.publicurl import configured_base
from portproxy.routing.routes import parse_port
from portproxy.web.shareapi import (
    check_methods,
    check_name,
    check_path,
    check_route,
    check_ttl,
    share_link,
)

if TYPE_CHECKING:
    from portproxy.sharing.state import SharingState

__all__ = [
    "CommandError",
    "Output",
    "open_state",
    "share_command",
    "token_command",
]

#: What a state's C{ValueError} field is called on the command line.
_OPTION_OF = {
    "port": "PORT",
    "ports": "--port",
    "path": "--path",
    "methods": "--methods",
    "ttl": "--ttl",
    "route": "--route",
    "name": "NAME",
}


class CommandError(ValueError):
    """A bad argument: the message names it (C{share --ttl: ...})."""


@dataclass(frozen=True)
class Output:
    """What a command prints: C{stdout} (the link, the secret, the list) for scripts,
    C{stderr} (what was done, how to undo it) for the person at the terminal."""

    stdout: tuple[str, ...] = ()
    stderr: tuple[str, ...] = ()


class _WallClock:
    def seconds(self) -> float:
        return time.time()


def open_state(config: Config, environ: Mapping[str, str]) -> SharingState:
    """The sharing state of this configuration's instance: its data dir and keys.

    Like a start-up, this generates and stores a password when none is configured,
    so that the instance started next uses the same one.
    """
    from twisted.logger import Logger

    from portproxy.sharing.build import sharing_for_config

    state = sharing_for_config(
        config,
        environ=environ,
        clock=_WallClock(),
        log=Logger(namespace="portproxy.sharing"),
    )
    if state is None:
        raise ValueError("needs --auth password: with --auth none every port is open")
    return state


def _when(seconds: float | None, never: str = "never") -> str:
    """C{seconds} since the epoch as an ISO 8601 UTC time; total, for any number the
    state file may hold (past year 9999, C{gmtime} overflows or strftime misprints)."""
    if seconds is None:
        return never
    if not _FIRST_DAY <= seconds < _AFTER_LAST_DAY:
        return "after 9999-12-31" if seconds > 0 else "before 1970-01-01"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# The times _when prints as a date: 1970-01-01 to the end of 9999-12-31 UTC.
_FIRST_DAY = 0.0
_AFTER_LAST_DAY = 253402300800.0


def _methods_text(methods: Sequence[str] | None) -> str:
    return "*" if methods is None else ",".join(methods)


def _methods_note(methods: Sequence[str] | None) -> str:
    return "all methods" if methods is None else "methods " + ",".join(methods)


@contextmanager
def _option(command: str, option: str = "") -> Iterator[None]:
    """Turn a C{ValueError("<field>: <reason>")} inside into a L{CommandError} that
    names the option (C{share --ttl: ...}), the state's field names translated."""
    try:
        yield
    except CommandError:
        raise
    except ValueError as e:
        message = str(e)
        field, sep, reason = message.partition(": ")
        if sep and field in _OPTION_OF:
            option, message = _OPTION_OF[field], reason
        where = f"{command} {option}" if option else command
        raise CommandError(f"{where}: {message}") from None


def _methods_option(command: str, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    with _option(command, "--methods"):
        return check_methods([m.strip() for m in value.split(",") if m.strip()])


def _ttl_option(command: str, value: str | None, *, most: float | None) -> float | None:
    from portproxy.sharing.durations import parse_duration

    if value is None:
        return None
    with _option(command, "--ttl"):
        return check_ttl(parse_duration(value), most=most, optional=False)


def _port_argument(command: str, option: str, value: str) -> int:
    port = parse_port(value.encode("ascii", "replace"))
    if port is None:
        raise CommandError(f"{command} {option}: {value!r} is not a port (1-65535)")
    return port


def _list_or_revoke(
    command: str, options: Mapping[str, Any], arguments: Sequence[str]
) -> str | None:
    """C{"list"}, C{"revoke"} or C{None} (create), checking they are not mixed."""
    listing, revoke = bool(options.get("list")), options.get("revoke")
    if listing and revoke is not None:
        raise CommandError(f"{command} --list: cannot be combined with --revoke")
    if listing or revoke is not None:
        if arguments:
            which = "--list" if listing else "--revoke"
            raise CommandError(f"{command} {which}: takes no other argument")
        return "list" if listing else "revoke"
    return None


def share_command(
    config: Config,
    environ: Mapping[str, str],
    options: Mapping[str, Any],
    arguments: Sequence[str],
) -> Output:
    """C{share PORT [--path P] [--methods M,..] [--ttl 2h] [--route R]}, C{share
    --list}, C{share --revoke ID}."""
    action = _list_or_revoke("share", options, arguments)
    if action is None:
        if len(arguments) != 1:
            raise CommandError("share: give one port, as in: share 5173 --ttl 2h")
        port = _port_argument("share", "PORT", arguments[0])
        with _option("share", "--path"):
            path = check_path(options.get("path") or "/")
        methods = _methods_option("share", options.get("methods"))
        most = config.max_share_ttl
        ttl = _ttl_option("share", options.get("ttl"), most=most)
        if ttl is None:
            ttl = min(86400.0, most)
        domains = DomainMatcher(config.proxy_domains)
        base = configured_base(config)
        if base is None:
            raise CommandError(
                "share: no --listen has an address to build the link on; give --public-url"
            )
        default = "proxy"
        if options.get("route") is None:
            try:
                share_link("x", port=port, route="domain", base=base, domains=domains)
                default = "domain"  # the URL `url PORT` prefers
            except ValueError:
                pass
        with _option("share", "--route"):
            route = check_route(options.get("route"), default)
            share_link("x", port=port, route=route, base=base, domains=domains)
        with _option("share"):
            state = open_state(config, environ)
            share, secret = state.create_share(
                port=port, path=path, methods=methods, ttl=ttl, route=route
            )
        link = share_link(secret, port=port, route=route, base=base, domains=domains)
        note = (
            f"share {share.id}: port {port}, path {share.path}, "
            f"{_methods_note(share.methods)}, until {_when(share.expires)} "
            f"(revoke: twist portproxy share --revoke {share.id})"
        )
        return Output((link,), (note,))
    with _option("share"):
        state = open_state(config, environ)
    if action == "revoke":
        ident = str(options["revoke"])
        if not state.revoke_share(ident):
            raise CommandError(f"share --revoke: no share link {ident!r}")
        return Output((), (f"share {ident} revoked",))
    lines = [
        "\t".join(
            (
                s.id,
                str(s.port),
                s.path,
                _methods_text(s.methods),
                s.route,
                _when(s.expires),
            )
        )
        for s in state.shares()
    ]
    return Output(tuple(lines))


def token_command(
    config: Config,
    environ: Mapping[str, str],
    options: Mapping[str, Any],
    arguments: Sequence[str],
) -> Output:
    """C{token NAME --port P [--port P2] [--path P] [--methods M,..] [--ttl 30d]},
    C{token --list}, C{token --revoke ID}."""
    action = _list_or_revoke("token", options, arguments)
    if action is None:
        if len(arguments) != 1:
            raise CommandError("token: give one name, as in: token ci --port 3000")
        with _option("token", "NAME"):
            name = check_name(arguments[0])
        given = list(options.get("port") or ())
        if not given:
            raise CommandError("token --port: give at least one port")
        ports = tuple(dict.fromkeys(_port_argument("token", "--port", p) for p in given))
        with _option("token", "--path"):
            path = check_path(options.get("path") or "/")
        methods = _methods_option("token", options.get("methods"))
        ttl = _ttl_option("token", options.get("ttl"), most=None)
        with _option("token"):
            state = open_state(config, environ)
            token, secret = state.create_token(
                name=name, ports=ports, path=path, methods=methods, ttl=ttl
            )
        note = (
            f"token {token.id} ({token.name}): ports "
            f"{','.join(str(p) for p in token.ports)}, path {token.path}, "
            f"{_methods_note(token.methods)}, expires {_when(token.expires)}; "
            "shown once, keep it now "
            f"(revoke: twist portproxy token --revoke {token.id})"
        )
        return Output((secret,), (note,))
    with _option("token"):
        state = open_state(config, environ)
    if action == "revoke":
        ident = str(options["revoke"])
        if not state.revoke_token(ident):
            raise CommandError(f"token --revoke: no token {ident!r}")
        return Output((), (f"token {ident} revoked",))
    lines = [
        "\t".join(
            (
                t.id,
                t.name,
                ",".join(str(p) for p in t.ports),
                t.path,
                _methods_text(t.methods),
                _when(t.expires),
                _when(t.last_used, "unused"),
            )
        )
        for t in state.tokens()
    ]
    return Output(tuple(lines))

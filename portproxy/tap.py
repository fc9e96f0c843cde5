# -*- test-case-name: tests.test_docs -*-
"""The command line of C{twist portproxy} and the service it builds.

L{makeService} is shared by the plugin, .tac files and the tests, so that all three run
exactly the same instance.
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from portproxy import __version__
from portproxy.config import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_SESSION_TTL,
    DEFAULT_UPSTREAM_TIMEOUT,
    Config,
    StartupError,
    env_flag,
    normalize_base_path,
    parse_public_url,
    parse_trusted_proxies,
)

__all__ = ["Options", "build_config", "makeService"]

EX_USAGE = 64


def _positive_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise usage.UsageError(f"{name}: {value!r} is not a number") from None
    if not number > 0 or number != number or number == float("inf"):
        raise usage.UsageError(f"{name}: must be a positive number of seconds")
    return number


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise usage.UsageError(f"{name}: {value!r} is not a whole number") from None
    if number <= 0:
        raise usage.UsageError(f"{name}: must be greater than zero")
    return number


def _byte_size(name: str, value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = value.strip().lower().removesuffix("ib").removesuffix("b")
    factor = 1
    if text and text[-1] in units:
        factor = units[text[-1]]
        text = text[:-1]
    try:
        number = int(text) * factor
    except ValueError:
        raise usage.UsageError(
            f"{name}: {value!r} is not a size (bytes, or with k, m, g)"
        ) from None
    if number <= 0:
        raise usage.UsageError(f"{name}: must be greater than zero")
    return number


class UrlOptions(usage.Options):
    """C{twist portproxy url PORT}: print a port's public URLs and exit."""

    synopsis = "PORT"
    longdesc = (
        "Print the public URLs of PORT, one per line, the preferred one first: the "
        "proxy host when --proxy-domain names one, then /proxy/PORT/, then "
        "/absproxy/PORT/. Built from --public-url, else from the first --listen."
    )

    def parseArgs(self, *args: str) -> None:
        # Checked by the parent once the configuration is built: a wrong count or a bad
        # port is one line on stderr and exit 64, not the whole help text.
        self.args = args


class _AnyOrderOptions(usage.Options):
    """Options that may come after the arguments (C{share 5173 --ttl 2h}), as in GNU
    tools: Twisted's parser stops at the first argument, so they are moved first."""

    command_name = ""

    def parseOptions(self, options: list[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            found, arguments = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            # One line naming the option, not the whole help text.
            sys.stderr.write(f"portproxy: error: {self.command_name}: {e}\n")
            raise SystemExit(EX_USAGE) from None
        ordered: list[str] = []
        for name, value in found:
            if name.startswith("--"):
                takes = name[2:] + "=" in self.longOpt
                ordered.append(f"{name}={value}" if takes else name)
            else:
                ordered.append(name + value)
        super().parseOptions([*ordered, "--", *arguments])


class ShareOptions(_AnyOrderOptions):
    """C{twist portproxy share PORT ...}: make, list or revoke share links (SPEC 12)."""

    command_name = "share"
    synopsis = (
        "PORT [--path P] [--methods GET,HEAD] [--ttl 2h] [--route R] | --list | --revoke ID"
    )
    longdesc = (
        "Print a share link that opens PORT (and only PORT) without the password, "
        "for --ttl (default 24h, at most --max-share-ttl); the running instance "
        "honours it within 2 s. See docs/sharing.rst."
    )
    optFlags = [["list", None, "List the active share links (tab-separated) and exit."]]
    optParameters = [
        ["path", None, "/", "Path prefix the link opens."],
        ["methods", None, None, "Comma-separated methods the link allows (default all)."],
        ["ttl", None, None, "Lifetime: seconds, or 30m, 2h, 7d (default 24h)."],
        [
            "route",
            None,
            None,
            "URL the link opens: proxy, absproxy or domain "
            "(default: domain with --proxy-domain, else proxy).",
        ],
        ["revoke", None, None, "Revoke the share link with this id and exit."],
    ]

    def parseArgs(self, *args: str) -> None:
        self.args = args


class TokenOptions(_AnyOrderOptions):
    """C{twist portproxy token NAME --port P ...}: make, list or revoke machine tokens."""

    command_name = "token"
    synopsis = (
        "NAME --port P [--port P2] [--path P] [--methods M] [--ttl 30d] | --list | "
        "--revoke ID"
    )
    longdesc = (
        "Print the secret (ppt_...) of a new token named NAME for the --port(s) given: "
        "send it as Authorization: Bearer, as the Basic password or as "
        "X-Portproxy-Token. It is shown once. See docs/sharing.rst."
    )
    optFlags = [["list", None, "List the tokens (tab-separated, never a secret) and exit."]]
    optParameters = [
        ["path", None, "/", "Path prefix the token opens."],
        ["methods", None, None, "Comma-separated methods the token allows (default all)."],
        ["ttl", None, None, "Lifetime: seconds, or 30m, 2h, 30d (default: no expiry)."],
        ["revoke", None, None, "Revoke the token with this id and exit."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = []

    def opt_port(self, port: str) -> None:
        """A port the token opens, repeatable."""
        self["port"].append(port)

    def parseArgs(self, *args: str) -> None:
        self.args = args


class Options(usage.Options):
    """Options of C{twist portproxy}; see docs/options.rst."""

    synopsis = "[options]"
    subCommands = [
        ["url", None, UrlOptions, "Print the public URLs of a port and exit."],
        ["share", None, ShareOptions, "Print a share link for a port (--list, --revoke)."],
        ["token", None, TokenOptions, "Print a new machine token (or --list, --revoke)."],
    ]
    longdesc = (
        "Open web apps that listen on local ports through one signed-in address: "
        "/proxy/<port>/, /absproxy/<port>/ or <port>.<domain>."
    )

    optFlags = [
        [
            "disable-proxy",
            None,
            "Answer 403 on every proxy route (also env PORTPROXY_DISABLE_PROXY or "
            "CS_DISABLE_PROXY=1|true).",
        ],
        [
            "skip-auth-preflight",
            None,
            "Let CORS preflights (OPTIONS) reach the upstream without a session.",
        ],
        [
            "print-auth-cookie",
            None,
            "Print portproxy-session=VALUE for the configured password and exit.",
        ],
        ["version", None, "Print the version and exit."],
        [
            "rewrite-host",
            None,
            "Apps see Host: localhost:<port> and a matching Origin (see docs/routes.rst).",
        ],
        [
            "self-signed",
            None,
            "TLS on tcp: listeners with a self-signed certificate kept in --data-dir.",
        ],
    ]
    optParameters = [
        ["auth", None, "password", "Authentication: password or none."],
        [
            "password-file",
            None,
            None,
            "File holding the password (env PASSWORD and HASHED_PASSWORD take precedence).",
        ],
        [
            "abs-proxy-base-path",
            None,
            "",
            "Path put before the whole path of /absproxy requests.",
        ],
        [
            "upstream-timeout",
            None,
            str(int(DEFAULT_UPSTREAM_TIMEOUT)),
            "Seconds to wait for an upstream's response head or WebSocket answer.",
        ],
        [
            "header-timeout",
            None,
            str(int(DEFAULT_HEADER_TIMEOUT)),
            "Seconds a client has to send a whole request head; then 408 and close.",
        ],
        [
            "send-timeout",
            None,
            str(int(DEFAULT_SEND_TIMEOUT)),
            "Disconnect a client that takes no byte of a response for this many seconds.",
        ],
        [
            "max-connections",
            None,
            str(DEFAULT_MAX_CONNECTIONS),
            "Client connections held at once (per worker); more wait in the listen queue.",
        ],
        [
            "max-body-size",
            None,
            None,
            "Largest request body accepted (e.g. 100m); larger ones get 413.",
        ],
        [
            "data-dir",
            None,
            None,
            "Directory for the generated password (default ~/.local/share/portproxy).",
        ],
        ["cookie-suffix", None, "", "Session cookie becomes portproxy-session-SUFFIX."],
        [
            "session-ttl",
            None,
            str(DEFAULT_SESSION_TTL),
            "Lifetime of a login, seconds.",
        ],
        ["access-log", None, "combined", "Access log: combined, json or off."],
        [
            "access-log-file",
            None,
            None,
            "Write the access log to this file (reopened on SIGUSR1 or when rotated).",
        ],
        [
            "public-url",
            None,
            None,
            "Scheme, host and port clients use (https://dev.example.com), for URLs "
            "built without a request, when a front proxy changes them.",
        ],
        [
            "compress",
            None,
            "on",
            "Compress text responses for clients that accept it: on or off.",
        ],
        [
            "cert",
            None,
            None,
            "TLS on every tcp: listener with this PEM certificate (and chain).",
        ],
        [
            "cert-key",
            None,
            None,
            "PEM private key of --cert (unencrypted; may be in the --cert file).",
        ],
        [
            "print-url",
            None,
            None,
            "Print the public URL of this port (for apps and scripts) and exit.",
        ],
        [
            "max-share-ttl",
            None,
            "30d",
            "Longest lifetime of a share link (e.g. 2h, 30d, or seconds).",
        ],
        [
            "workers",
            None,
            "1",
            "Processes serving the listeners: a number, or auto for one per CPU "
            "(see docs/workers.rst).",
        ],
    ]

    compData = usage.Completions(
        optActions={
            "auth": usage.CompleteList(["password", "none"]),
            "access-log": usage.CompleteList(["combined", "json", "off"]),
            "compress": usage.CompleteList(["on", "off"]),
            "access-log-file": usage.CompleteFiles(),
            "password-file": usage.CompleteFiles(),
            "data-dir": usage.CompleteDirs(),
            "cert": usage.CompleteFiles(),
            "cert-key": usage.CompleteFiles(),
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["proxy-domain"] = []
        self["trusted-origins"] = []
        self["trusted-proxies"] = []
        self["cert-host"] = []
        self["public-port"] = []
        self.environ: Mapping[str, str] = os.environ
        self._refused: list[str] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to serve on, repeatable (default tcp:8080:interface=127.0.0.1)."""
        self["listen"].append(description)

    def opt_proxy_domain(self, pattern: str) -> None:
        """Serve port P on P.<domain>, repeatable; see docs/domain-proxy.rst."""
        self["proxy-domain"].append(pattern)

    def opt_trusted_origins(self, origin: str) -> None:
        """Extra Origin allowed to open WebSockets (*, host[:port], *.domain)."""
        self["trusted-origins"].append(origin)

    def opt_trusted_proxies(self, cidr: str) -> None:
        """Peer (CIDR) whose X-Forwarded-*/Forwarded headers are believed, repeatable."""
        self["trusted-proxies"].append(cidr)

    def opt_public_port(self, port: str) -> None:
        """A port open without sign-in (until made private on the home page); repeat
        for more."""
        self["public-port"].append(port)

    def opt_cert_host(self, hosts: str) -> None:
        """Name or IP of --self-signed, repeatable, comma-separated (default localhost)."""
        self["cert-host"].append(hosts)

    def opt_password(self, value: str) -> None:
        """Refused: a password on the command line shows in `ps`."""
        self._refused.append(
            "--password is refused: a command line is visible to every user; "
            "use the PASSWORD environment variable or --password-file"
        )

    def opt_hashed_password(self, value: str) -> None:
        """Refused: use the HASHED_PASSWORD environment variable."""
        self._refused.append(
            "--hashed-password is refused: use the HASHED_PASSWORD environment variable"
        )

    def opt_version(self) -> None:
        print(f"portproxy {__version__}")
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        # Kept so that --workers can start workers with the same arguments.
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self) -> None:
        try:
            if self._refused:
                raise usage.UsageError(self._refused[0])
            self.config = build_config(self, self.environ)
        except usage.UsageError as e:
            # One line naming the option, not the whole help text.
            sys.stderr.write(f"portproxy: error: {e}\n")
            raise SystemExit(EX_USAGE) from None
        if self.subCommand == "url":
            self._url_command()
        if self.subCommand in ("share", "token"):
            self._sharing_command(self.subCommand)
        if self["print-url"] is not None:
            self._print_url(self["print-url"], name="--print-url")
        if self["print-auth-cookie"]:
            from portproxy.auth import print_auth_cookie

            try:
                line = print_auth_cookie(self.config, environ=self.environ)
            except ValueError as e:  # StartupError, or any other bad value
                sys.stderr.write(f"portproxy: error: {e}\n")
                raise SystemExit(1) from None
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            raise SystemExit(0)

    def _print_url(self, value: str, *, every_route: bool = False, name: str) -> None:
        """Print a port's public URL(s), absolute from C{--public-url} or the listener.

        The preferred URL comes first (the proxy host when a proxy domain names one,
        else C{/proxy/<port>/}); with C{every_route}, the others follow, one per line.
        """
        from portproxy.routing.domains import DomainMatcher
        from portproxy.routing.publicurl import configured_base, port_urls, preferred_url
        from portproxy.routing.routes import parse_port

        port = parse_port(value)
        if port is None:
            sys.stderr.write(
                f"portproxy: error: {name}: {value!r} is not a port (1-65535)\n"
            )
            raise SystemExit(EX_USAGE)
        config = self.config
        urls = port_urls(port, configured_base(config), DomainMatcher(config.proxy_domains))
        first = preferred_url(urls)
        lines = [first]
        if every_route:
            lines += [u for u in (urls["proxy"], urls["absproxy"]) if u != first]
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        raise SystemExit(0)

    def _sharing_command(self, name: str) -> None:
        """Run C{share} or C{token} on this configuration's data dir and password."""
        from portproxy.runtime.sharecli import CommandError, share_command, token_command

        command = share_command if name == "share" else token_command
        try:
            output = command(
                self.config, self.environ, self.subOptions, self.subOptions.args
            )
        except CommandError as e:
            sys.stderr.write(f"portproxy: error: {e}\n")
            raise SystemExit(EX_USAGE) from None
        except (ValueError, OSError) as e:  # StartupError: the password's source
            sys.stderr.write(f"portproxy: error: {name}: {e}\n")
            raise SystemExit(1) from None
        sys.stdout.write("".join(line + "\n" for line in output.stdout))
        sys.stdout.flush()
        sys.stderr.write("".join(line + "\n" for line in output.stderr))
        raise SystemExit(0)

    def _url_command(self) -> None:
        args = self.subOptions.args
        if len(args) != 1:
            sys.stderr.write("portproxy: error: url: give one port, as in: url 5173\n")
            raise SystemExit(EX_USAGE)
        self._print_url(args[0], every_route=True, name="url")


# Any in this module: parsed option values (strings, lists, flags) and the Config
# fields built from them are heterogeneous; Config's own fields are the typed ones.
def build_config(options: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Validate parsed options into a L{Config}; raise C{UsageError} naming the option."""
    auth = options["auth"]
    if auth not in ("password", "none"):
        raise usage.UsageError(f"--auth: {auth!r} is not one of: password, none")
    access_log = options["access-log"]
    if access_log not in ("combined", "json", "off"):
        raise usage.UsageError(
            f"--access-log: {access_log!r} is not one of: combined, json, off"
        )
    compress = options.get("compress") or "on"
    if compress not in ("on", "off"):
        raise usage.UsageError(f"--compress: {compress!r} is not one of: on, off")
    public_url = options.get("public-url")
    if public_url is not None:
        try:
            public_url = parse_public_url(public_url)
        except ValueError as e:
            raise usage.UsageError(f"--public-url: {e}") from None
    access_log_file = options.get("access-log-file")
    if access_log_file is not None:
        access_log_file = os.path.abspath(os.path.expanduser(access_log_file))
        if not os.path.isdir(os.path.dirname(access_log_file)):
            raise usage.UsageError(
                f"--access-log-file: the folder of {access_log_file!r} does not exist"
            )
    try:
        base_path = normalize_base_path(options["abs-proxy-base-path"] or "")
    except ValueError as e:
        raise usage.UsageError(f"--abs-proxy-base-path: {e}") from None
    try:
        trusted_proxies = parse_trusted_proxies(options["trusted-proxies"])
    except ValueError as e:
        raise usage.UsageError(f"--trusted-proxies: {e}") from None
    from portproxy.websocket.origin import parse_trusted_origins

    try:
        parse_trusted_origins(options["trusted-origins"])
    except ValueError as e:
        message = str(e)
        if not message.startswith("--trusted-origins"):
            message = f"--trusted-origins: {message}"
        raise usage.UsageError(message) from None
    domains = tuple(options["proxy-domain"])
    if domains:
        from portproxy.routing.domains import DomainMatcher, DomainPatternError

        try:
            domains = DomainMatcher(domains).patterns
        except DomainPatternError as e:
            raise usage.UsageError(f"--proxy-domain: {e}") from None
    password_file = options["password-file"]
    if password_file is not None and not os.path.isfile(password_file):
        raise usage.UsageError(f"--password-file: {password_file!r} is not a readable file")
    listen = tuple(options["listen"]) or (DEFAULT_LISTEN,)
    for description in listen:
        if not description.strip() or (
            ":" not in description and not description.isdigit()
        ):
            raise usage.UsageError(f"--listen: {description!r} is not an endpoint string")
    tls_fields = _tls_fields(options)
    workers = _workers(options.get("workers") or "1", listen)
    max_body = options["max-body-size"]
    fields: dict[str, Any] = dict(
        listen=listen,
        proxy_domains=domains,
        auth=auth,
        password_file=password_file,
        # Any one of the three disables: a migrated code-server environment keeps
        # its CS_DISABLE_PROXY and must not find the proxy open.
        disable_proxy=bool(options["disable-proxy"])
        or env_flag(environ.get("PORTPROXY_DISABLE_PROXY"))
        or env_flag(environ.get("CS_DISABLE_PROXY")),
        skip_auth_preflight=bool(options["skip-auth-preflight"]),
        abs_proxy_base_path=base_path,
        trusted_origins=tuple(o.strip().lower() for o in options["trusted-origins"]),
        trusted_proxies=trusted_proxies,
        upstream_timeout=_positive_float("--upstream-timeout", options["upstream-timeout"]),
        header_timeout=_positive_float("--header-timeout", options["header-timeout"]),
        send_timeout=_positive_float("--send-timeout", options["send-timeout"]),
        max_connections=_positive_int("--max-connections", options["max-connections"]),
        max_body_size=None if max_body is None else _byte_size("--max-body-size", max_body),
        cookie_suffix=options["cookie-suffix"] or "",
        session_ttl=_positive_int("--session-ttl", options["session-ttl"]),
        access_log=access_log,
        access_log_file=access_log_file,
        public_url=public_url,
        rewrite_host=bool(options.get("rewrite-host")),
        compress=compress == "on",
        workers=workers,
        **tls_fields,
    )
    fields.update(_sharing_fields(options))
    if options["data-dir"]:
        fields["data_dir"] = os.path.abspath(os.path.expanduser(options["data-dir"]))
    return Config(**fields)


def _sharing_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check C{--public-port} and C{--max-share-ttl} (SPEC 12) for L{Config}."""
    from portproxy.routing.routes import parse_port
    from portproxy.sharing.durations import parse_duration

    ports = []
    for value in options.get("public-port") or ():
        port = parse_port(value.strip())
        if port is None:
            raise usage.UsageError(f"--public-port: {value!r} is not a port (1-65535)")
        ports.append(port)
    try:
        max_ttl = parse_duration(options.get("max-share-ttl") or "30d")
    except ValueError as e:
        raise usage.UsageError(f"--max-share-ttl: {e}") from None
    return {"public_ports": tuple(sorted(set(ports))), "max_share_ttl": max_ttl}


def _tls_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check the certificate options (reading --cert and --cert-key) for L{Config}."""
    from portproxy.runtime.tls import TLSError, load_key_pair, parse_cert_hosts

    cert = options.get("cert")
    cert_key = options.get("cert-key")
    self_signed = bool(options.get("self-signed"))
    hosts = list(options.get("cert-host") or ())
    if cert_key is not None and cert is None:
        raise usage.UsageError("--cert-key: needs --cert")
    if cert is not None and self_signed:
        raise usage.UsageError("--self-signed: cannot be combined with --cert")
    if hosts and not self_signed:
        raise usage.UsageError("--cert-host: only used with --self-signed")
    fields: dict[str, Any] = {}
    if cert is not None:
        try:
            load_key_pair(cert, cert_key)
        except TLSError as e:
            raise usage.UsageError(str(e)) from None
        fields.update(
            cert=os.path.abspath(cert), cert_key=cert_key and os.path.abspath(cert_key)
        )
    if self_signed:
        try:
            fields["cert_hosts"] = parse_cert_hosts(hosts or ["localhost"])
        except ValueError as e:
            raise usage.UsageError(f"--cert-host: {e}") from None
        fields["self_signed"] = True
    return fields


def _workers(value: str, listen: tuple[str, ...]) -> int:
    """Check C{--workers}, and that workers can share every C{--listen}."""
    from portproxy.runtime.supervisor import parse_workers, unshareable

    try:
        workers = parse_workers(value)
    except ValueError as e:
        raise usage.UsageError(f"--workers: {e}") from None
    for description in listen if workers > 1 else ():
        reason = unshareable(description)
        if reason is not None:
            raise usage.UsageError(f"--workers: {reason}")
    return workers


def makeService(options: Options) -> IService:
    """Build the portproxy service from parsed options (plugin, .tac and tests).

    One command line runs three kinds of process: a worker (its supervisor set
    L{portproxy.runtime.handoff.WORKER_ENV}), the supervisor of C{--workers} above 1,
    or a single process that serves by itself. This is where they part.
    """
    from portproxy.runtime.app import build_service
    from portproxy.runtime.handoff import WORKER_ENV

    config, environ = options.config, options.environ
    try:
        if WORKER_ENV in environ:
            from portproxy.runtime.worker import build_worker_service

            return build_worker_service(config, environ=environ)
        if config.workers > 1:
            from portproxy.runtime.supervisor import build_supervisor

            return build_supervisor(
                config, argv=getattr(options, "argv", []), environ=environ
            )
        return build_service(config, environ=environ)
    except StartupError as e:
        # A bad password source or certificate found while building: one line, no
        # traceback, nothing started.
        sys.stderr.write(f"portproxy: error: {e}\n")
        raise SystemExit(1) from None

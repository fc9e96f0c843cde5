# -*- test-case-name: tests.test_domains -*-
"""The public address of a local port, for logs, scripts and apps.

code-server tells apps where they are published through C{VSCODE_PROXY_URI}; portproxy
logs the same template at start-up and prints one port's URL with C{--print-url PORT}.
"""

from __future__ import annotations

from functools import lru_cache

from portproxy.config import Config
from portproxy.routing.domains import DomainMatcher

__all__ = ["public_url_for_port", "url_template"]


def _scheme(config: Config) -> str:
    tls = (
        config.cert is not None
        or config.self_signed
        or any(d.startswith("ssl:") for d in config.listen)
    )
    return "https" if tls else "http"


def url_template(config: Config) -> str:
    """C{https://{{port}}.example.com/} with a proxy domain, else C{/proxy/{{port}}/}."""
    if config.proxy_domains:
        return f"{_scheme(config)}://{config.proxy_domains[0]}/"
    return "/proxy/{{port}}/"


@lru_cache(maxsize=8)
def _matcher(patterns: tuple[str, ...]) -> DomainMatcher:
    # Compiled once: the start page asks for one URL per listening port.
    return DomainMatcher(patterns)


def public_url_for_port(config: Config, port: int) -> str:
    """The URL that reaches C{port}: on its proxy host when one can be named."""
    if config.proxy_domains:
        host = _matcher(config.proxy_domains).public_host(port)
        if host is not None:
            return f"{_scheme(config)}://{host}/"
    return f"/proxy/{port}/"

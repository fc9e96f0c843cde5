"""Fixtures: a reactor hygiene check, live upstreams and a live portproxy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted

from tests.support import Recorder, get_reactor, listen


def _reactor_state() -> tuple[set[Any], set[Any], set[Any]]:
    reactor = get_reactor()

    def sockets(items: Any) -> set[Any]:
        # The reactor's own wakers come and go; only sockets count as leaks.
        return {x for x in items if not type(x).__name__.endswith("Waker")}

    return (
        set(reactor.getDelayedCalls()),
        sockets(reactor.getReaders()),
        sockets(reactor.getWriters()),
    )


def _settle(seconds: float) -> None:
    from twisted.internet.task import deferLater

    pytest_twisted.blockon(deferLater(get_reactor(), seconds, lambda: None))


@pytest.fixture(autouse=True)
def reactor_is_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test that leaves delayed calls, listening ports or connections behind."""
    if "no_reactor_check" in request.keywords:
        yield
        return
    calls0, readers0, writers0 = _reactor_state()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        calls, readers, writers = _reactor_state()
        calls = {c for c in calls - calls0 if c.active()}
        leaked = (calls, readers - readers0, writers - writers0)
        if not any(leaked) or time.monotonic() > deadline:
            break
        _settle(0.02)
    assert not leaked[0], f"delayed calls left behind: {leaked[0]}"
    assert not leaked[1], f"readers left behind: {leaked[1]}"
    assert not leaked[2], f"writers left behind: {leaked[2]}"


@pytest.fixture
def upstream() -> Iterator[Callable[..., Any]]:
    """Start twisted.web upstreams on 127.0.0.1; stopped at teardown."""
    from twisted.web.server import Site

    ports: list[Any] = []
    sites: list[Any] = []

    def start(
        resource: Any = None, *, site: Any = None, interface: str = "127.0.0.1"
    ) -> Any:
        if site is None:
            site = Site(resource if resource is not None else Recorder())
        _track_connections(site)
        port = listen(site, interface)
        ports.append(port)
        sites.append(site)
        site.port = port.getHost().port
        return site

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())
    # Close keep-alive connections the proxy's pool left open on the upstreams.
    for site in sites:
        for protocol in site.tracked:
            transport = getattr(getattr(protocol, "_channel", protocol), "transport", None)
            if transport is not None:
                transport.abortConnection()
    _settle(0.01)


def _track_connections(factory: Any) -> None:
    factory.tracked = []
    build = factory.buildProtocol

    def build_and_track(addr: Any) -> Any:
        protocol = build(addr)
        factory.tracked.append(protocol)
        return protocol

    factory.buildProtocol = build_and_track


class RunningProxy:
    def __init__(self, instance: Any, port_obj: Any) -> None:
        self.instance = instance
        self.port_obj = port_obj
        self.port: int = port_obj.getHost().port

    def stop(self) -> None:
        pytest_twisted.blockon(self.port_obj.stopListening())
        for protocol in self.instance.site.tracked:
            transport = getattr(getattr(protocol, "_channel", protocol), "transport", None)
            if transport is not None:
                transport.abortConnection()
        _settle(0.01)
        if getattr(self.instance, "ports", None) is not None:
            self.instance.ports.close()  # the ports watcher's poll timer, if watched
        pytest_twisted.blockon(self.instance.engine.close())


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., RunningProxy]]:
    """Build and start a portproxy instance (auth none unless told otherwise)."""
    from portproxy.config import Config
    from portproxy.runtime.app import build_instance

    running: list[RunningProxy] = []

    def start(environ: dict[str, str] | None = None, **fields: Any) -> RunningProxy:
        fields.setdefault("auth", "none")
        fields.setdefault("access_log", "off")
        config = Config(**fields)
        instance = build_instance(config, environ=environ or {}, reactor=get_reactor())
        _track_connections(instance.site)
        port_obj = listen(instance.site)
        instance.own_ports.add(port_obj.getHost().port)
        proxy = RunningProxy(instance, port_obj)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        proxy.stop()
    _settle(0.01)


@pytest.fixture
def proxy(make_proxy: Callable[..., RunningProxy]) -> RunningProxy:
    return make_proxy()

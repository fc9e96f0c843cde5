# -*- test-case-name: tests.test_contracts -*-
"""The seams between site, root and engine keep the contracts the site relies on."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.web.test.requesthelper import DummyRequest

from portproxy.config import Config
from portproxy.http.engine import ExchangeState, PortProxyResource, ProxyEngine
from portproxy.http.headers import ClientView
from portproxy.http.uploads import StreamingUpload
from portproxy.web.health import Heartbeat
from portproxy.web.request import Gate, Router, _is_gate, _is_router
from portproxy.web.root import GateKind, PortProxyRoot


class _SignedIn:
    def is_signed_in(self, request: Any) -> bool:
        return True

    def allows_preflight(self, request: Any) -> bool:
        return True

    def deny(self, request: Any, *, original_url: bytes) -> bytes:
        return b""

    def deny_unauthorized(self, request: Any) -> bytes:
        return b""


class _Transport:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def _root(engine: ProxyEngine) -> PortProxyRoot:
    return PortProxyRoot(
        Config(),
        engine=engine,
        authenticator=_SignedIn(),
        heartbeat=Heartbeat(engine.reactor),
        own_ports=(),
    )


def _request(uri: bytes) -> DummyRequest:
    request = DummyRequest([])
    request.uri = request.path = uri
    request.method = b"POST"
    request.requestHeaders.setRawHeaders(b"host", [b"localhost"])
    request.client = None
    request.isSecure = lambda: False  # type: ignore[method-assign]
    return request


def test_the_root_is_a_router_and_its_proxy_routes_are_gates() -> None:
    root = _root(ProxyEngine(MemoryReactorClock(), upstream_timeout=5))
    assert isinstance(root, Router) and _is_router(root)
    for uri, kind in (
        (b"/proxy/5173/a", GateKind.PROXY),
        (b"/absproxy/5173/a", GateKind.ABSPROXY),
    ):
        request = _request(uri)
        gate = root.dispatch(request)  # type: ignore[arg-type]
        assert isinstance(gate, Gate) and _is_gate(gate)
        assert gate.kind is kind  # type: ignore[attr-defined]
        assert request.client_view is not None  # declared on ProxyRequest, set here
        assert isinstance(gate.proxy_target(request), PortProxyResource)  # type: ignore[arg-type]
    assert not _is_gate(root.dispatch(_request(b"/healthz")))  # type: ignore[arg-type]


def _upload() -> tuple[ProxyEngine, PortProxyResource, Any]:
    engine = ProxyEngine(MemoryReactorClock(), upstream_timeout=5)
    view = ClientView(peer="127.0.0.1", scheme="http", host="localhost", trusted=False)
    resource = PortProxyResource(
        engine, 5173, b"/", view=view, prefix=None, public_url=lambda p, r: None
    )
    request = _request(b"/")
    exchange = resource.start_upload(
        request, StreamingUpload(_Transport(), chunked=True), None
    )
    return engine, resource, exchange


def test_an_upload_waits_pending_until_rendered_and_abandoning_ends_it_once() -> None:
    engine, _, exchange = _upload()
    assert exchange.state is ExchangeState.PENDING
    assert engine.in_flight == 1
    exchange.abandon()
    assert exchange.state is ExchangeState.GONE
    assert engine.in_flight == 0
    exchange.abandon()
    assert engine.in_flight == 0


def test_abandoning_a_rendered_upload_does_nothing() -> None:
    engine, resource, exchange = _upload()
    resource.render(exchange.request)
    assert exchange.state is ExchangeState.WAITING
    exchange.abandon()
    assert exchange.state is ExchangeState.WAITING
    assert engine.in_flight == 1

"""The authenticator the resource tree calls: cookie check, denial, preflights, factory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from argon2 import PasswordHasher
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from portproxy.auth import (
    RESERVED_PREFIX,
    Authenticator,
    LoginResource,
    OpenAccess,
    PasswordAuthenticator,
    build_authenticator,
    is_reserved_path,
    print_auth_cookie,
)
from portproxy.auth.passwords import Credential
from portproxy.auth.ratelimit import LoginRateLimiter
from portproxy.auth.sessions import SessionSigner
from portproxy.config import Config, StartupError
from portproxy.net.peer import peer_host

NOW = 1_750_000_000.0
BROWSER_ACCEPT = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def make_request(
    method: bytes = b"GET",
    uri: bytes = b"/proxy/3000/",
    headers: dict[bytes, bytes] | None = None,
    body: bytes = b"",
) -> Any:
    from io import BytesIO

    request: Any = DummyRequest([])
    request.method = method
    request.uri = uri
    request.client = IPv4Address("TCP", "192.0.2.7", 5555)
    request.content = BytesIO(body)
    for name, value in (headers or {}).items():
        request.requestHeaders.addRawHeader(name, value)
    return request


def authenticator(
    *, clock: Clock | None = None, key: bytes = b"pw", **kwargs: Any
) -> PasswordAuthenticator:
    clock = clock or Clock()
    return PasswordAuthenticator(
        credential=Credential("plain", key, "PASSWORD"),
        signer=SessionSigner(key, 3600),
        limiter=LoginRateLimiter(clock),
        clock=clock,
        log=Logger(),
        cookie_name="portproxy-session",
        **kwargs,
    )


def with_cookie(value: bytes) -> Any:
    return make_request(headers={b"cookie": value})


def test_valid_cookie_is_signed_in() -> None:
    clock = Clock()
    clock.advance(NOW)
    auth = authenticator(clock=clock)
    value = auth.signer.issue(NOW).encode()
    assert auth.is_signed_in(with_cookie(b"a=1; portproxy-session=" + value + b"; b=2"))


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        b"",
        b"portproxy-session=",
        b"portproxy-session=forged",
        b"other=1",
        b"portproxy-session-x=VALID",  # another suffix's cookie name
        b"xportproxy-session=VALID",
    ],
)
def test_missing_or_forged_cookie_is_not_signed_in(cookie: bytes | None) -> None:
    clock = Clock()
    clock.advance(NOW)
    auth = authenticator(clock=clock)
    valid = auth.signer.issue(NOW).encode()
    request = (
        make_request() if cookie is None else with_cookie(cookie.replace(b"VALID", valid))
    )
    assert not auth.is_signed_in(request)


def test_expired_cookie_is_not_signed_in() -> None:
    clock = Clock()
    clock.advance(NOW)
    auth = authenticator(clock=clock)
    value = auth.signer.issue(NOW).encode()
    clock.advance(3600)
    assert not auth.is_signed_in(with_cookie(b"portproxy-session=" + value))


def test_cookie_from_another_password_is_not_signed_in() -> None:
    clock = Clock()
    value = authenticator(clock=clock, key=b"old").signer.issue(0).encode()
    assert not authenticator(clock=clock, key=b"new").is_signed_in(
        with_cookie(b"portproxy-session=" + value)
    )


def test_a_stale_cookie_next_to_a_valid_one_still_signs_in() -> None:
    clock = Clock()
    auth = authenticator(clock=clock)
    value = auth.signer.issue(0).encode()
    request = make_request()
    request.requestHeaders.setRawHeaders(
        b"cookie", [b"portproxy-session=stale", b'portproxy-session="' + value + b'"']
    )
    assert auth.is_signed_in(request)


@pytest.mark.parametrize(
    ("original", "login"),
    [
        (b"/proxy/3000/x?y=1&z=a+b", b"/login"),
        (b"/absproxy/8080/", b"/login"),
        (b"https://3000.example.com/deep/link?a=1&b=%2F#", b"/.portproxy/login"),
    ],
)
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_browser_navigation_is_redirected_to_login_with_the_exact_url(
    original: bytes, login: bytes, method: bytes
) -> None:
    request = make_request(method, headers={b"accept": BROWSER_ACCEPT})
    body = authenticator().deny(request, original_url=original)
    assert request.responseCode == 302
    location = request.responseHeaders.getRawHeaders(b"location")[0].decode()
    # Relative to the request's path (/proxy/3000/), so a path prefix survives.
    assert location.startswith("./../../")
    parts = urlsplit(urljoin("http://front.test/pp/proxy/3000/", location))
    assert parts.netloc == "front.test"
    assert parts.path.encode() == b"/pp" + login
    assert parse_qs(parts.query)["to"] == [original.decode()]
    assert body == b""


@pytest.mark.parametrize(
    ("method", "accept"),
    [
        (b"GET", None),
        (b"GET", b"*/*"),
        (b"GET", b"application/json"),
        (b"GET", b"text/html;q=0"),
        (b"POST", BROWSER_ACCEPT),
        (b"OPTIONS", BROWSER_ACCEPT),
        (b"DELETE", b"text/html"),
    ],
)
def test_other_requests_get_401_json(method: bytes, accept: bytes | None) -> None:
    headers = {b"accept": accept} if accept is not None else {}
    request = make_request(method, headers=headers)
    body = authenticator().deny(request, original_url=b"/proxy/1/")
    assert request.responseCode == 401
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(body) == {"error": "Unauthorized"}
    assert not request.responseHeaders.hasHeader(b"location")


def test_websocket_denial_is_401_even_for_a_browser() -> None:
    request = make_request(headers={b"accept": BROWSER_ACCEPT, b"upgrade": b"websocket"})
    body = authenticator().deny_unauthorized(request)
    assert request.responseCode == 401 and json.loads(body) == {"error": "Unauthorized"}


PREFLIGHT = {
    b"origin": b"https://app.example",
    b"access-control-request-method": b"PUT",
}


def test_preflight_passes_only_with_the_flag() -> None:
    request = make_request(b"OPTIONS", headers=PREFLIGHT)
    assert authenticator(skip_auth_preflight=True).allows_preflight(request)
    assert not authenticator().allows_preflight(request)


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        (b"GET", PREFLIGHT),
        (b"OPTIONS", {b"origin": b"https://app.example"}),
        (b"OPTIONS", {b"access-control-request-method": b"PUT"}),
        (b"OPTIONS", {}),
    ],
)
def test_non_preflights_do_not_pass(method: bytes, headers: dict[bytes, bytes]) -> None:
    request = make_request(method, headers=headers)
    assert not authenticator(skip_auth_preflight=True).allows_preflight(request)


def test_open_access_lets_everything_through() -> None:
    auth = OpenAccess()
    assert auth.is_signed_in(make_request()) and auth.allows_preflight(make_request())
    assert auth.cookie_name == b"portproxy-session"


@pytest.mark.parametrize(
    ("path", "reserved"),
    [
        (b"/.portproxy/login", True),
        (b"/.PortProxy/logout", True),
        (b"/.portproxy/", True),
        (b"/.portproxy", False),
        (b"/login", False),
        (b"/x/.portproxy/login", False),
    ],
)
def test_reserved_prefix(path: bytes, reserved: bool) -> None:
    assert RESERVED_PREFIX == b"/.portproxy/"
    assert is_reserved_path(path) is reserved


def config(tmp_path: Path, **fields: Any) -> Config:
    return Config(data_dir=str(tmp_path / "data"), **fields)


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, format: str, **kwargs: Any) -> None:
        self.events.append((format, kwargs))


def build(tmp_path: Path, environ: dict[str, str], **fields: Any) -> Any:
    return build_authenticator(
        config(tmp_path, **fields),
        environ=environ,
        clock=Clock(),
        log=cast(Any, RecordingLog()),
        proxy_patterns=(),
    )


def test_factory_returns_open_access_for_auth_none(tmp_path: Path) -> None:
    assert isinstance(build(tmp_path, {}, auth="none"), OpenAccess)
    assert not (tmp_path / "data").exists()


def test_factory_uses_the_cookie_suffix(tmp_path: Path) -> None:
    auth = build(tmp_path, {"PASSWORD": "pw"}, cookie_suffix="my suffix!")
    assert auth.cookie_name == b"portproxy-session-my-suffix-"


def test_factory_reports_where_a_generated_password_is(tmp_path: Path) -> None:
    log: Any = RecordingLog()
    build_authenticator(
        config(tmp_path),
        environ={},
        clock=Clock(),
        log=log,
        proxy_patterns=(),
    )
    [(_, fields)] = log.events
    assert fields == {"path": str(tmp_path / "data" / "password")}


@pytest.mark.parametrize(
    ("environ", "fields", "message"),
    [
        ({"HASHED_PASSWORD": "plain-token"}, {}, "HASHED_PASSWORD"),
        ({}, {"auth": "basic"}, "--auth"),
        ({"PASSWORD": "pw"}, {"session_ttl": 0}, "--session-ttl"),
        ({}, {"password_file": "/nonexistent/pw"}, "--password-file"),
    ],
)
def test_factory_refuses_bad_settings_with_one_line(
    tmp_path: Path, environ: dict[str, str], fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(StartupError, match=message) as raised:
        build(tmp_path, environ, **fields)
    assert "\n" not in str(raised.value)


def test_printed_cookie_is_accepted_by_another_instance_with_the_same_password(
    tmp_path: Path,
) -> None:
    line = print_auth_cookie(
        config(tmp_path / "one", cookie_suffix="s"), {"PASSWORD": "pw"}, Clock()
    )
    name = line.partition("=")[0]
    assert name == "portproxy-session-s"
    other = build(tmp_path / "two", {"PASSWORD": "pw"}, cookie_suffix="s")
    assert other.is_signed_in(with_cookie(line.encode()))
    changed = build(tmp_path / "three", {"PASSWORD": "pw2"}, cookie_suffix="s")
    assert not changed.is_signed_in(with_cookie(line.encode()))


def test_printed_cookie_for_a_hashed_password(tmp_path: Path) -> None:
    hashed = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    line = print_auth_cookie(config(tmp_path), {"HASHED_PASSWORD": hashed}, Clock())
    assert line.startswith("portproxy-session=")
    assert build(tmp_path, {"HASHED_PASSWORD": hashed}).is_signed_in(
        with_cookie(line.encode())
    )


def test_printed_cookie_uses_the_wall_clock_by_default(tmp_path: Path) -> None:
    import time

    line = print_auth_cookie(config(tmp_path), {"PASSWORD": "pw"})
    value = line.partition("=")[2]
    from portproxy.auth.passwords import session_key_material

    key = session_key_material(Credential("plain", b"pw", "PASSWORD"))
    assert SessionSigner(key, Config().session_ttl).verify(value, time.time())


def test_printed_cookie_needs_password_auth(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="--auth"):
        print_auth_cookie(config(tmp_path, auth="none"), {}, Clock())


def test_slow_check_answers_later_and_skips_a_client_that_left() -> None:
    pending: Deferred[bool] = Deferred()
    auth = authenticator(verify=lambda password: pending, is_https=lambda r: False)
    request = make_request(
        b"POST",
        b"/login",
        {b"content-type": b"application/x-www-form-urlencoded"},
        b"password=pw",
    )
    assert LoginResource(auth).render(request) == NOT_DONE_YET
    assert request.written == [] and not request.finished
    request.processingFailed(Exception("client went away"))  # fires notifyFinish's errback
    pending.callback(True)
    assert request.written == [] and not request.finished


def test_slow_check_finishes_the_response_when_it_answers() -> None:
    pending: Deferred[bool] = Deferred()
    auth = authenticator(verify=lambda password: pending, is_https=lambda r: False)
    request = make_request(b"POST", b"/login", {}, b"password=pw&to=%2Fproxy%2F1%2F")
    LoginResource(auth).render(request)
    pending.callback(True)
    assert request.finished and request.responseCode == 302
    assert request.responseHeaders.getRawHeaders(b"location") == [b"./proxy/1/"]


def test_an_error_while_checking_answers_500_instead_of_hanging() -> None:
    from twisted.internet.defer import fail

    auth = authenticator(verify=lambda password: fail(RuntimeError("boom")))
    request = make_request(b"POST", b"/login", {}, b"password=pw")
    LoginResource(auth).render(request)
    assert request.finished and request.responseCode == 500


def test_a_verified_session_is_remembered_until_it_expires() -> None:
    """The HMAC is checked once per cookie value; expiry still applies afterwards."""
    clock = Clock()
    clock.advance(NOW)
    auth = authenticator(clock=clock)
    value = auth.signer.issue(NOW).encode()
    calls: list[object] = []
    check = auth.signer.check
    auth.signer.check = lambda *a: calls.append(a) or check(*a)  # type: ignore[method-assign]
    request = with_cookie(b"portproxy-session=" + value)
    assert auth.is_signed_in(request) and auth.is_signed_in(request)
    assert len(calls) == 1
    assert not auth.is_signed_in(with_cookie(b"portproxy-session=" + value[:-2] + b"xx"))
    clock.advance(3601)
    assert not auth.is_signed_in(request)


def _on(host: bytes, value: bytes) -> Any:
    return make_request(headers={b"host": host, b"cookie": b"portproxy-session=" + value})


def test_a_ticket_session_signs_in_on_its_own_origin_only_cached_or_not() -> None:
    """A ticket's session (bound to P) never counts on another host, port or scheme,
    even once the value sits in the cache of verified values."""
    clock = Clock()
    clock.advance(NOW)
    scheme = {"now": "http"}
    auth = authenticator(clock=clock, is_https=lambda r: scheme["now"] == "https")
    value = auth.signer.issue(NOW, origin="http://5173.localhost:8080").encode()
    assert auth.is_signed_in(_on(b"5173.localhost:8080", value))
    for host in [b"localhost:8080", b"5174.localhost:8080", b"5173.localhost:8081"]:
        assert not auth.is_signed_in(_on(host, value)), host
        fresh = authenticator(clock=clock, is_https=lambda r: False)
        assert not fresh.is_signed_in(_on(host, value)), host
    assert auth.is_signed_in(_on(b"5173.LocalHost:8080", value))
    scheme["now"] = "https"
    assert not auth.is_signed_in(_on(b"5173.localhost:8080", value))
    # Port 80 written or not is one origin over http.
    scheme["now"] = "http"
    default = auth.signer.issue(NOW, origin="http://5173.localhost:80").encode()
    assert auth.is_signed_in(_on(b"5173.localhost", default))
    assert auth.is_signed_in(_on(b"5173.localhost:80", default))
    assert not auth.is_signed_in(_on(b"localhost", default))
    # A password login's session still counts everywhere.
    anywhere = auth.signer.issue(NOW).encode()
    assert auth.is_signed_in(_on(b"localhost:8080", anywhere))
    assert auth.is_signed_in(_on(b"5173.localhost:1", anywhere))


@pytest.mark.parametrize(
    ("to", "followed"),
    [
        ("http://5173.localhost:8080/x", True),
        ("http://localhost:8080/y", True),  # the request's own host, exactly
        ("http://5173.localhost:1/x", False),  # another listener, maybe someone else's
        ("http://5173.localhost/x", False),
        ("http://5173.localhost:80/x", False),
        ("http://5173.localhost:08080/x", False),  # a browser reads 8080: not canonical
        ("http://5173.localhost:0/x", False),
        ("https://5173.localhost:8080/x", False),  # another scheme
        ("https://5173.localhost/x", False),
    ],
)
def test_the_logins_to_keeps_the_scheme_and_port_on_a_proxy_host(
    to: str, followed: bool
) -> None:
    auth = authenticator(proxy_patterns=("localhost",), is_https=lambda r: False)
    request = make_request(headers={b"host": b"localhost:8080"})
    assert auth.safe_target(to, request) == (to if followed else "/")


# -- one contract, one peer rule, one start-up error ------------------------------------


def test_both_authenticators_provide_the_one_contract_the_tree_uses() -> None:
    # The tree (portproxy.web.root) types its authenticator with this very Protocol.
    from portproxy.web import root

    assert root.Authenticator is Authenticator
    assert isinstance(OpenAccess(), Authenticator)
    assert isinstance(authenticator(), Authenticator)


def test_the_peer_host_is_the_address_host_or_empty() -> None:
    request = DummyRequest([b""])
    request.client = IPv4Address("TCP", "192.0.2.7", 4711)
    assert peer_host(request) == "192.0.2.7"
    request.client = None  # a UNIX socket, or no address at all
    assert peer_host(request) == ""


def test_password_and_listener_errors_are_the_one_startup_error() -> None:
    from portproxy.runtime import service

    assert service.StartupError is StartupError
    with pytest.raises(StartupError):
        print_auth_cookie(Config(auth="none"), environ={})

"""The login and logout pages over real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from argon2 import PasswordHasher
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from portproxy.auth import LoginResource, LogoutResource, build_authenticator
from portproxy.config import Config

PASSWORD = "correct horse"
TTL = 7200
FORM = {b"content-type": [b"application/x-www-form-urlencoded"]}
PATTERNS = ("{{port}}.example.com",)


def get_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@dataclass
class Response:
    code: int
    headers: Any
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return list(self.headers.getRawHeaders(name) or [])

    def cookie_attributes(self) -> list[set[bytes]]:
        return [
            {part.strip() for part in value.split(b";")}
            for value in self.header(b"set-cookie")
        ]


@dataclass
class Server:
    url: str
    auth: Any
    pool: Any

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
        client: str = "198.51.100.1",
    ) -> Response:
        import treq

        all_headers: Any = {b"x-test-client": [client.encode()], **(headers or {})}
        response = await treq.request(
            method,
            self.url + path,
            data=body,
            headers=all_headers,
            pool=self.pool,
            allow_redirects=False,
            timeout=5,
        )
        content = await response.content()
        return Response(response.code, response.headers, content)

    async def login(
        self,
        password: str,
        to: str = "",
        headers: dict[bytes, list[bytes]] | None = None,
        **kwargs: Any,
    ) -> Response:
        body = urlencode({"password": password, "to": to}).encode()
        headers = {**FORM, **(headers or {})}
        return await self.request("POST", "/login", body=body, headers=headers, **kwargs)


def _site(auth: Any) -> Site:
    root: Any = Resource()
    reserved: Any = Resource()
    root.putChild(b".portproxy", reserved)
    for parent in (root, reserved):
        parent.putChild(b"login", LoginResource(auth))
        parent.putChild(b"logout", LogoutResource(auth))
    return Site(root, parsePOSTFormSubmission=False)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a Site with the login pages; every port and connection is closed after."""
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.client import HTTPConnectionPool

    reactor = get_reactor()
    ports: list[Any] = []
    pool = HTTPConnectionPool(reactor, persistent=False)

    async def start(
        environ: dict[str, str] | None = None,
        *,
        https: bool = False,
        **fields: Any,
    ) -> Server:
        fields.setdefault("session_ttl", TTL)
        config = Config(data_dir=str(tmp_path / "data"), **fields)
        auth = build_authenticator(
            config,
            environ={"PASSWORD": PASSWORD} if environ is None else environ,
            clock=Clock(),
            log=Logger(),
            proxy_patterns=PATTERNS,
            is_https=lambda request: https,
            client_address=lambda request: (
                request.getHeader(b"x-test-client") or b""
            ).decode(),
            allowed_redirect_host=lambda host: host.endswith(".example.com"),
            threads=reactor,
        )
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(_site(auth))
        ports.append(port)
        return Server(f"http://127.0.0.1:{port.getHost().port}", auth, pool)

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())
    pytest_twisted.blockon(pool.closeCachedConnections())


def cookie_pair(response: Response) -> bytes:
    return response.header(b"set-cookie")[0].split(b";")[0]


@pytest_twisted.ensureDeferred
async def test_login_sets_a_hardened_cookie_and_redirects_to_the_deep_link(
    serve: Any,
) -> None:
    server = await serve()
    response = await server.login(PASSWORD, to="/proxy/3000/deep?x=1&y=%2F")
    assert response.code == 302
    # Relative to /login, so that it stays under a front proxy's path prefix.
    assert response.header(b"location") == [b"./proxy/3000/deep?x=1&y=%2F"]
    [attributes] = response.cookie_attributes()
    assert {b"HttpOnly", b"SameSite=Lax", b"Path=/", b"Max-Age=%d" % TTL} <= attributes
    assert b"Secure" not in attributes
    assert not any(a.startswith(b"Domain=") for a in attributes)  # Host is 127.0.0.1
    signed_in = await server.request(
        "GET", "/login?to=/proxy/3000/", headers={b"cookie": [cookie_pair(response)]}
    )
    assert signed_in.code == 302 and signed_in.header(b"location") == [b"./proxy/3000/"]


@pytest_twisted.ensureDeferred
async def test_cookie_is_secure_when_the_request_came_over_https(serve: Any) -> None:
    response = await (await serve(https=True)).login(PASSWORD)
    assert b"Secure" in response.cookie_attributes()[0]
    assert response.header(b"location") == [b"./"]


@pytest_twisted.ensureDeferred
async def test_login_on_a_host_within_the_proxy_domain_widens_the_cookie(
    serve: Any,
) -> None:
    response = await (await serve()).login(
        PASSWORD, headers={b"host": [b"code.example.com"]}
    )
    assert b"Domain=example.com" in response.cookie_attributes()[0]


@pytest_twisted.ensureDeferred
async def test_wrong_password_gives_401_form_keeping_to(serve: Any) -> None:
    response = await (await serve()).login("wrong", to="/proxy/3000/x?a=1")
    assert response.code == 401
    assert response.header(b"set-cookie") == []
    assert b'name="to" value="/proxy/3000/x?a=1"' in response.body
    assert b"Incorrect password" in response.body
    assert b'type="password"' in response.body


@pytest_twisted.ensureDeferred
async def test_missing_password_takes_no_token(serve: Any) -> None:
    server = await serve()
    for _ in range(20):
        response = await server.request("POST", "/login", body=b"to=%2F", headers=FORM)
        assert response.code == 401
    assert (await server.login(PASSWORD)).code == 302


@pytest_twisted.ensureDeferred
async def test_fifteenth_failure_is_429_with_retry_after_and_others_can_sign_in(
    serve: Any,
) -> None:
    server = await serve()
    for _ in range(14):
        assert (await server.login("wrong", client="203.0.113.9")).code == 401
    refused = await server.login(PASSWORD, to="/proxy/1/", client="203.0.113.9")
    assert refused.code == 429
    assert int(refused.header(b"retry-after")[0]) > 0
    assert refused.header(b"set-cookie") == []
    assert b'value="/proxy/1/"' in refused.body
    showing = await server.request("GET", "/login", client="203.0.113.9")
    assert showing.code == 200  # showing the form is never limited
    other = await server.login(PASSWORD, client="203.0.113.10")
    assert other.code == 302 and other.header(b"set-cookie")


@pytest_twisted.ensureDeferred
async def test_successful_logins_take_no_token(serve: Any) -> None:
    server = await serve()
    for _ in range(20):
        assert (await server.login(PASSWORD)).code == 302
    for _ in range(14):
        assert (await server.login("wrong")).code == 401
    assert (await server.login("wrong")).code == 429


@pytest_twisted.ensureDeferred
async def test_open_redirect_targets_become_root(serve: Any) -> None:
    server = await serve()
    for evil in [
        "https://evil.com/",
        "//evil.com",
        "/\\evil.com",
        "javascript:alert(1)",
    ]:
        response = await server.login(PASSWORD, to=evil)
        assert response.header(b"location") == [b"./"], evil


@pytest_twisted.ensureDeferred
async def test_absolute_target_on_a_proxy_host_is_followed(serve: Any) -> None:
    # Same scheme and port as the login page (https, 443): see test_auth_guard.
    response = await (await serve(https=True)).login(
        PASSWORD,
        to="https://3000.example.com/x?y=1",
        headers={b"host": [b"code.example.com"]},
    )
    assert response.header(b"location") == [b"https://3000.example.com/x?y=1"]


@pytest_twisted.ensureDeferred
async def test_logout_clears_the_cookie_and_goes_to_login(serve: Any) -> None:
    server = await serve()
    response = await server.request("GET", "/logout")
    assert response.code == 302 and response.header(b"location") == [b"./login"]
    [attributes] = response.cookie_attributes()
    assert {b"portproxy-session=", b"Max-Age=0", b"Path=/"} <= attributes


@pytest_twisted.ensureDeferred
async def test_logout_clears_with_the_same_domain_as_login(serve: Any) -> None:
    host = {b"host": [b"code.example.com"]}
    response = await (await serve()).request("GET", "/logout?to=/proxy/1/", headers=host)
    assert response.header(b"location") == [b"./proxy/1/"]
    cleared = response.cookie_attributes()
    assert b"Domain=example.com" in cleared[0] and b"Max-Age=0" in cleared[0]
    assert not any(a.startswith(b"Domain=") for a in cleared[1])  # the host-only one


@pytest_twisted.ensureDeferred
async def test_reserved_login_page_posts_and_logs_out_under_the_reserved_prefix(
    serve: Any,
) -> None:
    server = await serve(https=True)
    page = await server.request(
        "GET",
        "/.portproxy/login?to=https://3000.example.com/",
        headers={b"host": [b"code.example.com"]},
    )
    assert b'action="./../.portproxy/login"' in page.body
    assert b'value="https://3000.example.com/"' in page.body
    out = await server.request("GET", "/.portproxy/logout")
    assert out.header(b"location") == [b"./../.portproxy/login"]


@pytest_twisted.ensureDeferred
async def test_form_page_has_no_script_no_external_url_and_strict_headers(
    serve: Any,
) -> None:
    page = await (await serve()).request("GET", "/login")
    assert page.code == 200
    assert page.header(b"content-type") == [b"text/html; charset=utf-8"]
    body = page.body.lower()
    assert b"<script" not in body and b"http" not in body and b"//" not in body
    [csp] = page.header(b"content-security-policy")
    assert b"default-src 'none'" in csp and b"script-src" not in csp
    assert page.header(b"cache-control") == [b"no-store"]
    assert page.header(b"x-frame-options") == [b"DENY"]


@pytest_twisted.ensureDeferred
async def test_echoed_to_is_escaped(serve: Any) -> None:
    server = await serve()
    page = await server.request(
        "GET", "/login?to=/x%3F%22%3E%3Cscript%3Ealert(1)%3C/script%3E"
    )
    assert b"<script" not in page.body
    assert b"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page.body
    failed = await server.login("wrong", to='/x?"><script>alert(1)</script>')
    assert b"<script" not in failed.body and b"&lt;script&gt;" in failed.body


@pytest_twisted.ensureDeferred
async def test_oversized_form_is_refused_without_a_token(serve: Any) -> None:
    server = await serve()
    big = b"password=" + b"a" * 20_000
    for _ in range(15):
        assert (await server.request("POST", "/login", body=big, headers=FORM)).code == 413
    assert (await server.login(PASSWORD)).code == 302


@pytest_twisted.ensureDeferred
async def test_hashed_password_is_checked_in_a_thread(serve: Any) -> None:
    hashed = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    server = await serve({"HASHED_PASSWORD": hashed})
    assert (await server.login("wrong")).code == 401
    assert (await server.login(PASSWORD)).code == 302


@pytest_twisted.ensureDeferred
async def test_auth_none_sends_login_and_logout_to_root(serve: Any) -> None:
    server = await serve(auth="none")
    for method, path in [("GET", "/login"), ("POST", "/login"), ("GET", "/logout")]:
        response = await server.request(method, path)
        assert response.code == 302 and response.header(b"location") == [b"./"]
        assert response.header(b"set-cookie") == []

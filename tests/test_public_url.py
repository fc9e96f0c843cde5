"""One public URL everywhere: home page, --print-url / url PORT, start-up log, Locations.

The URLs carry the scheme, host and port the client uses: from the request (through
--trusted-proxies) when there is one, else from --public-url or the first listener.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from portproxy.config import Config
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.hosts import parse_authority
from portproxy.routing.publicurl import (
    PublicBase,
    configured_base,
    listener_base,
    listener_warnings,
    location_url,
    parse_listener,
    port_urls,
    request_base,
    route_in_path,
    url_template,
)
from tests.support import Recorder, get, parse_response, raw_request

LOCAL = (ipaddress.ip_network("127.0.0.1/32"),)
FRONT = b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: dev.example.test\r\n"


def _base(*listen: str, **fields: Any) -> PublicBase | None:
    return configured_base(Config(listen=listen, **fields))


# --- the base without a request -----------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "fields", "expected"),
    [
        (("tcp:8080:interface=127.0.0.1",), {}, "http://localhost:8080"),
        (("tcp:8093",), {}, "http://localhost:8093"),
        (("tcp:80",), {}, "http://localhost"),
        (("8081",), {}, "http://localhost:8081"),
        (("tcp:port=9000:interface=0.0.0.0",), {}, "http://localhost:9000"),
        (("tcp6:8080:interface=\\:\\:1",), {}, "http://localhost:8080"),
        (("tcp:8080:interface=192.168.1.5",), {}, "http://192.168.1.5:8080"),
        (("tcp6:8080:50:2001\\:db8\\:\\:1",), {}, "http://[2001:db8::1]:8080"),
        (("ssl:8443:privateKey=k.pem",), {}, "https://localhost:8443"),
        (("tcp:8443",), {"self_signed": True}, "https://localhost:8443"),
        (("tcp:443",), {"cert": "c.pem"}, "https://localhost"),
        (("unix:/run/pp.sock:mode=660", "tcp:8082"), {}, "http://localhost:8082"),
        (
            ("tcp:8080",),
            {"public_url": "https://dev.example.com"},
            "https://dev.example.com",
        ),
    ],
)
def test_base_comes_from_public_url_or_the_first_listener_with_an_address(
    listen: tuple[str, ...], fields: dict[str, Any], expected: str
) -> None:
    base = _base(*listen, **fields)
    assert base is not None and base.origin == expected


def test_a_unix_listener_alone_gives_root_relative_urls() -> None:
    base = _base("unix:/run/pp.sock")
    assert base is None
    urls = port_urls(5173, base, DomainMatcher(["example.com"]))
    assert urls == {"proxy": "/proxy/5173/", "absproxy": "/absproxy/5173/", "domain": None}


def test_public_url_prefix_applies_to_path_routes_not_to_proxy_hosts() -> None:
    base = _base("tcp:8080", public_url="https://dev.example.com:8443/pp")
    urls = port_urls(5173, base, DomainMatcher(["*.dev.example.com"]))
    assert urls == {
        "proxy": "https://dev.example.com:8443/pp/proxy/5173/",
        "absproxy": "https://dev.example.com:8443/pp/absproxy/5173/",
        "domain": "https://5173.dev.example.com:8443/",
    }


def test_parse_listener_reads_twisted_positional_and_named_fields() -> None:
    assert parse_listener("tcp:8080:127.0.0.1").interface == "127.0.0.1"
    assert parse_listener("tcp6:8080").bound_address == "::"
    assert parse_listener("tcp:8080").bound_address == "0.0.0.0"
    assert parse_listener("ssl:8443:k.pem:interface=10.0.0.1").interface == "10.0.0.1"
    assert parse_listener("unix:/x").port is None
    assert parse_listener("tcp:0").port == 0
    assert listener_base(parse_listener("tcp:0"), tls_on_tcp=False) is None


# --- the base from a request --------------------------------------------------------


def test_request_base_keeps_the_port_and_drops_a_default_one() -> None:
    assert request_base("http", "LocalHost:8080") == PublicBase("http", "localhost:8080")
    assert request_base("https", "example.com:443") == PublicBase("https", "example.com")
    assert request_base("http", "[::1]:80") == PublicBase("http", "[::1]")
    assert request_base("http", None) is None
    assert request_base("http", "bad host") is None


def test_proxy_domain_localhost_on_8080_keeps_the_port() -> None:
    # The walkthrough's problem 1: http://5173.localhost/ was refused.
    urls = port_urls(5173, _base("tcp:8080"), DomainMatcher(["localhost"]))
    assert urls["domain"] == "http://5173.localhost:8080/"
    assert urls["proxy"] == "http://localhost:8080/proxy/5173/"


def test_host_patterns_are_filled_with_the_main_host() -> None:
    matcher = DomainMatcher(["{{port}}-{{host}}"])
    base = request_base("https", "box.example.com")
    assert port_urls(3000, base, matcher)["domain"] == "https://3000-box.example.com/"
    # From a proxy host of the pattern, the same {{host}} is kept.
    urls = port_urls(3000, base, matcher, request_host="5173-box.example.com")
    assert urls["domain"] == "https://3000-box.example.com/"
    # An IP address cannot fill {{host}}: no proxy host to name.
    assert port_urls(3000, request_base("http", "10.0.0.1"), matcher)["domain"] is None


def test_page_links_are_relative_to_the_page() -> None:
    urls = port_urls(5173, request_base("http", "h:1"), DomainMatcher([]), relative_to=b"/")
    assert urls == {
        "proxy": "./proxy/5173/",
        "absproxy": "./absproxy/5173/",
        "domain": None,
    }


def test_url_template_names_the_listener_port() -> None:
    assert url_template(Config(proxy_domains=("{{port}}.localhost",))) == (
        "http://{{port}}.localhost:8080/"
    )
    assert url_template(Config()) == "http://localhost:8080/proxy/{{port}}/"
    assert url_template(Config(listen=("unix:/x",))) == "/proxy/{{port}}/"
    assert url_template(
        Config(proxy_domains=("{{port}}.{{host}}",), public_url="https://box.example.com")
    ) == ("https://{{port}}.box.example.com/")


_LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z]", fullmatch=True)


@given(
    port=st.integers(1, 65535),
    scheme=st.sampled_from(["http", "https"]),
    listen_port=st.integers(1, 65535),
    labels=st.lists(_LABEL, min_size=1, max_size=3),
    pattern=st.sampled_from(["{{port}}.{d}", "app-{{port}}.{d}", "{{port}}-{{host}}"]),
)
def test_property_every_built_url_parses_back_and_routes_to_its_port(
    port: int,
    scheme: str,
    listen_port: int,
    labels: list[str],
    pattern: str,
) -> None:
    domain = ".".join(labels)
    matcher = DomainMatcher([pattern.replace("{d}", domain)])
    base = request_base(scheme, f"{domain}:{listen_port}")
    assert base is not None
    urls = port_urls(port, base, matcher)
    for url in urls.values():
        assert isinstance(url, str)
        found_scheme, _, rest = url.partition("://")
        assert found_scheme == scheme
        authority = rest.split("/", 1)[0]
        parsed = parse_authority(authority)
        assert parsed is not None
        default = listen_port == (443 if scheme == "https" else 80)
        assert parsed.port == (None if default else listen_port)
    domain_authority = urls["domain"].partition("://")[2].split("/", 1)[0]  # type: ignore[union-attr]
    assert matcher.match(domain_authority) == str(port)


# --- never a double prefix ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "base_path", "expected"),
    [
        (b"/absproxy/5173/x", b"", b"/absproxy/5173/x"),
        # The base path is part of the browser's URL (a front proxy mounts us there).
        (b"/b/absproxy/3000/x?q", b"/b", b"/b/absproxy/3000/x?q"),
        (b"/proxy/4000", b"", b"/proxy/4000"),
        (b"/PROXY/4000/y", b"/b", b"/PROXY/4000/y"),
        (b"/b/proxy/4000/y", b"/b", None),  # the base path comes before /absproxy only
        (b"/proxy/0400/y", b"", None),  # not a canonical port: an app path
        (b"/proxyx/4000/", b"", None),
        (b"/x", b"/b", None),
    ],
)
def test_route_in_path(path: bytes, base_path: bytes, expected: bytes | None) -> None:
    assert route_in_path(path, base_path) == expected


def _location(route: str, port: int, path: bytes, here: int, **kw: Any) -> bytes | None:
    kw.setdefault("base_path", b"")
    return location_url(
        port,
        path,
        route=route,
        here_port=here,
        here_prefix=b"/%s/%d" % (route.encode(), here),
        base=kw.pop("base", None),
        matcher=DomainMatcher(kw.pop("domains", ())),
        request_host=kw.pop("host", None),
        **kw,
    )


def test_location_url_on_each_route() -> None:
    assert _location("proxy", 5173, b"/x", 5173) == b"/proxy/5173/x"
    assert _location("proxy", 4000, b"/x", 5173) == b"/proxy/4000/x"
    assert _location("proxy", 5173, b"/absproxy/5173/x", 5173) == b"/absproxy/5173/x"
    assert _location("absproxy", 3000, b"/x", 3000) == b"/x"
    assert _location("absproxy", 4000, b"/x", 3000, base_path=b"/b") == (
        b"/b/absproxy/4000/x"
    )
    assert (
        _location(
            "domain",
            4000,
            b"/x",
            5173,
            base=request_base("https", "5173.localhost:8443"),
            domains=("localhost",),
            host="5173.localhost:8443",
        )
        == b"https://4000.localhost:8443/x"
    )
    assert _location("domain", 4000, b"/x", 5173) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"//evil.com/x", b"/.//evil.com/x"),
        (b"/\\evil.com", b"/./\\evil.com"),
        (b"//", b"/.//"),
        (b"/x//y", b"/x//y"),  # a doubled slash later on is a plain path
    ],
)
def test_a_same_port_absproxy_location_never_becomes_scheme_relative(
    path: bytes, expected: bytes
) -> None:
    """The app's Location stayed on localhost; portproxy must not send it off-site."""
    assert _location("absproxy", 3000, path, 3000) == expected


@given(
    route=st.sampled_from(["proxy", "absproxy"]),
    path=st.binary(max_size=12).map(lambda b: b.replace(b"\t", b"")),
    lead=st.sampled_from([b"/", b"//", b"/\\", b"\\", b""]),
    same=st.booleans(),
    base_path=st.sampled_from([b"", b"/b"]),
)
def test_no_path_route_location_is_scheme_relative(
    route: str, path: bytes, lead: bytes, same: bool, base_path: bytes
) -> None:
    url = _location(route, 3000, lead + path, 3000 if same else 4000, base_path=base_path)
    assert url is not None
    # Browsers drop tabs and newlines anywhere in a URL before parsing it.
    head = url.translate(None, b"\t\n\r")[:2]
    assert head[:1] == b"/" and head[1:2] not in (b"/", b"\\")


# --- warnings -----------------------------------------------------------------------


def _warnings(*listen: str, auth: str = "password", tls: bool = False) -> list[str]:
    return list(listener_warnings(listen, auth=auth, tls_on_tcp=tls))


def test_plain_http_on_every_interface_is_warned_about() -> None:
    for listen in ("tcp:8093", "tcp:8093:interface=0.0.0.0", "tcp6:8093", "8093"):
        (line,) = _warnings(listen)
        assert listen in line and "interface=127.0.0.1" in line and "TLS" in line


def test_tls_or_loopback_listeners_are_not_warned_about() -> None:
    assert _warnings("tcp:8080:interface=127.0.0.1") == []
    assert _warnings("tcp6:8080:interface=\\:\\:1") == []
    assert _warnings("tcp:8443", tls=True) == []
    assert _warnings("ssl:8443:privateKey=k.pem") == []
    assert _warnings("unix:/run/pp.sock") == []
    assert _warnings("tcp:8080:interface=127.0.0.1", auth="none") == []


def test_auth_none_off_loopback_is_warned_about() -> None:
    lines = _warnings("tcp:8093:interface=0.0.0.0", auth="none")
    assert len(lines) == 2 and "--auth none" in lines[1]
    (line,) = _warnings("ssl:8443:interface=10.0.0.2", auth="none")
    assert "10.0.0.2" in line and "--auth password" in line


def _startup_log(config: Config, environ: dict[str, str] | None = None) -> list[str]:
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher

    from portproxy.net.reactor import IInstanceReactor
    from portproxy.runtime.app import build_service

    seen: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "portproxy.app":
            level = event.get("log_level")
            text = formatEvent(event)
            # Only this task's warnings (the file-limit one depends on the machine).
            ours = "--listen" in text or "--auth none" in text
            seen.append(("WARN " if level == LogLevel.warn and ours else "") + text)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    try:
        build_service(
            config,
            environ=environ or {},
            reactor=cast(IInstanceReactor, MemoryReactorClock()),
        )
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observer))
    return seen


def test_startup_warns_about_a_listener_on_every_interface() -> None:
    lines = _startup_log(Config(auth="none", listen=("tcp:8093",)))
    warned = [line for line in lines if line.startswith("WARN ")]
    assert len(warned) == 2
    assert "tcp:8093" in warned[0] and "interface=127.0.0.1" in warned[0]
    assert "--auth none" in warned[1]
    assert "apps open at http://localhost:8093/proxy/{{port}}/" in " ".join(lines)


def test_a_worker_leaves_the_warnings_to_its_supervisor() -> None:
    from portproxy.runtime.handoff import WORKER_ENV

    # With --workers N the supervisor warns once; N workers must not repeat it.
    config = Config(auth="none", listen=("tcp:8093",))
    lines = _startup_log(config, environ={WORKER_ENV: "{}"})
    assert not [line for line in lines if line.startswith("WARN ")]


def test_startup_on_loopback_warns_about_nothing() -> None:
    lines = _startup_log(Config(auth="none", listen=("tcp:8093:interface=127.0.0.1",)))
    assert not [line for line in lines if line.startswith("WARN ")]


# --- --print-url and url PORT ---------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from portproxy.tap import Options

    options = Options()
    options.environ = {}
    with pytest.raises(SystemExit) as exit_:
        options.parseOptions(["--auth", "none", *args])
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


@pytest.mark.parametrize(
    ("args", "preferred", "others"),
    [
        (["--listen", "tcp:8093"], "http://localhost:8093/proxy/5173/", []),
        (
            ["--listen", "tcp:8080", "--proxy-domain", "localhost"],
            "http://5173.localhost:8080/",
            ["http://localhost:8080/proxy/5173/"],
        ),
        (
            ["--listen", "ssl:8443:privateKey=k.pem", "--proxy-domain", "*.dev.test"],
            "https://5173.dev.test:8443/",
            ["https://localhost:8443/proxy/5173/"],
        ),
        (
            [
                "--public-url",
                "https://dev.example.com/pp",
                "--proxy-domain",
                "dev.example.com",
            ],
            "https://5173.dev.example.com/",
            ["https://dev.example.com/pp/proxy/5173/"],
        ),
    ],
)
def test_print_url_and_url_command_name_the_public_url(
    capsys: pytest.CaptureFixture[str], args: list[str], preferred: str, others: list[str]
) -> None:
    assert _cli(capsys, *args, "--print-url", "5173") == (0, preferred + "\n", "")
    status, out, err = _cli(capsys, *args, "url", "5173")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == preferred
    assert lines[1:-1] == others and lines[-1].endswith("/absproxy/5173/")


@pytest.mark.parametrize("bad", [["70000"], ["0"], ["abc"], [], ["1", "2"]])
def test_url_command_refuses_a_bad_port_in_one_line(
    capsys: pytest.CaptureFixture[str], bad: list[str]
) -> None:
    status, out, err = _cli(capsys, "url", *bad)
    assert status == 64 and out == ""
    assert err.count("\n") == 1 and err.startswith("portproxy: error: url:")


# --- live: home page and Locations through a real portproxy -------------------------


async def _home(proxy: Any, host: bytes, headers: bytes = b"") -> bytes:
    status, _, body = parse_response(
        await raw_request(proxy.port, get(b"/", host=host, headers=headers))
    )
    assert status == 200
    return body


@pytest_twisted.ensureDeferred
async def test_home_page_links_every_route_relative_to_the_page(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy()
    up = upstream()
    body = await _home(proxy, b"127.0.0.1:%d" % proxy.port)
    assert b'href="./proxy/%d/"' % up.port in body
    assert b'href="./absproxy/%d/"' % up.port in body
    assert b'action="./logout"' in body
    assert b'href="/' not in body and b'action="/' not in body


@pytest_twisted.ensureDeferred
async def test_home_page_domain_link_keeps_the_listener_port(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(proxy_domains=("localhost",))
    up = upstream()
    body = await _home(proxy, b"localhost:%d" % proxy.port)
    assert b'href="http://%d.localhost:%d/"' % (up.port, proxy.port) in body


@pytest_twisted.ensureDeferred
async def test_home_page_behind_a_trusted_front_proxy(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(proxy_domains=("dev.example.test",), trusted_proxies=LOCAL)
    up = upstream()
    body = await _home(proxy, b"127.0.0.1:%d" % proxy.port, FRONT)
    assert b'href="https://%d.dev.example.test/"' % up.port in body


@pytest_twisted.ensureDeferred
async def test_home_page_ignores_forwarded_headers_from_an_untrusted_peer(
    upstream: Any, make_proxy: Any
) -> None:
    proxy = make_proxy(proxy_domains=("dev.example.test",))
    up = upstream()
    body = await _home(proxy, b"dev.example.test:%d" % proxy.port, FRONT)
    assert b'href="http://%d.dev.example.test:%d/"' % (up.port, proxy.port) in body
    assert b"https://" not in body


def _redirector(target: list[bytes]) -> Recorder:
    def redirect(request: Any) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"location", target[0])
        return b""

    return Recorder(redirect)


async def _location_of(
    proxy: Any, target: list[bytes], value: bytes, path: bytes, **kw: Any
) -> bytes:
    target[:] = [value]
    _, headers, _ = parse_response(await raw_request(proxy.port, get(path, **kw)))
    return headers[b"location"][0]


@pytest_twisted.ensureDeferred
async def test_loopback_location_already_under_a_route_gets_no_second_prefix(
    upstream: Any, make_proxy: Any
) -> None:
    target: list[bytes] = []
    up = upstream(_redirector(target))
    p = up.port
    proxy = make_proxy()
    on_proxy = b"/proxy/%d/" % p
    cases: dict[bytes, bytes] = {
        b"http://localhost:%d/absproxy/%d/x" % (p, p): b"/absproxy/%d/x" % p,
        b"http://127.0.0.1:%d/proxy/%d/y?q" % (p, p): b"/proxy/%d/y?q" % p,
        b"http://localhost:%d/proxy/4000/z" % p: b"/proxy/4000/z",
        b"http://localhost:%d/x" % p: b"/proxy/%d/x" % p,
    }
    for value, expected in cases.items():
        assert await _location_of(proxy, target, value, on_proxy) == expected, value
    based = make_proxy(abs_proxy_base_path=b"/b")
    value = b"http://localhost:%d/b/absproxy/%d/x" % (p, p)
    assert await _location_of(based, target, value, b"/absproxy/%d/" % p) == (
        b"/b/absproxy/%d/x" % p
    )


@pytest_twisted.ensureDeferred
async def test_a_loopback_location_to_a_doubled_slash_stays_on_this_site(
    upstream: Any, make_proxy: Any
) -> None:
    target: list[bytes] = []
    up = upstream(_redirector(target))
    p = up.port
    proxy = make_proxy()
    here = b"/absproxy/%d/" % p
    cases = {
        b"http://localhost:%d//evil.com/x" % p: b"/.//evil.com/x",
        b"http://localhost:%d/\\evil.com" % p: b"/./\\evil.com",
        b"http://127.0.0.1:%d//evil.com" % p: b"/.//evil.com",
    }
    for value, expected in cases.items():
        assert await _location_of(proxy, target, value, here) == expected, value


@pytest_twisted.ensureDeferred
async def test_loopback_location_on_a_proxy_host_uses_the_request_base(
    upstream: Any, make_proxy: Any
) -> None:
    target: list[bytes] = []
    up = upstream(_redirector(target))
    value = b"http://localhost:%d/next" % up.port
    host = b"%d.localhost:8080" % up.port
    proxy = make_proxy(proxy_domains=("localhost",))
    assert await _location_of(proxy, target, value, b"/", host=host) == (
        b"http://%d.localhost:8080/next" % up.port
    )
    # Behind a trusted front proxy: its scheme and host.
    front = make_proxy(proxy_domains=("dev.example.test",), trusted_proxies=LOCAL)
    headers = b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: %d.dev.example.test\r\n" % (
        up.port
    )
    assert (
        await _location_of(front, target, value, b"/", host=b"127.0.0.1", headers=headers)
        == b"https://%d.dev.example.test/next" % up.port
    )
    # The same headers from an untrusted peer change nothing.
    untrusted = make_proxy(proxy_domains=("dev.example.test",))
    assert (
        await _location_of(
            untrusted,
            target,
            value,
            b"/",
            host=b"%d.dev.example.test:8080" % up.port,
            headers=headers,
        )
        == b"http://%d.dev.example.test:8080/next" % up.port
    )


@pytest.fixture
def tls_proxy(tmp_path: Any) -> Any:
    from tests.test_tls_live import tls_services

    with tls_services(tmp_path) as start:
        yield start


@pytest_twisted.ensureDeferred
async def test_a_tls_listener_gives_https_urls_with_its_port(
    upstream: Any, tls_proxy: Any
) -> None:
    from tests.test_tls_live import tls_request

    target: list[bytes] = [b""]
    up = upstream(_redirector(target))
    proxy = tls_proxy(self_signed=True, proxy_domains=("localhost",))
    main = b"localhost:%d" % proxy.port
    raw, _ = await tls_request(proxy.port, get(b"/", host=main), cafile=None)
    status, _, body = parse_response(raw)
    assert status == 200
    assert b'href="https://%d.localhost:%d/"' % (up.port, proxy.port) in body
    target[0] = b"http://localhost:%d/next" % up.port
    on_host = b"%d.localhost:%d" % (up.port, proxy.port)
    raw, _ = await tls_request(proxy.port, get(b"/", host=on_host), cafile=None)
    _, headers, _ = parse_response(raw)
    assert headers[b"location"] == [b"https://%d.localhost:%d/next" % (up.port, proxy.port)]

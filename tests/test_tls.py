"""TLS certificates: loading and checking --cert/--cert-key, the self-signed pair, options.

Also holds the test PKI (a CA, an intermediate, leaves) that the live TLS tests use.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from portproxy.runtime.tls import (
    RENEW_BEFORE,
    SELF_SIGNED_CERT_FILE,
    SELF_SIGNED_KEY_FILE,
    TLSError,
    fingerprint,
    generate_self_signed,
    https_location,
    load_key_pair,
    load_or_create_self_signed,
    parse_cert_hosts,
    wants_tls,
)
from portproxy.tap import Options

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)

# -- a test PKI -----------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class PKI:
    """A root CA and an intermediate CA; leaves are issued by the intermediate."""

    ca_key: Any
    ca: x509.Certificate
    inter_key: Any
    inter: x509.Certificate

    def issue(
        self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0]))
            .issuer_name(self.inter.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .sign(self.inter_key, hashes.SHA256())
        )
        return key, cert


def _ca(cn: str, key: Any, issuer: x509.Name, signer: Any) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            True,
        )
        .sign(signer, hashes.SHA256())
    )


@lru_cache(maxsize=1)
def make_pki() -> PKI:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca("portproxy test root", ca_key, _name("portproxy test root"), ca_key)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _ca("portproxy test intermediate", inter_key, ca.subject, ca_key)
    return PKI(ca_key, ca, inter_key, inter)


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: Any, password: bytes | None = None) -> bytes:
    encryption: Any = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )


def write_pair(
    directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> tuple[str, str, str]:
    """Write a leaf + intermediate chain, its key and the root; return the three paths."""
    pki = make_pki()
    key, cert = pki.issue(hosts)
    paths = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    paths[0].write_bytes(cert_pem(cert, pki.inter))
    paths[1].write_bytes(key_pem(key))
    paths[2].write_bytes(cert_pem(pki.ca))
    return str(paths[0]), str(paths[1]), str(paths[2])


# -- which listeners get TLS ----------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "tls"),
    [
        ("tcp:8080:interface=127.0.0.1", True),
        ("tcp:0", True),
        ("tcp6:8443:interface=\\:\\:1", True),
        ("ssl:8443:privateKey=k.pem", False),
        ("unix:/run/pp.sock:mode=660", False),
        ("systemd:domain=INET:index=0", False),
        ("tcpx:8080", False),
        ("le:/srv/certs:tcp:443", False),
    ],
)
def test_only_tcp_listeners_get_tls(description: str, tls: bool) -> None:
    assert wants_tls(description) is tls


# -- --cert and --cert-key ------------------------------------------------------------


def test_a_chain_file_and_its_key_load_with_the_leaf_first(tmp_path: Path) -> None:
    cert, key, _ = write_pair(tmp_path)
    pair = load_key_pair(cert, key)
    assert pair.certificate.subject == _name("localhost")
    assert pair.chain == (make_pki().inter,)


def test_the_leaf_is_found_whatever_its_place_in_the_file(tmp_path: Path) -> None:
    pki = make_pki()
    key, leaf = pki.issue()
    (tmp_path / "c.pem").write_bytes(cert_pem(pki.inter, leaf))
    (tmp_path / "k.pem").write_bytes(key_pem(key))
    pair = load_key_pair(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert pair.certificate == leaf
    assert pair.chain == (pki.inter,)


def test_a_combined_pem_needs_no_cert_key(tmp_path: Path) -> None:
    pki = make_pki()
    key, leaf = pki.issue()
    (tmp_path / "both.pem").write_bytes(key_pem(key) + cert_pem(leaf, pki.inter))
    pair = load_key_pair(str(tmp_path / "both.pem"), None)
    assert pair.certificate == leaf


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        ("rsa", serialization.PrivateFormat.TraditionalOpenSSL),
        ("rsa", serialization.PrivateFormat.PKCS8),
        ("ec", serialization.PrivateFormat.TraditionalOpenSSL),
        ("ed25519", serialization.PrivateFormat.PKCS8),
    ],
)
def test_common_key_types_and_pem_forms_load_and_serve(
    tmp_path: Path, kind: str, form: serialization.PrivateFormat
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from portproxy.runtime.tlslistener import server_options

    key: Any = {
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    pki = make_pki()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(pki.inter.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_now())
        .not_valid_after(_now() + datetime.timedelta(days=1))
        .sign(pki.inter_key, hashes.SHA256())
    )
    (tmp_path / "c.pem").write_bytes(cert_pem(cert))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    )
    pair = load_key_pair(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert pair.certificate == cert
    assert server_options(pair).getContext() is not None


def test_an_encrypted_traditional_key_is_refused_as_encrypted(tmp_path: Path) -> None:
    pki = make_pki()
    key, cert = pki.issue()
    (tmp_path / "c.pem").write_bytes(cert_pem(cert))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TLSError, match="encrypted"):
        load_key_pair(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))


def _bad_files(tmp_path: Path, case: str) -> tuple[str, str | None]:
    pki = make_pki()
    key, leaf = pki.issue()
    other, _ = pki.issue()
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert_pem(leaf))
    key_file.write_bytes(key_pem(key))
    if case == "missing cert":
        cert_file.unlink()
    elif case == "missing key":
        key_file.unlink()
    elif case == "no certificate in cert":
        cert_file.write_bytes(b"hello\n")
    elif case == "no key in key file":
        key_file.write_bytes(cert_pem(leaf))
    elif case == "encrypted key":
        key_file.write_bytes(key_pem(key, b"secret"))
    elif case == "mismatched pair":
        key_file.write_bytes(key_pem(other))
    elif case == "damaged key":
        key_file.write_bytes(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
    elif case == "no key at all":
        return str(cert_file), None
    return str(cert_file), str(key_file)


BAD_CASES = {
    "missing cert": ("--cert:", "cannot read"),
    "missing key": ("--cert-key:", "cannot read"),
    "no certificate in cert": ("--cert:", "no PEM certificate"),
    "no key in key file": ("--cert-key:", "no PEM private key"),
    "encrypted key": ("--cert-key:", "encrypted"),
    "mismatched pair": ("--cert-key:", "does not match"),
    "damaged key": ("--cert-key:", "not a usable private key"),
    "no key at all": ("--cert:", "add --cert-key"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_unusable_certificate_files_are_refused_naming_the_option(
    tmp_path: Path, case: str
) -> None:
    option, words = BAD_CASES[case]
    cert, key = _bad_files(tmp_path, case)
    with pytest.raises(TLSError) as error:
        load_key_pair(cert, key)
    message = str(error.value)
    assert message.startswith(option)
    assert words in message
    assert "\n" not in message


def _parse_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    options = Options()
    options.environ = {}
    with pytest.raises(SystemExit) as exited:
        options.parseOptions(["--auth", "none", *args])
    assert exited.value.code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--cert-key", "k.pem"], "portproxy: error: --cert-key: needs --cert"),
        (
            ["--cert", "{cert}", "--cert-key", "{key}", "--self-signed"],
            "portproxy: error: --self-signed: cannot be combined with --cert",
        ),
        (
            ["--cert-host", "example.com"],
            "portproxy: error: --cert-host: only used with --self-signed",
        ),
        (["--self-signed", "--cert-host", "a b"], "portproxy: error: --cert-host: 'a b'"),
        (["--self-signed", "--cert-host", ","], "portproxy: error: --cert-host: give"),
        (["--cert", "{dir}/nothing.pem"], "portproxy: error: --cert: "),
    ],
)
def test_conflicting_or_bad_tls_options_stop_parsing_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    cert, key, _ = write_pair(tmp_path)
    args = [a.format(cert=cert, key=key, dir=tmp_path) for a in args]
    assert _parse_error(args, capsys).startswith(expected)


def test_tls_options_reach_the_config(tmp_path: Path) -> None:
    cert, key, _ = write_pair(tmp_path)
    options = Options()
    options.environ = {}
    options.parseOptions(["--auth", "none", "--cert", cert, "--cert-key", key])
    assert (options.config.cert, options.config.cert_key) == (cert, key)
    assert not options.config.self_signed
    options = Options()
    options.environ = {}
    options.parseOptions(
        ["--auth", "none", "--self-signed", "--cert-host", "b.test,10.0.0.1"]
        + ["--cert-host", "c.test"]
    )
    assert options.config.self_signed
    assert options.config.cert_hosts == ("b.test", "10.0.0.1", "c.test")


def test_self_signed_defaults_to_localhost() -> None:
    options = Options()
    options.environ = {}
    options.parseOptions(["--auth", "none", "--self-signed"])
    assert options.config.cert_hosts == ("localhost",)


def _twist(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PASSWORD", "HASHED_PASSWORD")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "twisted", "portproxy", "--auth", "none", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("case", "status"),
    [("mismatched pair", 64), ("missing key", 64), ("unwritable data dir", 1)],
)
def test_bad_certificate_options_stop_twist_portproxy_with_one_line(
    tmp_path: Path, case: str, status: int
) -> None:
    if case == "unwritable data dir":
        (tmp_path / "file").write_text("not a directory")
        args = ["--self-signed", "--data-dir", str(tmp_path / "file" / "data")]
        named = b"portproxy: error: --data-dir: "
    else:
        cert, key = _bad_files(tmp_path, case)
        assert key is not None
        args = ["--cert", cert, "--cert-key", key]
        named = b"portproxy: error: --cert-key: "
    out = _twist([*args, "--listen", "tcp:0:interface=127.0.0.1"], tmp_path)
    assert out.returncode == status
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(named)
    assert b"Traceback" not in out.stderr


# -- --cert-host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "hosts"),
    [
        (["localhost"], ("localhost",)),
        (["a.test,b.test", "c.test"], ("a.test", "b.test", "c.test")),
        (["A.Test., a.test"], ("a.test",)),
        (["127.0.0.1,[::1]", "::0:1"], ("127.0.0.1", "::1")),
        (["*.dev.example.com"], ("*.dev.example.com",)),
        (["bücher.example"], ("xn--bcher-kva.example",)),
        (["a.test,"], ("a.test",)),
    ],
)
def test_cert_hosts_are_split_normalised_and_deduplicated(
    values: list[str], hosts: tuple[str, ...]
) -> None:
    assert parse_cert_hosts(values) == hosts


@pytest.mark.parametrize(
    "value",
    [
        "",
        ",",
        "a b",
        "-bad.test",
        "bad-.test",
        "under_score.test",
        "a..b",
        "*.*.test",
        "a.*.test",
        "*",
        "http://a.test",
        "a.test:443",
        "x" * 64 + ".test",
        "[1.2.3.4",
    ],
)
def test_malformed_cert_hosts_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_cert_hosts([value])


@given(st.lists(st.text(max_size=30), max_size=4))
def test_parsed_cert_hosts_are_stable_and_fit_in_a_certificate(values: list[str]) -> None:
    try:
        hosts = parse_cert_hosts(values)
    except ValueError:
        return
    assert parse_cert_hosts(hosts) == hosts
    assert len(set(hosts)) == len(hosts)
    for host in hosts:
        assert host.isascii() and host == host.lower()


# -- the self-signed pair ---------------------------------------------------------------


def _san(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_self_signed_certificate_names_every_host_with_the_right_san_kind() -> None:
    pair = generate_self_signed(("localhost", "*.dev.test", "127.0.0.1", "::1"), now=NOW)
    assert _san(pair.certificate) == [
        x509.DNSName("localhost"),
        x509.DNSName("*.dev.test"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = pair.certificate
    assert cert.issuer == cert.subject
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    cert.verify_directly_issued_by(cert)


def test_self_signed_pair_is_kept_with_a_private_key_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, new = load_or_create_self_signed(str(data), ("localhost",), now=NOW)
    assert new
    assert stat.S_IMODE((data / SELF_SIGNED_KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    again, new = load_or_create_self_signed(str(data), ("localhost",), now=NOW)
    assert not new
    assert fingerprint(again.certificate) == fingerprint(first.certificate)
    assert key_pem(again.key) == key_pem(first.key)


@pytest.mark.parametrize(
    "change",
    [
        "other hosts",
        "one more host",
        "near its end",
        "not yet valid",
        "damaged cert",
        "key of another",
    ],
)
def test_self_signed_pair_is_made_again_when_it_no_longer_fits(
    tmp_path: Path, change: str
) -> None:
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    first, _ = load_or_create_self_signed(str(tmp_path), hosts, now=NOW)
    now = NOW
    if change == "other hosts":
        hosts = ("dev.test",)
    elif change == "one more host":
        hosts = (*hosts, "::1")
    elif change == "near its end":
        now = first.certificate.not_valid_after_utc - RENEW_BEFORE
    elif change == "not yet valid":
        now = NOW - datetime.timedelta(days=1)
    elif change == "damaged cert":
        (tmp_path / SELF_SIGNED_CERT_FILE).write_bytes(b"garbage")
    elif change == "key of another":
        (tmp_path / SELF_SIGNED_KEY_FILE).write_bytes(
            key_pem(ec.generate_private_key(ec.SECP256R1()))
        )
    pair, new = load_or_create_self_signed(str(tmp_path), hosts, now=now)
    assert new
    assert fingerprint(pair.certificate) != fingerprint(first.certificate)
    assert {str(n.value) for n in _san(pair.certificate)} == set(hosts)
    kept = load_key_pair(
        str(tmp_path / SELF_SIGNED_CERT_FILE), str(tmp_path / SELF_SIGNED_KEY_FILE)
    )
    assert kept.certificate == pair.certificate
    assert stat.S_IMODE((tmp_path / SELF_SIGNED_KEY_FILE).stat().st_mode) == 0o600


def test_host_order_alone_does_not_make_a_new_pair(tmp_path: Path) -> None:
    load_or_create_self_signed(str(tmp_path), ("a.test", "b.test"), now=NOW)
    _, new = load_or_create_self_signed(str(tmp_path), ("b.test", "a.test"), now=NOW)
    assert not new


def test_a_kept_key_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    load_or_create_self_signed(str(tmp_path), ("localhost",), now=NOW)
    os.chmod(tmp_path / SELF_SIGNED_KEY_FILE, 0o644)
    load_or_create_self_signed(str(tmp_path), ("localhost",), now=NOW)
    assert stat.S_IMODE((tmp_path / SELF_SIGNED_KEY_FILE).stat().st_mode) == 0o600


def test_a_data_dir_that_cannot_be_made_is_reported_naming_the_option(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(TLSError, match=r"^--data-dir: "):
        load_or_create_self_signed(str(tmp_path / "file" / "d"), ("localhost",), now=NOW)
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


def test_fingerprint_is_the_colon_separated_sha256_of_the_der() -> None:
    cert = generate_self_signed(("localhost",), now=NOW).certificate
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    text = fingerprint(cert)
    assert text.replace(":", "").lower() == digest
    assert len(text.split(":")) == 32 and text == text.upper()


# -- plain HTTP on a TLS port ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "target", "location"),
    [
        (
            b"localhost:8443",
            b"/proxy/3000/x?y=1",
            b"https://localhost:8443/proxy/3000/x?y=1",
        ),
        (b"3000.dev.test", b"/", b"https://3000.dev.test/"),
        (b"[::1]:8080", b"//twice", b"https://[::1]:8080//twice"),
        (b"localhost:8443", b"http://elsewhere.test/x", b"https://localhost:8443/"),
        (b"localhost:8443", b"*", b"https://localhost:8443/"),
    ],
)
def test_plain_requests_are_sent_to_the_same_url_over_https(
    host: bytes, target: bytes, location: bytes
) -> None:
    assert https_location(host, target) == location


@pytest.mark.parametrize(
    "host",
    [None, b"", b"evil.test/x", b"a.test@evil.test", b"a b", b"a.test:port", b"[::1"],
)
def test_a_plain_request_without_a_usable_host_is_not_redirected(
    host: bytes | None,
) -> None:
    assert https_location(host, b"/") is None

# -*- test-case-name: tests.test_tls -*-
"""TLS for portproxy's listeners: certificates, the self-signed one, and the wrapping.

With C{--cert}/C{--cert-key} or C{--self-signed}, every C{tcp:} and C{tcp6:} listener
serves TLS (L{wants_tls}); C{ssl:} listeners keep their own settings, C{unix:},
C{systemd:} and other endpoint kinds stay plain. The files are checked by the pure
functions here (so that a bad option stops start-up with a line naming it), and
L{ServerTLS} is the thin shell that builds Twisted's C{CertificateOptions} once and wraps
a listener's factory in C{TLSMemoryBIOFactory}. HTTP/2 is offered through ALPN when
Twisted can speak it (the C{h2} package, part of the normal install).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from portproxy.files import write_private_file
from portproxy.routing.hosts import parse_authority

__all__ = [
    "RENEW_BEFORE",
    "SELF_SIGNED_CERT_FILE",
    "SELF_SIGNED_KEY_FILE",
    "SELF_SIGNED_VALIDITY",
    "KeyPair",
    "TLSError",
    "fingerprint",
    "generate_self_signed",
    "https_location",
    "load_key_pair",
    "load_or_create_self_signed",
    "parse_cert_hosts",
    "wants_tls",
]

#: Names of the generated files inside the data directory.
SELF_SIGNED_CERT_FILE = "self-signed-cert.pem"
SELF_SIGNED_KEY_FILE = "self-signed-key.pem"
#: A generated certificate lives this long, and is replaced this long before it ends.
SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)

#: Endpoint kinds that get TLS from C{--cert}/C{--self-signed}.
_TLS_KINDS = frozenset({"tcp", "tcp6"})
_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )?PRIVATE KEY)-----.+?-----END \1-----", re.DOTALL
)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

Host = x509.DNSName | x509.IPAddress


class TLSError(ValueError):
    """A certificate option cannot be used; the message names the option."""


@dataclass(frozen=True)
class KeyPair:
    """A private key, its certificate, and the intermediates that complete the chain."""

    key: PrivateKeyTypes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


def wants_tls(description: str) -> bool:
    """Whether C{--cert}/C{--self-signed} put TLS on this C{--listen} description.

    Only C{tcp:} and C{tcp6:}: C{ssl:} has its own certificate, and a C{unix:} socket or
    a C{systemd:} descriptor is usually behind something that terminates TLS already.
    """
    return description.split(":", 1)[0] in _TLS_KINDS


def fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint as browsers show it (C{AB:CD:...})."""
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER))
    return ":".join(f"{b:02X}" for b in digest.digest())


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1024 * 1024)
    except OSError as e:
        raise TLSError(f"{option}: {path}: cannot read: {e.strerror}") from None


def _public(key: PublicKeyTypes) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _load_key(data: bytes, path: str, option: str) -> PrivateKeyTypes | None:
    block = _KEY_BLOCK.search(data)
    if block is None:
        return None
    if block.group(1).startswith(b"ENCRYPTED"):
        raise TLSError(f"{option}: {path}: the key is encrypted; give an unencrypted key")
    try:
        return serialization.load_pem_private_key(block.group(0), password=None)
    except TypeError:
        raise TLSError(
            f"{option}: {path}: the key is encrypted; give an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise TLSError(f"{option}: {path}: not a usable private key ({e})") from None


def load_key_pair(cert_path: str, key_path: str | None) -> KeyPair:
    """Read C{--cert} (leaf and chain, PEM) and C{--cert-key}; check that they match.

    Without C{key_path} the key must be in the certificate file (one combined PEM).
    The certificate whose public key matches the key is the leaf, whatever its place in
    the file; the others are sent as the chain, in file order.
    """
    data = _read(cert_path, "--cert")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSError(f"--cert: {cert_path}: no PEM certificate in the file") from None
    if key_path is None:
        key = _load_key(data, cert_path, "--cert")
        if key is None:
            raise TLSError(
                f"--cert: {cert_path}: the file holds no private key; add --cert-key"
            )
        key_option, key_path = "--cert", cert_path
    else:
        key = _load_key(_read(key_path, "--cert-key"), key_path, "--cert-key")
        if key is None:
            raise TLSError(f"--cert-key: {key_path}: no PEM private key in the file")
        key_option = "--cert-key"
    public = _public(key.public_key())
    for index, certificate in enumerate(certificates):
        if _public(certificate.public_key()) == public:
            chain = certificates[:index] + certificates[index + 1 :]
            return KeyPair(key, certificate, tuple(chain))
    raise TLSError(
        f"{key_option}: {key_path}: the key does not match the certificate in --cert "
        f"{cert_path}"
    )


def _cert_host(value: str) -> str:
    text = value.strip().lower()
    bracketed = text.startswith("[") and text.endswith("]")
    try:
        return str(ipaddress.ip_address(text[1:-1] if bracketed else text))
    except ValueError:
        pass
    name = text.removesuffix(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{value!r} is not a host name or IP address") from None
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return name


def parse_cert_hosts(values: Iterable[str]) -> tuple[str, ...]:
    """Parse C{--cert-host} values: repeatable, each a comma-separated list.

    Host names are lower-cased (IDNA for non-ASCII), IP addresses canonical, C{*.} is
    allowed as the first label (for a proxy domain); duplicates are dropped, order kept.
    Raises C{ValueError} for anything else, or for no host at all.
    """
    hosts: list[str] = []
    for value in values:
        for piece in value.split(","):
            if piece.strip():
                host = _cert_host(piece)
                if host not in hosts:
                    hosts.append(host)
    if not hosts:
        raise ValueError("give at least one host name or IP address")
    return tuple(hosts)


def _general_name(host: str) -> Host:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate_self_signed(hosts: Iterable[str], *, now: datetime.datetime) -> KeyPair:
    """A new ECDSA P-256 key and a self-signed server certificate naming C{hosts}."""
    names = [_general_name(h) for h in hosts]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, str(names[0].value)[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "portproxy self-signed"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # An hour back, for clients whose clock is a little behind.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(cast(CertificateIssuerPrivateKeyTypes, key), hashes.SHA256())
    )
    return KeyPair(key, certificate)


def _san(certificate: x509.Certificate) -> set[Host]:
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return set()
    return {n for n in extension.value if isinstance(n, x509.DNSName | x509.IPAddress)}


def _reusable(pair: KeyPair, hosts: tuple[str, ...], now: datetime.datetime) -> bool:
    certificate = pair.certificate
    return (
        _san(certificate) == {_general_name(h) for h in hosts}
        and certificate.not_valid_before_utc <= now
        and certificate.not_valid_after_utc - RENEW_BEFORE > now
    )


def load_or_create_self_signed(
    data_dir: str, hosts: tuple[str, ...], *, now: datetime.datetime
) -> tuple[KeyPair, bool]:
    """Reuse the self-signed pair kept in C{data_dir}, or make and keep a new one.

    A kept pair is reused while it names exactly C{hosts} and is more than
    L{RENEW_BEFORE} from its end; otherwise (or if the files are missing or damaged) a
    new one replaces it. Returns the pair and whether it is new.
    """
    cert_path = os.path.join(data_dir, SELF_SIGNED_CERT_FILE)
    key_path = os.path.join(data_dir, SELF_SIGNED_KEY_FILE)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        try:
            pair = load_key_pair(cert_path, key_path)
        except TLSError:
            pair = None
        if pair is not None and _reusable(pair, hosts, now):
            if os.stat(key_path).st_mode & 0o077:
                os.chmod(key_path, 0o600)
            return pair, False
    pair = generate_self_signed(hosts, now=now)
    try:
        if not os.path.isdir(data_dir):
            os.makedirs(data_dir, mode=0o700)
            os.chmod(data_dir, 0o700)  # makedirs' mode is filtered by the umask
        key_pem = pair.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # The key first: a crash between the two leaves a mismatch, which the next
        # start detects and repairs.
        write_private_file(key_path, key_pem)
        write_private_file(
            cert_path, pair.certificate.public_bytes(serialization.Encoding.PEM)
        )
    except OSError as e:
        raise TLSError(
            f"--data-dir: {data_dir}: cannot store the self-signed certificate: "
            f"{e.strerror}"
        ) from None
    return pair, True


def https_location(host: bytes | None, target: bytes) -> bytes | None:
    """Where a plain-HTTP request on a TLS port is sent: the same URL over https.

    C{host} is the request's Host header (its port is the TLS port itself, so it is
    kept); C{None} when there is no usable Host header. A target that is not
    origin-form (C{*}, an absolute URL) goes to C{/}.
    """
    if host is None or parse_authority(host, blanks=False) is None:
        return None
    if not target.startswith(b"/"):
        target = b"/"
    return b"https://" + host + target

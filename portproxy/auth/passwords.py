# -*- test-case-name: tests.test_auth_passwords -*-
"""Where the login password comes from, and how a submitted password is checked.

Sources, first found wins: env C{HASHED_PASSWORD} (an argon2 encoded hash, as
code-server accepts), env C{PASSWORD}, C{--password-file}. With none of them a random
password is generated once and kept in the data directory (mode 0600), so that a restart
does not sign everybody out. A password is never taken from the command line, where it
would show in C{ps}.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import argon2
from argon2 import low_level
from argon2.exceptions import Argon2Error

from portproxy.config import StartupError

__all__ = [
    "GENERATED_PASSWORD_FILE",
    "Credential",
    "resolve_credential",
    "session_key_material",
]

#: Name of the generated password file inside the data directory.
GENERATED_PASSWORD_FILE = "password"

# Session keys derive from the password. A stolen cookie must not make offline guessing
# of the password cheap, so a plain password is stretched once (argon2id at OWASP's
# minimum setting, ~30 ms) with a fixed salt: every instance sharing the password gets
# the same key.
_STRETCH_SALT = b"portproxy session key v1"
_STRETCH_TIME_COST = 2
_STRETCH_MEMORY_KIB = 19456
_STRETCH_PARALLELISM = 1

_ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
# PHC string format; argon2 1.0 hashes have no "v=" field. Salt and hash are unpadded
# standard base64.
_ARGON2_HASH = re.compile(
    r"\$argon2(?:id|i|d)(?:\$v=[0-9]+)?\$m=[0-9]+,t=[0-9]+,p=[0-9]+"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{11,}"
)


@dataclass(frozen=True)
class Credential:
    """The configured password, in the form needed to check a login attempt.

    @ivar kind: C{"argon2"} when C{secret_material} is an encoded argon2 hash,
        C{"plain"} when it is the password itself (UTF-8).
    @ivar source: where it came from, for the log (C{"HASHED_PASSWORD"}, C{"PASSWORD"},
        C{"--password-file"} or C{"generated"}).
    @ivar generated_path: the file holding a generated password, else C{None}.
    """

    kind: Literal["argon2", "plain"]
    secret_material: bytes = field(repr=False)
    source: str
    generated_path: str | None = None

    def check(self, password: str) -> bool:
        """Tell whether C{password} is right, in time independent of how close it is."""
        candidate = password.encode("utf-8", "surrogatepass")
        if self.kind == "plain":
            # Comparing digests also hides the password's length.
            return hmac.compare_digest(
                hashlib.sha256(candidate).digest(),
                hashlib.sha256(self.secret_material).digest(),
            )
        try:
            return bool(argon2.PasswordHasher().verify(self.secret_material, candidate))
        except (Argon2Error, ValueError, TypeError):
            return False


def session_key_material(credential: Credential) -> bytes:
    """The secret that session cookies are signed with (before HKDF).

    A configured hash is used as it is (it already embeds a slow hash of the password);
    a plain password is stretched with argon2id and a fixed salt.
    """
    if credential.kind == "argon2":
        return credential.secret_material
    return _stretch(credential.secret_material)


@lru_cache(maxsize=8)
def _stretch(password: bytes) -> bytes:
    return low_level.hash_secret_raw(
        password,
        _STRETCH_SALT,
        time_cost=_STRETCH_TIME_COST,
        memory_cost=_STRETCH_MEMORY_KIB,
        parallelism=_STRETCH_PARALLELISM,
        hash_len=32,
        type=low_level.Type.ID,
    )


def resolve_credential(
    *, environ: Mapping[str, str], password_file: str | None, data_dir: str
) -> Credential:
    """Find the password, first source found wins; generate one if there is none.

    An empty environment variable counts as unset. Raises L{StartupError} naming the
    variable or option when a source is present but unusable.
    """
    hashed = environ.get("HASHED_PASSWORD", "")
    if hashed:
        return Credential("argon2", _check_hash(hashed.strip()), "HASHED_PASSWORD")
    plain = environ.get("PASSWORD", "")
    if plain:
        return Credential("plain", _encode(plain, "PASSWORD"), "PASSWORD")
    if password_file is not None:
        text = _read_password_file(password_file, "--password-file")
        return Credential("plain", _encode(text, "--password-file"), "--password-file")
    path = os.path.join(data_dir, GENERATED_PASSWORD_FILE)
    text = _load_or_generate(path)
    return Credential("plain", _encode(text, path), "generated", generated_path=path)


def _check_hash(value: str) -> bytes:
    if not value.startswith(_ARGON2_PREFIXES):
        raise StartupError(
            "HASHED_PASSWORD must be an argon2 encoded hash ('$argon2id$v=19$...'); "
            "use PASSWORD for a plain password"
        )
    try:
        if not _ARGON2_HASH.fullmatch(value):
            raise ValueError(value)
        raw = value.encode("ascii")
        argon2.extract_parameters(value)
    except (Argon2Error, ValueError):
        raise StartupError("HASHED_PASSWORD is not a well-formed argon2 hash") from None
    return raw


def _encode(text: str, where: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise StartupError(f"{where}: the password is not valid UTF-8") from None


def _read_password_file(path: str, option: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(64 * 1024)
    except OSError as e:
        raise StartupError(f"{option} {path}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StartupError(f"{option} {path}: the password is not valid UTF-8") from None
    text = text.rstrip("\r\n")
    if not text:
        raise StartupError(f"{option} {path}: the file is empty")
    return text


def _load_or_generate(path: str) -> str:
    if os.path.exists(path):
        return _read_password_file(path, "generated password file")
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
            os.chmod(directory, 0o700)  # makedirs' mode is filtered by the umask
        password = secrets.token_urlsafe(18)
        _write_new(path, password)
    except FileExistsError:
        # Another instance sharing the data dir won the race: use its password.
        pass
    except OSError as e:
        raise StartupError(
            f"--data-dir {directory}: cannot store the generated password: {e.strerror}"
        ) from None
    return _read_password_file(path, "generated password file")


def _write_new(path: str, password: str) -> None:
    """Write C{password} to C{path} (mode 0600), atomically; fail if C{path} exists."""
    temporary = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
            f.flush()
            os.fsync(f.fileno())
        # link() never replaces an existing file, unlike rename(): first writer wins.
        os.link(temporary, path)
    finally:
        os.unlink(temporary)

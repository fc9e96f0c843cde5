"""Password sources, their precedence, and the password check."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from portproxy.auth.passwords import (
    Credential,
    resolve_credential,
    session_key_material,
)
from portproxy.config import StartupError

# Cheap parameters: verification reads them from the hash, so tests stay fast.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def resolve(
    tmp_path: Path,
    environ: dict[str, str] | None = None,
    password_file: str | None = None,
) -> Credential:
    return resolve_credential(
        environ=environ or {},
        password_file=password_file,
        data_dir=str(tmp_path / "data"),
    )


def test_hashed_password_from_argon2_hasher_is_accepted(tmp_path: Path) -> None:
    credential = resolve(tmp_path, {"HASHED_PASSWORD": FAST.hash("s3cret")})
    assert credential.kind == "argon2"
    assert credential.source == "HASHED_PASSWORD"
    assert credential.check("s3cret")


@pytest.mark.parametrize("wrong", ["s3cret ", "S3cret", "", "s3cre", "s3cret\n"])
def test_hashed_password_refuses_a_wrong_password(tmp_path: Path, wrong: str) -> None:
    credential = resolve(tmp_path, {"HASHED_PASSWORD": FAST.hash("s3cret")})
    assert not credential.check(wrong)


def test_default_argon2id_hash_as_code_server_writes_it_is_accepted(
    tmp_path: Path,
) -> None:
    hashed = PasswordHasher().hash("pw")
    assert hashed.startswith("$argon2id$")
    assert resolve(tmp_path, {"HASHED_PASSWORD": hashed}).check("pw")


@pytest.mark.parametrize(
    "value",
    [
        "my-super-secure-token",  # code-server's legacy SHA-256 form
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
        "$2b$12$abcdefghijklmnopqrstuu",  # bcrypt
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$notbase64!$x",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA\u00e9",
    ],
)
def test_non_argon2_hashed_password_is_a_startup_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(StartupError, match="HASHED_PASSWORD"):
        resolve(tmp_path, {"HASHED_PASSWORD": value})


def test_argon2_version_16_hash_is_accepted(tmp_path: Path) -> None:
    from argon2 import low_level

    hashed = low_level.hash_secret(
        b"pw", b"saltsaltsalt", 1, 8, 1, 16, low_level.Type.I, version=16
    ).decode()
    assert resolve(tmp_path, {"HASHED_PASSWORD": hashed}).check("pw")


def test_hashed_password_wins_over_password_and_file(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\n")
    credential = resolve(
        tmp_path,
        {"HASHED_PASSWORD": FAST.hash("hashed"), "PASSWORD": "plain"},
        str(pw_file),
    )
    assert credential.check("hashed")
    assert not credential.check("plain")
    assert not credential.check("from-file")


def test_password_env_wins_over_file(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\n")
    credential = resolve(tmp_path, {"PASSWORD": "plain"}, str(pw_file))
    assert (credential.kind, credential.source) == ("plain", "PASSWORD")
    assert credential.check("plain")
    assert not credential.check("from-file")


def test_empty_environment_variables_count_as_unset(tmp_path: Path) -> None:
    credential = resolve(tmp_path, {"HASHED_PASSWORD": "", "PASSWORD": "plain"})
    assert credential.source == "PASSWORD"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\n\n"])
def test_password_file_trailing_newline_is_ignored(tmp_path: Path, ending: str) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_bytes(b"correct horse" + ending.encode())
    credential = resolve(tmp_path, password_file=str(pw_file))
    assert credential.source == "--password-file"
    assert credential.check("correct horse")
    assert not credential.check("correct horse\n")


def test_password_file_keeps_inner_and_leading_spaces(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("  two  words \n")
    assert resolve(tmp_path, password_file=str(pw_file)).check("  two  words ")


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_empty_password_file_is_an_error_naming_the_option(
    tmp_path: Path, content: bytes
) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_bytes(content)
    with pytest.raises(StartupError, match="--password-file"):
        resolve(tmp_path, password_file=str(pw_file))


def test_missing_password_file_is_an_error_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="--password-file"):
        resolve(tmp_path, password_file=str(tmp_path / "absent"))


def test_non_utf8_password_file_is_an_error(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_bytes(b"\xff\xfe\n")
    with pytest.raises(StartupError, match="--password-file"):
        resolve(tmp_path, password_file=str(pw_file))


def test_generated_password_is_stored_with_mode_0600_and_reused(
    tmp_path: Path,
) -> None:
    first = resolve(tmp_path)
    assert first.source == "generated"
    assert first.generated_path == str(tmp_path / "data" / "password")
    path = Path(first.generated_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    password = path.read_text().rstrip("\n")
    assert len(password) >= 20
    assert first.check(password)
    second = resolve(tmp_path)
    assert second.check(password)
    assert second.secret_material == first.secret_material
    assert [p.name for p in path.parent.iterdir()] == ["password"]  # no temp files left


def test_generated_passwords_differ_between_data_dirs(tmp_path: Path) -> None:
    one = resolve(tmp_path / "a")
    two = resolve(tmp_path / "b")
    assert one.secret_material != two.secret_material


def test_unwritable_data_dir_is_an_error_naming_the_option(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StartupError, match="--data-dir"):
        resolve_credential(environ={}, password_file=None, data_dir=str(blocker / "x"))


def test_password_file_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="--password-file"):
        resolve(tmp_path, password_file=str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_password_file_is_an_error(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("x\n")
    pw_file.chmod(0)
    with pytest.raises(StartupError, match="--password-file"):
        resolve(tmp_path, password_file=str(pw_file))


def test_a_corrupt_hash_check_returns_false_instead_of_raising() -> None:
    credential = Credential("argon2", b"$argon2id$garbage", "HASHED_PASSWORD")
    assert credential.check("anything") is False


@pytest.mark.parametrize("candidate", ["pw", "pw2", "", "p", "\udcff"])
def test_plain_check_matches_only_the_exact_password(candidate: str) -> None:
    credential = Credential("plain", b"pw", "PASSWORD")
    assert credential.check(candidate) is (candidate == "pw")


def test_session_key_depends_on_the_password_and_not_on_the_source() -> None:
    a = session_key_material(Credential("plain", b"pw", "PASSWORD"))
    b = session_key_material(Credential("plain", b"pw", "--password-file"))
    c = session_key_material(Credential("plain", b"pw2", "PASSWORD"))
    assert a == b != c
    assert b"pw" not in a


def test_session_key_of_a_hash_is_the_hash_itself() -> None:
    hashed = FAST.hash("pw").encode()
    assert session_key_material(Credential("argon2", hashed, "HASHED_PASSWORD")) == hashed

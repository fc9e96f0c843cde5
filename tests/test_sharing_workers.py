"""Sharing under C{--workers 2}: a change made outside reaches every worker within 2 s.

The state is changed from this process, as the C{share} and C{token} commands do, with
keys derived from the same password; the workers are real processes behind one
listener, each with its own copy of the state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater
from twisted.logger import Logger

from portproxy.auth.passwords import Credential, session_key_material
from portproxy.sharing.state import SharingState
from tests.support import Recorder, free_port, get, get_reactor, parse_response, raw_request

PASSWORD = "workers sharing password"


async def _status(port: int, path: bytes, headers: bytes = b"") -> int:
    return parse_response(await raw_request(port, get(path, headers=headers)))[0]


async def _sleep(seconds: float) -> None:
    await deferLater(get_reactor(), seconds, lambda: None)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twisted",
            "portproxy",
            "--workers",
            "2",
            "--auth",
            "password",
            "--access-log",
            "off",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--data-dir",
            str(data_dir),
        ],
        env={**os.environ, "PASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield port, data_dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest_twisted.ensureDeferred
async def test_links_and_tokens_made_and_revoked_outside_reach_every_worker_in_2_s(
    workers: tuple[int, Path], upstream: Any
) -> None:
    port, data_dir = workers
    up = upstream(Recorder())
    for _ in range(200):  # the supervisor and its workers start
        try:
            if await _status(port, b"/healthz") == 200:
                break
        except Exception:
            pass
        await _sleep(0.05)
    else:
        raise AssertionError("portproxy --workers 2 never answered")
    material = session_key_material(Credential("plain", PASSWORD.encode(), "PASSWORD"))
    state = SharingState(str(data_dir), material, clock=get_reactor(), log=Logger())
    share, link = state.create_share(port=up.port)
    token, secret = state.create_token(name="ci", ports=[up.port])
    await _sleep(2.0)
    bearer = f"Authorization: Bearer {secret}\r\n".encode()
    target = b"/proxy/%d/" % up.port
    # Each request a new connection: the kernel spreads them over both workers.
    assert {await _status(port, target, bearer) for _ in range(12)} == {200}
    raw = await raw_request(port, get(b"/.portproxy/share/" + link.encode()))
    status, headers, _ = parse_response(raw)
    assert status == 302
    grant = b"Cookie: " + headers[b"set-cookie"][0].split(b";")[0] + b"\r\n"
    assert {await _status(port, target, grant) for _ in range(12)} == {200}
    state.revoke_share(share.id)
    state.revoke_token(token.id)
    await _sleep(2.0)
    assert {await _status(port, target, bearer) for _ in range(12)} == {401}
    assert {await _status(port, target, grant) for _ in range(12)} == {401}
    state.set_port(up.port, access="public")
    await _sleep(2.0)
    assert {await _status(port, target) for _ in range(12)} == {200}

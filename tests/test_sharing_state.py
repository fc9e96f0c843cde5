"""The sharing state file: validation, the 2 s rule between processes, safe writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger

from portproxy.sharing.access import Verdict
from portproxy.sharing.state import (
    DEFAULT_SHARE_TTL,
    LAST_USED_INTERVAL,
    LinkRefusal,
    SharingState,
)


class Events:
    """A log observer that keeps each event's format and fields."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def formats(self) -> list[str]:
        return [str(e.get("log_format")) for e in self.events]


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_000_000)
    return clock


def _state(path: Path, clock: Clock, key: bytes = b"key", **kw: Any) -> SharingState:
    events = Events()
    state = SharingState(
        str(path), key, clock=clock, log=Logger(observer=cast(ILogObserver, events)), **kw
    )
    state.events = events  # type: ignore[attr-defined]
    return state


def test_a_change_reaches_another_process_within_two_seconds_without_a_stat_per_call(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = _state(tmp_path, clock), _state(tmp_path, clock)
    assert reader.access(3000) == "private"
    writer.set_port(3000, access="public")
    stats = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    for _ in range(100):
        assert reader.access(3000) == "private"  # not looked at yet: < 1 s
    assert stats == []
    clock.advance(1.0)
    assert reader.access(3000) == "public"
    assert len(stats) == 1


def test_run_time_access_overrides_public_port_and_labels_set_and_clear(
    tmp_path: Path, clock: Clock
) -> None:
    state = _state(tmp_path, clock, public_ports=[8000])
    assert state.access(8000) == "public" and state.access(8001) == "private"
    state.set_port(8000, access="private", label="  docs  ")
    assert (state.access(8000), state.label(8000)) == ("private", "docs")
    state.set_port(8000, access="public")  # the label stays
    assert state.label(8000) == "docs"
    state.set_port(8000, label=None)
    assert state.label(8000) is None
    assert state.configured_ports() == {8000: ("public", None)}


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda s: s.set_port(0, access="public"), "port"),
        (lambda s: s.set_port(80, access="open"), "access"),
        (lambda s: s.set_port(80, label="x" * 65), "label"),
        (lambda s: s.set_port(80, label=3), "label"),
        (lambda s: s.create_share(port=70000), "port"),
        (lambda s: s.create_share(port=80, path="x"), "path"),
        (lambda s: s.create_share(port=80, methods=["G T"]), "methods"),
        (lambda s: s.create_share(port=80, ttl=0), "ttl"),
        (lambda s: s.create_share(port=80, ttl="1h"), "ttl"),
        (lambda s: s.create_share(port=80, ttl=31 * 86400), "ttl"),
        (lambda s: s.create_share(port=80, route="elsewhere"), "route"),
        (lambda s: s.create_token(name=" ", ports=[80]), "name"),
        (lambda s: s.create_token(name="ci", ports=[]), "ports"),
        (lambda s: s.create_token(name="ci", ports=[80], ttl=-1), "ttl"),
        (lambda s: s.create_token(name="ci", ports=[80], path="/a/../b"), "path"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
    tmp_path: Path, clock: Clock, call: Any, field: str
) -> None:
    state = _state(tmp_path, clock)
    with pytest.raises(ValueError, match=f"^{field}: "):
        call(state)
    assert not (tmp_path / "sharing.json").exists()


def test_a_share_lives_24_hours_by_default_and_at_most_max_share_ttl(
    tmp_path: Path, clock: Clock
) -> None:
    state = _state(tmp_path, clock)
    share, _ = state.create_share(port=80)
    assert share.expires - share.created == DEFAULT_SHARE_TTL
    short = _state(tmp_path, clock, max_share_ttl=3600)
    share, _ = short.create_share(port=80)
    assert share.expires - share.created == 3600
    with pytest.raises(ValueError, match="at most 1h"):
        short.create_share(port=80, ttl=3601)


def test_links_open_until_revoked_or_expired(tmp_path: Path, clock: Clock) -> None:
    state = _state(tmp_path, clock)
    share, link = state.create_share(port=80, ttl=60)
    assert state.open_link(link) == share
    assert state.shares() == [share]
    clock.advance(60)
    with pytest.raises(LinkRefusal) as refused:
        state.open_link(link)
    assert refused.value.status == 410
    assert state.shares() == []
    other, link = state.create_share(port=80)
    # Writing prunes what has expired.
    assert [
        s["id"] for s in json.loads((tmp_path / "sharing.json").read_text())["shares"]
    ] == [other.id]
    assert state.revoke_share(other.id) is True
    assert state.revoke_share(other.id) is False
    with pytest.raises(LinkRefusal):
        state.open_link(link)


def test_tokens_are_stored_as_hashes_and_their_last_use_written_once_a_minute(
    tmp_path: Path, clock: Clock
) -> None:
    state = _state(tmp_path, clock)
    token, secret = state.create_token(name="ci", ports=[80], ttl=3600)
    text = (tmp_path / "sharing.json").read_text()
    assert secret not in text and secret[4:] not in text
    assert state.check_token(secret, 80, b"/", b"GET") is Verdict.ALLOW
    first = os.stat(tmp_path / "sharing.json").st_mtime_ns
    used = clock.seconds()
    clock.advance(5)
    assert state.check_token(secret, 80, b"/", b"GET") is Verdict.ALLOW
    # Not written again within the minute, yet listed with the latest use.
    assert os.stat(tmp_path / "sharing.json").st_mtime_ns == first
    assert (
        json.loads((tmp_path / "sharing.json").read_text())["tokens"][0]["last_used"]
        == used
    )
    assert state.tokens()[0].last_used == used + 5
    clock.advance(LAST_USED_INTERVAL)
    assert state.check_token(secret, 80, b"/", b"GET") is Verdict.ALLOW
    stored = json.loads((tmp_path / "sharing.json").read_text())["tokens"][0]
    assert stored["last_used"] == clock.seconds()
    assert state.check_token(secret, 81, b"/", b"GET") is Verdict.FORBIDDEN
    assert state.check_token(secret + "x", 80, b"/", b"GET") is Verdict.INVALID
    clock.advance(3600)
    assert state.check_token(secret, 80, b"/", b"GET") is Verdict.INVALID
    assert state.tokens() == []
    assert state.revoke_token(token.id) is True  # still in the file until a write


def test_another_key_checks_nothing_made_under_the_first(
    tmp_path: Path, clock: Clock
) -> None:
    state = _state(tmp_path, clock, key=b"old password")
    share, link = state.create_share(port=80)
    _, secret = state.create_token(name="ci", ports=[80])
    _, cookie = state.grant_cookie(share)
    changed = _state(tmp_path, clock, key=b"new password")
    with pytest.raises(LinkRefusal) as refused:
        changed.open_link(link)
    assert refused.value.status == 403
    assert changed.check_token(secret, 80, b"/", b"GET") is Verdict.INVALID
    assert changed.check_grant(cookie, 80, b"/", b"GET") is Verdict.INVALID


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"version": 2}',
        b'{"version": 1, "shares": [{"id": 1}]}',
        b"\xff\xfe",
        b'{"version": 1, "ports": {"x": {}}}',
        # Review 15: nesting deeper than the parser's recursion, non-finite numbers.
        b"[" * 100_000,
        b'{"version": 1, "shares": [{"id": "0123456789abcdef", "port": 80, "path": "/",'
        b' "methods": null, "route": "proxy", "created": 1, "expires": NaN}]}',
        b'{"version": 1, "tokens": [{"id": "a", "name": "n", "ports": [80], "path": "/",'
        b' "methods": null, "created": 1, "expires": Infinity, "hash": "'
        + b"0" * 64
        + b'"}]}',
    ],
)
def test_a_corrupt_file_is_logged_treated_as_empty_and_kept_aside(
    tmp_path: Path, clock: Clock, content: bytes
) -> None:
    (tmp_path / "sharing.json").write_bytes(content)
    state = _state(tmp_path, clock, public_ports=[5000])
    assert any("corrupt" in f for f in state.events.formats())  # type: ignore[attr-defined]
    assert state.shares() == [] and state.tokens() == []
    assert state.access(5000) == "public"
    state.set_port(80, access="public")
    assert (tmp_path / "sharing.json.corrupt").read_bytes() == content
    assert _state(tmp_path, clock).access(80) == "public"


def test_a_file_that_turns_corrupt_under_a_running_instance_empties_its_state(
    tmp_path: Path, clock: Clock
) -> None:
    state = _state(tmp_path, clock)
    state.set_port(80, access="public")
    (tmp_path / "sharing.json").write_bytes(b"[" * 100_000)
    clock.advance(5)
    assert state.access(80) == "private"  # no stale state, no exception
    assert any("corrupt" in f for f in state.events.formats())  # type: ignore[attr-defined]


def test_a_method_limited_scope_is_told_apart_and_never_opens_a_websocket(
    tmp_path: Path, clock: Clock
) -> None:
    state = _state(tmp_path, clock)
    _, read_only = state.create_token(name="ro", ports=[80], methods=["GET"])
    _, every = state.create_token(name="rw", ports=[80])
    assert state.check_token(read_only, 80, b"/", b"GET") is Verdict.ALLOW_LIMITED
    assert state.check_token(every, 80, b"/", b"GET") is Verdict.ALLOW
    assert state.check_token(read_only, 80, b"/", b"GET", upgrade=True) is (
        Verdict.FORBIDDEN
    )
    assert state.check_token(every, 80, b"/", b"GET", upgrade=True) is Verdict.ALLOW
    share, _ = state.create_share(port=80, methods=["GET"])
    _, cookie = state.grant_cookie(share)
    assert state.check_grant(cookie, 80, b"/", b"GET") is Verdict.ALLOW_LIMITED
    assert state.check_grant(cookie, 80, b"/", b"GET", upgrade=True) is Verdict.FORBIDDEN
    assert Verdict.ALLOW.allowed and Verdict.ALLOW_LIMITED.allowed
    assert not Verdict.FORBIDDEN.allowed and not Verdict.INVALID.allowed


def test_an_unreadable_file_is_logged_and_treated_as_empty(
    tmp_path: Path, clock: Clock
) -> None:
    (tmp_path / "sharing.json").mkdir()  # reading it fails, even as root
    state = _state(tmp_path, clock)
    assert any("cannot be read" in f for f in state.events.formats())  # type: ignore[attr-defined]
    assert state.access(80) == "private"


def test_the_file_is_0600_in_a_0700_folder_and_never_half_written(
    tmp_path: Path, clock: Clock
) -> None:
    data_dir = tmp_path / "new"
    state = _state(data_dir, clock)
    state.create_token(name="ci", ports=[80])
    assert os.stat(data_dir).st_mode & 0o777 == 0o700
    assert os.stat(data_dir / "sharing.json").st_mode & 0o777 == 0o600
    assert sorted(os.listdir(data_dir)) == ["sharing.json", "sharing.lock"]


def test_writers_in_other_processes_do_not_lose_each_others_changes(
    tmp_path: Path,
) -> None:
    """The lock makes each change a read-modify-write of the latest file."""
    script = (
        "import sys\n"
        "from twisted.internet.task import Clock\n"
        "from twisted.logger import Logger\n"
        "from portproxy.sharing.state import SharingState\n"
        "s = SharingState(sys.argv[1], b'k', clock=Clock(), log=Logger())\n"
        "for i in range(20):\n"
        "    s.create_token(name=sys.argv[2] + str(i), ports=[80])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name])
        for name in ("a", "b", "c")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    names = {
        t["name"] for t in json.loads((tmp_path / "sharing.json").read_text())["tokens"]
    }
    assert len(names) == 60

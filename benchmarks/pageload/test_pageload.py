"""Checks of the page-load benchmark's own parts, on 127.0.0.1 without namespaces.

Run: python -m pytest -q benchmarks/pageload/test_pageload.py -p no:randomly
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import client  # noqa: E402
import genpage  # noqa: E402

MODULES = 60


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("page")
    genpage.generate(out, MODULES, seed=3)
    return out


def serve(page: Path) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "origin.py"), str(page), str(port), "127.0.0.1"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "origin listening ..."
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def origin(page: Path) -> Iterator[int]:
    yield from serve(page)


def manifest_of(page: Path) -> dict[str, dict[str, object]]:
    files: dict[str, dict[str, object]] = json.loads((page / "manifest.json").read_text())[
        "files"
    ]
    return files


def test_same_seed_gives_the_same_page(tmp_path: Path, page: Path) -> None:
    genpage.generate(tmp_path, MODULES, seed=3)
    assert manifest_of(tmp_path) == manifest_of(page)


def test_module_sizes_stay_within_5_to_50_kib(page: Path) -> None:
    sizes = [int(str(v["size"])) for k, v in manifest_of(page).items() if k.endswith(".js")]
    assert len(sizes) == MODULES
    assert min(sizes) >= genpage.MIN_SIZE
    assert max(sizes) <= genpage.MAX_SIZE


def test_source_compresses_like_real_code_not_like_filler(page: Path) -> None:
    files = [page / k for k in manifest_of(page) if k.endswith(".js")]
    raw = sum(f.stat().st_size for f in files)
    packed = sum(len(gzip.compress(f.read_bytes(), 6)) for f in files)
    assert 2.8 < raw / packed < 5


def test_modules_are_found_level_by_level_through_imports(page: Path) -> None:
    levels = json.loads((page / "manifest.json").read_text())["levels"]
    html = (page / "index.html").read_bytes()
    assert len(client.SCRIPT_RE.findall(html)) == 3
    assert levels >= 4


def test_h1_loader_fetches_every_module_with_six_connections_at_most(
    page: Path, origin: int
) -> None:
    p = client.Page(base="/", manifest=manifest_of(page))
    result = asyncio.run(client.load_h1(f"http://127.0.0.1:{origin}/index.html", p))
    assert result["errors"] == []
    assert result["files"] == MODULES + 1
    assert result["encodings"] == {"identity": MODULES + 1}


def test_h1_loader_reports_a_module_whose_content_differs(
    page: Path, tmp_path: Path
) -> None:
    altered = tmp_path / "page"
    subprocess.run(["cp", "-r", str(page), str(altered)], check=True)
    victim = next(p for p in (altered / "src").rglob("*.js"))
    victim.write_bytes(victim.read_bytes().replace(b"function", b"functioN", 1))
    for port in serve(altered):
        p = client.Page(base="/", manifest=manifest_of(page))
        result = asyncio.run(client.load_h1(f"http://127.0.0.1:{port}/index.html", p))
        assert any("content differs" in e for e in result["errors"])


def test_origin_answers_404_for_a_missing_file(origin: int) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{origin}/src/nothing.js", timeout=5)
    assert info.value.code == 404


def test_bridge_queue_serialises_at_the_rate_then_delays() -> None:
    import link

    class Sink:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def send(self, frame: bytes) -> None:
            self.sent.append(frame)

    sink = Sink()
    d = link.Direction(sink, delay=0.020, rate_bps=8_000_000)  # type: ignore[arg-type]
    now = time.monotonic()
    d.push(b"x" * 1000, now)  # 1 ms on the wire at 8 Mbit/s
    d.push(b"y" * 1000, now)  # queued behind it: leaves at 2 ms
    assert d.due() == pytest.approx(now + 0.021)
    d.flush(now + 0.0215)
    assert sink.sent == [b"x" * 1000]
    d.flush(now + 0.022)
    assert len(sink.sent) == 2


def test_h2_loader_fetches_every_module_through_portproxy_over_tls(
    page: Path, origin: int, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proxy = subprocess.Popen(
        ["twist", "portproxy", "--auth", "none", "--self-signed", "--data-dir",
         str(tmp_path), "--listen", f"tcp:{port}:interface=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "portproxy did not start"
            time.sleep(0.1)
        p = client.Page(base=f"/proxy/{origin}/", manifest=manifest_of(page))
        url = f"https://127.0.0.1:{port}/proxy/{origin}/index.html"
        result = asyncio.run(client.load_h2(url, p))
        assert result["errors"] == []
        assert result["files"] == MODULES + 1
    finally:
        proxy.terminate()
        proxy.wait(10)

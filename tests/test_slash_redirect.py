"""`/proxy/<port>` without the slash: a client that follows redirects keeps its upload.

A 302 lets clients turn a POST into a GET and drop the body (RFC 9110 15.4.3), which is
what code-server's users hit; portproxy answers 308 for every method but GET and HEAD.
This test drives curl, a real client that follows redirects, through a real proxy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.support import Recorder

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed"
)


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-L", *args], capture_output=True, check=False
    )


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest_twisted.ensureDeferred
async def test_upload_of_one_mib_to_the_slashless_url_arrives_byte_exact(
    upstream, proxy, tmp_path, method
) -> None:
    body = os.urandom(1024 * 1024)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    up = upstream(rec := Recorder())
    rec.handler = lambda request: (
        hashlib.sha256(rec.requests[-1]["body"]).hexdigest().encode()
    )
    url = f"http://127.0.0.1:{proxy.port}/proxy/{up.port}?a=1"
    done = await deferToThread(
        _curl, "-X", method, "-H", "Expect:", "--data-binary", f"@{upload}", url
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == hashlib.sha256(body).hexdigest().encode()
    [request] = rec.requests
    assert (request["method"], request["uri"]) == (method.encode(), b"/?a=1")
    assert request["body"] == body


@pytest_twisted.ensureDeferred
async def test_get_to_the_slashless_url_is_redirected_with_302(upstream, proxy) -> None:
    up = upstream(rec := Recorder())
    url = f"http://127.0.0.1:{proxy.port}/proxy/{up.port}"
    done = await deferToThread(
        _curl, "-o", "/dev/null", "-w", "%{http_code} %{num_redirects}", url
    )
    assert done.stdout == b"200 1"
    assert [r["method"] for r in rec.requests] == [b"GET"]

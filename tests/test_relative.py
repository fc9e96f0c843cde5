"""Relative references stay on this server and land where the root-relative path would."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portproxy.routing.relative import relative_reference

# Browsers remove dot segments before they send a path, so none are generated.
_segment = st.text(alphabet="abcXYZ09-._~%", min_size=0, max_size=6).filter(
    lambda s: s not in (".", "..")
)
_paths = st.lists(_segment, min_size=0, max_size=6).map(lambda parts: "/" + "/".join(parts))
# Python's urljoin mishandles empty segments in the base ('//'), which browsers keep;
# the examples above cover the target side of '//'.
_request_paths = st.lists(_segment.filter(bool), min_size=0, max_size=6).map(
    lambda parts: "/" + "/".join(parts)
)


@pytest.mark.parametrize(
    ("request_path", "target", "expected"),
    [
        (b"/", b"/login", b"./login"),
        (b"/proxy/3000", b"/proxy/3000/", b"./../proxy/3000/"),
        (b"/proxy/3000/a/b", b"/login?to=x", b"./../../../login?to=x"),
        (b"/login", b"/", b"./"),
        (b"/x", b"//evil.example/y", b".//evil.example/y"),
    ],
)
def test_relative_reference_examples(
    request_path: bytes, target: bytes, expected: bytes
) -> None:
    assert relative_reference(request_path, target) == expected


@given(
    request_path=_request_paths, target=_paths, prefix=st.sampled_from(["", "/pp", "/a/b"])
)
def test_relative_reference_resolves_to_the_target_under_any_prefix(
    request_path: str, target: str, prefix: str
) -> None:
    # Resolved the way a browser does, against the URL it used (prefix included).
    # Dot segments in the target are resolved by the browser too, so compare with
    # the target resolved on its own.
    base = "http://h" + prefix + request_path
    relative = relative_reference(request_path.encode(), target.encode()).decode()
    resolved = urljoin(base, relative)
    assert resolved == urljoin("http://h" + prefix + "/", "." + target)
    assert resolved.startswith("http://h" + prefix + "/")


def test_relative_reference_refuses_a_target_that_is_not_a_path() -> None:
    with pytest.raises(ValueError):
        relative_reference(b"/", b"http://evil.example/")

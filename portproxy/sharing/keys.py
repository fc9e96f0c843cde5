# -*- test-case-name: tests.test_sharing_pure -*-
"""The keys of share links, grant cookies and token hashes, derived from the password.

Each key is C{HMAC-SHA256(material, label)} with its own label, C{material} being the
session key material (L{portproxy.auth.passwords.session_key_material}): instances that
share the password share the keys, and changing the password revokes every link, grant
and token at once, as it signs out every session.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

__all__ = ["SharingKeys"]

_LINK_LABEL = b"portproxy sharing: share links v1"
_GRANT_LABEL = b"portproxy sharing: grant cookies v1"
_TOKEN_LABEL = b"portproxy sharing: token hashes v1"


def _derive(material: bytes, label: bytes) -> bytes:
    return hmac.new(material, label, hashlib.sha256).digest()


@dataclass(frozen=True)
class SharingKeys:
    """Three independent keys; a value made with one never checks under another."""

    link: bytes = field(repr=False)
    grant: bytes = field(repr=False)
    token: bytes = field(repr=False)

    @classmethod
    def derive(cls, material: bytes) -> SharingKeys:
        """The keys for C{material} (the password's session key material)."""
        if not material:
            raise ValueError("sharing keys need non-empty key material")
        return cls(
            link=_derive(material, _LINK_LABEL),
            grant=_derive(material, _GRANT_LABEL),
            token=_derive(material, _TOKEN_LABEL),
        )

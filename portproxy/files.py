# -*- test-case-name: tests.test_sharing_state -*-
"""Files portproxy keeps in its data dir: written whole, private, and crash-safe.

The self-signed certificate and key, and the sharing state, are replaced through a
temporary file in the same folder (mode 0600), fsync, rename, then an fsync of the
folder, so that a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import os
import secrets

__all__ = ["write_private_file"]


def write_private_file(path: str, content: bytes) -> None:
    """Replace C{path} by a file holding C{content} (mode 0600), never half-written."""
    temporary = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    # The rename itself must survive a crash: fsync the folder that holds it.
    try:
        dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError as e:  # some file systems cannot fsync a folder
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(dir_fd)

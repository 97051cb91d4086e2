"""The one thin adapter through which ``inspect`` reads drives: read-only, by path.

An image file or a block device the operator names is opened ``O_RDONLY`` and read
with ``pread``; nothing is ever written, locked or re-read by the kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fdffd.errors import UsageError


@dataclass
class ReadOnlySource:
    """A drive or image open for reading: ``size`` bytes, read with ``read``."""

    path: str
    fd: int
    size: int

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        length = min(length, self.size - offset)
        out = bytearray()
        while len(out) < length:
            chunk = os.pread(self.fd, length - len(out), offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ReadOnlySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(path: str) -> ReadOnlySource:
    """Open ``path`` (an image file or a block device) read-only.

    Raises ``UsageError`` naming the path when it cannot be opened or is empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise UsageError(f"cannot open {path!r} for reading: {err.strerror}") from err
    size = os.lseek(fd, 0, os.SEEK_END)
    if size <= 0:
        os.close(fd)
        raise UsageError(f"{path!r} is empty: give an image file or a drive")
    return ReadOnlySource(path, fd, size)

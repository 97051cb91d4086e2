"""Digests of payload files: SHA-256 and BLAKE3 in one read, holes hashed as the zeros they are.

``stream`` reads a file's data regions only (``SEEK_DATA``/``SEEK_HOLE``), hashes the holes as
zeros without reading them, and optionally copies the data to another file in the same pass
(holes stay holes).  An import copies and hashes with it; verify re-hashes with ``hash_file``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import blake3

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


class SourceChanged(Exception):
    """The file is not what it was when it was scanned (shorter, or changed while read)."""


def data_regions(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions below ``size`` that may hold data; the rest are holes,
    which read as zeros.  Without SEEK_DATA support the whole file is one region."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole from here on
                return
            yield pos, size
            return
        if start >= size:
            return
        try:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError:
            end = size
        if end <= start:
            end = size
        yield start, end
        pos = end


def _hash_zeros(hashes: tuple[Any, ...], n: int) -> None:
    view = memoryview(_ZEROS)
    while n > 0:
        k = min(n, _CHUNK)
        for h in hashes:
            h.update(view[:k])
        n -= k


def stream(fd: int, size: int, out: int | None) -> tuple[str, str]:
    """(SHA-256, BLAKE3) of the first ``size`` bytes of ``fd``, read once; copied to ``out``
    when given (holes stay holes).  Raises ``SourceChanged`` when the file is shorter."""
    hashes = (hashlib.sha256(), blake3.blake3())
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    pos = 0
    for start, end in data_regions(fd, size):
        _hash_zeros(hashes, start - pos)
        pos = start
        while pos < end:
            n = os.preadv(fd, [view[: min(_CHUNK, end - pos)]], pos)
            if n == 0:
                raise SourceChanged(f"it ended at byte {pos}")
            for h in hashes:
                h.update(view[:n])
            if out is not None:
                done = 0
                while done < n:
                    done += os.pwrite(out, view[done:n], pos + done)
            pos += n
    _hash_zeros(hashes, size - pos)
    if out is not None:
        os.ftruncate(out, size)
    return hashes[0].hexdigest(), hashes[1].hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a regular file, not following a symlink."""
    # O_NONBLOCK: a FIFO put where a file was must not hang the open (files ignore it)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return st.st_size, stream(fd, st.st_size, None)[0]
    finally:
        os.close(fd)


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


def copy_from(reader: Readable, size: int, out: int) -> tuple[str, str]:
    """(SHA-256, BLAKE3) of the next ``size`` bytes of ``reader`` (a stream, such as a
    bundle's member), written to ``out`` from its start; runs of zeros a chunk long are
    left as holes.  Raises ``SourceChanged`` when the stream ends early."""
    hashes = (hashlib.sha256(), blake3.blake3())
    pos = 0
    while pos < size:
        chunk = reader.read(min(_CHUNK, size - pos))
        n = len(chunk)
        if not n:
            raise SourceChanged(f"it ended at byte {pos} of {size}")
        for h in hashes:
            h.update(chunk)
        if chunk != _ZEROS[:n]:
            view = memoryview(chunk)
            done = 0
            while done < n:
                done += os.pwrite(out, view[done:], pos + done)
        pos += n
    os.ftruncate(out, size)
    return hashes[0].hexdigest(), hashes[1].hexdigest()

"""Donor-data markers: plant recognisable blocks on a device, then prove a wipe removed them.

Each marker is one 4 KiB block (a whole sector on 512- and 4096-byte devices) starting with
``MAGIC`` and the block's own offset, so a marker found at an unexpected offset (aliasing on a
fake drive) is still recognised. All I/O is ``O_DIRECT`` with page-aligned ``mmap`` buffers.
"""

from __future__ import annotations

import mmap
import os

MAGIC = b"DONOR-DATA-MARKER:"
BLOCK = 4096
_SCAN_CHUNK = 8 << 20


def marker_block(offset: int) -> bytes:
    """The marker planted at ``offset``: magic, offset, padding up to a whole block."""
    head = MAGIC + b"%016x\n" % offset
    return (
        head
        + b"donor file contents " * ((BLOCK - len(head)) // 20)
        + b"\n" * ((BLOCK - len(head)) % 20)
    )


def write_markers(device_path: str, size: int, every: int = 1 << 20) -> int:
    """Write a marker block every ``every`` bytes across ``size`` bytes; return how many."""
    if every < BLOCK or every % BLOCK:
        raise ValueError(f"every must be a positive multiple of {BLOCK}")
    buf = mmap.mmap(-1, BLOCK)
    fd = os.open(device_path, os.O_WRONLY | os.O_DIRECT)
    count = 0
    try:
        for offset in range(0, size - BLOCK + 1, every):
            buf.seek(0)
            buf.write(marker_block(offset))
            if os.pwrite(fd, buf, offset) != BLOCK:
                raise OSError(f"short write at {offset} on {device_path}")
            count += 1
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()
    return count


def find_markers(device_path: str, limit_bytes: int) -> list[int]:
    """Offsets in the first ``limit_bytes`` of the device where a marker's magic remains."""
    buf = mmap.mmap(-1, _SCAN_CHUNK)
    fd = os.open(device_path, os.O_RDONLY | os.O_DIRECT)
    found: list[int] = []
    try:
        pos = 0
        while pos < limit_bytes:
            want = min(_SCAN_CHUNK, limit_bytes - pos)
            view = memoryview(buf)[: _round_up(want)]
            try:
                got = os.preadv(fd, [view], pos)
            finally:
                view.release()
            if got <= 0:
                break
            end = min(got, want)
            hit = buf.find(MAGIC, 0, end)
            while hit != -1:
                found.append(pos + hit)
                hit = buf.find(MAGIC, hit + 1, end)
            pos += got
    finally:
        os.close(fd)
        buf.close()
    return found


def _round_up(n: int) -> int:
    return -(-n // BLOCK) * BLOCK

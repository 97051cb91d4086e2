"""The keyed, position-dependent pattern that every pass writes.

The bytes at device offset ``o`` are the AES-128-CTR keystream block number
``o // 16`` under the pass key: they depend on a per-job secret and on their own
position, so aliasing (a wraparound fake), dropped writes, stale caches and bad
flash all show up as mismatches when the surface is read back, and no two drives
or passes carry the same bytes.  AES-CTR runs at several GB/s with AES-NI or the
ARMv8 crypto extensions and releases the GIL, so generation overlaps with I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
#: extra room ``update_into`` wants past the end of its output
SLACK = BLOCK - 1
PATTERN_NAME = "aes128-ctr(offset/16)"

_ZEROS = bytes(16 << 20)
_ZERO_VIEW = memoryview(_ZEROS)  # slicing a memoryview copies nothing


def new_job_key() -> bytes:
    """A fresh random per-job secret.  It never leaves the process."""
    return os.urandom(32)


class Pattern:
    """Generates the keyed fill for one pass."""

    def __init__(self, job_key: bytes, purpose: str) -> None:
        self._key = hmac.new(job_key, purpose.encode(), hashlib.sha256).digest()[:16]
        self.purpose = purpose

    def _encryptor(self, offset: int):  # type: ignore[no-untyped-def]
        if offset % BLOCK:
            raise ValueError(f"pattern offset {offset} is not a multiple of {BLOCK}")
        counter = ((offset // BLOCK) & ((1 << 128) - 1)).to_bytes(16, "big")
        return Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()

    def fill(self, out: memoryview, offset: int, length: int) -> None:
        """Write the pattern for ``[offset, offset+length)`` into ``out[:length]``.

        ``out`` must have at least ``length + SLACK`` bytes (an aligned I/O buffer
        allocated with that slack).  ``length`` must be a multiple of 16."""
        if length % BLOCK:
            raise ValueError(f"pattern length {length} is not a multiple of {BLOCK}")
        enc = self._encryptor(offset)
        done = 0
        while done < length:
            n = min(length - done, len(_ZEROS))
            enc.update_into(_ZERO_VIEW[:n], out[done : done + n + SLACK])
            done += n

    def decode_offset(self, block: bytes | memoryview) -> int | None:
        """The device offset a 16-byte pattern block was generated for, or None.

        A CTR keystream block is ``AES(key, counter)``, so decrypting a block read
        back from the drive names the offset it was written for: an aliased read
        (wraparound) says exactly where its bytes came from.  Offsets are far below
        2**64, so a random block passes the check with probability 2**-64."""
        dec = Cipher(algorithms.AES(self._key), modes.ECB()).decryptor()
        counter = int.from_bytes(dec.update(bytes(block[:BLOCK])) + dec.finalize(), "big")
        if counter >> 60:
            return None
        return counter * BLOCK

    def bytes_at(self, offset: int, length: int) -> bytes:
        """The pattern for ``[offset, offset+length)`` as bytes (small ranges; any alignment)."""
        start = offset - offset % BLOCK
        span = (offset + length - start + BLOCK - 1) // BLOCK * BLOCK
        buf = bytearray(span + SLACK)
        self.fill(memoryview(buf), start, span)
        skip = offset - start
        return bytes(buf[skip : skip + length])


def first_mismatch(a: memoryview, b: memoryview, length: int) -> int:
    """Index of the first differing byte of ``a[:length]`` and ``b[:length]``, or -1."""
    x = np.frombuffer(a, dtype=np.uint8, count=length)
    y = np.frombuffer(b, dtype=np.uint8, count=length)
    if length % 8 == 0:
        if np.array_equal(x.view(np.uint64), y.view(np.uint64)):
            return -1
    elif np.array_equal(x, y):
        return -1
    return int(np.flatnonzero(x != y)[0])


def mismatch_ranges(
    a: memoryview, b: memoryview, length: int, granule: int
) -> list[tuple[int, int]]:
    """Ranges ``(start, length)`` of ``granule``-sized blocks that differ, merged."""
    x = np.frombuffer(a, dtype=np.uint8, count=length)
    y = np.frombuffer(b, dtype=np.uint8, count=length)
    nblocks = length // granule
    diff = (x[: nblocks * granule] != y[: nblocks * granule]).reshape(nblocks, granule).any(axis=1)
    out: list[tuple[int, int]] = []
    for idx in np.flatnonzero(diff):
        start = int(idx) * granule
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + granule)
        else:
            out.append((start, granule))
    tail = length - nblocks * granule
    if tail and not np.array_equal(x[nblocks * granule :], y[nblocks * granule :]):
        out.append((nblocks * granule, tail))
    return out

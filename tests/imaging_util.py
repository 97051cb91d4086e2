"""Test helpers for the pure imaging code: render a layout into a plain image file.

Free space is filled with seeded random bytes, standing in for the keyed fill: a
filesystem writer must never rely on free space being zero.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from fdffd.imaging.types import Bytes, FileData, Fill, VolumeLayout, Zeros

_CHUNK = 1 << 20


def _random_fill(fd: int, offset: int, length: int, rng: random.Random) -> None:
    while length > 0:
        n = min(length, _CHUNK)
        os.pwrite(fd, rng.randbytes(n), offset)
        offset += n
        length -= n


def render_layout(
    layout: VolumeLayout, image: Path, *, seed: int = 1, fill_free: bool = True
) -> None:
    """Write ``layout`` into ``image`` (created, sized ``layout.volume_bytes``).

    Free space and ``Fill`` extents get random bytes when ``fill_free`` (sparse
    holes otherwise, which is much faster for big volumes)."""
    rng = random.Random(seed)
    fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, layout.volume_bytes)
        pos = 0
        for ext in layout.extents:
            assert ext.offset >= pos, f"extents overlap or are unsorted at {ext.offset}"
            assert ext.end <= layout.volume_bytes, f"extent past the volume end at {ext.offset}"
            if fill_free and ext.offset > pos:
                _random_fill(fd, pos, ext.offset - pos, rng)
            src = ext.source
            if isinstance(src, Bytes):
                assert len(src.data) == ext.length
                os.pwrite(fd, src.data, ext.offset)
            elif isinstance(src, Zeros):
                done = 0
                while done < ext.length:
                    n = min(_CHUNK, ext.length - done)
                    os.pwrite(fd, bytes(n), ext.offset + done)
                    done += n
            elif isinstance(src, FileData):
                with open(src.entry.source, "rb") as f:
                    f.seek(src.file_offset)
                    done = 0
                    while done < ext.length:
                        chunk = f.read(min(_CHUNK, ext.length - done))
                        assert chunk, f"{src.entry.source} is shorter than its extent"
                        os.pwrite(fd, chunk, ext.offset + done)
                        done += len(chunk)
            elif isinstance(src, Fill) and fill_free:
                _random_fill(fd, ext.offset, ext.length, rng)
            pos = ext.end
        if fill_free and pos < layout.volume_bytes:
            _random_fill(fd, pos, layout.volume_bytes - pos, rng)
    finally:
        os.close(fd)

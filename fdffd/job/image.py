"""The image pass and its verify, walking one imaging plan.

Writing: each chunk is keyed fill where the plan has gaps, with the partition table,
filesystem metadata and payload bytes laid over it.  Payload bytes are hashed as they
are read from the profile, so a payload file changed since its manifest is caught.

Verifying: metadata and fill are compared byte for byte with the plan; payload bytes
are hashed *from the bytes read off the drive*, file by file (BLAKE3, or SHA-256 for an
older manifest), and checked against the manifest at the end.  A file that misses its
manifest although the drive holds exactly what was written (no mismatching range touches
it) was changed in the profile since its manifest; otherwise the drive damaged it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import blake3

from ..imaging.plan import ImagePlan
from ..imaging.types import Bytes, FileData, Fill, Zeros
from ..pattern import BLOCK, Pattern
from ..payload.manifest import FileRecord
from .surface import FillPlan

_ZERO = bytes(1 << 20)


class PayloadCheck:
    """Per-file digests of the bytes that came from the drive, against the manifest.

    BLAKE3 when every file of the manifest has one (imports by this version on): it
    hashes at several GB/s a core, so hashing the payload read back costs less than reading
    it.  SHA-256 for manifests of older imports."""

    def __init__(self, files: Sequence[FileRecord]) -> None:
        self.algorithm = "blake3" if all(f.blake3 for f in files) else "sha256"
        self.expected = {
            f.path: (f.blake3 if self.algorithm == "blake3" else f.sha256) for f in files
        }
        self.hashes: dict[str, Any] = {}

    def _new(self) -> Any:
        return blake3.blake3() if self.algorithm == "blake3" else hashlib.sha256()

    def update(self, path: str, data: memoryview) -> None:
        h = self.hashes.get(path)
        if h is None:
            h = self.hashes[path] = self._new()
        h.update(data)

    def mismatches(self) -> list[str]:
        """Files whose digest differs from the manifest (empty files hash nothing: fine)."""
        empty = self._new().hexdigest()
        out = []
        for path, want in self.expected.items():
            h = self.hashes.get(path)
            got = h.hexdigest() if h else empty
            if got != want:
                out.append(path)
        return sorted(out)


def _overlaps(a: int, n: int, ranges: list[tuple[int, int]]) -> bool:
    return any(s < a + n and a < s + ln for s, ln in ranges)


class ImageSurface(FillPlan):
    """A ``surface.Plan`` over an ``ImagePlan``: keyed fill in the gaps."""

    def __init__(
        self, plan: ImagePlan, pattern: Pattern, files: Sequence[FileRecord], granule: int = 512
    ) -> None:
        super().__init__(pattern, granule)
        self.plan = plan
        self.read_back = PayloadCheck(files)
        self._fds: dict[str, int] = {}

    def file_ranges(self, path: str) -> list[tuple[int, int]]:
        """Where the plan put ``path``'s bytes on the drive."""
        return [
            (e.offset, e.length)
            for e in self.plan.extents
            if isinstance(e.source, FileData) and e.source.entry.path == path
        ]

    def split_damage(self, bad: list[tuple[int, int]]) -> tuple[list[str], list[str]]:
        """Files whose bytes read off the drive miss the manifest, split in two: those the
        drive holds exactly as written (every chunk matched what the image pass wrote, so the
        profile's file changed since its manifest) and those in mismatching ranges."""
        changed, damaged = [], []
        for path in self.read_back.mismatches():
            ranges = self.file_ranges(path)
            if any(_overlaps(a, n, bad) for a, n in ranges):
                damaged.append(path)
            else:
                changed.append(path)
        return changed, damaged

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, source: str) -> int:
        fd = self._fds.get(source)
        if fd is None:
            fd = self._fds[source] = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def _overlay(
        self, out: memoryview, offset: int, length: int, *, files: bool
    ) -> list[tuple[int, int, FileData]]:
        """Render fill and metadata; file data too when ``files``.  Returns the file
        segments (relative start, length, source) of the chunk."""
        segs = self.plan.segments(offset, length)
        fills = [s for s in segs if isinstance(s.source, Fill)]
        if any((s.offset | s.length) % BLOCK for s in fills):
            self.pattern.fill(out, offset, length)  # the pattern starts on 16-byte blocks
        else:  # only the gaps: a chunk of payload is not generated only to be overwritten
            for s in fills:
                rel = s.offset - offset
                self.pattern.fill(out[rel:], s.offset, s.length)
        file_segs = []
        for s in segs:
            rel = s.offset - offset
            src = s.source
            if isinstance(src, Bytes):
                out[rel : rel + s.length] = src.data
            elif isinstance(src, Zeros):
                done = 0
                while done < s.length:
                    n = min(len(_ZERO), s.length - done)
                    out[rel + done : rel + done + n] = _ZERO[:n]
                    done += n
            elif isinstance(src, FileData):
                file_segs.append((rel, s.length, src))
                if files:
                    self._read_source(out[rel : rel + s.length], src)
        return file_segs

    def _read_source(self, out: memoryview, src: FileData) -> None:
        fd = self._fd(str(src.entry.source))
        done = 0
        while done < len(out):
            n = os.preadv(fd, [out[done:]], src.file_offset + done)
            if n <= 0:
                # the file shrank since its manifest: keep going, the hash check names it
                out[done:] = bytes(len(out) - done)
                break
            done += n

    # surface.Plan --------------------------------------------------------------------

    def render(self, out: memoryview, offset: int, length: int) -> None:
        self._overlay(out, offset, length, files=True)

    def expect(self, scratch: memoryview, offset: int, length: int) -> object:
        return self._overlay(scratch, offset, length, files=False)

    def observe(self, got: memoryview, offset: int, length: int) -> None:
        for seg in self.plan.segments(offset, length):
            if isinstance(seg.source, FileData):
                rel = seg.offset - offset
                self.read_back.update(seg.source.entry.path, got[rel : rel + seg.length])

    def compare(
        self, got: memoryview, expected: memoryview, offset: int, length: int, note: object
    ) -> list[tuple[int, int]]:
        file_segs: list[tuple[int, int, FileData]] = note  # type: ignore[assignment]
        for rel, n, src in file_segs:
            self.read_back.update(src.entry.path, got[rel : rel + n])
            expected[rel : rel + n] = got[rel : rel + n]  # payload is checked by hash
        return self._compare(got, expected, offset, length)

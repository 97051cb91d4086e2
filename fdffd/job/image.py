"""The image pass and its verify, walking one imaging plan.

Writing: each chunk is keyed fill where the plan has gaps, with the partition table,
filesystem metadata and payload bytes laid over it.  Payload bytes are hashed as they
are read from the profile, so a payload file changed since its manifest is caught.

Verifying: metadata and fill are compared byte for byte with the plan; payload bytes
are hashed *from the bytes read off the drive*, file by file (BLAKE3, or SHA-256 for an
older manifest), and checked against the manifest at the end; in a chunk that is not what
the image pass wrote they are also compared with the profile's file, to map the damage.  A
file that misses its manifest although the drive holds exactly what was written (no
mismatching range touches it) was changed in the profile since its manifest; otherwise the
drive damaged it.

A plan with zero free space (``build_plan(free_fill="zeros")``) is written over a keyed
pass (``job/passes.py``): :meth:`ImageSurface.keyed_ranges` says where that pass must go (every
block the image leaves zero), and a range the verify pass finds still holding that pass's
bytes for its own offset is a write the drive dropped (``dropped``), not lost capacity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import blake3

from ..imaging.plan import ImagePlan
from ..imaging.types import Bytes, FileData, Fill, Zeros
from ..pattern import BLOCK, Pattern, mismatch_ranges
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


def _zero_sectors(data: bytes, at: int, sector: int) -> list[tuple[int, int]]:
    """The whole sectors of ``data`` (placed at ``at`` on the drive) that are all zero, as
    absolute ``(start, end)`` ranges."""
    out: list[tuple[int, int]] = []
    zero = bytes(sector)
    first = -(-at // sector) * sector
    view = memoryview(data)
    for pos in range(first, at + len(data) - sector + 1, sector):
        if view[pos - at : pos - at + sector] == zero:
            if out and out[-1][1] == pos:
                out[-1] = (out[-1][0], pos + sector)
            else:
                out.append((pos, pos + sector))
    return out


def round_out(ranges: list[tuple[int, int]], align: int, end: int) -> list[tuple[int, int]]:
    """``(start, end)`` ranges widened to ``align`` boundaries (clipped at ``end``) and merged,
    as ``(offset, length)``."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        a, b = a - a % align, min(end, -(-b // align) * align)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    return [(a, b - a) for a, b in out]


class ImageSurface(FillPlan):
    """A ``surface.Plan`` over an ``ImagePlan``: keyed fill in the gaps."""

    def __init__(
        self, plan: ImagePlan, pattern: Pattern, files: Sequence[FileRecord], granule: int = 512
    ) -> None:
        super().__init__(pattern, granule)
        self.plan = plan
        self.read_back = PayloadCheck(files)
        self._fds: dict[str, int] = {}
        #: the keyed pass written under this image, when its free space is zeros
        self.prior: Pattern | None = None
        #: ranges the verify pass found still holding ``prior`` for their own offset
        self.dropped: list[tuple[int, int]] = []

    @property
    def zero_fill(self) -> bool:
        """Free space and slack are zeros (else keyed fill)."""
        return isinstance(self.plan.free, Zeros)

    def keyed_ranges(self, align: int, sector: int) -> list[tuple[int, int]]:
        """Where the keyed pass under a zero-filled image goes: every ``align``-sized block
        holding a sector the image leaves all zero (free space and slack, zero metadata),
        as ``(offset, length)``, merged.  Every other sector holds metadata or payload that
        the verify pass checks byte for byte or by hash, which proves it as keyed fill would."""
        zero: list[tuple[int, int]] = []
        pos = 0
        for e in self.plan.extents:
            if e.offset > pos:
                zero.append((pos, e.offset))
            if isinstance(e.source, Zeros):
                zero.append((e.offset, e.end))
            elif isinstance(e.source, Bytes):
                zero += _zero_sectors(e.source.data, e.offset, sector)
            pos = max(pos, e.end)
        if pos < self.plan.usable_bytes:
            zero.append((pos, self.plan.usable_bytes))
        return round_out(zero, align, self.plan.usable_bytes)

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
            # a chunk gets here when it is not what the image pass wrote (its digest differs):
            # the payload bytes are compared too, with the profile's file, so that bytes the
            # drive damaged are mapped (and told from a file changed since its manifest,
            # which the drive holds exactly as written)
            self._read_source(expected[rel : rel + n], src)
        bad = self._compare(got, expected, offset, length)
        if bad and self.prior is not None:
            self._dropped_in(got, offset, bad, self.prior)
        return bad

    def _dropped_in(
        self, got: memoryview, offset: int, bad: list[tuple[int, int]], prior: Pattern
    ) -> None:
        """Of the mismatching ``bad`` ranges, the granules that still hold the keyed pass's
        bytes for their own offset (a dropped write) go to ``dropped``; a range holding
        them for another offset is an alias, as for keyed fill."""
        for start, n in bad:
            rel = start - offset
            if start % BLOCK or n % BLOCK:
                continue  # the pattern exists only on 16-byte blocks
            mine = prior.bytes_at(start, n)
            other = mismatch_ranges(got[rel : rel + n], memoryview(mine), n, self.granule)
            pos = 0
            for o, on in [*other, (n, 0)]:
                if o > pos:
                    self.dropped.append((start + pos, o - pos))
                pos = o + on
            for o, _ in other[:4]:
                written_for = prior.decode_offset(got[rel + o : rel + o + BLOCK])
                if written_for is not None and written_for != start + o:
                    self.aliases.append((start + o, written_for))

"""The counterfeit probe: prove, in seconds, how much of a drive really stores data.

In the spirit of f3probe, destructively:

1. Write keyed blocks at spread positions, highest first, so that when two positions
   alias the same flash (a wraparound fake) the lower one, the real address, is
   written last and reads back right while the higher one reads back wrong.
2. Defeat an on-drive write cache: write ``flush`` bytes of keyed data at the start of
   the drive and issue a cache flush, so the probe blocks must come from the flash.
   The flush region also catches aliases: a fake position that wraps onto it reads
   back flush data.
3. Read the blocks back.  A block reads *good* when it holds exactly its own pattern;
   otherwise the bytes say why: EIO, all zeros, all 0xFF, or another position's
   pattern (decrypting a CTR block names the offset it was written for: wraparound).
4. Narrow the boundary between the highest good and the lowest bad block with
   16-way rounds (15 new blocks, one flush, one read each) down to one probe block.

The usable size is the end of the highest block proven good, so it never exceeds the
real capacity.  An isolated unreadable block with good blocks above it is not taken
as a capacity boundary (it looks like bad flash, which the verify pass maps exactly).
The full verify pass that follows is the final word: anything the probe misses (a
cache larger than the flush, an alias onto an unprobed spot) shows up there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..devices.blockdev import aligned_buffer
from ..devices.disk import Disk
from ..errors import DeviceIOError
from ..pattern import SLACK, Pattern

PROBE_BLOCK = 4096
FANOUT = 16
ROUND0_LINEAR = 64
#: the flush region is written in pieces of this size (few large requests)
FLUSH_PIECE = 4 << 20


@dataclass
class ProbeResult:
    announced_bytes: int
    usable_bytes: int
    kind: str | None  # wraparound | dropped-zeros | dropped-ff | io-error | unknown
    seconds: float
    rounds: int
    bytes_written: int
    bytes_read: int
    suspect_blocks: list[int] = field(default_factory=list)  # isolated bad blocks (bad flash?)

    @property
    def counterfeit(self) -> bool:
        return self.usable_bytes < self.announced_bytes


@dataclass(frozen=True)
class _Reading:
    offset: int
    good: bool
    why: str | None = None  # io-error | dropped-zeros | dropped-ff | wraparound | unknown
    alias_of: int | None = None


def _align_down(x: int, a: int) -> int:
    return x - x % a


def round0_positions(announced: int, flush: int, block: int) -> list[int]:
    """Spread positions: a linear grid, powers of two and their neighbours, and the end."""
    last = _align_down(announced - block, block)
    pts: set[int] = {last}
    for i in range(1, ROUND0_LINEAR):
        pts.add(_align_down(announced * i // ROUND0_LINEAR, block))
    k = 1 << 20
    while k < announced:
        for p in (k - block, k, k + k // 2 - block, k + k // 2):
            pts.add(_align_down(p, block))
        k <<= 1
    return sorted(p for p in pts if flush <= p <= last)


def inner_positions(good_hi: int, bad_lo: int, block: int) -> list[int]:
    """Up to ``FANOUT - 1`` aligned positions strictly between two known blocks."""
    lo = good_hi + block
    span = (bad_lo - lo) // block  # candidate blocks lo .. bad_lo - block
    if span <= 0:
        return []
    if span < FANOUT:
        return [lo + i * block for i in range(span)]
    return sorted({lo + (span * i // FANOUT) * block for i in range(1, FANOUT)})


class _Prober:
    def __init__(self, disk: Disk, job_key: bytes, flush_bytes: int) -> None:
        self.disk = disk
        self.job_key = job_key
        self.announced = disk.size
        self.block = PROBE_BLOCK
        self.flush = max(self.block, _align_down(min(flush_bytes, self.announced // 8), self.block))
        self.buf = aligned_buffer(max(self.block, FLUSH_PIECE), SLACK + 4096)
        self.view = memoryview(self.buf)
        self.written = 0
        self.read = 0

    def _write_block(self, pattern: Pattern, offset: int) -> bool:
        pattern.fill(self.view, offset, self.block)
        try:
            self.disk.pwrite(self.view[: self.block], offset)
        except DeviceIOError:
            return False
        self.written += self.block
        return True

    def _flush_region(self, pattern: Pattern) -> None:
        step = len(self.view) - SLACK - 4096
        off = 0
        while off < self.flush:
            n = min(step, self.flush - off)
            pattern.fill(self.view, off, n)
            try:
                self.disk.pwrite(self.view[:n], off)
            except DeviceIOError:
                pass  # a broken start of the drive shows when its blocks are read back
            self.written += n
            off += n
        self.disk.flush()

    def _classify(self, offset: int, patterns: list[Pattern], own: Pattern) -> _Reading:
        try:
            self.disk.pread(self.view[: self.block], offset)
        except DeviceIOError:
            return _Reading(offset, False, "io-error")
        self.read += self.block
        got = bytes(self.view[: self.block])
        if got == own.bytes_at(offset, self.block):
            return _Reading(offset, True)
        if got == bytes(self.block):
            return _Reading(offset, False, "dropped-zeros")
        if got == b"\xff" * self.block:
            return _Reading(offset, False, "dropped-ff")
        for pat in patterns:
            src = pat.decode_offset(got)
            if src is not None and src != offset:
                return _Reading(offset, False, "wraparound", src)
        return _Reading(offset, False, "unknown")

    def run_round(self, rnd: int, positions: list[int]) -> list[_Reading]:
        own = Pattern(self.job_key, f"probe-{rnd}")
        flush = Pattern(self.job_key, f"probe-flush-{rnd}")
        failed_writes = {
            p for p in sorted(positions, reverse=True) if not self._write_block(own, p)
        }
        self._flush_region(flush)
        readings = []
        for p in positions:
            if p in failed_writes:
                readings.append(_Reading(p, False, "io-error"))
            else:
                readings.append(self._classify(p, [own, flush], own))
        return readings


def probe_capacity(
    disk: Disk,
    job_key: bytes,
    *,
    flush_bytes: int = 32 << 20,
) -> ProbeResult:
    """Find the real capacity of ``disk`` (destroys data at the probed positions)."""
    started = time.monotonic()
    pr = _Prober(disk, job_key, flush_bytes)
    block = pr.block
    good_hi = pr.flush - block  # the flush region is checked below
    bad_lo = pr.announced  # "past the end"
    kind: str | None = None
    suspects: list[int] = []

    positions = round0_positions(pr.announced, pr.flush, block)
    rnd = 0
    while positions:
        readings = pr.run_round(rnd, positions)
        if rnd == 0:
            first_bad_flush = _check_flush_region(pr, suspects)
            if first_bad_flush is not None and any(r.good for r in readings):
                # blocks above read good: the failing end of the flush region is bad flash
                suspects.extend(range(first_bad_flush, pr.flush, block))
                first_bad_flush = None
            if first_bad_flush == 0:
                raise DeviceIOError(
                    "the drive keeps no data at all (every probe block fails)",
                    device=disk.path,
                    stage="probe",
                    offset=0,
                )
            if first_bad_flush is not None:
                # Less real flash than the flush region: nothing above it can be trusted.
                good_hi, bad_lo, kind = first_bad_flush - block, first_bad_flush, "unknown"
                break
        evidence = _boundary_evidence(readings, suspects)
        if evidence is not None and evidence.offset < bad_lo:
            bad_lo, kind = evidence.offset, evidence.why
        below = [r.offset for r in readings if r.good and r.offset < bad_lo]
        if below:
            good_hi = max(good_hi, max(below))
        if bad_lo == pr.announced:
            break  # nothing bad anywhere: honest
        rnd += 1
        positions = inner_positions(good_hi, bad_lo, block)

    usable = pr.announced if bad_lo == pr.announced else good_hi + block
    return ProbeResult(
        announced_bytes=pr.announced,
        usable_bytes=usable,
        kind=kind if usable < pr.announced else None,
        seconds=time.monotonic() - started,
        rounds=rnd + 1,
        bytes_written=pr.written,
        bytes_read=pr.read,
        suspect_blocks=suspects,
    )


def _boundary_evidence(readings: list[_Reading], suspects: list[int]) -> _Reading | None:
    """The lowest bad reading that marks a capacity boundary.

    An alias is always evidence.  Any other failure counts only when no block above it
    in the same round read good: an isolated failure looks like bad flash instead."""
    highest_good = max((r.offset for r in readings if r.good), default=-1)
    for r in readings:
        if r.good:
            continue
        if r.why == "wraparound" or r.offset > highest_good:
            return r
        suspects.append(r.offset)
    return None


def _check_flush_region(pr: _Prober, suspects: list[int]) -> int | None:
    """Start of a failing tail of the flush region (less real flash than the flush), or None.

    Only when its last block fails is the whole region read back (isolated bad blocks inside
    it are the verify pass's to map).  Failing blocks with good blocks after them are
    isolated: suspects, not a boundary."""
    pattern = Pattern(pr.job_key, "probe-flush-0")
    last = pr.flush - pr.block
    try:
        pr.disk.pread(pr.view[: pr.block], last)
        pr.read += pr.block
        if bytes(pr.view[: pr.block]) == pattern.bytes_at(last, pr.block):
            return None  # the end of the flush region kept its data: no tail to find here
    except DeviceIOError:
        pass
    step = len(pr.view) - SLACK - 4096
    failing: list[int] = []
    off = 0
    while off < pr.flush:
        n = min(step, pr.flush - off)
        try:
            pr.disk.pread(pr.view[:n], off)
        except DeviceIOError:
            for b in range(0, n, pr.block):  # block by block: unreadable blocks stay wrong
                try:
                    pr.disk.pread(pr.view[b : b + pr.block], off + b)
                except DeviceIOError:
                    pr.view[b : b + pr.block] = bytes(pr.block)
        got = bytes(pr.view[:n])
        pr.read += n
        want = pattern.bytes_at(off, n)
        if got != want:
            failing.extend(
                off + b
                for b in range(0, n, pr.block)
                if got[b : b + pr.block] != want[b : b + pr.block]
            )
        off += n
    tail = pr.flush
    for b in reversed(failing):
        if b + pr.block != tail:
            break
        tail = b
    suspects.extend(b for b in failing if b < tail)
    return tail if tail < pr.flush else None

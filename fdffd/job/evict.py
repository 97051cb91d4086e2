"""The probe's I/O: keyed blocks, evictions, what a block read back says, and the drive's
cache measured by eviction.

A drive may answer a read from a cache instead of its flash: a cache of recent writes, or a
controller that keeps the last writes past its real flash.  Neither can be seen by timing
through every kind of bridge, but both by *eviction*: write a block at a position known to
be past the real flash, read it (a cache returns it), then write more and more data past it
and read it again; the amount after which the block reads wrong is the cache.  A read-back
is trusted only after an eviction at least that large, written where it evicts (past the
real flash, which is where a controller that keeps the last writes past it keeps them).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..devices.blockdev import aligned_buffer
from ..devices.disk import Disk
from ..errors import DeviceIOError
from ..pattern import SLACK, Pattern

#: the eviction written before each read-back, at least (a cache measured as none)
MIN_EVICT = 1 << 20
#: the first step of the cache measurement; each next step writes twice as much
MEASURE_START = 256 << 10
#: the largest cache the measurement looks for
MEASURE_MAX = 256 << 20
#: regions are written in pieces of this size (few large requests)
PIECE = 4 << 20
#: consecutive probe blocks go in one request, this many at most
RUN = 16


@dataclass(frozen=True)
class Reading:
    """One block read back.  ``why``: io-error | dropped-zeros | dropped-ff | wraparound |
    unknown (stale: an earlier write, the donor's data, garbage)."""

    offset: int
    good: bool
    why: str | None = None
    alias_of: int | None = None
    #: the pattern a good block holds (to read it again later)
    pattern: Pattern | None = None

    @property
    def boundary_at(self) -> int:
        """The position this reading proves to be past the real flash: the higher of two
        aliases (a block that reads what was written for a higher position is real flash
        that a fake position's write landed on)."""
        if self.alias_of is not None and self.alias_of > self.offset:
            return self.alias_of
        return self.offset

    @property
    def partner(self) -> int | None:
        """For an alias, the lower (real) of the two positions."""
        if self.alias_of is None:
            return None
        return min(self.offset, self.alias_of)


class Prober:
    """Writes, evicts and reads for the probe; counts the bytes."""

    def __init__(self, disk: Disk, job_key: bytes, block: int = 4096) -> None:
        self.disk = disk
        self.job_key = job_key
        self.announced = disk.size
        self.block = block
        self.buf = aligned_buffer(max(block, PIECE), SLACK + 4096)
        self.view = memoryview(self.buf)
        self.written = 0
        self.read = 0
        self.patterns: list[Pattern] = []

    def pattern(self, purpose: str) -> Pattern:
        pat = Pattern(self.job_key, purpose)
        self.patterns.append(pat)
        return pat

    def write_block(self, pattern: Pattern, offset: int) -> bool:
        pattern.fill(self.view, offset, self.block)
        try:
            self.disk.pwrite(self.view[: self.block], offset)
        except DeviceIOError:
            return False
        self.written += self.block
        return True

    def write_region(self, pattern: Pattern, start: int, end: int) -> None:
        """Keyed data over ``[start, end)``, in large pieces, lowest first."""
        step = len(self.view) - SLACK - 4096
        off = start
        while off < end:
            n = min(step, end - off)
            pattern.fill(self.view, off, n)
            try:
                self.disk.pwrite(self.view[:n], off)
            except DeviceIOError:
                pass  # past the real flash of an I/O-error fake: the read-back says so
            self.written += n
            off += n

    def classify(self, offset: int, own: Pattern) -> Reading:
        """Read the block at ``offset`` and say what it holds."""
        return self.classify_run(offset, [own])[0]

    def classify_run(self, start: int, owns: list[Pattern]) -> list[Reading]:
        """Read ``len(owns)`` consecutive blocks from ``start`` in one request (block by
        block if it fails) and say what each holds against its own pattern."""
        n = len(owns) * self.block
        try:
            self.disk.pread(self.view[:n], start)
        except DeviceIOError:
            if len(owns) == 1:
                return [Reading(start, False, "io-error")]
            return [
                r
                for i, o in enumerate(owns)
                for r in self.classify_run(start + i * self.block, [o])
            ]
        self.read += n
        data = bytes(self.view[:n])
        b = self.block
        return [
            self._judge(start + i * b, data[i * b : (i + 1) * b], o) for i, o in enumerate(owns)
        ]

    def _judge(self, offset: int, got: bytes, own: Pattern) -> Reading:
        if got == own.bytes_at(offset, self.block):
            return Reading(offset, True, pattern=own)
        if got == bytes(self.block):
            return Reading(offset, False, "dropped-zeros")
        if got == b"\xff" * self.block:
            return Reading(offset, False, "dropped-ff")
        for pat in reversed(self.patterns):
            src = pat.decode_offset(got)
            if src is not None and src != offset:
                return Reading(offset, False, "wraparound", src)
        return Reading(offset, False, "unknown")

    def classify_many(self, items: list[tuple[int, Pattern]]) -> list[Reading]:
        """``classify`` for many blocks, consecutive ones read in one request."""
        out: list[Reading] = []
        for run in _runs(sorted(items, key=lambda it: it[0]), self.block):
            out += self.classify_run(run[0][0], [pat for _, pat in run])
        return out

    def write_blocks(self, pattern: Pattern, positions: list[int]) -> set[int]:
        """Write blocks at ``positions``, highest first (so that of two positions on the
        same flash the lower, the real one, is written last), consecutive ones in one
        request; returns the positions whose write failed."""
        failed: set[int] = set()
        runs = _runs([(p, pattern) for p in sorted(set(positions))], self.block)
        for run in reversed(runs):
            start, n = run[0][0], len(run) * self.block
            pattern.fill(self.view, start, n)
            try:
                self.disk.pwrite(self.view[:n], start)
                self.written += n
            except DeviceIOError:
                failed |= {p for p, _ in run if not self.write_block(pattern, p)}
        return failed

    def run_round(
        self,
        rnd: int,
        positions: list[int],
        evict: list[tuple[int, int]],
        *,
        extra: list[int] | None = None,
        recheck: list[tuple[int, Pattern]] | None = None,
    ) -> list[Reading]:
        """Write blocks at ``positions`` (highest first), write the eviction (its regions
        ``[start, end)``) and flush, then read the blocks back; ``extra`` positions inside
        the eviction are read back against it, and ``recheck`` blocks against what they
        held."""
        own = self.pattern(f"probe-{rnd}")
        failed = self.write_blocks(own, positions)
        asked = [(p, own) for p in positions if p not in failed]
        if evict:
            flush_pat = self.pattern(f"probe-evict-{rnd}")
            for start, end in evict:
                self.write_region(flush_pat, start, end)
            asked += [(p, flush_pat) for p in extra or () if any(a <= p < b for a, b in evict)]
        self.disk.flush()
        asked += [(p, pat) for p, pat in recheck or () if p not in positions]
        readings = [Reading(p, False, "io-error") for p in sorted(failed)]
        return readings + self.classify_many(asked)


def _runs(items: list[tuple[int, Pattern]], block: int) -> list[list[tuple[int, Pattern]]]:
    """Sorted ``(offset, pattern)`` items cut into runs of consecutive blocks (at most
    ``RUN`` each; one position once)."""
    runs: list[list[tuple[int, Pattern]]] = []
    for off, pat in items:
        if runs and off == runs[-1][-1][0]:
            continue
        if runs and off == runs[-1][-1][0] + block and len(runs[-1]) < RUN:
            runs[-1].append((off, pat))
        else:
            runs.append([(off, pat)])
    return runs


def measure_cache(pr: Prober, dead: int, above: int, below: int = 0) -> int | None:
    """The drive's cache, measured by eviction at ``dead`` (a block past the real flash):
    0 when a fresh block there reads wrong at once, else the eviction after which it reads
    wrong (the cache is more than half of that, and at most that), or None if even all the
    room did not evict it.  Each step writes the top ``size`` bytes of the drive, up to
    ``above`` (all above ``dead``), and the rest at its start, up to ``below`` (proven real
    flash, where only a cache of recent writes is evicted); all of a step's region each
    time: a cache that a read refreshes is evicted only by writes after the last read."""
    own = pr.pattern("probe-measure")
    if not pr.write_block(own, dead) or not pr.classify(dead, own).good:
        return 0
    evict = pr.pattern("probe-measure-evict")
    above -= above % pr.block
    below -= below % pr.block
    limit = min(above + below, MEASURE_MAX)
    size = 0
    while size < limit:
        size = min(max(MEASURE_START, 2 * size), limit)
        top = min(size, above)
        pr.write_region(evict, pr.announced - top, pr.announced)  # never below ``dead``
        if size > top:
            pr.write_region(evict, 0, size - top)
        if not pr.classify(dead, own).good:
            return size
    return None


def measure_alias_cache(pr: Prober, fake: int, real: int, limit: int) -> int | None:
    """The cache in front of a drive whose writes at ``fake`` land on ``real`` (a
    wraparound): write ``fake``, then ``real`` (the lower, last), and read ``fake``: it
    reads ``real``'s block unless a cache still holds its own write.  Then growing regions
    are written at the start of the drive (``[0, size)``, at most ``limit``: proven real
    flash) until it does.  0, the eviction that did it, or None."""
    own = pr.pattern("probe-measure")
    other = pr.pattern("probe-measure-real")
    if not (pr.write_block(own, fake) and pr.write_block(other, real)):
        return 0
    if not pr.classify(fake, own).good:
        return 0
    evict = pr.pattern("probe-measure-evict")
    limit -= limit % pr.block
    size = 0
    while size < limit:
        size = min(max(MEASURE_START, 2 * size), limit)
        pr.write_region(evict, 0, size)
        if not pr.classify(fake, own).good:
            return size
    return None

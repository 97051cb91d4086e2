"""The counterfeit probe: prove, in seconds, how much of a drive really stores data.

In the spirit of f3probe, destructively, in rounds.  A round writes keyed 4 KiB blocks at
chosen positions, highest first (so that when two positions alias the same flash, a
wraparound fake, the lower one, the real address, is written last and reads back right
while the higher one reads back wrong), then writes an *eviction* so the blocks can no
longer come from a cache, then reads them back.  A block reads *good* when it holds exactly
its own pattern; otherwise the bytes say why: EIO, all zeros, all 0xFF, another position's
pattern (decrypting a block names the offset it was written for: an alias), or anything
else (stale contents: an earlier write, the donor's data, garbage).

1. Round 0 probes ~130 spread positions (a 64-point linear grid, the powers of two and
   their neighbours, the last block) above the *start region*, the first ``flush_bytes``
   of the drive (at most 1/8 of it), then writes the start region as the eviction (a
   wraparound position just above the real capacity lands on it) and reads the blocks and
   samples of the start region back.  If nothing read bad, the *top check* writes the top
   of the drive, from the top down (``flush_bytes``, then up to ``search_bytes``): on a
   fake that is past the real flash, so it evicts a cache of recent writes and a cache that
   keeps the last writes past the real flash, and it reads samples of the top and the good
   blocks again.
2. Where writes past the boundary are lost, the drive's cache is measured
   (``evict.measure_cache``): at a block known to be past the real flash, fresh data is
   written and then more and more data past it until the block reads wrong; that amount is
   the drive's cache, and later rounds write an eviction that large (at least
   ``MIN_EVICT``) past the boundary, where it evicts what the probe wrote.  Blocks read good
   before the measurement are read again after it.  If nothing evicts it, the block is not
   behind a cache but real flash now: the capacity moved (unstable).
3. 16-way rounds narrow the boundary between the highest good and the lowest bad block
   down to one block.  For a wraparound fake the eviction goes to the start of the drive
   instead (inside what is proven real), since past the boundary it would land on real
   flash.
4. The boundary is then confirmed: fresh blocks just below it, at it and above it, and a
   re-read of blocks proven good earlier.  If the answer changed, the drive is *unstable*
   (its capacity moves between rounds, as some fakes do): the lowest answer is kept and
   the search goes on; such a drive is never rescued.

The usable size is the end of the highest block proven good, so it never exceeds the real
capacity.  An isolated failing block with good blocks above it is not taken as a boundary
(it looks like bad flash, which the verify pass maps exactly).  The verify pass that
follows is the final word (``capacity.py``): a cache larger than anything the probe wrote
past the real flash, or an alias onto an unprobed spot, shows up there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..devices.disk import Disk
from ..errors import DeviceIOError
from ..pattern import Pattern
from .evict import MIN_EVICT, Prober, Reading, measure_alias_cache, measure_cache

__all__ = [
    "PROBE_BLOCK",
    "Disk",
    "ProbeResult",
    "inner_positions",
    "probe_capacity",
    "round0_positions",
]

PROBE_BLOCK = 4096
FANOUT = 16
ROUND0_LINEAR = 64
#: the start region written in round 0 is at least this (or the flush, if smaller)
START_MIN = 4 << 20
#: blocks read back, spread, from a region written as an eviction
SAMPLES = 16
#: the most the top check writes before it calls a drive honest (f3probe's cache bound)
SEARCH_MAX = 1 << 30
#: confirmations in a row that must find a boundary unchanged before it stands (a drive
#: whose writes past it are lost may move it; a wraparound cannot)
AGREE = {"dead": 3, "alias": 2}
#: confirmations at most; then the probe settles for the lowest answer seen
CONFIRMATIONS = 8
#: rounds in a row that learn nothing before the probe stops (every block clobbered: a
#: wraparound whose cache is as large as its real flash; the verify pass sees it)
STALLS = 3
#: good blocks a confirmation reads again (spread over those proven so far)
RECHECKS = 12


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
    #: the drive's cache as measured by eviction (None: not measured, no boundary seen)
    cache_bytes: int | None = None
    #: the eviction written before each later round's read-back
    evict_bytes: int = 0
    #: the answer changed between rounds (a moving capacity): never rescue such a drive
    unstable: bool = False
    #: the capacities the boundary was seen at, in order, when it moved
    boundaries: list[int] = field(default_factory=list)

    @property
    def counterfeit(self) -> bool:
        return self.usable_bytes < self.announced_bytes


def _align_down(x: int, a: int) -> int:
    return x - x % a


def round0_positions(announced: int, flush: int, block: int) -> list[int]:
    """Spread positions above the start region ``[0, flush)``: a linear grid, the powers of
    two and their neighbours, and the last block."""
    last = _align_down(announced - block, block)
    pts: set[int] = {last}
    for i in range(1, ROUND0_LINEAR):
        pts.add(_align_down(announced * i // ROUND0_LINEAR, block))
    for k in _powers(announced):
        for p in (k - block, k, k + k // 2 - block, k + k // 2):
            pts.add(_align_down(p, block))
    return sorted(p for p in pts if flush <= p <= last)


def _powers(announced: int) -> list[int]:
    out, k = [], 1 << 20
    while k < announced:
        out.append(k)
        k <<= 1
    return out


def region_samples(start: int, end: int, block: int) -> list[int]:
    """Blocks read back from a region the probe wrote as an eviction: its first and last
    block, ``SAMPLES`` spread over it, and the powers of two (and halfway points) in it."""
    size = end - start
    pts = {start, _align_down(end - block, block)}
    pts |= {_align_down(start + size * i // SAMPLES, block) for i in range(1, SAMPLES)}
    for k in [1 << 16, 1 << 18, *_powers(end)]:
        pts |= {k - block, k + k // 2 - block}
    return sorted(p for p in pts if start <= p <= end - block and p % block == 0)


def inner_positions(good_hi: int, bad_lo: int, block: int) -> list[int]:
    """Up to ``FANOUT - 1`` aligned positions strictly between two known blocks."""
    lo = good_hi + block
    span = (bad_lo - lo) // block  # candidate blocks lo .. bad_lo - block
    if span <= 0:
        return []
    if span < FANOUT:
        return [lo + i * block for i in range(span)]
    return sorted({lo + (span * i // FANOUT) * block for i in range(1, FANOUT)})


class _Search:
    """What the probe knows: the highest block proven good, the lowest proven bad, and the
    good blocks it may read again (each with the pattern it holds)."""

    def __init__(self, pr: Prober) -> None:
        self.pr = pr
        self.block = pr.block
        self.good_hi = -pr.block  # nothing proven yet
        self.bad_lo = pr.announced  # "past the end"
        self.bad: Reading | None = None  # the reading that set bad_lo
        self.kind: str | None = None
        self.mode: str | None = None  # "dead" (writes past it are lost) | "alias"
        self.good: dict[int, Pattern] = {}
        self.suspects: list[int] = []
        self.unstable = False
        self.boundaries: list[int] = []
        self.evict = 0
        self.cache: int | None = None
        self.clobbered = 0  # blocks below this were overwritten by an eviction (alias mode)
        self.evicted = 0  # the eviction before the read-back that showed the boundary

    def apply(self, readings: list[Reading], *, fenced: tuple[int, int] = (0, 0)) -> None:
        """Take a round's readings as evidence.  A failing block counts as a boundary only
        if no block above it read good in the same round (else it is a suspect: bad
        flash?); an alias always counts, at the higher of its two positions.  Good blocks
        in the region just written as eviction (``fenced``) may come from a cache: they
        prove nothing, and never make a failing block below them look isolated."""
        lo, hi = fenced
        evidence = self._evidence(readings, lo, hi)
        if evidence is not None and evidence.boundary_at < self.bad_lo:
            self.bad_lo, self.bad, self.kind = evidence.boundary_at, evidence, evidence.why
            if self.mode is None:
                self.mode = "alias" if evidence.why == "wraparound" else "dead"
            # what read good at or above the boundary came from a cache
            self.good = {o: p for o, p in self.good.items() if o < self.bad_lo}
            self.good_hi = min(self.good_hi, max(self.good, default=-self.block))
        for r in readings:
            # a good block in the eviction just written may be the cache's: no proof
            if r.good and r.offset < self.bad_lo and not lo <= r.offset < hi:
                self.good_hi = max(self.good_hi, r.offset)
                if r.pattern is not None:
                    self.good[r.offset] = r.pattern

    def _evidence(self, readings: list[Reading], lo: int, hi: int) -> Reading | None:
        """The failing reading that proves the lowest boundary (see :meth:`apply`); the
        other failing blocks below a good one are suspects."""
        highest_good = max(
            (r.offset for r in readings if r.good and not lo <= r.offset < hi), default=-1
        )
        evidence: Reading | None = None
        for r in readings:
            if r.good:
                continue
            at = r.boundary_at
            if r.why == "wraparound" or at > highest_good:
                if evidence is None or at < evidence.boundary_at:
                    evidence = r
            else:
                self.suspects.append(r.offset)
        return evidence

    # -- the eviction before a read-back ------------------------------------------------

    def evict_region(self) -> list[tuple[int, int]]:
        """Where this round's eviction goes: past the boundary (dead mode), or inside the
        proven-real start of the drive (alias mode: past the boundary it would land on
        real flash).  In dead mode, what does not fit past the boundary goes to the start
        of the drive too (it evicts a cache of recent writes; a cache of the last writes
        past the flash cannot be larger than the room past it)."""
        a, b = self.pr.announced, self.block
        regions: list[tuple[int, int]] = []
        short = self.evict
        if self.mode != "alias":
            lower = self.bad_lo + b if self.bad_lo < a else 0
            above = (max(lower, _align_down(a - self.evict, b)), a)
            if above[0] < above[1]:
                regions.append(above)
                short -= above[1] - above[0]
        if self.mode == "alias":
            # at least the window: a fake position in it lands below its width
            short = max(self.evict, self.bad_lo - self.good_hi)
        if short > 0 and self.bad_lo < a:
            end = _align_down(min(short, max(0, self.good_hi + b)), b)
            if end > 0:
                self.clobbered = max(self.clobbered, end)
                regions.append((0, end))
        self.good = {
            o: p for o, p in self.good.items() if not any(lo <= o < hi for lo, hi in regions)
        }
        return regions


def probe_capacity(
    disk: Disk,
    job_key: bytes,
    *,
    flush_bytes: int = 32 << 20,
    search_bytes: int | None = None,
) -> ProbeResult:
    """Find the real capacity of ``disk`` (destroys data at the probed positions).

    ``search_bytes``: how much the top check may write, at most, before it calls a drive
    that showed nothing honest (None: half the drive, at most ``SEARCH_MAX``, as f3probe
    does).  A cache larger than that hides a fake from the probe; a job, whose verify pass
    sees any cache smaller than the missing capacity, passes the flush size."""
    started = time.monotonic()
    pr = Prober(disk, job_key)
    s = _Search(pr)
    block, a = pr.block, pr.announced
    flush = max(block, _align_down(min(flush_bytes, a // 8), block))
    s.evict = s.evicted = flush
    # The start region need not be larger than the grid's spacing (an alias just above a
    # period is exposed within it); a cache it leaves is found by the measurement or the
    # top check, which writes the whole flush.
    start = max(block, _align_down(min(flush, max(a // ROUND0_LINEAR, START_MIN)), block))

    _round0(s, 0, start, [])
    s.evicted = start
    if s.good_hi < 0 and s.bad_lo <= block:
        raise DeviceIOError(
            "the drive keeps no data at all (every probe block fails)",
            device=disk.path,
            stage="probe",
            offset=0,
        )
    rounds = 1
    if s.bad_lo >= a:
        search = min(a // 2, SEARCH_MAX) if search_bytes is None else search_bytes
        rounds += _top_check(s, flush, max(flush, _align_down(min(search, a // 2), block)))
    if s.bad_lo < a:
        _settle_cache(s, flush)
        rounds += _narrow(s)
    return ProbeResult(
        announced_bytes=a,
        usable_bytes=a if s.bad_lo >= a else s.good_hi + block,
        kind=s.kind if s.bad_lo < a else None,
        seconds=time.monotonic() - started,
        rounds=rounds,
        bytes_written=pr.written,
        bytes_read=pr.read,
        suspect_blocks=s.suspects,
        cache_bytes=s.cache,
        evict_bytes=s.evict,
        unstable=s.unstable,
        boundaries=s.boundaries,
    )


def _top_check(s: _Search, flush: int, search: int) -> int:
    """Nothing bad so far: write the top of the drive, where a fake's real flash would have
    ended (``flush`` bytes, then ``search``), and after each step read samples of it and the
    good blocks again.  Each step writes all of its region: a cache that a read refreshes
    must be evicted by the writes after the last read.  Returns the rounds it took."""
    pr, b, a = s.pr, s.block, s.pr.announced
    rounds = 0
    for size in sorted({flush, search}):
        rounds += 1
        start = a - size
        pat = pr.pattern(f"probe-top-{size}")
        pr.write_region(pat, start, a)
        pr.disk.flush()
        s.good = {o: p for o, p in s.good.items() if o < start}
        s.good_hi = max(s.good, default=-b)
        asked = sorted(s.good.items()) + [(o, pat) for o in region_samples(start, a, b)]
        readings = pr.classify_many(asked)
        s.apply(readings, fenced=(start, a))
        s.evicted = size
        if s.bad_lo < a:
            break
    return rounds


def _settle_cache(s: _Search, flush: int) -> None:
    """After round 0 (or the top check) saw a boundary: measure the cache by eviction at it
    and size later evictions from that (the measurement gives an upper bound); re-read the
    good blocks, which its writes have pushed out of any cache.

    Where writes past the boundary are lost (dead mode) the measurement writes past it; a
    block that read wrong before but keeps a fresh write through every eviction tried is
    not behind a cache (the earlier read would have come from there): the drive's capacity
    moved.  For a wraparound (alias mode) it writes at the start of the drive, in what is
    proven real, and a cache it cannot evict leaves the eviction at the flush."""
    pr, b = s.pr, s.block
    # Round 0 (or the top check) read the block wrong after an eviction of ``s.evicted``
    # bytes and the other blocks written after it: a cache that outlasts twice that is no
    # cache.
    bound = 2 * s.evicted + MIN_EVICT
    if s.mode == "dead":
        above = min(pr.announced - (s.bad_lo + b), bound)
        below = max(0, min(bound - above, s.good_hi + b))
        s.clobbered = max(s.clobbered, below)
        s.good = {o: p for o, p in s.good.items() if o >= below}
        s.cache = measure_cache(pr, s.bad_lo, above, below)
        if s.cache is None and above >= bound:
            # all of it past the boundary, where any cache of it is evicted
            s.unstable = True
            s.boundaries.append(s.bad_lo)
    else:
        partner = s.bad.partner if s.bad is not None else None
        if partner is None or partner == s.bad_lo:
            return
        room = min(max(0, s.good_hi + b), bound)
        s.clobbered = max(s.clobbered, room)
        s.cache = measure_alias_cache(pr, s.bad_lo, partner, room)
        s.good = {o: p for o, p in s.good.items() if o >= room}
    s.evict = flush if s.cache is None else max(MIN_EVICT, s.cache)
    if s.cache != 0:
        # What read good may have come from the cache, and the measurement wrote over the
        # start: probe again below the boundary, behind an eviction the cache's size.
        s.good, s.good_hi, s.clobbered = {}, -b, 0
        start = _align_down(min(pr.announced // 8, max(flush, s.evict)), b)
        past = [] if s.mode == "alias" else s.evict_region()
        _round0(s, 500, start, past)


def _round0(s: _Search, rnd: int, start: int, evict: list[tuple[int, int]]) -> None:
    """Spread blocks below the boundary, then ``evict`` and the start region ``[0, start)``
    as eviction; read back the blocks and samples of the start region."""
    pr, b = s.pr, s.block
    positions = [p for p in round0_positions(pr.announced, start, b) if p < s.bad_lo]
    readings = pr.run_round(rnd, positions, [*evict, (0, start)], extra=region_samples(0, start, b))
    s.apply(readings, fenced=(0, start))


def _narrow(s: _Search) -> int:
    """Bisect between the highest good and the lowest bad block; a boundary stands once
    ``AGREE`` confirmations in a row find it unchanged (at most ``CONFIRMATIONS``): a
    capacity that moves at each cache flush shows within three rounds when it cycles
    through three values."""
    pr = s.pr
    rounds = 0
    confirmations = agreed = 0
    stalled = 0
    while s.bad_lo < pr.announced and stalled < STALLS:
        positions = inner_positions(s.good_hi, s.bad_lo, pr.block)
        if positions:
            rounds += 1
            before = (s.good_hi, s.bad_lo)
            s.apply(pr.run_round(rounds, positions, s.evict_region()))
            stalled = stalled + 1 if (s.good_hi, s.bad_lo) == before else 0
            agreed = 0
            continue
        if confirmations >= CONFIRMATIONS:
            break
        confirmations += 1
        rounds += 1
        agreed = agreed + 1 if _confirm(s, confirmations) else 0
        # with no cache each confirmation also reads the boundary with no flush between:
        # two in a row see two phases of a moving capacity, enough unless its lowest value
        # repeats
        need = 2 if s.cache == 0 else AGREE.get(s.mode or "dead", 3)
        if agreed >= need:
            break
    return rounds


def _confirm(s: _Search, n: int) -> bool:
    """Fresh blocks below, at and above the boundary, and the good blocks read again: True
    when the drive still says the same."""
    readings, below, above = _confirmation_round(s, n)
    below_ok = all(r.good for r in below)
    lo_ok = _boundary_holds(s, n, [r for r in readings if r.offset == s.bad_lo])
    if below_ok and s.unstable:
        return True  # a moving drive: only what it keeps below the boundary counts now
    if below_ok and lo_ok:
        if s.mode != "dead" or not any(r.good for r in above):
            return True
        if all(r.good for r in above):
            return _isolated(s, readings)
    _moved(s, below)
    return False


def _confirmation_round(s: _Search, n: int) -> tuple[list[Reading], list[Reading], list[Reading]]:
    """Write the fresh blocks, evict, read them and a sample of the good blocks again:
    all the readings, those below the boundary (not an alias's partner), those above it."""
    pr, lo = s.pr, s.bad_lo
    region = s.evict_region()  # first: it drops the good blocks it will overwrite
    partner = s.bad.partner if s.bad is not None else None
    fresh = _fresh_positions(s, partner)
    for p in fresh:
        s.good.pop(p, None)  # overwritten now
    old = [(off, pat) for off, pat in sorted(s.good.items()) if s.clobbered <= off < lo]
    old = old[:: max(1, len(old) // RECHECKS)]
    readings = pr.run_round(1000 + n, sorted(fresh), region, recheck=old)
    below = [r for r in readings if r.offset < lo and r.offset != partner]
    for r in below:
        if r.good and r.pattern is not None:
            s.good[r.offset] = r.pattern
    return readings, below, [r for r in readings if r.offset > lo]


def _fresh_positions(s: _Search, partner: int | None) -> set[int]:
    """Where a confirmation writes fresh blocks: below the boundary (above what the last
    eviction overwrote), at it, at an alias's partner, and past it in dead mode."""
    pr, b = s.pr, s.block
    hi, lo = s.good_hi, s.bad_lo
    fresh = {hi} | {_align_down(hi * i // 4, b) for i in range(1, 4)}
    fresh = {p for p in fresh if s.clobbered <= p < lo}
    fresh.add(lo)
    if partner is not None:
        fresh.add(partner)  # an alias shows only when its real address is written after it
    if s.mode == "dead":
        room = pr.announced - lo
        fresh |= {_align_down(lo + room * i // 3, b) for i in (1, 2)}
    return {p for p in fresh if 0 <= p < pr.announced}


def _boundary_holds(s: _Search, n: int, at_lo: list[Reading]) -> bool:
    """The boundary block still reads wrong."""
    pr, lo = s.pr, s.bad_lo
    if any(r.good for r in at_lo):
        return False
    if s.mode == "dead" and s.cache == 0:
        # No cache: a block at the boundary written and read with no flush between must read
        # wrong too (a drive whose capacity moves at each flush shows it here, whatever its
        # phase).
        now = pr.pattern(f"probe-now-{n}")
        return not (pr.write_block(now, lo) and pr.classify(lo, now).good)
    return True


def _moved(s: _Search, below: list[Reading]) -> None:
    """The answer changed: the drive is unstable; keep the lowest boundary, and search
    again below it."""
    lo = s.bad_lo
    s.unstable = True
    s.boundaries.append(lo)
    failing = [r.boundary_at for r in below if not r.good]
    if failing and min(failing) < lo:
        s.bad_lo = min(failing)
        s.good = {off: pat for off, pat in s.good.items() if off < s.bad_lo}
        s.good_hi = max(s.good, default=-s.block)
        s.boundaries.append(s.bad_lo)


def _isolated(s: _Search, readings: list[Reading]) -> bool:
    """The boundary block fails but fresh blocks above it read good: it is bad flash, not
    the end of the real capacity.  Probe above it once more; False (not settled) when that
    finds a boundary."""
    pr, lo = s.pr, s.bad_lo
    s.suspects.append(lo)
    s.bad_lo, s.bad, s.kind, s.mode = pr.announced, None, None, None
    s.apply([r for r in readings if r.offset > lo])
    above = inner_positions(max(lo, s.good_hi), pr.announced, pr.block)
    if above:
        s.apply(pr.run_round(2000 + len(s.suspects), above, s.evict_region()))
    return s.bad_lo >= pr.announced

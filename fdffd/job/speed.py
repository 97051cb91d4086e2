"""A speed profile per drive: write and read speed over ``REGIONS`` regions of the surface.

The passes feed a ``RegionTimer`` as each chunk completes (in order); the time since the
previous completion is the drive's time for that chunk (the next request was already queued),
spread over the regions the chunk covers.  A *cliff* is a sudden, lasting change of speed
across the surface: the medians on either side of one region boundary, and of the few
regions right around it, differ by ``CLIFF_FACTOR`` or more.  Fake regions and worn or
recycled flash write at a different speed from good flash, so a cliff is a finding for the
record and the report; it does not change the verdict by itself.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

REGIONS = 64
#: speeds differing this much across a boundary are a cliff
CLIFF_FACTOR = 2.5
#: regions each side of a cliff at least (a blip of a few regions is noise, not a cliff)
CLIFF_SIDE = 8


@dataclass(frozen=True)
class SpeedProfile:
    """Write and read speed (MB/s, 10^6 bytes a second) per region of the surface."""

    regions: int
    write_mbps: list[float]
    read_mbps: list[float]
    cliff: bool
    #: where the cliff is (the byte offset of the first region past it), if any
    cliff_at: int | None = None


class RegionTimer:
    """Time per region of ``[start, end)``, fed by a pass (``start()``, then ``done()`` for
    each chunk as it completes, in order).  Several passes may feed one timer: their times
    add up."""

    def __init__(self, start: int, end: int, regions: int = REGIONS) -> None:
        self.start_offset = start
        self.end = end
        self.regions = regions
        self.seconds = [0.0] * regions
        self.nbytes = [0] * regions
        self._last: float | None = None

    def _region(self, offset: int) -> int:
        span = max(1, self.end - self.start_offset)
        return min(self.regions - 1, (offset - self.start_offset) * self.regions // span)

    def region_start(self, i: int) -> int:
        span = self.end - self.start_offset
        return self.start_offset + span * i // self.regions

    def start(self) -> None:
        self._last = time.monotonic()

    def done(self, offset: int, length: int) -> None:
        now = time.monotonic()
        last = self._last if self._last is not None else now
        self._last = now
        if length <= 0:
            return
        seconds = now - last
        end = offset + length
        for i in range(self._region(offset), self._region(end - 1) + 1):
            lo = max(offset, self.region_start(i))
            hi = min(end, self.region_start(i + 1))
            if hi > lo:
                self.nbytes[i] += hi - lo
                self.seconds[i] += seconds * (hi - lo) / length

    def mbps(self) -> list[float]:
        return [
            round(n / s / 1e6, 1) if s > 0 and n else 0.0
            for n, s in zip(self.nbytes, self.seconds, strict=True)
        ]

    @property
    def fed(self) -> bool:
        return any(self.nbytes)


def find_cliff(speeds: list[float]) -> int | None:
    """The region where the speed changes for good, or None.  The medians of the regions
    before and after it, and of the ``CLIFF_SIDE`` regions right around it, must all differ
    by ``CLIFF_FACTOR`` or more (either way: slower or faster); of several such places, the
    one where the means before and after differ most."""
    n = len(speeds)
    best: tuple[float, int] | None = None
    for k in range(CLIFF_SIDE, n - CLIFF_SIDE + 1):
        near = speeds[k - CLIFF_SIDE : k], speeds[k : k + CLIFF_SIDE]
        if min(_ratio(speeds[:k], speeds[k:]), _ratio(*near)) < CLIFF_FACTOR:
            continue
        by_mean = _ratio(speeds[:k], speeds[k:], statistics.fmean)
        if best is None or by_mean > best[0]:
            best = (by_mean, k)
    return best[1] if best is not None else None


def _ratio(
    a: list[float],
    b: list[float],
    centre: Callable[[list[float]], float] = statistics.median,
) -> float:
    ma, mb = centre(a), centre(b)
    if ma <= 0 or mb <= 0:
        return 0.0
    return max(ma, mb) / min(ma, mb)


def speed_profile(write: RegionTimer, read: RegionTimer | None) -> SpeedProfile:
    """The profile of a surface from the timers its passes fed."""
    w = write.mbps() if write.fed else []
    r = read.mbps() if read is not None and read.fed else []
    at = None
    for speeds in (w, r):
        k = find_cliff(speeds) if speeds else None
        if k is not None:
            at = write.region_start(k) if at is None else min(at, write.region_start(k))
    return SpeedProfile(
        regions=write.regions, write_mbps=w, read_mbps=r, cliff=at is not None, cliff_at=at
    )

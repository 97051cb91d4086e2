"""The passes a job runs over the usable surface, in order, and what they found.

With keyed free space (``job.free_space = "keyed"``): ``passes - 1`` keyed wipe passes, the
image pass (keyed fill in its gaps), the verify pass.  Every byte is written with data that
names its offset or is the payload, so reading it all back once proves the capacity, the
wipe and the payload.

With zero free space (the default): zeros prove no capacity and a dropped write of zeros
would leave the earlier data in place, so the image goes over a **keyed pass** that is read
back first:

1. ``passes - 1`` full keyed wipe passes, as above; with one pass, a ``keyed`` pass over the
   blocks the image leaves zero (``ImageSurface.keyed_ranges``: free space, slack, zero
   metadata, each rounded out to whole MiB); with more, the last wipe pass is that pass;
2. ``keyed-verify`` reads those blocks back: each held its own keyed bytes, so they are real
   capacity and the donor's data there is gone;
3. the ``image`` pass writes the whole surface: metadata, payload, zeros;
4. ``verify`` reads the whole finished surface back: metadata and zeros byte for byte, the
   payload by hash (the payload and the metadata prove their sectors as keyed fill would).
   A block that still holds the keyed pass's bytes for its own offset is a write the drive
   dropped (``ImageSurface.dropped``): a defect, never lost capacity, since step 2 proved
   those very sectors held data.

The cost over keyed free space is one write and one read of the zero blocks (the whole
surface for a small payload, little for a payload that fills the drive with large files).
Without a verify pass (``job.verify = "off"``) nothing is proven and the keyed pass is left
out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..audit.record import JobRecord
from ..config import Config
from ..devices.blockdev import aligned_buffer
from ..devices.disk import Disk
from ..errors import DeviceIOError, FdffdError
from ..pattern import Pattern
from .image import ImageSurface
from .surface import (
    BAD_LIMIT,
    Digests,
    FillPlan,
    PassResult,
    Ranges,
    Timer,
    merge_ranges,
    verify_pass,
    write_pass,
)
from .verdict import Findings, GaveUp

#: the keyed pass under a zero-filled image goes over whole aligned blocks of this size
#: (at most the chunk): the alignment of the partition and of most flash pages, so each piece
#: is a fast sequential write; what it covers beyond the zeros, the image overwrites anyway
KEYED_ALIGN = 1 << 20


class JobContext(Protocol):
    """What the passes need of a job (``pipeline._Job``)."""

    config: Config
    record: JobRecord
    findings: Findings
    log: Any

    def stage(self, name: str, seconds: float, nbytes: int) -> None: ...

    def report(self, stage: str, done: int, total: int) -> None: ...

    def progress(self, stage: str, total: int) -> Callable[[int], None] | None: ...


@dataclass
class Sweep:
    """What the passes did and found."""

    written: int = 0
    #: every range that failed I/O or read back wrong, merged
    bad: list[tuple[int, int]] = field(default_factory=list)
    #: ranges still holding the keyed pass's data after the image pass (dropped writes)
    dropped: list[tuple[int, int]] = field(default_factory=list)
    #: ``(read_at, written_for)`` of keyed bytes read back at another offset
    aliases: list[tuple[int, int]] = field(default_factory=list)
    #: every pass ran to its end (not when the drive turned read-only or failed too much)
    done: bool = False
    #: ``(write, read)`` timers the whole-surface passes feed (``speed.RegionTimer``)
    timers: tuple[Timer, Timer] | None = None

    def lost(self) -> list[tuple[int, int]]:
        """The bad ranges that may be lost capacity: all but the dropped writes."""
        return subtract_ranges(self.bad, self.dropped)


def subtract_ranges(
    ranges: list[tuple[int, int]], minus: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``(offset, length)`` ranges with every byte of ``minus`` taken out."""
    out: list[tuple[int, int]] = []
    cuts = merge_ranges(minus)
    for start, n in merge_ranges(ranges):
        pos, end = start, start + n
        for c, cn in cuts:
            if c + cn <= pos or c >= end:
                continue
            if c > pos:
                out.append((pos, c - pos))
            pos = max(pos, c + cn)
        if pos < end:
            out.append((pos, end - pos))
    return out


def run_passes(
    job: JobContext,
    disk: Disk,
    key: bytes,
    usable: int,
    chunk: int,
    image: FillPlan,
    *,
    first: int,
    timers: tuple[Timer, Timer] | None = None,
) -> Sweep:
    """Passes ``first`` .. ``passes-1`` over ``[0, usable)`` (the last writes ``image``), the
    keyed pass under a zero-filled image, then the verify pass (module docstring).  The
    passes over the whole surface feed ``timers`` (write, read) as chunks complete."""
    cfg = job.config
    sector = disk.geometry.logical_sector
    passes = cfg.job.passes
    sweep = Sweep(timers=timers)
    keyed: FillPlan | None = None
    for i in range(first, passes - 1):
        name = f"wipe-{i + 1}"
        keyed = FillPlan(Pattern(key, name), granule=sector)
        if not _write(job, disk, keyed, name, usable, chunk, None, sweep):
            return sweep
    zero = isinstance(image, ImageSurface) and image.zero_fill and cfg.job.verify == "full"
    if isinstance(image, ImageSurface) and zero:
        ranges = image.keyed_ranges(min(chunk, KEYED_ALIGN), sector)
        if keyed is None:  # no full wipe pass just ran: the keyed pass goes where zeros will
            keyed = FillPlan(Pattern(key, "keyed"), granule=sector)
            if not _write(job, disk, keyed, "keyed", usable, chunk, None, sweep, ranges):
                return sweep
        if not _verify(job, disk, keyed, "keyed-verify", usable, chunk, None, sweep, ranges):
            return sweep
        image.prior = keyed.pattern
    digests = Digests(0, usable, chunk)
    if not _write(job, disk, image, "image", usable, chunk, digests, sweep):
        return sweep
    if cfg.job.verify == "full":
        ok = _verify(job, disk, image, "verify", usable, chunk, digests, sweep, None)
        if isinstance(image, ImageSurface):
            sweep.dropped = merge_ranges(image.dropped)
        if not ok:
            return sweep
    sweep.done = True
    return sweep


def _write(
    job: JobContext,
    disk: Disk,
    plan: FillPlan,
    name: str,
    usable: int,
    chunk: int,
    digests: Digests | None,
    sweep: Sweep,
    ranges: Ranges | None = None,
) -> bool:
    """One write pass; False when it stopped the passes (read-only, too many bad bytes)."""
    disk.stage = name
    total = usable if ranges is None else sum(n for _, n in ranges)
    job.report(name, 0, total)
    try:
        res = write_pass(
            disk,
            plan,
            0,
            usable,
            chunk=chunk,
            sector=disk.geometry.logical_sector,
            progress=job.progress(name, total),
            digests=digests,
            ranges=ranges,
            timer=sweep.timers[0] if sweep.timers and ranges is None else None,
        )
    except DeviceIOError as err:
        if _turned_read_only(disk, int(err.fields.get("offset") or 0)):
            job.findings.read_only = name
            return False
        raise
    sweep.written += res.bytes_done
    sweep.bad = merge_ranges(sweep.bad + res.bad_ranges)
    job.stage(name, res.seconds, res.bytes_done)
    if res.gave_up:
        job.findings.gave_up = GaveUp(name, BAD_LIMIT)
        return False
    job.log.info("pass.done", stage=name, seconds=round(res.seconds, 2), bad_bytes=res.bad_bytes)
    return True


def _verify(
    job: JobContext,
    disk: Disk,
    plan: FillPlan,
    name: str,
    usable: int,
    chunk: int,
    digests: Digests | None,
    sweep: Sweep,
    ranges: Ranges | None,
) -> bool:
    """One read-back pass; False when it failed too much to go on."""
    disk.stage = name
    total = usable if ranges is None else sum(n for _, n in ranges)
    job.report(name, 0, total)
    res: PassResult = verify_pass(
        disk,
        plan,
        0,
        usable,
        chunk=chunk,
        sector=disk.geometry.logical_sector,
        progress=job.progress(name, total),
        digests=digests,
        ranges=ranges,
        timer=sweep.timers[1] if sweep.timers and ranges is None else None,
    )
    job.stage(name, res.seconds, res.bytes_done)
    sweep.bad = merge_ranges(sweep.bad + res.bad_ranges)
    sweep.aliases += plan.aliases
    wipe = job.record.wipe
    if ranges is None:
        wipe.verified_bytes = res.bytes_done
    wipe.mismatched_bytes = (wipe.mismatched_bytes or 0) + res.bad_bytes
    job.log.info(f"{name}.done", seconds=round(res.seconds, 2), mismatched=res.bad_bytes)
    if res.gave_up:
        job.findings.gave_up = GaveUp(name, BAD_LIMIT)
        return False
    return True


def _turned_read_only(disk: Disk, offset: int) -> bool:
    """After writes stopped working at ``offset``: whether the drive still reads there and
    refuses to write back the very bytes it read (so nothing changes on it)."""
    sector = disk.geometry.logical_sector
    at = offset - offset % sector
    buf = memoryview(aligned_buffer(max(sector, 4096)))[:sector]
    try:
        disk.pread(buf, at)
    except FdffdError:
        return False
    try:
        disk.pwrite(buf, at)
    except FdffdError:
        return True
    return False

"""Full-surface passes: write what a plan says, then read it all back and compare.

A *plan* renders the bytes that belong at any range of the drive (the keyed fill for
a wipe pass; partition table, filesystem, payload and fill for the image pass).
Writing and verifying walk the same plan, in large aligned ``O_DIRECT`` chunks, with
one thread doing I/O while another renders or compares the neighbouring chunk, so
the drive never waits for the CPU.  An I/O error splits its chunk into smaller pieces
down to single sectors, so bad flash becomes exact ``bad_ranges``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..devices.blockdev import aligned_buffer
from ..errors import DefectiveError, DeviceIOError, DriveRemovedError
from ..pattern import SLACK, Pattern, first_mismatch, mismatch_ranges

Progress = Callable[[int], None]  # bytes done so far in this pass
_SPLIT = 64 << 10


class Plan(Protocol):
    """Renders the bytes that belong at ``[offset, offset+length)`` of the drive."""

    def render(self, out: memoryview, offset: int, length: int) -> None: ...

    def check(
        self, got: memoryview, scratch: memoryview, offset: int, length: int
    ) -> list[tuple[int, int]]:
        """Compare a chunk read back (``scratch`` is a buffer of the same size to render
        the expectation into); return mismatching ranges (absolute offsets)."""
        ...


class Disk(Protocol):
    path: str

    def pread(self, buf: memoryview, offset: int) -> None: ...
    def pwrite(self, buf: memoryview, offset: int) -> None: ...
    def flush(self) -> None: ...


class FillPlan:
    """The keyed fill over the whole range: what a wipe pass writes.

    When a read-back range mismatches, its first bytes are decrypted: if they are this
    pattern written for another offset, the drive aliases (a wraparound fake) and
    ``aliases`` records ``(read_at, written_for)``."""

    def __init__(self, pattern: Pattern, granule: int = 512) -> None:
        self.pattern = pattern
        self.granule = granule
        self.aliases: list[tuple[int, int]] = []

    def render(self, out: memoryview, offset: int, length: int) -> None:
        self.pattern.fill(out, offset, length)

    def close(self) -> None:
        """Release what the plan holds open (nothing, for plain fill)."""

    def check(
        self, got: memoryview, scratch: memoryview, offset: int, length: int
    ) -> list[tuple[int, int]]:
        self.render(scratch, offset, length)
        return self._compare(got, scratch, offset, length)

    def _compare(
        self, got: memoryview, expected: memoryview, offset: int, length: int
    ) -> list[tuple[int, int]]:
        if first_mismatch(got, expected, length) < 0:
            return []
        ranges = mismatch_ranges(got, expected, length, self.granule)
        for start, _ in ranges[:4]:
            written_for = self.pattern.decode_offset(got[start : start + 16])
            if written_for is not None and written_for != offset + start:
                self.aliases.append((offset + start, written_for))
        return [(offset + s, n) for s, n in ranges]


@dataclass
class PassResult:
    bytes_done: int = 0
    bad_ranges: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bad_bytes(self) -> int:
        return sum(n for _, n in self.bad_ranges)


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, n in sorted(ranges):
        if out and start <= out[-1][0] + out[-1][1]:
            last_s, last_n = out[-1]
            out[-1] = (last_s, max(last_s + last_n, start + n) - last_s)
        else:
            out.append((start, n))
    return out


def _chunks(start: int, end: int, chunk: int) -> Iterator[tuple[int, int]]:
    off = start
    while off < end:
        n = min(chunk, end - off)
        yield off, n
        off += n


class _Stop(Exception):
    pass


def _pipelined(
    items: Iterator[tuple[int, int]],
    first: Callable[[memoryview, int, int], None],
    second: Callable[[memoryview, int, int], None],
    chunk: int,
    depth: int = 3,
) -> None:
    """Run ``first`` on each item in a helper thread and ``second`` in this one, with
    ``depth`` buffers in flight.  An exception in either side stops both and is raised."""
    free: queue.Queue[memoryview] = queue.Queue()
    full: queue.Queue[tuple[memoryview, int, int] | BaseException | None] = queue.Queue()
    buffers = [aligned_buffer(chunk, SLACK + 4096) for _ in range(depth)]
    for b in buffers:
        free.put(memoryview(b))
    stop = threading.Event()

    def producer() -> None:
        try:
            for off, n in items:
                buf = free.get()
                if stop.is_set():
                    return
                first(buf, off, n)
                full.put((buf, off, n))
            full.put(None)
        except BaseException as exc:
            full.put(exc)

    t = threading.Thread(target=producer, name="fdffd-io", daemon=True)
    t.start()
    try:
        while True:
            item = full.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            buf, off, n = item
            second(buf, off, n)
            free.put(buf)
    finally:
        stop.set()
        for _ in range(depth):
            free.put(memoryview(b""))  # unblock the producer
        t.join()
        for b in buffers:
            try:
                b.close()
            except BufferError:
                pass


class _BadBudget:
    """Limits what bad flash may cost, and tells a dying drive from bad sectors: when
    every piece of two chunks in a row fails, the drive has stopped responding."""

    def __init__(self, device: str, limit: int) -> None:
        self.device = device
        self.limit = limit
        self.used = 0
        self.dead_chunks = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise DefectiveError(
                f"more than {self.limit} bytes fail I/O; giving up on the drive", device=self.device
            )

    def chunk_done(self, offset: int, all_failed: bool, stage: str) -> None:
        self.dead_chunks = self.dead_chunks + 1 if all_failed else 0
        if self.dead_chunks >= 2:
            if not os.path.exists(self.device):
                raise DriveRemovedError(device=self.device, stage=stage)
            raise DeviceIOError(
                "the drive stopped responding (every I/O fails)",
                device=self.device,
                stage=stage,
                offset=offset,
            )


def _split_io(
    io: Callable[[memoryview, int], None],
    buf: memoryview,
    offset: int,
    length: int,
    sector: int,
    budget: _BadBudget,
    stage: str,
) -> list[tuple[int, int]]:
    """Redo a failed chunk in 64 KiB pieces, then failed pieces sector by sector."""
    failed_pieces = []
    for piece_off in range(0, length, _SPLIT):
        pn = min(_SPLIT, length - piece_off)
        try:
            io(buf[piece_off : piece_off + pn], offset + piece_off)
        except DeviceIOError:
            failed_pieces.append((piece_off, pn))
    budget.chunk_done(offset, len(failed_pieces) * _SPLIT >= length, stage)
    bad: list[tuple[int, int]] = []
    for piece_off, pn in failed_pieces:
        for s in range(piece_off, piece_off + pn, sector):
            sn = min(sector, piece_off + pn - s)
            try:
                io(buf[s : s + sn], offset + s)
            except DeviceIOError:
                bad.append((offset + s, sn))
                budget.spend(sn)
    return merge_ranges(bad)


def write_pass(
    disk: Disk,
    plan: Plan,
    start: int,
    end: int,
    *,
    chunk: int,
    sector: int,
    progress: Progress | None = None,
    bad_limit: int = 64 << 20,
) -> PassResult:
    """Write ``plan`` over ``[start, end)`` and flush the drive's cache."""
    result = PassResult()
    budget = _BadBudget(disk.path, bad_limit)
    stage = getattr(disk, "stage", "write")
    t0 = time.monotonic()

    def write(buf: memoryview, off: int, n: int) -> None:
        try:
            disk.pwrite(buf[:n], off)
            budget.dead_chunks = 0
        except DeviceIOError:
            result.bad_ranges.extend(_split_io(disk.pwrite, buf, off, n, sector, budget, stage))
        result.bytes_done += n
        if progress:
            progress(result.bytes_done)

    _pipelined(_chunks(start, end, chunk), plan.render, write, chunk)
    disk.flush()
    result.bad_ranges = merge_ranges(result.bad_ranges)
    result.seconds = time.monotonic() - t0
    return result


def verify_pass(
    disk: Disk,
    plan: Plan,
    start: int,
    end: int,
    *,
    chunk: int,
    sector: int,
    progress: Progress | None = None,
    bad_limit: int = 64 << 20,
) -> PassResult:
    """Read ``[start, end)`` back and compare every byte with ``plan``."""
    result = PassResult()
    budget = _BadBudget(disk.path, bad_limit)
    stage = getattr(disk, "stage", "verify")
    unreadable: dict[int, list[tuple[int, int]]] = {}
    expected = aligned_buffer(chunk, SLACK + 4096)
    exp = memoryview(expected)
    t0 = time.monotonic()

    def read(buf: memoryview, off: int, n: int) -> None:
        try:
            disk.pread(buf[:n], off)
            budget.dead_chunks = 0
        except DeviceIOError:
            unreadable[off] = _split_io(disk.pread, buf, off, n, sector, budget, stage)

    def compare(buf: memoryview, off: int, n: int) -> None:
        bad = plan.check(buf, exp, off, n)
        lost = unreadable.pop(off, [])
        if bad or lost:
            # mismatches cost nothing to find, so they are all mapped (a missed fake shows
            # here as a long tail); only slow I/O errors spend the budget
            result.bad_ranges.extend(bad)
            result.bad_ranges.extend(lost)
        result.bytes_done += n
        if progress:
            progress(result.bytes_done)

    try:
        _pipelined(_chunks(start, end, chunk), read, compare, chunk)
    finally:
        exp.release()
        expected.close()
    result.bad_ranges = merge_ranges(result.bad_ranges)
    result.seconds = time.monotonic() - t0
    return result

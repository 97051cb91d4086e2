"""Full-surface passes: write what a plan says, then read it all back and compare.

A *plan* renders the bytes that belong at any range of the drive (the keyed fill for
a wipe pass; partition table, filesystem, payload and fill for the image pass).
Writing and verifying walk the same plan, in large aligned ``O_DIRECT`` chunks.  Two
requests stay on the drive at once (the next is queued while the drive serves one) while
another thread renders the chunks ahead or this one checks the chunk read last, so the
drive never waits for the CPU.  An I/O error splits its chunk into smaller pieces
down to single sectors, so bad flash becomes exact ``bad_ranges``.  When more than
``bad_limit`` bytes fail I/O the pass stops and says so (``PassResult.gave_up``): a finding
for the job's verdict, not an exception.  A drive that stops answering, or is pulled, raises.
"""

from __future__ import annotations

import mmap
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import xxhash

from ..devices.blockdev import aligned_buffer
from ..devices.disk import Disk
from ..errors import DeviceIOError, DriveRemovedError
from ..pattern import SLACK, Pattern, first_mismatch, mismatch_ranges

Progress = Callable[[int], None]  # bytes done so far in this pass
_SPLIT = 64 << 10
_MIN_PIECES = 16
#: requests kept on the drive at once: the next is queued while the drive serves one, so
#: it never idles between requests (USB UAS queues them; a loop device runs them on its
#: workers)
INFLIGHT = 2
#: I/O failures a pass accepts before it gives up on the drive (bytes)
BAD_LIMIT = 64 << 20


class Timer(Protocol):
    """Told when a pass starts and as each chunk completes, in order (``job/speed.py``)."""

    def start(self) -> None: ...
    def done(self, offset: int, length: int) -> None: ...


class Plan(Protocol):
    """Renders the bytes that belong at ``[offset, offset+length)`` of the drive."""

    def render(self, out: memoryview, offset: int, length: int) -> None: ...

    def expect(self, scratch: memoryview, offset: int, length: int) -> object:
        """Render what the verify pass must find at ``[offset, offset+length)`` into
        ``scratch`` (in its own thread); the return value is handed to ``compare``."""
        ...

    def compare(
        self, got: memoryview, expected: memoryview, offset: int, length: int, note: object
    ) -> list[tuple[int, int]]:
        """Compare a chunk read back with its expectation; return mismatching ranges
        (absolute offsets)."""
        ...

    def observe(self, got: memoryview, offset: int, length: int) -> None:
        """See a chunk read back that is known to be intact (payload hashing)."""
        ...


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

    def expect(self, scratch: memoryview, offset: int, length: int) -> object:
        self.render(scratch, offset, length)
        return None

    def observe(self, got: memoryview, offset: int, length: int) -> None:
        """Nothing to do for plain fill: a matching digest says it all."""

    def compare(
        self, got: memoryview, expected: memoryview, offset: int, length: int, note: object
    ) -> list[tuple[int, int]]:
        return self._compare(got, expected, offset, length)

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
    #: more than the pass's ``bad_limit`` bytes failed I/O: it stopped early
    gave_up: bool = False

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


Ranges = Sequence[tuple[int, int]]  # (offset, length) pieces of a pass


def _pass_chunks(start: int, end: int, chunk: int, ranges: Ranges | None) -> list[tuple[int, int]]:
    """The chunks a pass moves: all of ``[start, end)``, or only the pieces in ``ranges``."""
    if ranges is None:
        return list(_chunks(start, end, chunk))
    out: list[tuple[int, int]] = []
    for off, n in ranges:
        out += _chunks(max(start, off), min(end, off + n), chunk)
    return out


Stage = Callable[[memoryview, int, int], object]


class _Producer:
    """One stage run over every chunk in its own thread, into its own ring of buffers."""

    def __init__(self, fn: Stage, chunks: list[tuple[int, int]], chunk: int, depth: int) -> None:
        self.fn = fn
        self.chunks = chunks
        self.buffers = [aligned_buffer(chunk, SLACK + 4096) for _ in range(depth)]
        self.free: queue.Queue[memoryview] = queue.Queue()
        for b in self.buffers:
            self.free.put(memoryview(b))
        self.full: queue.Queue[tuple[memoryview, object] | BaseException | None] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fdffd-stage", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for off, n in self.chunks:
                buf = self.free.get()
                if self.stop.is_set():
                    return
                note = self.fn(buf, off, n)
                self.full.put((buf, note))
            self.full.put(None)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            self.full.put(exc)

    def take(self) -> tuple[memoryview, object]:
        item = self.full.get()
        if item is None:
            raise AssertionError("a pipeline stage ended early")
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        for _ in self.buffers:
            self.free.put(memoryview(b""))  # unblock the stage
        self.thread.join()
        _release(self.buffers)


def _release(buffers: list[mmap.mmap]) -> None:
    for b in buffers:
        try:
            b.close()
        except BufferError:
            pass


IoCall = Callable[[memoryview, int], None]


def _try_io(io: IoCall, buf: memoryview, offset: int) -> DeviceIOError | None:
    """One request; a failed sector is returned (to be mapped), a gone drive raises."""
    try:
        io(buf, offset)
        return None
    except DeviceIOError as err:
        return err


@contextmanager
def _requests(inflight: int) -> Iterator[ThreadPoolExecutor]:
    """Threads that keep up to ``inflight`` requests on the drive at once.  On the way out,
    however it is left, every request still running is waited for, so no buffer is freed
    under a request the kernel is still filling."""
    pool = ThreadPoolExecutor(max_workers=inflight, thread_name_prefix="fdffd-io")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _TooManyBad(Exception):
    """More than the budget of bad bytes: the pass stops (caught in the pass)."""


class _BadBudget:
    """Limits what bad flash may cost, and tells a dying drive from bad sectors: when
    every piece of two chunks in a row fails, the drive has stopped responding (or is gone)."""

    def __init__(self, disk: Disk, limit: int) -> None:
        self.disk = disk
        self.limit = limit
        self.used = 0
        self.dead_chunks = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise _TooManyBad

    def chunk_done(self, offset: int, all_failed: bool, stage: str) -> None:
        self.dead_chunks = self.dead_chunks + 1 if all_failed else 0
        if self.dead_chunks >= 2:
            if self.disk.gone():
                raise DriveRemovedError(device=self.disk.path, stage=stage)
            raise DeviceIOError(
                "the drive stopped responding (every I/O fails)",
                device=self.disk.path,
                stage=stage,
                offset=offset,
            )


def _split_io(
    io: IoCall,
    buf: memoryview,
    offset: int,
    length: int,
    sector: int,
    budget: _BadBudget,
    stage: str,
) -> list[tuple[int, int]]:
    """Redo a failed chunk in pieces (64 KiB, or a sixteenth of a small chunk), then failed
    pieces sector by sector.  A chunk is cut into several pieces, so one bad sector never
    looks like a dead chunk; a chunk whose every piece fails is bad as a whole, without a
    try of each sector (a dying drive would take minutes to answer them all), and two such
    chunks in a row mean the drive has stopped responding."""
    split = max(sector, min(_SPLIT, length // _MIN_PIECES // sector * sector))
    failed_pieces = []
    for piece_off in range(0, length, split):
        pn = min(split, length - piece_off)
        try:
            io(buf[piece_off : piece_off + pn], offset + piece_off)
        except DeviceIOError:
            failed_pieces.append((piece_off, pn))
    dead = sum(pn for _, pn in failed_pieces) >= length
    budget.chunk_done(offset, dead, stage)
    if dead:
        budget.spend(length)
        return [(offset, length)]
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


class Digests:
    """A 128-bit xxh3 digest of every chunk a write pass wrote (16 bytes a chunk: 4 MiB of
    digests for an 8 TiB drive at 4 MiB chunks), so the verify pass can check a chunk read
    back with one hash at tens of GB/s instead of regenerating it."""

    SIZE = 16

    def __init__(self, start: int, end: int, chunk: int) -> None:
        self.start = start
        self.chunk = chunk
        self.table = bytearray(self.SIZE * ((end - start + chunk - 1) // chunk))

    def _index(self, offset: int) -> int:
        return (offset - self.start) // self.chunk * self.SIZE

    def put(self, offset: int, digest: bytes) -> None:
        i = self._index(offset)
        self.table[i : i + self.SIZE] = digest

    def matches(self, offset: int, data: memoryview) -> bool:
        i = self._index(offset)
        return xxhash.xxh3_128_digest(data) == self.table[i : i + self.SIZE]


def write_pass(
    disk: Disk,
    plan: Plan,
    start: int,
    end: int,
    *,
    chunk: int,
    sector: int,
    progress: Progress | None = None,
    bad_limit: int = BAD_LIMIT,
    digests: Digests | None = None,
    inflight: int | None = None,
    ranges: Ranges | None = None,
    timer: Timer | None = None,
) -> PassResult:
    """Write ``plan`` over ``[start, end)`` (only the ``(offset, length)`` pieces in
    ``ranges``, when given) and flush the drive's cache (not when it gave up).

    One thread renders (and, with ``digests``, hashes) chunks ahead while up to
    ``inflight`` writes are on the drive; chunks complete, and are counted, in order."""
    result = PassResult()
    budget = _BadBudget(disk, bad_limit)
    stage = disk.stage
    inflight = inflight or INFLIGHT
    chunks = _pass_chunks(start, end, chunk, ranges)
    t0 = time.monotonic()
    if timer is not None:
        timer.start()

    def render(buf: memoryview, off: int, n: int) -> object:
        plan.render(buf, off, n)
        return xxhash.xxh3_128_digest(buf[:n]) if digests is not None else None

    Pending = tuple[Future[DeviceIOError | None], memoryview, object, int, int]

    def finish(item: Pending) -> None:
        fut, buf, note, off, n = item
        failed = fut.result()
        if timer is not None:
            timer.done(off, n)
        if failed is None:
            budget.dead_chunks = 0
        else:
            result.bad_ranges.extend(_split_io(disk.pwrite, buf, off, n, sector, budget, stage))
        if digests is not None:
            digests.put(off, note)  # type: ignore[arg-type]
        renderer.free.put(buf)
        result.bytes_done += n
        if progress:
            progress(result.bytes_done)

    # the ring: ``inflight`` buffers on the drive, one rendering, one rendered and waiting
    renderer = _Producer(render, chunks, chunk, inflight + 2)
    try:
        with _requests(inflight) as pool:
            pending: deque[Pending] = deque()
            for off, n in chunks:
                buf, note = renderer.take()
                if len(pending) >= inflight:
                    finish(pending.popleft())
                fut = pool.submit(_try_io, disk.pwrite, buf[:n], off)
                pending.append((fut, buf, note, off, n))
            while pending:
                finish(pending.popleft())
    except _TooManyBad:
        result.gave_up = True
    finally:
        renderer.close()
    if not result.gave_up:
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
    bad_limit: int = BAD_LIMIT,
    digests: Digests | None = None,
    inflight: int | None = None,
    ranges: Ranges | None = None,
    timer: Timer | None = None,
) -> PassResult:
    """Read ``[start, end)`` (only the pieces in ``ranges``, when given) back and compare
    every byte with ``plan``.

    Up to ``inflight`` reads are on the drive while this thread checks the oldest chunk
    read.  With ``digests`` from the write pass, a chunk whose xxh3-128 digest matches
    what was written is intact; only a chunk that does not match has its expectation
    regenerated and compared byte for byte, to map bad sectors and aliases exactly.
    Without digests every chunk's expectation is rendered ahead in its own thread and
    compared."""
    result = PassResult()
    budget = _BadBudget(disk, bad_limit)
    stage = disk.stage
    inflight = inflight or INFLIGHT
    chunks = _pass_chunks(start, end, chunk, ranges)
    scratch: list[memoryview] = []
    t0 = time.monotonic()
    if timer is not None:
        timer.start()

    def check(got: memoryview, lost: list[tuple[int, int]], off: int, n: int) -> None:
        if expecter is not None:
            expected, note = expecter.take()
            bad = plan.compare(got, expected, off, n, note)
            expecter.free.put(expected)
        elif not lost and digests is not None and digests.matches(off, got[:n]):
            plan.observe(got, off, n)
            bad = []
        else:
            if not scratch:
                scratch.append(memoryview(aligned_buffer(chunk, SLACK + 4096)))
            bad = plan.compare(got, scratch[0], off, n, plan.expect(scratch[0], off, n))
        if bad or lost:
            # mismatches cost nothing to find, so they are all mapped (a missed fake shows
            # here as a long tail); only slow I/O errors spend the budget
            result.bad_ranges.extend(bad)
            result.bad_ranges.extend(lost)
        result.bytes_done += n
        if progress:
            progress(result.bytes_done)

    # ``inflight`` buffers on the drive and one being checked
    ring = [aligned_buffer(chunk, SLACK + 4096) for _ in range(inflight + 1)]
    free = deque(memoryview(b) for b in ring)
    expecter = _Producer(plan.expect, chunks, chunk, inflight + 2) if digests is None else None
    try:
        with _requests(inflight) as pool:
            pending: deque[tuple[Future[DeviceIOError | None], memoryview, int, int]] = deque()
            todo = iter(chunks)

            def submit_next() -> None:
                nxt = next(todo, None)
                if nxt is not None:
                    buf = free.popleft()
                    fut = pool.submit(_try_io, disk.pread, buf[: nxt[1]], nxt[0])
                    pending.append((fut, buf, *nxt))

            for _ in range(inflight):
                submit_next()
            while pending:
                fut, buf, off, n = pending.popleft()
                failed = fut.result()
                if timer is not None:
                    timer.done(off, n)
                submit_next()  # keep the drive busy while this chunk is checked
                if failed is None:
                    budget.dead_chunks = 0
                    lost = []
                else:
                    lost = _split_io(disk.pread, buf, off, n, sector, budget, stage)
                check(buf, lost, off, n)
                free.append(buf)
    except _TooManyBad:
        result.gave_up = True
    finally:
        if expecter is not None:
            expecter.close()
        free.clear()
        scratch.clear()
        _release(ring)
    result.bad_ranges = merge_ranges(result.bad_ranges)
    result.seconds = time.monotonic() - t0
    return result

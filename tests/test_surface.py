"""The full-surface passes with several requests in flight, on the in-memory drive model.

The passes are also run on real loop devices and FUSE fakes by every job test; here
hypothesis varies the sizes, the chunk and the number of requests in flight, which the
device tests cannot afford to do thousands of times.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fdffd.errors import DeviceIOError
from fdffd.job.surface import _MIN_PIECES, Digests, FillPlan, verify_pass, write_pass
from fdffd.pattern import Pattern
from fdffd_testkit.memdisk import PAGE, MemDisk

KEY = b"s" * 32

sizes = st.integers(min_value=1, max_value=96).map(lambda n: n * PAGE * 4)
chunks = st.sampled_from([PAGE * 4, 64 << 10, 256 << 10, 1 << 20])
inflight = st.integers(min_value=1, max_value=4)


def _passes(
    disk: MemDisk, size: int, chunk: int, n: int
) -> tuple[list[int], list[int], list[tuple[int, int]], FillPlan]:
    plan = FillPlan(Pattern(KEY, "image"), granule=PAGE)
    digests = Digests(0, size, chunk)
    wrote: list[int] = []
    read: list[int] = []
    w = write_pass(
        disk, plan, 0, size, chunk=chunk, sector=PAGE, digests=digests, inflight=n,
        progress=wrote.append,
    )  # fmt: skip
    assert w.bytes_done == size and not w.bad_ranges
    v = verify_pass(
        disk, plan, 0, size, chunk=chunk, sector=PAGE, digests=digests, inflight=n,
        progress=read.append,
    )  # fmt: skip
    assert v.bytes_done == size
    return wrote, read, v.bad_ranges, plan


@settings(max_examples=60, deadline=None)
@given(sizes, chunks, inflight)
def test_honest_drive_reads_back_every_byte_in_order(size: int, chunk: int, n: int) -> None:
    """An honest drive verifies clean, whatever the chunk and requests in flight; progress
    only grows and ends at the size; the drive holds exactly the pattern."""
    disk = MemDisk(size, size)
    wrote, read, bad, _ = _passes(disk, size, chunk, n)
    assert bad == []
    for seen in (wrote, read):
        assert seen == sorted(seen) and seen[-1] == size
    want = Pattern(KEY, "image").bytes_at(0, size)
    assert b"".join(disk.pages[i] for i in range(size // PAGE)) == want


@settings(max_examples=60, deadline=None)
@given(sizes, chunks, inflight, st.data())
def test_unreadable_sectors_are_mapped_exactly(
    size: int, chunk: int, n: int, data: st.DataObject
) -> None:
    """Pages that fail reads come back as exactly those bad ranges, however many requests
    were in flight when they failed."""
    pages = size // PAGE
    bad_pages = data.draw(st.sets(st.integers(0, pages - 1), max_size=6))
    disk = MemDisk(size, size, bad_pages=set(bad_pages))
    _, _, bad, _ = _passes(disk, size, chunk, n)
    mapped = {off // PAGE + i for off, ln in bad for i in range(ln // PAGE)}
    assert mapped == bad_pages


@settings(max_examples=40, deadline=None)
@given(sizes, chunks, inflight, st.sampled_from(["wraparound", "drop-zeros", "drop-ff"]))
def test_a_fake_fails_verify_where_its_flash_is_missing(
    size: int, chunk: int, n: int, kind: str
) -> None:
    """A fake with half its announced flash: dropped writes fail verify from the real size
    to the end; a wraparound fails below the real size (the upper half's writes landed
    there), and decrypting what it holds names offsets exactly one real size higher."""
    real = size // 2 - (size // 2) % PAGE
    # requests in flight together must not alias each other (their order is the drive's)
    assume(real >= chunk * (n + 1))
    disk = MemDisk(size, real, kind=kind)
    _, _, bad, plan = _passes(disk, size, chunk, n)
    if kind == "wraparound":
        assert bad == [(0, real)]
        assert plan.aliases and all(w - r == real for r, w in plan.aliases)
    else:
        assert bad == [(real, size - real)]


@settings(max_examples=20, deadline=None)
@given(chunks, inflight)
def test_a_dead_drive_fails_fast_instead_of_sector_by_sector(chunk: int, n: int) -> None:
    """A drive whose every write fails past a point is given up on as not responding after
    two whole chunks fail, without trying each of its sectors."""
    size = chunk * 64
    disk = MemDisk(size, chunk * 2, kind="ioerror", path="/")  # a path that exists
    calls = []
    write = disk.pwrite

    def counting(buf: memoryview, offset: int) -> None:
        calls.append(offset)
        write(buf, offset)

    disk.pwrite = counting  # type: ignore[method-assign]
    plan = FillPlan(Pattern(KEY, "wipe-1"), granule=PAGE)
    with pytest.raises(DeviceIOError, match="stopped responding"):
        write_pass(disk, plan, 0, size, chunk=chunk, sector=PAGE, inflight=n)
    assert len(calls) <= (n + 2) * (_MIN_PIECES + 1)

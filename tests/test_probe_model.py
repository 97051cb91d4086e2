"""The probe algorithm against in-memory models of honest and fake drives."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdffd.job.capacity import capacity_from_verify, verify_kind
from fdffd.job.evict import MIN_EVICT
from fdffd.job.probe import (
    PROBE_BLOCK,
    ProbeResult,
    inner_positions,
    probe_capacity,
    region_samples,
    round0_positions,
)
from fdffd_testkit.fakemedia import FakeSpec
from fdffd_testkit.mediadisk import MediaDisk
from fdffd_testkit.memdisk import MemDisk

MiB = 1 << 20
KEY = b"k" * 32


def _check(disk: MemDisk, flush: int = 8 * MiB) -> None:
    res = probe_capacity(disk, KEY, flush_bytes=flush, search_bytes=flush)
    if disk.kind == "honest":
        assert res.usable_bytes == disk.announced and not res.counterfeit
        return
    assert res.counterfeit, res
    assert res.usable_bytes <= disk.real, (res.usable_bytes, disk.real)
    assert res.usable_bytes >= disk.real - max(PROBE_BLOCK, disk.real // 100), (
        res.usable_bytes,
        disk.real,
    )


def test_honest_drive_is_honest() -> None:
    """An honest drive reports its announced size as usable."""
    _check(MemDisk(announced=256 * MiB, real=256 * MiB))


def test_each_fake_kind_is_found_with_its_kind() -> None:
    """Wraparound, dropped writes (zeros, 0xFF) and I/O errors each give their kind."""
    for kind, name in (
        ("wraparound", "wraparound"),
        ("drop-zeros", "dropped-zeros"),
        ("drop-ff", "dropped-ff"),
        ("ioerror", "io-error"),
    ):
        disk = MemDisk(announced=512 * MiB, real=100 * MiB + 12 * 4096, kind=kind)
        res = probe_capacity(disk, KEY, flush_bytes=8 * MiB)
        assert res.kind == name
        assert disk.real - 4096 <= res.usable_bytes <= disk.real


def test_write_cache_does_not_hide_a_fake() -> None:
    """A 4 MiB write-back cache that ignores flushes cannot mask dropped writes."""
    _check(MemDisk(announced=1024 * MiB, real=200 * MiB, kind="drop-zeros", cache_bytes=4 * MiB))


def test_isolated_bad_block_is_not_a_capacity_boundary() -> None:
    """One unreadable block inside an honest drive is a suspect, not a fake boundary."""
    positions = round0_positions(256 * MiB, 8 * MiB, PROBE_BLOCK)
    bad = positions[len(positions) // 2]
    disk = MemDisk(announced=256 * MiB, real=256 * MiB, bad_pages={bad // 4096})
    res = probe_capacity(disk, KEY, flush_bytes=8 * MiB)
    assert not res.counterfeit
    assert bad in res.suspect_blocks


def test_inner_positions_stay_strictly_inside() -> None:
    """Bisection points lie strictly between the known good and bad blocks."""
    pts = inner_positions(0, 100 * PROBE_BLOCK, PROBE_BLOCK)
    assert pts and all(0 < p < 100 * PROBE_BLOCK and p % PROBE_BLOCK == 0 for p in pts)
    assert inner_positions(0, PROBE_BLOCK, PROBE_BLOCK) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    announced_mib=st.integers(min_value=64, max_value=64 * 1024),
    real_fraction=st.floats(min_value=0.05, max_value=0.98),
    kind=st.sampled_from(["drop-zeros", "drop-ff", "ioerror", "wraparound"]),
    cache_mib=st.sampled_from([0, 0, 1, 4]),
)
def test_probe_finds_the_real_size_of_any_fake(
    announced_mib: int, real_fraction: float, kind: str, cache_mib: int
) -> None:
    """For generated fakes the probe's usable size never exceeds the real size, within 1%."""
    announced = announced_mib * MiB
    real = max(16 * MiB, int(announced * real_fraction)) // 4096 * 4096  # flash comes in pages
    if kind == "wraparound":
        # controllers that wrap ignore high address lines: the period is a power of two
        # (any other period is caught by the verify pass; see test_counterfeit.py)
        real = 1 << (real.bit_length() - 1)
    if real >= announced:
        return
    _check(MemDisk(announced=announced, real=real, kind=kind, cache_bytes=cache_mib * MiB))


@settings(max_examples=30, deadline=None)
@given(announced_mib=st.integers(min_value=64, max_value=1 << 20))
def test_honest_drives_of_any_size(announced_mib: int) -> None:
    """Honest drives from 64 MiB to 1 TiB are never called counterfeit."""
    _check(MemDisk(announced=announced_mib * MiB, real=announced_mib * MiB))


def test_bad_block_in_the_start_region_is_a_suspect() -> None:
    """An unreadable block in the probe's own start region does not shrink the drive."""
    flush = 8 * MiB
    samples = region_samples(0, flush, PROBE_BLOCK)
    bad = [flush - PROBE_BLOCK, samples[3]]
    disk = MemDisk(announced=256 * MiB, real=256 * MiB, bad_pages={b // 4096 for b in bad})
    res = probe_capacity(disk, KEY, flush_bytes=flush)
    assert not res.counterfeit
    assert set(bad) <= set(res.suspect_blocks)


# --------------------------------------------------------------------------- fakes in the wild
# The same model the FUSE fakes serve (FakeMedia), without FUSE: fast enough for many sizes.

FLUSH = 32 * MiB


def _wild(spec: FakeSpec, flush: int = FLUSH) -> ProbeResult:
    with MediaDisk(spec) as disk:
        res = probe_capacity(disk, KEY, flush_bytes=flush)
    assert res.counterfeit, res
    assert spec.real - max(PROBE_BLOCK, spec.real // 100) <= res.usable_bytes <= spec.real, res
    return res


@pytest.mark.parametrize("cache_mib", [1, 4, 16, 30])
@pytest.mark.parametrize("kind", ["drop-zeros", "drop-ff", "ioerror"])
def test_cache_of_the_last_writes_past_the_flash_is_measured(cache_mib: int, kind: str) -> None:
    """A controller keeping the last writes past its real flash: the probe measures the cache
    by eviction (an upper bound, at most twice it) and still finds the real size."""
    cache = cache_mib * MiB
    res = _wild(FakeSpec(256 * MiB, 64 * MiB, kind, tail_cache_bytes=cache))
    assert res.cache_bytes is not None and cache <= res.cache_bytes <= 2 * cache + MiB
    assert res.evict_bytes == res.cache_bytes and not res.unstable


def test_a_write_back_cache_is_measured_too() -> None:
    """A cache of recent writes anywhere (evicted to the fake path) is measured the same way."""
    res = _wild(FakeSpec(512 * MiB, 100 * MiB, "drop-zeros", cache_bytes=8 * MiB))
    assert res.cache_bytes is not None and 8 * MiB <= res.cache_bytes <= 17 * MiB


def test_without_a_cache_the_later_evictions_are_small() -> None:
    """No cache measured: each later round writes only ``MIN_EVICT`` instead of the flush."""
    res = _wild(FakeSpec(1024 * MiB, 300 * MiB, "drop-zeros"))
    assert res.cache_bytes == 0 and res.evict_bytes == MIN_EVICT
    assert res.bytes_written < FLUSH + 16 * MiB


@pytest.mark.parametrize("cache_mib", [48, 100])
@pytest.mark.parametrize("tail", [True, False])
def test_a_cache_larger_than_the_flush_is_found_by_the_top_check(
    cache_mib: int, tail: bool
) -> None:
    """Standalone (search_bytes None) the top check writes up to half the drive, as f3probe
    does, and finds caches that large; a job's probe (search_bytes = the flush) leaves them
    to its verify pass; a cache above half the drive hides a fake from any probe."""
    cache = cache_mib * MiB
    kw = {"tail_cache_bytes": cache} if tail else {"cache_bytes": cache}
    spec = FakeSpec(256 * MiB, 64 * MiB, "drop-zeros", **kw)  # type: ignore[arg-type]
    res = _wild(spec)
    assert res.cache_bytes is not None and cache <= res.cache_bytes
    with MediaDisk(spec) as disk:
        assert not probe_capacity(disk, KEY, flush_bytes=FLUSH, search_bytes=FLUSH).counterfeit
    spec = FakeSpec(256 * MiB, 64 * MiB, "drop-zeros", tail_cache_bytes=150 * MiB)
    with MediaDisk(spec) as disk:
        assert not probe_capacity(disk, KEY, flush_bytes=FLUSH).counterfeit


@pytest.mark.parametrize("stale", ["donor", "previous", "other-block"])
def test_stale_data_past_the_flash_is_not_taken_for_storage(stale: str) -> None:
    """Reads past the real flash that return old contents (the donor's data, a previous
    write, another position's block) are a boundary like zeros are."""
    spec = FakeSpec(256 * MiB, 64 * MiB, "drop-zeros", stale=stale)
    with MediaDisk(spec) as disk:
        donor = bytes(range(256)) * 16
        for off in range(0, spec.real, MiB):  # the donor's data fills the real flash
            disk.pwrite(memoryview(donor), off)
        res = probe_capacity(disk, KEY, flush_bytes=FLUSH)
    assert spec.real * 0.99 <= res.usable_bytes <= spec.real and not res.unstable


@pytest.mark.parametrize(
    "moving",
    [
        *itertools.permutations((64, 96, 160)),
        *itertools.permutations((64, 130, 250)),
        (64, 250),
        (250, 64),
        (64, 68, 72),
    ],
)
def test_a_capacity_that_moves_between_rounds_is_unstable(moving: tuple[int, ...]) -> None:
    """A drive whose answer changes with each cache flush: the probe confirms its boundary
    until the answers agree, keeps the lowest, and marks the drive unstable."""
    spec = FakeSpec(256 * MiB, 64 * MiB, "drop-zeros", moving=tuple(m * MiB for m in moving))
    res = _wild(spec)
    assert res.unstable and res.boundaries


@pytest.mark.parametrize("real", [4096 * 5, 500 * 1024, 3 * MiB, 31 * MiB])
def test_real_flash_smaller_than_the_flush_region(real: int) -> None:
    """A fake whose real flash is smaller than the probe's start region is still found
    within it, with or without a cache past it."""
    _wild(FakeSpec(256 * MiB, real, "drop-zeros"))
    _wild(FakeSpec(256 * MiB, real, "drop-ff", tail_cache_bytes=8 * MiB))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    announced_mib=st.integers(min_value=64, max_value=16 * 1024),
    real_fraction=st.floats(min_value=0.02, max_value=0.95),
    kind=st.sampled_from(["drop-zeros", "drop-ff", "ioerror"]),
    tail_mib=st.sampled_from([0, 1, 3, 12]),
    stale=st.sampled_from(["", "", "donor", "other-block", "previous"]),
)
def test_any_limbo_fake_with_a_tail_cache(
    announced_mib: int, real_fraction: float, kind: str, tail_mib: int, stale: str
) -> None:
    """Generated fakes that lose writes past the real flash, with caches the probe's flush
    covers and any stale reads: never above the real size, within 1% below it."""
    announced = announced_mib * MiB
    real = max(MiB, int(announced * real_fraction)) // 4096 * 4096
    if kind == "ioerror":
        stale = ""
    if stale in ("other-block", "donor"):
        # reads past the flash that return the probe's own blocks look like aliases, so the
        # probe evicts at the start of the drive as for a wraparound, which a cache of
        # writes past the flash ignores: that pair is the verify pass's (test_counterfeit.py)
        tail_mib = 0
    flush = min(FLUSH, announced // 8)
    if tail_mib * MiB >= flush or real >= announced - tail_mib * MiB - MiB:
        return  # past the documented bound (see test_a_cache_larger_than_the_flush...)
    _wild(FakeSpec(announced, real, kind, tail_cache_bytes=tail_mib * MiB, stale=stale), flush)


# --------------------------------------------------------------------------- the verify pass


def test_verify_dead_region_followed_by_good_data_is_a_boundary() -> None:
    """A long dead region with data reading back right after it (a cache) is the end of the
    real capacity, not bad flash; a tail that is wrong to the end too."""
    end = 256 * MiB
    assert capacity_from_verify([(64 * MiB, 150 * MiB)], [], end) == 64 * MiB
    assert capacity_from_verify([(64 * MiB, end - 64 * MiB)], [], end) == 64 * MiB
    assert verify_kind([(64 * MiB, 150 * MiB)], [], end, None) == "cache"
    assert verify_kind([(64 * MiB, end - 64 * MiB)], [], end, "dropped-ff") == "dropped-ff"


def test_verify_region_keeping_some_pages_is_a_boundary() -> None:
    """A region past the real flash that keeps some of its pages (a spare pool) is one dead
    region: runs closer than GAP join."""
    bad = [(64 * MiB + i * 12288, 8192) for i in range(400)]
    assert capacity_from_verify(bad, [], 128 * MiB) == 64 * MiB


def test_verify_scattered_bad_sectors_are_bad_flash() -> None:
    """Short mismatches spread over the surface are bad flash: no capacity from them."""
    bad = [(i * 7 * MiB + 512, 4096) for i in range(30)]
    assert capacity_from_verify(bad, [], 256 * MiB) is None


def test_verify_alias_gives_the_period_and_wins_over_an_aliased_run() -> None:
    """An alias names the wrap period; the mismatching run it explains is not a dead region."""
    period = 200 * MiB + 12 * 4096
    bad = [(0, 56 * MiB)]
    aliases = [(0, period), (4 * MiB, 4 * MiB + period)]
    assert capacity_from_verify(bad, aliases, 256 * MiB) == period
    assert verify_kind(bad, aliases, 256 * MiB, None) == "wraparound"


def test_verify_capacity_never_above_the_first_dead_region() -> None:
    """With a dead region below an alias's period, the lower one is the capacity."""
    bad = [(30 * MiB, 20 * MiB)]
    assert capacity_from_verify(bad, [(120 * MiB, 250 * MiB)], 256 * MiB) == 30 * MiB

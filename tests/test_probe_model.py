"""The probe algorithm against in-memory models of honest and fake drives."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdffd.job.probe import (
    PROBE_BLOCK,
    inner_positions,
    probe_capacity,
    region_samples,
    round0_positions,
)

from .rig.memdisk import MemDisk

MiB = 1 << 20
KEY = b"k" * 32


def _check(disk: MemDisk, flush: int = 8 * MiB) -> None:
    res = probe_capacity(disk, KEY, flush_bytes=flush)
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

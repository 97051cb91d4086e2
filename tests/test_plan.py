"""The imaging plan, without any device: choices, placement, and rendering with the fill."""

from __future__ import annotations

import os
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdffd.errors import FileTooLargeError, PayloadTooLargeError, UsageError
from fdffd.imaging.dates import MIN_AGE_DAYS, draw_base_time
from fdffd.imaging.plan import FAT32_AUTO_LIMIT, ID_BYTES, build_plan, choose_filesystem
from fdffd.imaging.types import Bytes, FileData, FileEntry, Fill, Tree, Zeros
from fdffd.job.image import ImageSurface
from fdffd.pattern import SLACK, Pattern
from fdffd.payload.manifest import FileRecord

MiB = 1 << 20
GiB = 1 << 30
TODAY = date(2026, 12, 3)
BASE = datetime(2026, 5, 6, 19, 41, 7, 123_456)


def _tree(tmp_path: Path, sizes: dict[str, int], dirs: tuple[str, ...] = ()) -> Tree:
    files = []
    for rel, size in sizes.items():
        p = tmp_path / "src" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
        files.append(FileEntry(rel, size, p))
    return Tree(tuple(files), dirs)


def test_auto_chooses_fat32_up_to_androids_limit_and_exfat_above() -> None:
    """filesystem = auto: FAT32 up to 32,896 MiB (Android's SDHC/SDXC line), exFAT above
    or for a 4 GiB file."""
    small = Tree((FileEntry("a", 10, Path("/x")),))
    big = Tree((FileEntry("film.mkv", 4 * GiB, Path("/x")),))
    assert 32896 * MiB == FAT32_AUTO_LIMIT
    assert choose_filesystem("auto", 32896 * MiB, small) == "fat32"
    assert choose_filesystem("auto", 32896 * MiB + 512, small) == "exfat"
    assert choose_filesystem("auto", 8 * GiB, big) == "exfat"
    assert choose_filesystem("exfat", 1 * GiB, small) == "exfat"
    with pytest.raises(FileTooLargeError, match=r"film\.mkv"):
        choose_filesystem("fat32", 64 * GiB, big)


@settings(max_examples=40, deadline=None)
@given(
    usable_mib=st.integers(min_value=64, max_value=4 << 20),
    fs=st.sampled_from(["auto", "fat32", "exfat"]),
    ids=st.binary(min_size=ID_BYTES, max_size=ID_BYTES),
)
def test_plan_stays_inside_the_usable_size(usable_mib: int, fs: str, ids: bytes) -> None:
    """For any usable size the extents are sorted, disjoint and end inside it."""
    usable = usable_mib * MiB
    if fs == "fat32" and usable > 2 << 40:
        return
    tree = Tree((FileEntry("a.bin", 123_457, Path("/nonexistent")),), ("빈 폴더",))
    if not any(ids[:32]):
        ids = b"\x01" + ids[1:]
    plan = build_plan(usable, tree, filesystem=fs, label="", ids=ids, base_time=BASE)
    pos = 0
    for e in plan.extents:
        assert e.offset >= pos and e.length > 0
        pos = e.end
    assert pos <= usable
    assert plan.partition.partition_offset % MiB == 0
    assert plan.partition.partition_offset + plan.partition.partition_bytes <= usable
    file_bytes = sum(e.length for e in plan.extents if isinstance(e.source, FileData))
    assert file_bytes == 123_457


@pytest.mark.parametrize("fs", ["fat32", "exfat"])
def test_two_drives_differ_in_serial_and_every_time(fs: str) -> None:
    """Two drives imaged from one profile get different serials and times; the MBR
    carries no identifier at all (Android's table has a zero disk signature)."""
    tree = Tree((FileEntry("a", 1, Path("/x")), FileEntry("d/b", 5, Path("/x"))))
    a, b = (
        build_plan(
            256 * MiB,
            tree,
            filesystem=fs,
            label="",
            ids=os.urandom(ID_BYTES),
            base_time=draw_base_time(TODAY),
        )
        for _ in range(2)
    )
    assert a.volume.volume_id != b.volume.volume_id
    assert a.partition.disk_signature == b.partition.disk_signature == "00000000"
    assert a.times is not None and b.times is not None
    assert a.times.formatted != b.times.formatted
    for path in ("a", "d", "d/b"):
        assert a.times.entries[path] != b.times.entries[path]


@pytest.mark.parametrize("fs", ["fat32", "exfat"])
def test_no_time_is_the_epoch_recent_or_in_the_future(fs: str) -> None:
    """Every time on a drive lies before the station's date minus 30 days, after 1981."""
    tree = Tree(tuple(FileEntry(f"d{i % 3}/f{i}", 7_000_000 * i, Path("/x")) for i in range(40)))
    for _ in range(20):
        base = draw_base_time(TODAY)
        plan = build_plan(
            64 * GiB, tree, filesystem=fs, label="", ids=os.urandom(ID_BYTES), base_time=base
        )
        assert plan.times is not None
        limit = datetime.combine(TODAY - timedelta(days=MIN_AGE_DAYS), datetime.min.time())
        stamps = [plan.times.formatted]
        for t in plan.times.entries.values():
            stamps += [t.created, t.modified, t.accessed]
        assert all(datetime(1981, 1, 1) < t < limit for t in stamps), (min(stamps), max(stamps))


def test_base_times_come_from_the_window() -> None:
    """draw_base_time stays in [today - 30 - window, today - 30) and rarely repeats."""
    rng = random.Random(5)
    got = [draw_base_time(TODAY, rng, window_days=100) for _ in range(500)]
    assert all(TODAY - timedelta(days=131) <= t.date() < TODAY - timedelta(days=30) for t in got)
    assert len({t for t in got}) == len(got)
    assert len({t.date() for t in got}) > 80
    with pytest.raises(ValueError):
        draw_base_time(TODAY, rng, min_age_days=3)
    with pytest.raises(ValueError):
        draw_base_time(date(1981, 6, 1), rng)


def test_free_space_can_be_zeros() -> None:
    """free_fill="zeros": every byte the plan does not list is Zeros, not keyed Fill."""
    tree = Tree((FileEntry("a", 1000, Path("/x")),))
    ids = os.urandom(ID_BYTES)
    keyed = build_plan(96 * MiB, tree, filesystem="fat32", label="", ids=ids, base_time=BASE)
    zeros = build_plan(
        96 * MiB, tree, filesystem="fat32", label="", ids=ids, base_time=BASE, free_fill="zeros"
    )
    assert keyed.extents == zeros.extents
    kinds = {type(s.source) for s in zeros.segments(0, 96 * MiB)}
    assert Fill not in kinds and Zeros in kinds
    assert Fill in {type(s.source) for s in keyed.segments(0, 96 * MiB)}
    with pytest.raises(UsageError):
        build_plan(
            96 * MiB,
            tree,
            filesystem="fat32",
            label="",
            ids=ids,
            base_time=BASE,
            free_fill="random",
        )


def test_payload_that_does_not_fit_names_both_sizes(tmp_path: Path) -> None:
    """A payload larger than the drive fails with the needed and available sizes."""
    tree = Tree((FileEntry("big", 200 * MiB, tmp_path / "big"),))
    with pytest.raises(PayloadTooLargeError) as info:
        build_plan(
            128 * MiB, tree, filesystem="auto", label="", ids=os.urandom(ID_BYTES), base_time=BASE
        )
    assert "needs" in str(info.value) and "holds" in str(info.value)


@pytest.mark.parametrize("fs", ["fat32", "exfat"])
def test_rendering_is_the_plan_over_the_fill(tmp_path: Path, fs: str) -> None:
    """Rendered chunks hold each extent's bytes exactly and the keyed fill everywhere else."""
    tree = _tree(
        tmp_path, {"영화/겨울연가 1화.mp4": 3 * MiB + 17, "책/a.txt": 5000, "empty": 0}, ("빈",)
    )
    plan = build_plan(
        96 * MiB, tree, filesystem=fs, label="FREEDOM", ids=os.urandom(ID_BYTES), base_time=BASE
    )
    pattern = Pattern(b"k" * 32, "image")
    records = [FileRecord(path=f.path, size=f.size, sha256="0" * 64) for f in tree.files]
    surface = ImageSurface(plan, pattern, records)
    chunk = 1 * MiB + 512 * 3  # chunks that straddle extents
    buf = bytearray(chunk + SLACK)
    view = memoryview(buf)
    off = 0
    while off < plan.usable_bytes:
        n = min(chunk, plan.usable_bytes - off)
        surface.render(view, off, n)
        for seg in plan.segments(off, n):
            got = bytes(view[seg.offset - off : seg.offset - off + seg.length])
            src = seg.source
            if isinstance(src, Bytes):
                assert got == src.data
            elif isinstance(src, Zeros):
                assert got == bytes(seg.length)
            elif isinstance(src, FileData):
                with open(src.entry.source, "rb") as f:
                    f.seek(src.file_offset)
                    assert got == f.read(seg.length)
            else:
                assert isinstance(src, Fill)
                assert got == pattern.bytes_at(seg.offset, seg.length)
        off += n
    surface.close()
    assert (
        surface.file_ranges("책/a.txt")
        and sum(n for _, n in surface.file_ranges("영화/겨울연가 1화.mp4")) == 3 * MiB + 17
    )

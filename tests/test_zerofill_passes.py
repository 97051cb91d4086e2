"""The passes under a zero-filled image, on the in-memory disk: which pass goes where, what
a drive that drops writes of zeros gets, and the settings that choose.

The in-memory disk (``fdffd_testkit.memdisk``) is a whole drive behind the job's ``Disk``
seam; a drive that ignores writes of zeros is that disk with one rule more.
"""

from __future__ import annotations

import os
import struct
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest

from fdffd.config import config_from_dict, load_config
from fdffd.devices.facts import DeviceFacts
from fdffd.errors import ConfigError
from fdffd.imaging import dates
from fdffd.imaging.plan import ID_BYTES, build_plan
from fdffd.imaging.types import Bytes, FileData, FileEntry, Tree
from fdffd.job.image import ImageSurface
from fdffd.job.passes import subtract_ranges
from fdffd.job.pipeline import JobOutcome, run_job
from fdffd.pattern import Pattern
from fdffd.payload import add_profile, open_profile
from fdffd_testkit.markers import MAGIC, marker_block
from fdffd_testkit.memdisk import PAGE, MemDisk

from .cli_util import write_config
from .job_backends import DriveSpec, MemoryDrive, payload_source

MiB = 1 << 20
#: a payload that fills most of a 64 MiB drive with large files, and a small one
LARGE = {f"영화/{i}화.mp4": 9 * MiB + 1000 * i for i in range(1, 6)}
SMALL = {"README.TXT": 42, "책/朝鮮語 入門.pdf": 300_001}


class DropsZeroWrites(MemDisk):
    """A drive that ignores every write of an all-zero page in ``[lo, hi)``: the page keeps
    what it held (a flaky controller, or one that turned read-only without saying so)."""

    lo: int = 0
    hi: int = 1 << 62

    def _write_page(self, page: int, data: bytes) -> None:
        if self.lo <= page * PAGE < self.hi and data.count(0) == PAGE:
            return
        super()._write_page(page, data)


def _job(
    tmp_path: Path, disk: MemDisk, files: dict[str, int] | None = None, **job: object
) -> JobOutcome:
    if files is not None:
        add_profile(tmp_path / "payloads", "default", payload_source(tmp_path, files))
    profile = "default" if files or job.pop("imported", False) else ""
    cfg = load_config(write_config(tmp_path, job={"profile": profile, **job}))
    drive = MemoryDrive(DriveSpec.honest(disk.announced))
    drive.disk = disk
    for off in range(0, disk.real - PAGE + 1, MiB):  # the donor's files
        disk.pwrite(memoryview(marker_block(off)), off)
    with ExitStack() as stack:
        payload = None
        if profile:
            payload = stack.enter_context(open_profile(cfg.station.payload_dir, profile))
        d, facts = stack.enter_context(drive.opened(cfg))
        return run_job(cfg, d, facts, payload=payload)


def _stages(out: JobOutcome) -> dict[str, int]:
    return {s.name: s.bytes or 0 for s in out.record.stages}


def _donor_left(disk: MemDisk) -> list[int]:
    return [p * PAGE for p, data in disk.pages.items() if MAGIC in data]


@pytest.mark.parametrize(("files", "share"), [(LARGE, 0.45), (SMALL, 1.0)])
def test_keyed_pass_goes_where_the_image_leaves_zeros(
    tmp_path: Path, files: dict[str, int], share: float
) -> None:
    """With a payload of large files filling the drive, the keyed pass and its read-back
    cover little more than the free space; with a small one, the whole surface."""
    disk = MemDisk(64 * MiB, 64 * MiB)
    out = _job(tmp_path, disk, files)
    rec = out.record
    assert rec.verdict == "ok" and rec.wiped and rec.payload and rec.payload.verified
    assert rec.wipe.free_space == "zeros"
    st = _stages(out)
    assert list(st)[-5:] == ["keyed", "keyed-verify", "image", "verify", "finish"]
    assert st["keyed"] == st["keyed-verify"] and st["image"] == st["verify"] == disk.size
    assert st["keyed"] <= share * disk.size
    assert rec.wipe.bytes_written == st["keyed"] + st["image"]
    assert _donor_left(disk) == []


def test_with_more_passes_the_last_wipe_pass_is_the_keyed_pass(tmp_path: Path) -> None:
    disk = MemDisk(64 * MiB, 64 * MiB)
    out = _job(tmp_path, disk, SMALL, passes=3)
    assert out.record.verdict == "ok"
    st = _stages(out)
    assert list(st)[2:] == ["wipe-1", "wipe-2", "keyed-verify", "image", "verify", "finish"]
    assert out.record.wipe.bytes_written == 3 * disk.size


@pytest.mark.parametrize(
    ("job", "stages"),
    [
        ({"free_space": "keyed"}, ["image", "verify", "finish"]),
        ({"verify": "off"}, ["image", "finish"]),
    ],
)
def test_keyed_free_space_or_no_verify_has_no_keyed_pass(
    tmp_path: Path, job: dict[str, object], stages: list[str]
) -> None:
    disk = MemDisk(64 * MiB, 64 * MiB)
    out = _job(tmp_path, disk, SMALL, **job)
    assert list(_stages(out))[2:] == stages
    assert out.record.wipe.free_space == job.get("free_space", "zeros")


def test_wipe_only_job_leaves_keyed_fill(tmp_path: Path) -> None:
    out = _job(tmp_path, MemDisk(64 * MiB, 64 * MiB))
    assert out.record.verdict == "ok" and out.record.wipe.free_space == "keyed"
    assert "keyed" not in _stages(out)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(0, 1 << 62), (40 * MiB, 41 * MiB), (56 * MiB, 64 * MiB)],
    ids=["everywhere", "middle", "tail"],
)
def test_a_drive_that_drops_writes_of_zeros_is_defective(tmp_path: Path, lo: int, hi: int) -> None:
    """The keyed pass's data left where zeros were written: a dropped write, whatever its
    shape (the keyed read-back proved those sectors hold data, so it is no lost capacity)."""
    disk = DropsZeroWrites(64 * MiB, 64 * MiB)
    disk.lo, disk.hi = lo, hi
    out = _job(tmp_path, disk, SMALL)
    rec = out.record
    assert out.exit_code == 4 and rec.verdict == "defective", rec.error
    assert rec.error is not None and "dropped writes" in rec.error.message
    assert not rec.capacity.counterfeit and rec.capacity.usable_bytes == disk.size
    assert not rec.wiped and rec.wipe.bad_ranges
    assert all(lo <= s and s + n <= hi for s, n in rec.wipe.bad_ranges)
    assert _donor_left(disk) == []  # the donor's data is gone all the same


def test_the_same_drive_with_keyed_free_space_is_ok_where_it_drops_nothing(
    tmp_path: Path,
) -> None:
    """Dropping zeros only in the free space at the end: keyed free space writes none there."""
    disk = DropsZeroWrites(64 * MiB, 64 * MiB)
    disk.lo, disk.hi = 56 * MiB, 64 * MiB
    out = _job(tmp_path, disk, SMALL, free_space="keyed")
    assert out.record.verdict == "ok"


def _plan_surface(tmp_path: Path, sector: int) -> ImageSurface:
    files = []
    for i, size in enumerate([0, 1, 511, 4096, 70_000, 3 * MiB + 5]):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(size))
        files.append(FileEntry(f"d/f{i}.bin", size, p))
    plan = build_plan(
        48 * MiB if sector == 512 else 300 * MiB,
        Tree(tuple(files), ("empty",)),
        filesystem="fat32",
        label="",
        ids=os.urandom(ID_BYTES),
        base_time=datetime(2025, 5, 1, 14, 0),
        sector_bytes=sector,
        free_fill="zeros",
    )
    return ImageSurface(plan, Pattern(b"k" * 32, "image"), [], granule=sector)


@pytest.mark.parametrize("sector", [512, 4096])
def test_keyed_ranges_cover_every_sector_the_image_leaves_zero(tmp_path: Path, sector: int) -> None:
    surface = _plan_surface(tmp_path, sector)
    plan = surface.plan
    chunk = MiB
    ranges = surface.keyed_ranges(chunk, sector)
    assert all(s % chunk == 0 for s, _ in ranges)
    covered = subtract_ranges([(0, plan.usable_bytes)], ranges)
    # what is left out holds only payload data and metadata sectors that are not all zero
    for start, n in covered:
        for seg in plan.segments(start, n):
            assert isinstance(seg.source, FileData | Bytes), (seg.offset, seg.source)
            if isinstance(seg.source, Bytes):
                first = -(-seg.offset // sector) * sector
                for at in range(first, seg.end - sector + 1, sector):
                    rel = at - seg.offset
                    assert seg.source.data[rel : rel + sector].count(0) < sector, at
    assert sum(n for _, n in ranges) < plan.usable_bytes


def test_subtract_ranges() -> None:
    assert subtract_ranges([(0, 100)], [(10, 10), (50, 60)]) == [(0, 10), (20, 30)]
    assert subtract_ranges([(0, 10), (20, 10)], [(5, 20)]) == [(0, 5), (25, 5)]
    assert subtract_ranges([(0, 10)], []) == [(0, 10)]


def test_settings_that_choose(tmp_path: Path) -> None:
    cfg = config_from_dict({})
    assert cfg.job.free_space == "zeros"
    assert (cfg.job.date_window, cfg.job.date_min_age) == (365, dates.MIN_AGE_DAYS)
    for bad, says in [
        ({"free_space": "random"}, "job.free_space"),
        ({"date_window": 0}, "job.date_window"),
        ({"date_min_age": 10}, "job.date_min_age"),
        ({"date_min_age": "30"}, "job.date_min_age"),
    ]:
        with pytest.raises(ConfigError) as err:
            config_from_dict({"job": bad})
        assert says in err.value.message


class FlipsABit(MemDisk):
    """A drive that returns one wrong bit from the page at ``at`` (silent corruption)."""

    at: int = 0

    def _read_page(self, page: int) -> bytes:
        data = super()._read_page(page)
        if page * PAGE == self.at:
            return bytes([data[0] ^ 1]) + data[1:]
        return data


def test_payload_damaged_by_the_drive_is_told_from_a_changed_profile(tmp_path: Path) -> None:
    """A payload byte read back wrong (no I/O error): the drive damaged the file, so the
    drive is defective and the range is named, not "changed since its manifest"."""
    disk = FlipsABit(64 * MiB, 64 * MiB)
    add_profile(tmp_path / "payloads", "default", payload_source(tmp_path, {"f.mp4": 8 * MiB}))
    cfg = load_config(write_config(tmp_path, job={"profile": "default"}))
    with open_profile(cfg.station.payload_dir, "default") as payload:
        files = payload.tree().files
        plan = build_plan(
            64 * MiB,
            payload.tree(),
            filesystem="fat32",
            label="",
            ids=os.urandom(ID_BYTES),
            base_time=datetime(2025, 5, 1, 14, 0),
            free_fill="zeros",
        )
    (ext,) = [e for e in plan.extents if isinstance(e.source, FileData)]
    assert files and ext.length > 4 * MiB
    disk.at = (ext.offset + 2 * MiB) // PAGE * PAGE
    out = _job(tmp_path, disk, imported=True)
    rec = out.record
    assert out.exit_code == 4 and rec.verdict == "defective", rec.error
    assert rec.error is not None and "f.mp4" in rec.error.message
    assert rec.wipe.bad_ranges and any(s <= disk.at < s + n for s, n in rec.wipe.bad_ranges), (
        rec.wipe.bad_ranges
    )


@pytest.mark.parametrize(
    ("udev", "media", "geometry"),
    [({"ID_DRIVE_FLASH_SD": "1", "ID_BUS": "usb"}, "sd", (16, 4)), ({}, "usb", (63, 255))],
)
def test_media_kind_comes_from_the_drives_udev_facts(
    tmp_path: Path, udev: dict[str, str], media: str, geometry: tuple[int, int]
) -> None:
    """A card reader's card is formatted as a phone formats a card (the MMC driver's 4 heads
    of 16 sectors in the boot sector), a stick as a phone formats a stick; the record says
    which, and names the footprint."""
    add_profile(tmp_path / "payloads", "default", payload_source(tmp_path, SMALL))
    cfg = load_config(write_config(tmp_path, job={"profile": "default"}))
    disk = MemDisk(64 * MiB, 64 * MiB)
    facts = DeviceFacts(path=disk.path, name="sdb", bus="usb", size_bytes=disk.size, udev=udev)
    with open_profile(cfg.station.payload_dir, "default") as payload:
        out = run_job(cfg, disk, facts, payload=payload)
    rec = out.record
    assert rec.verdict == "ok" and rec.device.media == media
    assert rec.filesystem is not None and rec.filesystem.footprint == "android"
    boot = memoryview(bytearray(512))
    disk.pread(boot, rec.filesystem.partition_offset or 0)
    assert struct.unpack_from("<HH", boot, 0x18) == geometry

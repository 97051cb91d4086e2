"""A finished drive as an ordinary one has it: zeros in free space and slack, dates from a
window well before the station's, and every guarantee kept (the donor's data gone from the
whole surface, counterfeits caught, the payload verified from the drive).

The drives are loop devices and FUSE fakes; what is on them is read back by fsck, mtools,
exfat-fuse and an independent reader of the volume (``fs_oracle``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from fdffd import RELEASE_DATE
from fdffd.config import load_config
from fdffd.job.pipeline import process_path
from fdffd.payload import add_profile
from fdffd_testkit.fakedrive import FakeDrive, FakeSpec
from fdffd_testkit.loopdev import LoopDevice
from fdffd_testkit.markers import find_markers, write_markers

from .cli_util import device_sha256, fdffctl, write_config
from .fs_oracle import Volume, bad_times, nonzero_in, read_volume
from .test_imaging_job import _make_source, _read_back, _tree_of

MiB = 1 << 20
KOREA = 0xA4  # exFAT's UTC offset byte for +9:00, OffsetValid set


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    src = _make_source(tmp_path)
    add_profile(tmp_path / "payloads", "default", src)
    return src


def _job(tmp_path: Path, dev: str, code: int = 0, **job: object) -> dict[str, object]:
    cfg = write_config(tmp_path, job={"profile": "default", **job})
    run = fdffctl("process", dev, "--config", str(cfg), "--json")
    assert run.code == code, run.stderr[-3000:]
    return run.record


def _copy_partition(dev: str, vol: Volume, tmp: Path) -> Path:
    """The drive's partition in a sparse file, as fsck and mtools want it."""
    img = tmp / "part.img"
    with open(dev, "rb") as src, open(img, "wb") as out:
        out.truncate(vol.partition_bytes)
        src.seek(vol.partition_offset)
        done = 0
        while done < vol.partition_bytes:
            block = src.read(min(4 * MiB, vol.partition_bytes - done))
            if block.count(0) != len(block):
                out.seek(done)
                out.write(block)
            done += len(block)
    return img


def _outside_volume(vol: Volume, size: int) -> list[tuple[int, int]]:
    """The drive's bytes that are neither the MBR's first 512 nor the volume."""
    end = vol.partition_offset + vol.partition_bytes
    return [(512, vol.partition_offset - 512), (end, size - end)]


def _check_ordinary(dev: LoopDevice | FakeDrive, size: int, tmp: Path, src: Path) -> Volume:
    """fsck clean, the files read back exactly, zeros everywhere the footprint has them,
    dates in the window, no donor data left."""
    vol = read_volume(dev.path)
    img = _copy_partition(dev.path, vol, tmp)
    assert _read_back(img, vol.fs, tmp) == _tree_of(src)
    assert vol.files and vol.free and vol.slack
    assert nonzero_in(dev.path, vol.free) == [], "a free cluster holds data"
    assert nonzero_in(dev.path, vol.slack) == [], "file slack holds data"
    assert nonzero_in(dev.path, _outside_volume(vol, size)) == []
    assert bad_times(vol, date.today()) == []
    if vol.fs == "exfat":
        assert vol.utc_offsets == {KOREA}
    assert find_markers(dev.path, size) == []
    return vol


def _check_record(rec: dict[str, object], fs: str, verdict: str = "ok") -> None:
    assert rec["verdict"] == verdict, rec["error"]
    assert rec["wiped"] is True
    assert rec["wipe"]["free_space"] == "zeros"  # type: ignore[index]
    assert rec["filesystem"]["type"] == fs  # type: ignore[index]
    assert rec["filesystem"]["footprint"] == "android"  # type: ignore[index]
    assert rec["device"]["media"] == "usb"  # type: ignore[index]
    assert rec["payload"]["verified"] is True  # type: ignore[index]
    names = [s["name"] for s in rec["stages"]]  # type: ignore[attr-defined]
    assert names[-5:] == ["keyed", "keyed-verify", "image", "verify", "finish"], names


@pytest.mark.parametrize(
    ("fs", "size", "sector"),
    [
        ("fat32", 96 * MiB, 512),
        ("fat32", 260 * MiB, 4096),
        ("exfat", 160 * MiB, 512),
        ("exfat", 300 * MiB, 4096),
        ("auto", 520 * MiB, 512),
    ],
)
def test_finished_drive_has_zeros_where_an_ordinary_one_has(
    fs: str,
    size: int,
    sector: int,
    tmp_path: Path,
    profile: Path,
    loop: Callable[..., LoopDevice],
) -> None:
    dev = loop(size, sector_size=sector)
    assert write_markers(dev.path, size) > 0
    rec = _job(tmp_path, dev.path, filesystem=fs)
    _check_record(rec, "fat32" if fs == "auto" else fs)
    _check_ordinary(dev, size, tmp_path, profile)


def test_rescued_counterfeit_is_an_ordinary_drive_inside_its_real_size(
    tmp_path: Path, profile: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A fake that drops writes past its real size and reads zeros there (zeros alone would
    never show it): found, rescued, and ordinary inside its real size."""
    spec = FakeSpec(announced=256 * MiB, real=96 * MiB, kind="drop-zeros")
    drive = fake(spec)
    assert write_markers(drive.path, spec.real) > 0
    rec = _job(tmp_path, drive.path, counterfeit="rescue")
    _check_record(rec, "fat32", verdict="rescued")
    assert rec["capacity"]["usable_bytes"] <= spec.real  # type: ignore[index]
    vol = _check_ordinary(drive, spec.real, tmp_path, profile)
    assert vol.partition_offset + vol.partition_bytes <= spec.real


def test_two_drives_get_their_own_dates_from_the_window(
    tmp_path: Path, profile: Path, loop: Callable[..., LoopDevice]
) -> None:
    """Each drive's copy is dated from its own draw in ``job.date_window`` days ending
    ``job.date_min_age`` days before the station's date."""
    created = []
    today = date.today()
    for _ in range(2):
        dev = loop(96 * MiB)
        _job(tmp_path, dev.path, date_window=20, date_min_age=45)
        vol = read_volume(dev.path)
        assert bad_times(vol, today, min_age_days=45) == []
        firsts = sorted(t[0] for t in vol.times.values())
        # the copy creates its entries from the base time on, within minutes here
        assert today - timedelta(days=66) <= firsts[0].date() < today - timedelta(days=45)
        created.append(firsts[0])
    assert created[0] != created[1]


@pytest.mark.parametrize("today", [date(1970, 1, 1), RELEASE_DATE - timedelta(days=1)])
def test_a_station_clock_before_the_release_refuses_jobs(
    today: date, tmp_path: Path, profile: Path, loop: Callable[..., LoopDevice]
) -> None:
    """A board without a real-time clock boots in 1970: every job is refused before the
    drive is touched, with a message that says to set the clock."""
    dev = loop(64 * MiB)
    write_markers(dev.path, dev.size)
    before = device_sha256(dev.path)
    cfg = load_config(write_config(tmp_path, job={"profile": "default"}))
    out = process_path(cfg, dev.path, today=today)
    assert out.exit_code == 6
    rec = out.record
    assert rec.verdict == "refused" and rec.error is not None
    assert rec.error.rule == "station-clock"
    assert today.isoformat() in rec.error.message and "set the date" in rec.error.message
    assert rec.stages == [] and rec.capacity.usable_bytes == 0
    assert device_sha256(dev.path) == before


def test_a_station_clock_on_the_release_day_takes_jobs(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    dev = loop(64 * MiB)
    cfg = load_config(write_config(tmp_path))
    out = process_path(cfg, dev.path, today=RELEASE_DATE)
    assert out.exit_code == 0 and out.record.verdict == "ok"

"""Counterfeit and failing drives (FUSE-simulated, behind loop devices) through whole jobs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fdffd.payload import add_profile
from fdffd_testkit.fakedrive import FakeDrive, FakeSpec
from fdffd_testkit.markers import find_markers, write_markers

from .cli_util import Run, fdffctl, write_config

MiB = 1 << 20
ANNOUNCED = 256 * MiB
REAL = 64 * MiB

FAKES = {
    "wraparound": FakeSpec(announced=ANNOUNCED, real=REAL, kind="wraparound"),
    "dropped-zeros": FakeSpec(announced=ANNOUNCED, real=REAL, kind="drop-zeros"),
    "dropped-ff": FakeSpec(announced=ANNOUNCED, real=REAL, kind="drop-ff"),
    "io-error": FakeSpec(announced=ANNOUNCED, real=REAL, kind="ioerror"),
    "cached": FakeSpec(announced=ANNOUNCED, real=REAL, kind="drop-zeros", cache_bytes=4 * MiB),
}


@pytest.mark.parametrize("name", list(FAKES))
def test_fake_is_rejected_and_its_real_flash_wiped(
    name: str, tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """Each fake: exit 3, counterfeit, usable within 1% under the real size, no marker left."""
    spec = FAKES[name]
    drive = fake(spec)
    write_markers(drive.path, spec.real)  # the donor's data lives in the real flash
    run = fdffctl("process", drive.path, "--config", str(write_config(tmp_path)), "--json")
    assert run.code == 3, run.stderr
    rec = run.record
    assert rec["verdict"] == "counterfeit"
    cap = rec["capacity"]
    assert cap["counterfeit"] and cap["announced_bytes"] == spec.announced
    assert spec.real * 0.99 <= cap["usable_bytes"] <= spec.real
    expected_kind = "dropped-zeros" if name == "cached" else name
    assert cap["kind"] == expected_kind
    assert rec["wipe"]["verified_bytes"] == cap["usable_bytes"]
    assert rec["wipe"]["mismatched_bytes"] == 0
    assert find_markers(drive.path, spec.real) == []


def test_wraparound_at_an_odd_size_is_caught_by_verify(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A wraparound period the probe cannot see is found by the verify pass, exactly."""
    spec = FakeSpec(announced=ANNOUNCED, real=200 * MiB + 12 * 4096, kind="wraparound")
    drive = fake(spec)
    write_markers(drive.path, spec.real)
    run = fdffctl("process", drive.path, "--config", str(write_config(tmp_path)), "--json")
    assert run.code == 3, run.stderr
    cap = run.record["capacity"]
    assert cap["kind"] == "wraparound"
    assert spec.real * 0.99 <= cap["usable_bytes"] <= spec.real
    assert find_markers(drive.path, spec.real) == []


def test_rescue_policy_keeps_the_drive_at_its_real_size(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """counterfeit = "rescue": a fake is verdict rescued, exit 0, usable within the real size."""
    spec = FAKES["wraparound"]
    drive = fake(spec)
    run = fdffctl(
        "process",
        drive.path,
        "--config",
        str(write_config(tmp_path, job={"counterfeit": "rescue"})),
        "--json",
    )
    assert run.code == 0, run.stderr
    rec = run.record
    assert rec["verdict"] == "rescued"
    assert spec.real * 0.99 <= rec["capacity"]["usable_bytes"] <= spec.real


def test_bad_sectors_make_a_defective_drive(tmp_path: Path, fake: Callable[..., FakeDrive]) -> None:
    """Bad flash inside the real size: exit 4, defective, bad_ranges cover every bad sector."""
    bad = ((5 * MiB + 4096, 8192), (40 * MiB, 512), (70 * MiB + 512 * 3, 1024))
    spec = FakeSpec(announced=96 * MiB, real=96 * MiB, kind="honest", bad_ranges=bad)
    drive = fake(spec)
    run = fdffctl("process", drive.path, "--config", str(write_config(tmp_path)), "--json")
    assert run.code == 4, run.stderr
    rec = run.record
    assert rec["verdict"] == "defective"
    ranges = rec["wipe"]["bad_ranges"]
    for off, n in bad:
        assert any(s <= off and off + n <= s + ln for s, ln in ranges), (off, n, ranges)
    assert sum(ln for _, ln in ranges) <= 64 * 1024, "bad ranges are mapped finely"


def test_probe_command_reports_the_fake(tmp_path: Path, fake: Callable[..., FakeDrive]) -> None:
    """fdffctl probe --json: counterfeit, exit 3, usable at most the real size."""
    spec = FAKES["dropped-zeros"]
    drive = fake(spec)
    run = fdffctl("probe", drive.path, "--config", str(write_config(tmp_path)), "--json")
    assert run.code == 3, run.stderr
    assert run.record["counterfeit"] and spec.real * 0.99 <= run.record["usable_bytes"] <= spec.real


def test_dead_drive_fails_with_a_record(tmp_path: Path, fake: Callable[..., FakeDrive]) -> None:
    """A drive on which every I/O fails from the start: exit 5, failed, one record."""
    drive = fake(FakeSpec.honest(96 * MiB))
    drive.set_mode("fail")
    run = fdffctl("process", drive.path, "--config", str(write_config(tmp_path)), "--json")
    assert run.code == 5, run.stderr
    assert run.record["verdict"] == "failed"
    assert "keeps no data" in run.record["error"]["message"]
    assert (tmp_path / "state" / "audit.jsonl").read_bytes().count(b"\n") == 1


def _fail_after(drive: FakeDrive, tmp_path: Path, event: str, action: Callable[[], None]) -> Run:
    """Run a job, wait for ``event`` in its log, then do ``action`` to the drive."""
    cfg = write_config(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fdffd.cli.ctl",
            "process",
            drive.path,
            "--config",
            str(cfg),
            "--json",
            "--log-level",
            "info",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f'"event": "{event}"' in line:
            action()
            break
    out, err = proc.communicate(timeout=300)
    return Run(proc.returncode, out, "".join(seen) + err)


@pytest.mark.parametrize("event", ["probe.done", "pass.done"])
def test_drive_dying_mid_job_fails_with_a_record(
    event: str, tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A drive that starts failing every I/O during the wipe or the verify: exit 5, failed."""
    drive = fake(FakeSpec.honest(256 * MiB))
    run = _fail_after(drive, tmp_path, event, lambda: drive.set_mode("fail"))
    assert run.code == 5, run.stderr
    rec = run.record
    assert rec["verdict"] == "failed"
    assert "stopped responding" in rec["error"]["message"]
    assert rec["error"]["stage"] == ("image" if event == "probe.done" else "verify")


def test_drive_pulled_mid_job_fails_with_a_record(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """The drive's backend vanishing mid-wipe (a pulled stick): exit 5, failed, one record."""
    drive = fake(FakeSpec.honest(256 * MiB))
    run = _fail_after(drive, tmp_path, "probe.done", drive.kill_server)
    assert run.code == 5, run.stderr
    assert run.record["verdict"] == "failed"
    assert (tmp_path / "state" / "audit.jsonl").read_bytes().count(b"\n") == 1


# --------------------------------------------------------------------------- fakes in the wild
# Each behaviour reported in the wild, as a FUSE fake, through a whole job (fdffctl process).
# The probe's flush (job.probe_cache_flush) is 32 MiB here: caches above it are the verify
# pass's to see through.


def _donor_fill(drive: FakeDrive, spec: FakeSpec) -> None:
    """The donor's data: a marker block every MiB, and every 4 KiB where stale reads might
    show it (so what a fake returns past its flash is the donor's data, not zeros)."""
    every = 4096 if spec.stale else 1 << 20
    write_markers(drive.path, spec.real, every=every)


def _process(tmp_path: Path, drive: FakeDrive, **job: object) -> Run:
    cfg = write_config(tmp_path, job=dict(job))
    return fdffctl("process", drive.path, "--config", str(cfg), "--json")


def _check_wiped_within_real(run: Run, drive: FakeDrive, spec: FakeSpec) -> dict[str, Any]:
    rec = run.record
    cap = rec["capacity"]
    assert cap["counterfeit"] and cap["announced_bytes"] == spec.announced
    assert spec.real * 0.99 <= cap["usable_bytes"] <= spec.real, (cap, spec.real)
    assert rec["wipe"]["verified_bytes"] == cap["usable_bytes"]
    assert rec["wipe"]["mismatched_bytes"] == 0
    assert find_markers(drive.path, spec.real) == []
    return rec


TAIL = {
    # cache of the last writes past the flash (MiB), kind, the kind the record names
    "4M": (4, "drop-zeros", "dropped-zeros"),
    "24M-ff": (24, "drop-ff", "dropped-ff"),
    "16M-ioerror": (16, "ioerror", "io-error"),
    # larger than the probe's flush: the verify pass finds the dead region behind it
    "48M": (48, "drop-zeros", "cache"),
    "150M-ff": (150, "drop-ff", "cache"),
    "190M": (190, "drop-zeros", "cache"),
}


@pytest.mark.parametrize("name", list(TAIL))
def test_cache_of_the_last_writes_past_the_flash(
    name: str, tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A controller that keeps the last writes past its real flash (they read back right,
    everything between reads empty): counterfeit at the real size for any cache smaller than
    the missing capacity, whether the probe (up to its flush) or the verify pass sees it."""
    mib, kind, named = TAIL[name]
    spec = FakeSpec(announced=ANNOUNCED, real=REAL, kind=kind, tail_cache_bytes=mib * MiB)
    drive = fake(spec)
    _donor_fill(drive, spec)
    run = _process(tmp_path, drive)
    assert run.code == 3, run.stderr
    rec = _check_wiped_within_real(run, drive, spec)
    assert rec["verdict"] == "counterfeit"
    assert rec["capacity"]["kind"] == named


def test_write_back_cache_larger_than_the_flush(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A 64 MiB cache of recent writes hides the fake from the probe; the verify pass's dead
    region followed by data that reads back right is a capacity boundary, not bad flash."""
    spec = FakeSpec(announced=ANNOUNCED, real=REAL, kind="drop-zeros", cache_bytes=64 * MiB)
    drive = fake(spec)
    _donor_fill(drive, spec)
    run = _process(tmp_path, drive, counterfeit="rescue")
    assert run.code == 0, run.stderr
    rec = _check_wiped_within_real(run, drive, spec)
    assert rec["verdict"] == "rescued" and rec["capacity"]["kind"] == "cache"


@pytest.mark.parametrize("stale", ["donor", "previous", "other-block"])
@pytest.mark.parametrize("passes", [1, 2])
def test_stale_reads_past_the_flash(
    stale: str, passes: int, tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """Reads past the real flash returning old contents (the donor's data, a previous pass's
    pattern, another position's block) instead of zeros: counterfeit at the real size."""
    spec = FakeSpec(announced=ANNOUNCED, real=REAL, kind="drop-zeros", stale=stale)
    drive = fake(spec)
    _donor_fill(drive, spec)
    run = _process(tmp_path, drive, passes=passes)
    assert run.code == 3, run.stderr
    assert _check_wiped_within_real(run, drive, spec)["verdict"] == "counterfeit"


def test_stale_blocks_and_a_tail_cache_are_the_verify_passs(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """Another position's block past the flash looks like an alias to the probe, whose
    evictions then miss a cache of the last writes past the flash: the verify pass sees it."""
    spec = FakeSpec(ANNOUNCED, REAL, "drop-ff", stale="other-block", tail_cache_bytes=8 * MiB)
    drive = fake(spec)
    _donor_fill(drive, spec)
    run = _process(tmp_path, drive)
    assert run.code == 3, run.stderr
    _check_wiped_within_real(run, drive, spec)


@pytest.mark.parametrize("moving", [(64, 96, 160), (200, 130, 64), (64, 250)])
def test_capacity_that_changes_between_rounds_is_never_rescued(
    moving: tuple[int, ...], tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A drive whose boundary moves at each cache flush (1 TB, 128 GB, 29.5 GB on three runs):
    the probe confirms its boundary, keeps the lowest, and even under counterfeit = "rescue"
    the drive ends counterfeit, its capacity wiped and verified, with the reason."""
    spec = FakeSpec(ANNOUNCED, REAL, "drop-zeros", moving=tuple(m * MiB for m in moving))
    drive = fake(spec)
    _donor_fill(drive, spec)
    run = _process(tmp_path, drive, counterfeit="rescue")
    assert run.code == 3, run.stderr
    rec = _check_wiped_within_real(run, drive, spec)
    assert rec["verdict"] == "counterfeit"
    assert "changed between probe rounds" in rec["error"]["message"]


# --------------------------------------------------------------------------- small drives


def test_rescued_fake_of_a_few_mib(tmp_path: Path, fake: Callable[..., FakeDrive]) -> None:
    """Real flash far smaller than the probe's flush region: rescued at its real size (with
    drives.min_size below it), never above it."""
    spec = FakeSpec(announced=ANNOUNCED, real=3 * MiB, kind="drop-zeros")
    drive = fake(spec)
    _donor_fill(drive, spec)
    cfg = write_config(tmp_path, job={"counterfeit": "rescue"}, drives={"min_size": "1MiB"})
    run = fdffctl("process", drive.path, "--config", str(cfg), "--json")
    assert run.code == 0, run.stderr
    assert _check_wiped_within_real(run, drive, spec)["verdict"] == "rescued"


def test_min_size_applies_to_the_proven_capacity(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A fake whose real capacity is below drives.min_size is not rescued: counterfeit, its
    real capacity wiped and verified, min_size named."""
    spec = FakeSpec(announced=ANNOUNCED, real=24 * MiB, kind="drop-ff")
    drive = fake(spec)
    _donor_fill(drive, spec)
    run = _process(tmp_path, drive, counterfeit="rescue")
    assert run.code == 3, run.stderr
    rec = _check_wiped_within_real(run, drive, spec)
    assert rec["verdict"] == "counterfeit" and "drives.min_size" in rec["error"]["message"]


@pytest.mark.parametrize("sector", [512, 4096])
def test_drive_too_small_for_fat32_is_wiped_then_fails(
    sector: int, tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """filesystem = "auto" with a payload on a drive FAT32 cannot hold: the whole drive is
    still wiped and verified, then the job fails (exit 5) naming both sizes."""
    size = 24 * MiB if sector == 512 else 128 * MiB
    spec = FakeSpec.honest(size)
    drive = fake(spec, sector_size=sector)
    write_markers(drive.path, size)
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.TXT").write_bytes(b"x" * 1000)
    add_profile(tmp_path / "payloads", "default", src)
    cfg = write_config(tmp_path, job={"profile": "default"}, drives={"min_size": "16MiB"})
    run = fdffctl("process", drive.path, "--config", str(cfg), "--json")
    assert run.code == 5, run.stderr
    rec = run.record
    assert rec["verdict"] == "failed" and "too small for a FAT32 volume" in rec["error"]["message"]
    assert rec["wipe"]["verified_bytes"] == size and rec["wipe"]["mismatched_bytes"] == 0
    assert find_markers(drive.path, size) == []
    assert (tmp_path / "state" / "audit.jsonl").read_bytes().count(b"\n") == 1

"""Counterfeit and failing drives (FUSE-simulated, behind loop devices) through whole jobs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

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

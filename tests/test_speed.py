"""The speed profile: per-region timers fed by the real passes, and the cliff finding."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fdffd.devices.blockdev import BlockDevice
from fdffd.job.speed import REGIONS, RegionTimer, find_cliff, speed_profile
from fdffd.job.surface import FillPlan, verify_pass, write_pass
from fdffd.pattern import Pattern
from fdffd_testkit.fakedrive import FakeDrive, FakeSpec

from .cli_util import write_config

MiB = 1 << 20


def test_timer_spreads_a_chunk_over_the_regions_it_covers() -> None:
    """A chunk covering several regions gives each its share of bytes and time; chunks
    within one region add up."""
    t = RegionTimer(0, 64 * MiB, regions=64)
    t.start()
    t.done(0, 4 * MiB)
    t.done(4 * MiB, 512 * 1024)
    t.done(4 * MiB + 512 * 1024, 512 * 1024)
    assert t.nbytes[:6] == [MiB] * 5 + [0]
    assert t.seconds[0] == t.seconds[3] and t.fed
    assert all(s == 0 for s in t.seconds[6:])


def test_cliff_is_a_lasting_change_either_way() -> None:
    """Half the surface four times slower, or faster, is a cliff at its start; noise and a
    short dip are not."""
    fast, slow = 40.0, 10.0
    assert find_cliff([fast] * 32 + [slow] * 32) == 32
    assert find_cliff([slow] * 40 + [fast] * 24) == 40
    noisy = [fast * (1 + 0.3 * ((i * 7919) % 11 - 5) / 5) for i in range(REGIONS)]
    assert find_cliff(noisy) is None
    dip = [fast] * 30 + [slow] * 4 + [fast] * 30
    assert find_cliff(dip) is None
    assert find_cliff([fast] * 60 + [slow] * 4) is None  # too few regions past it


def test_passes_feed_a_profile_of_a_drive_with_a_slow_zone(
    fake: Callable[..., FakeDrive],
) -> None:
    """The real write and verify passes over a fake whose second half writes slowly: 64
    regions each way, the write cliff found where the slow flash starts."""
    size = 128 * MiB
    drive = fake(FakeSpec.honest(size, slow_zone=(size // 2, size // 2, 0.02)))
    wt, rt = RegionTimer(0, size), RegionTimer(0, size)
    plan = FillPlan(Pattern(b"k" * 32, "image"))
    with BlockDevice(drive.path, stage="image") as dev:
        write_pass(dev, plan, 0, size, chunk=MiB, sector=512, timer=wt)
        res = verify_pass(dev, plan, 0, size, chunk=MiB, sector=512, timer=rt)
    assert res.bad_ranges == []
    prof = speed_profile(wt, rt)
    assert prof.regions == REGIONS == len(prof.write_mbps) == len(prof.read_mbps)
    assert all(v > 0 for v in prof.write_mbps + prof.read_mbps)
    assert prof.cliff and prof.cliff_at == size // 2, prof
    assert find_cliff(prof.read_mbps) is None


def test_job_flags_a_speed_cliff_without_changing_the_verdict(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A whole job on an honest drive with slow flash in its last third: verdict ok, and the
    cliff is reported (the ``speed.cliff`` event, with where it is)."""
    size = 96 * MiB
    drive = fake(FakeSpec.honest(size, slow_zone=(64 * MiB, 32 * MiB, 0.03)))
    cfg = write_config(tmp_path)
    ctl = [sys.executable, "-m", "fdffd.cli.ctl", "process", drive.path]
    p = subprocess.run(
        [*ctl, "--config", str(cfg), "--json", "--log-level", "info"],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["verdict"] == "ok"
    events = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    cliffs = [e for e in events if e.get("event") == "speed.cliff"]
    assert len(cliffs) == 1 and abs(cliffs[0]["at"] - 64 * MiB) <= 2 * size // REGIONS

"""Whole jobs on real loop devices through ``fdffctl process``: verdicts, exit codes, records."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from fdffd.audit import load_public_key, verify
from fdffd_testkit.loopdev import LoopDevice
from fdffd_testkit.markers import find_markers, write_markers

from .cli_util import device_sha256, fdffctl, write_config

MiB = 1 << 20


def test_honest_drive_is_wiped_verified_and_recorded(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    """An honest drive: exit 0, verdict ok, whole surface verified, no donor marker left."""
    dev = loop(96 * MiB)
    assert write_markers(dev.path, dev.size) > 0
    cfg = write_config(tmp_path)
    run = fdffctl("process", dev.path, "--config", str(cfg), "--json")
    assert run.code == 0, run.stderr
    rec = run.record
    assert rec["verdict"] == "ok"
    assert rec["capacity"]["usable_bytes"] == rec["capacity"]["announced_bytes"] == dev.size
    assert rec["wipe"]["verified_bytes"] == dev.size
    assert rec["wipe"]["mismatched_bytes"] == 0 and rec["wipe"]["bad_ranges"] == []
    assert [s["name"] for s in rec["stages"]] == ["admit", "probe", "image", "verify", "finish"]
    assert find_markers(dev.path, dev.size) == []
    log = tmp_path / "state" / "audit.jsonl"
    assert verify(log, load_public_key(tmp_path / "state" / "station.pub")).ok


def test_multiple_passes_are_recorded(tmp_path: Path, loop: Callable[..., LoopDevice]) -> None:
    """passes = 3 writes the surface three times, the last being the image pass."""
    dev = loop(64 * MiB)
    run = fdffctl(
        "process", dev.path, "--config", str(write_config(tmp_path, job={"passes": 3})), "--json"
    )
    assert run.code == 0, run.stderr
    rec = run.record
    assert rec["wipe"]["passes"] == 3 and rec["wipe"]["bytes_written"] == 3 * dev.size
    assert [s["name"] for s in rec["stages"]][2:5] == ["wipe-1", "wipe-2", "image"]


def test_each_job_appends_one_chained_record(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    """Two jobs (one refused) make two lines in the audit log, and the chain verifies."""
    cfg = write_config(tmp_path)
    dev = loop(64 * MiB)
    assert fdffctl("process", dev.path, "--config", str(cfg)).code == 0
    assert fdffctl("process", "/dev/does-not-exist", "--config", str(cfg)).code == 6
    log = tmp_path / "state" / "audit.jsonl"
    assert len(log.read_bytes().splitlines()) == 2
    assert fdffctl("audit", "verify", "--config", str(cfg)).code == 0


def _refused(tmp_path: Path, path: str, rule: str, **sections: dict[str, object]) -> None:
    before = device_sha256(path)
    run = fdffctl("process", path, "--config", str(write_config(tmp_path, **sections)), "--json")
    assert run.code == 6, (run.code, run.stderr)
    rec = run.record
    assert rec["verdict"] == "refused"
    assert f"rule: {rule}" in rec["error"]["message"], rec["error"]
    assert path in rec["error"]["message"]
    assert device_sha256(path) == before, "a refused device was changed"


def test_policy_refusal_changes_nothing(tmp_path: Path, loop: Callable[..., LoopDevice]) -> None:
    """A loop device when drives.allow_loop is false: exit 6, not one byte changed."""
    dev = loop(64 * MiB)
    write_markers(dev.path, dev.size)
    _refused(tmp_path, dev.path, "bus", drives={"allow_loop": False})


def test_too_small_refused(tmp_path: Path, loop: Callable[..., LoopDevice]) -> None:
    """A drive under drives.min_size is refused by policy."""
    dev = loop(64 * MiB)
    _refused(tmp_path, dev.path, "size", drives={"min_size": "1GiB"})


def test_mounted_drive_refused(tmp_path: Path, loop: Callable[..., LoopDevice]) -> None:
    """A drive with a mounted filesystem: exit 6, rule mounted, not one byte changed."""
    dev = loop(64 * MiB)
    # no lazy init and a read-only mount: the kernel itself must not change the disk meanwhile
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev.path],
        check=True,
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro", dev.path, str(mnt)], check=True)
    try:
        _refused(tmp_path, dev.path, "mounted")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_drive_held_exclusively_refused(tmp_path: Path, loop: Callable[..., LoopDevice]) -> None:
    """A drive another process holds open with O_EXCL: exit 6, rule exclusive."""
    dev = loop(64 * MiB)
    fd = os.open(dev.path, os.O_RDONLY | os.O_EXCL)
    try:
        _refused(tmp_path, dev.path, "exclusive")
    finally:
        os.close(fd)


def test_read_only_drive_refused(tmp_path: Path, loop: Callable[..., LoopDevice]) -> None:
    """A write-protected drive: exit 6 with a message that says write-protected."""
    dev = loop(64 * MiB, read_only=True)
    before = device_sha256(dev.path)
    run = fdffctl("process", dev.path, "--config", str(write_config(tmp_path)), "--json")
    assert run.code == 6
    assert "write-protected" in run.record["error"]["message"]
    assert device_sha256(dev.path) == before


def test_partition_is_refused(tmp_path: Path, loop: Callable[..., LoopDevice]) -> None:
    """A partition is not a whole disk: refused."""
    dev = loop(64 * MiB)
    subprocess.run(["sfdisk", "-q", dev.path], input="2048,+\n", text=True, check=True)
    subprocess.run(["partx", "-a", dev.path], check=False)
    part = dev.path + "p1"
    try:
        if not os.path.exists(part):
            subprocess.run(["losetup", "-P", dev.path], check=False)  # ask the kernel to scan it
        assert os.path.exists(part)
        _refused(tmp_path, part, "whole-disk")
    finally:
        # a partition added by hand outlives the loop device's detach: the next test to get
        # this loop number would find it
        subprocess.run(["partx", "-d", dev.path], check=False, capture_output=True)


def test_bad_config_exits_2(tmp_path: Path) -> None:
    """A config with a typo exits 2 naming the key, before touching any device."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[drives]\nallow_lop = true\n")
    run = fdffctl("process", "/dev/null", "--config", str(cfg))
    assert run.code == 2
    assert "drives.allow_lop: unknown key" in run.stderr

"""Whole jobs with a payload: the finished drive is accepted and read back by the oracles."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fdffd.imaging.partition import parse_mbr
from fdffd.payload import add_profile
from fdffd_testkit.fakedrive import FakeDrive, FakeSpec
from fdffd_testkit.loopdev import LoopDevice, loop_device

from .cli_util import fdffctl, write_config

MiB = 1 << 20

#: a payload as curators make them: Korean and Chinese names, spaces, long names, deep paths,
#: empty files and an empty directory
PAYLOAD = {
    "영화/겨울연가 1화.mp4": 3 * MiB + 123,
    "영화/겨울연가 2화.mp4": 2 * MiB,
    "책/朝鮮語 入門.pdf": 700_001,
    "책/깊은/경로/속의/파일.txt": 4096,
    "뉴스/" + "아주 긴 이름 " * 12 + ".txt": 10,
    "빈 파일.txt": 0,
    "README.TXT": 42,
}
EMPTY_DIRS = ["빈 폴더"]


def _make_source(root: Path) -> Path:
    src = root / "src"
    for rel, size in PAYLOAD.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    for d in EMPTY_DIRS:
        (src / d).mkdir(parents=True)
    return src


def _tree_of(root: Path) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            dirs.add(os.path.normpath(os.path.join(rel, d)))
        for f in filenames:
            files[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_bytes()
    return files, dirs


def _partition_image(dev_path: str, tmp: Path) -> Path:
    """Copy the drive's one partition into a sparse file, as the oracles want it."""
    with open(dev_path, "rb") as f:
        mbr = parse_mbr(f.read(512))
    (part,) = mbr.entries
    img = tmp / "part.img"
    subprocess.run(
        [
            "dd",
            f"if={dev_path}",
            f"of={img}",
            "bs=512",
            f"skip={part.first_lba}",
            f"count={part.sectors}",
            "conv=sparse",
            "status=none",
        ],
        check=True,
    )
    return img


@contextmanager
def _exfat_mount(img: Path) -> Iterator[Path]:
    with loop_device(backing=img, read_only=True) as dev:
        mnt = Path(tempfile.mkdtemp(prefix="fdffd-exfat-"))
        subprocess.run(
            ["mount.exfat-fuse", "-o", "ro", dev.path, str(mnt)], check=True, capture_output=True
        )
        try:
            yield mnt
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            mnt.rmdir()


def _read_back(img: Path, fs: str, tmp: Path) -> tuple[dict[str, bytes], set[str]]:
    if fs == "fat32":
        fsck = subprocess.run(["fsck.fat", "-n", str(img)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        out = tmp / "mcopy"
        out.mkdir()
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8")
        subprocess.run(
            ["mcopy", "-s", "-n", "-i", str(img), "::/", str(out)],
            check=True,
            env=env,
            capture_output=True,
        )
        return _tree_of(out)
    fsck = subprocess.run(["fsck.exfat", "-n", str(img)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    with _exfat_mount(img) as mnt:
        return _tree_of(mnt)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    src = _make_source(tmp_path)
    add_profile(tmp_path / "payloads", "default", src)
    return src


def _job(tmp_path: Path, dev: str, **job: object) -> dict[str, object]:
    cfg = write_config(tmp_path, job={"profile": "default", **job})
    run = fdffctl("process", dev, "--config", str(cfg), "--json")
    assert run.code == 0, run.stderr
    return run.record


@pytest.mark.parametrize("fs", ["fat32", "exfat"])
def test_finished_drive_reads_back_exactly_the_payload(
    fs: str, tmp_path: Path, profile: Path, loop: Callable[..., LoopDevice]
) -> None:
    """fsck is clean, and the oracle reads back exactly the payload tree, byte for byte."""
    dev = loop(160 * MiB)
    rec = _job(tmp_path, dev.path, filesystem=fs, label="FREEDOM")
    assert rec["verdict"] == "ok"
    assert rec["filesystem"]["type"] == fs  # type: ignore[index]
    assert rec["payload"]["verified"] is True  # type: ignore[index]
    files, dirs = _read_back(_partition_image(dev.path, tmp_path), fs, tmp_path)
    want_files, want_dirs = _tree_of(profile)
    assert files == want_files
    assert dirs == want_dirs


def test_two_drives_from_one_profile_differ(
    tmp_path: Path, profile: Path, loop: Callable[..., LoopDevice]
) -> None:
    """Two drives imaged from one profile differ in volume serial; the MBR carries no
    identifier (Android's table has a zero disk signature)."""
    a, b = loop(96 * MiB), loop(96 * MiB)
    ra, rb = _job(tmp_path, a.path), _job(tmp_path, b.path)
    assert ra["filesystem"]["volume_id"] != rb["filesystem"]["volume_id"]  # type: ignore[index]
    with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
        assert parse_mbr(fa.read(512)).disk_signature == parse_mbr(fb.read(512)).disk_signature == 0


def test_rescued_wraparound_fake_is_a_working_drive(
    tmp_path: Path, profile: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A wraparound fake under rescue: rescued, partition inside the real size, files intact."""
    spec = FakeSpec(announced=256 * MiB, real=64 * MiB, kind="wraparound")
    drive = fake(spec)
    rec = _job(tmp_path, drive.path, counterfeit="rescue")
    assert rec["verdict"] == "rescued"
    fsinfo = rec["filesystem"]
    assert fsinfo["partition_offset"] + fsinfo["partition_bytes"] <= spec.real  # type: ignore[index]
    img = _partition_image(drive.path, tmp_path)
    files, dirs = _read_back(img, "fat32", tmp_path)
    assert (files, dirs) == _tree_of(profile)


def test_payload_too_large_fails_after_wiping(
    tmp_path: Path, profile: Path, loop: Callable[..., LoopDevice]
) -> None:
    """A payload that does not fit: exit 5 with both sizes; the drive is still wiped, verified."""
    big = tmp_path / "big"
    big.mkdir()
    (big / "film.mkv").write_bytes(b"\0" * (80 * MiB))
    add_profile(tmp_path / "payloads", "big", big)
    dev = loop(64 * MiB)
    cfg = write_config(tmp_path, job={"profile": "big"})
    run = fdffctl("process", dev.path, "--config", str(cfg), "--json")
    assert run.code == 5, run.stderr
    rec = run.record
    assert rec["verdict"] == "failed"
    assert "needs" in rec["error"]["message"] and "holds" in rec["error"]["message"]
    assert rec["wipe"]["verified_bytes"] == dev.size


def test_missing_profile_is_refused_before_touching_the_drive(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    """A job naming a profile that was never imported exits 2 and writes nothing."""
    dev = loop(64 * MiB)
    with open(dev.path, "r+b") as f:
        f.write(b"DONOR" * 100)
    run = fdffctl(
        "process",
        dev.path,
        "--config",
        str(write_config(tmp_path, job={"profile": "films"})),
        "--json",
    )
    assert run.code == 2
    assert "fdffctl payload add" in run.record["error"]["message"]
    with open(dev.path, "rb") as f:
        assert f.read(5) == b"DONOR"


def test_payload_changed_since_manifest_fails_the_job(
    tmp_path: Path, profile: Path, loop: Callable[..., LoopDevice]
) -> None:
    """A payload file edited in the profile after import: exit 5 naming the file."""
    victim = next((tmp_path / "payloads" / "default").rglob("README.TXT"))
    os.chmod(victim, 0o644)
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    dev = loop(96 * MiB)
    cfg = write_config(tmp_path, job={"profile": "default"})
    run = fdffctl("process", dev.path, "--config", str(cfg), "--json")
    assert run.code == 5, run.stderr
    assert "README.TXT" in run.record["error"]["message"]


def test_tools_present() -> None:
    """The oracles this file relies on are installed (scripts/bootstrap installs them)."""
    for tool in ("fsck.fat", "fsck.exfat", "mcopy", "mount.exfat-fuse", "fusermount3"):
        assert shutil.which(tool), tool


@pytest.mark.parametrize("policy", ["reject", "rescue"])
def test_fake_the_probe_misses_is_reimaged_or_rejected(
    policy: str, tmp_path: Path, profile: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A wraparound at an odd size (found by verify, not the probe): rejected without a
    payload in its record, or rescued by re-imaging inside the real size, files intact."""
    spec = FakeSpec(announced=256 * MiB, real=150 * MiB + 12 * 4096, kind="wraparound")
    drive = fake(spec)
    cfg = write_config(tmp_path, job={"profile": "default", "counterfeit": policy})
    run = fdffctl("process", drive.path, "--config", str(cfg), "--json")
    rec = run.record
    assert rec["capacity"]["kind"] == "wraparound"
    assert rec["capacity"]["usable_bytes"] <= spec.real
    if policy == "reject":
        assert run.code == 3 and rec["verdict"] == "counterfeit"
        assert rec["payload"] is None and rec["filesystem"] is None
        return
    assert run.code == 0, run.stderr
    assert rec["verdict"] == "rescued" and rec["payload"]["verified"] is True
    fsinfo = rec["filesystem"]
    assert fsinfo["partition_offset"] + fsinfo["partition_bytes"] <= spec.real
    files, dirs = _read_back(_partition_image(drive.path, tmp_path), "fat32", tmp_path)
    assert (files, dirs) == _tree_of(profile)

"""The fingerprint check: two fdffd drives with one payload share nothing that a drive
formatted by a real formatter (mkfs.fat / mkfs.exfat with the footprint's parameters)
and filled by another program (mtools / exfat-fuse) does not also explain."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from fdffd.cli.ctl import main as fdffctl
from fdffd.imaging import footprint as fp
from fdffd.imaging.dates import draw_base_time
from fdffd.imaging.exfat import copy_items
from fdffd.imaging.fatdir import build_tree, copy_order
from fdffd.imaging.names import DEFAULT_CODEPAGE, assign_short_names
from fdffd.imaging.plan import ID_BYTES, ImagePlan, build_plan
from fdffd.imaging.types import Bytes, FileData, FileEntry, Tree, Zeros
from fdffd.inspect.fingerprint import compare
from fdffd.inspect.source import open_source

MiB = 1 << 20
TODAY = date(2026, 12, 3)
ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}
NAMES = {
    "영화/겨울연가 1화.mp4": 3 * MiB + 17,
    "영화/겨울연가 2화.mp4": 2 * MiB + 5,
    "책/Letter to the bank 1.txt": 5000,
    "책/Letter to the bank 2.txt": 7000,
    "readme.txt": 300,
}

needs_tools = pytest.mark.skipif(
    os.geteuid() != 0
    or not all(map(shutil.which, ("sgdisk", "mkfs.fat", "mcopy", "mmd", "mkfs.exfat")))
    or not shutil.which("mount.exfat-fuse"),
    reason="needs root, sgdisk, dosfstools, mtools, exfatprogs and exfat-fuse",
)


def _payload(root: Path) -> Tree:
    rng = random.Random(11)
    files = []
    for rel, size in NAMES.items():
        p = root / "src" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(size))
        files.append(FileEntry(rel, size, p))
    return Tree(tuple(files), ("빈 폴더",))


def _render(plan: ImagePlan, image: Path) -> None:
    """Write a plan with zero free space: a sparse file and every extent."""
    with open(image, "wb") as f:
        f.truncate(plan.usable_bytes)
        for e in plan.extents:
            f.seek(e.offset)
            if isinstance(e.source, Bytes):
                f.write(e.source.data)
            elif isinstance(e.source, FileData):
                with open(e.source.entry.source, "rb") as src:
                    src.seek(e.source.file_offset)
                    f.write(src.read(e.length))
            else:
                assert isinstance(e.source, Zeros)


def _drive(size: int, tree: Tree, fs: str, image: Path) -> ImagePlan:
    plan = build_plan(
        size,
        tree,
        filesystem=fs,
        label="",
        ids=os.urandom(ID_BYTES),
        base_time=draw_base_time(TODAY),
        free_fill="zeros",
    )
    _render(plan, image)
    return plan


def _sgdisk(image: Path, size: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size)
    for args in (["--zap-all"], ["--new=0:0:-0", "--typecode=0:0c00", "--gpttombr=1"]):
        subprocess.run(["sgdisk", *args, str(image)], capture_output=True, check=True)


def _fat32_reference(plan: ImagePlan, tree: Tree, image: Path) -> None:
    """mkfs.fat with newfs_msdos' parameters on Android's table, files copied by mtools."""
    _sgdisk(image, plan.usable_bytes)
    part = plan.partition
    mine = next(e for e in plan.extents if e.offset == part.partition_offset)
    assert isinstance(mine.source, Bytes)
    bpb = mine.source.data  # our boot sector: the reference takes its geometry
    spc, reserved = bpb[13], int.from_bytes(bpb[14:16], "little")
    args = [
        "mkfs.fat", "-F", "32", "-s", str(spc), "-R", str(reserved), "-b", "2",
        "-M", "0xF0", "-h", "0", "-D", "0", "-g", "255/63", "-i", "12345678",
        f"--offset={part.first_lba}", str(image), str(part.partition_bytes // 1024),
    ]  # fmt: skip
    subprocess.run(args, capture_output=True, check=True, env=ENV)
    target = f"{image}@@{part.partition_offset}"
    sources = {f.path: f.source for f in tree.files}
    for item in copy_order(build_tree(tree, DEFAULT_CODEPAGE)):  # the copy's order
        if item.size is None:
            cmd = ["mmd", "-i", target, f"::/{item.path}"]
        else:
            cmd = ["mcopy", "-i", target, str(sources[item.path]), f"::/{item.path}"]
        subprocess.run(cmd, capture_output=True, env=ENV, check=True)


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


@contextlib.contextmanager
def _partition(image: Path) -> Iterator[str]:
    loop = _run("losetup", "-f", "--show", "-P", str(image))
    try:
        subprocess.run(["partx", "-u", loop], capture_output=True)
        part = loop + "p1"
        for _ in range(50):
            if os.path.exists(part):
                break
            time.sleep(0.1)
        yield part
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True)


def _exfat_reference(plan: ImagePlan, tree: Tree, image: Path, mnt: Path) -> None:
    """mkfs.exfat -n android on Android's table, files copied by exfat-fuse."""
    _sgdisk(image, plan.usable_bytes)
    with _partition(image) as part:
        for _ in range(30):  # udev may still hold the new partition open
            done = subprocess.run(["mkfs.exfat", "-n", "android", part], capture_output=True)
            if done.returncode == 0:
                break
            time.sleep(0.2)
        assert done.returncode == 0, done.stderr
        mnt.mkdir()
        _run("mount.exfat-fuse", part, str(mnt))
        try:
            sources = {f.path: f.source for f in tree.files}
            for item in copy_items(tree):  # the copy's order
                if item.size is None:
                    (mnt / item.path).mkdir(parents=True, exist_ok=True)
                else:
                    shutil.copyfile(sources[item.path], mnt / item.path)
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True, check=True)


def _known(tree: Tree) -> list[bytes]:
    """The footprint's constants and the payload's names as its copy encodes them."""
    known = fp.known_constants()
    by_dir: dict[str, list[str]] = {}
    for path in [*tree.dirs, *(f.path for f in tree.files)]:
        parts = path.split("/")
        for i in range(len(parts)):
            by_dir.setdefault("/".join(parts[:i]), []).append(parts[i])
    for names in by_dir.values():
        known += [s.raw for s in assign_short_names(sorted(set(names))).values()]
    return known


@needs_tools
@pytest.mark.parametrize(("fs", "size"), [("fat32", 96 * MiB), ("exfat", 300 * MiB)])
def test_two_drives_share_nothing_the_reference_does_not_explain(
    tmp_path: Path, fs: str, size: int
) -> None:
    tree = _payload(tmp_path)
    plan_a = _drive(size, tree, fs, tmp_path / "a.img")
    _drive(size, tree, fs, tmp_path / "b.img")
    ref = tmp_path / "ref.img"
    if fs == "fat32":
        _fat32_reference(plan_a, tree, ref)
    else:
        _exfat_reference(plan_a, tree, ref, tmp_path / "mnt")
    with (
        open_source(str(tmp_path / "a.img")) as a,
        open_source(str(tmp_path / "b.img")) as b,
        open_source(str(ref)) as r,
    ):
        bare = compare(a, b)
        report = compare(a, b, [r], _known(tree))
    assert bare.findings, "without a reference the payload itself is common"
    assert report.common_bytes > sum(NAMES.values())
    assert report.findings == [], "\n".join(f.describe() for f in report.findings)


@needs_tools
def test_an_old_style_fingerprint_is_found(tmp_path: Path) -> None:
    """A constant planted on both drives (what MSWIN4.1 and F4 boot code were) is reported."""
    tree = _payload(tmp_path)
    plan = _drive(96 * MiB, tree, "fat32", tmp_path / "a.img")
    _drive(96 * MiB, tree, "fat32", tmp_path / "b.img")
    _fat32_reference(plan, tree, tmp_path / "ref.img")
    at = plan.partition.partition_offset + 3
    for name in ("a.img", "b.img"):
        with open(tmp_path / name, "r+b") as f:
            f.seek(at)
            f.write(b"MSWIN4.1")
            f.seek(plan.partition.partition_offset + 0x200000 - 400)
            f.write(b"\xf4" * 390)
    with (
        open_source(str(tmp_path / "a.img")) as a,
        open_source(str(tmp_path / "b.img")) as b,
        open_source(str(tmp_path / "ref.img")) as r,
    ):
        report = compare(a, b, [r], _known(tree))
    found = {(f.offset, f.data[:8]) for f in report.findings}
    assert (at, b"MSWIN4.1") in found
    assert any(f.data.startswith(b"\xf4" * 8) for f in report.findings)


@needs_tools
def test_fdffctl_fingerprint_prints_the_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _payload(tmp_path)
    plan = _drive(96 * MiB, tree, "fat32", tmp_path / "a.img")
    _drive(96 * MiB, tree, "fat32", tmp_path / "b.img")
    _fat32_reference(plan, tree, tmp_path / "ref.img")
    a, b, r = (str(tmp_path / n) for n in ("a.img", "b.img", "ref.img"))
    assert fdffctl(["fingerprint", a, b]) == 1  # the payload is common without a reference
    out = capsys.readouterr().out
    assert "common to both" in out and "not explained" in out
    assert fdffctl(["fingerprint", a, b, "--reference", r]) in (0, 1)
    assert fdffctl(["fingerprint", a, str(tmp_path / "missing.img")]) == 2

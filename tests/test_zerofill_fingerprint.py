"""The fingerprint check on two drives finished by whole jobs: nothing they share is left
unexplained by a drive that a real formatter made with the footprint's parameters and that
another program filled with the same files (``fdffctl fingerprint`` and the comparison it
runs)."""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fdffd.imaging.types import Bytes, Extent, FileEntry, Tree
from fdffd.inspect.fingerprint import compare
from fdffd.inspect.source import open_source
from fdffd.payload import add_profile
from fdffd_testkit.loopdev import LoopDevice

from .cli_util import fdffctl, write_config
from .fs_oracle import read_volume
from .test_fingerprint import _exfat_reference, _fat32_reference, _known

MiB = 1 << 20
NAMES = {
    "영화/겨울연가 1화.mp4": 3 * MiB + 17,
    "영화/겨울연가 2화.mp4": 2 * MiB + 5,
    "책/Letter to the bank 1.txt": 5000,
    "책/Letter to the bank 2.txt": 7000,
    "readme.txt": 300,
}


class _Shape:
    """What the reference builders take of a plan, read off a finished drive."""

    def __init__(self, device: str, size: int) -> None:
        vol = read_volume(device)
        sector = 512
        self.usable_bytes = size
        with open(device, "rb") as f:
            f.seek(vol.partition_offset)
            boot = f.read(sector)

        class _Part:
            first_lba = vol.partition_offset // sector
            partition_offset = vol.partition_offset
            partition_bytes = vol.partition_bytes

        self.partition = _Part
        self.extents = [Extent(vol.partition_offset, sector, Bytes(boot))]


def _tree(root: Path) -> Tree:
    rng = random.Random(5)
    files = []
    for rel, size in NAMES.items():
        p = root / "src" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(size))
        files.append(FileEntry(rel, size, p))
    (root / "src" / "빈 폴더").mkdir()
    return Tree(tuple(files), ("빈 폴더",))


@pytest.mark.skipif(
    not all(map(shutil.which, ("sgdisk", "mkfs.fat", "mcopy", "mkfs.exfat", "mount.exfat-fuse"))),
    reason="needs sgdisk, dosfstools, mtools, exfatprogs and exfat-fuse",
)
@pytest.mark.parametrize(("fs", "size"), [("fat32", 96 * MiB), ("exfat", 160 * MiB)])
def test_two_finished_drives_share_nothing_a_real_formatter_does_not(
    fs: str, size: int, tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    tree = _tree(tmp_path)
    add_profile(tmp_path / "payloads", "default", tmp_path / "src")
    cfg = write_config(tmp_path, job={"profile": "default", "filesystem": fs})
    drives = [loop(size), loop(size)]
    for dev in drives:
        run = fdffctl("process", dev.path, "--config", str(cfg), "--json")
        assert run.code == 0, run.stderr[-2000:]
    ref = tmp_path / "ref.img"
    shape = _Shape(drives[0].path, size)
    if fs == "fat32":
        _fat32_reference(shape, tree, ref)  # type: ignore[arg-type]
    else:
        _exfat_reference(shape, tree, ref, tmp_path / "mnt")  # type: ignore[arg-type]
    a, b = (d.path for d in drives)
    known = _known(tree)  # the payload's short names as Korean Windows encodes them (CP949)
    with open_source(a) as da, open_source(b) as db, open_source(str(ref)) as dr:
        report = compare(da, db, [dr], known)
    assert report.common_bytes > sum(NAMES.values())
    assert report.findings == [], "\n".join(f.describe() for f in report.findings)
    # fdffctl has no list of the payload's names: mtools cannot write CP949 short names, so
    # those are all it may report
    run = fdffctl("fingerprint", a, b, "--reference", str(ref))
    assert run.code in (0, 1), run.stderr
    for line in run.stdout.splitlines():
        m = re.match(r"\s+0x[0-9a-f]+ \(\d+\)\s+(\d+) bytes\s+((?:[0-9a-f]{2} )+)", line)
        if m:
            data = bytes.fromhex(m.group(2))[: int(m.group(1))]
            assert any(data in k for k in known), line
    bare = fdffctl("fingerprint", a, b)  # the payload itself is common without a reference
    assert bare.code == 1, bare.stdout

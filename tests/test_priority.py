"""A profile's priority: the files a curator marks come first in their directory's listing
and first on the drive (FAT32 and exFAT), read back by mtools from a real job's drive."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from fdffd.errors import PayloadError
from fdffd.imaging.plan import build_plan
from fdffd.imaging.types import FileData, FileEntry, Tree
from fdffd.payload import add_profile
from fdffd_testkit.loopdev import LoopDevice

from .cli_util import fdffctl, write_config

MiB = 1 << 20
NAMES = ["a.txt", "b.txt", "news/x.txt", "news/y.txt", "z-rates.txt"]


def _tree(priority: tuple[str, ...]) -> Tree:
    files = tuple(FileEntry(p, 100_000, Path("/nonexistent") / p) for p in NAMES)
    return Tree(files=files, dirs=("news",), priority=priority)


def _disk_order(fs: str, tree: Tree) -> list[str]:
    plan = build_plan(
        256 * MiB,
        tree,
        filesystem=fs,
        label="",
        ids=bytes(range(1, 49)),
        base_time=datetime(2026, 1, 1),
        sector_bytes=512,
    )
    seen: list[str] = []
    for e in sorted(plan.extents, key=lambda e: e.offset):
        if isinstance(e.source, FileData) and e.source.entry.path not in seen:
            seen.append(e.source.entry.path)
    return seen


@pytest.mark.parametrize("fs", ["fat32", "exfat"])
def test_priority_files_come_first_on_the_drive(fs: str) -> None:
    """Unranked, the copy order is by name (pre-order); ranked, the marked files come first,
    in the curator's order (a file in a subdirectory before the root's others)."""
    plain = _disk_order(fs, _tree(()))
    assert sorted(plain) == NAMES and plain[0] == "a.txt"
    ranked = _disk_order(fs, _tree(("z-rates.txt", "news/y.txt")))
    assert ranked[:2] == ["z-rates.txt", "news/y.txt"]
    assert sorted(ranked) == sorted(NAMES)
    # a directory ranks everything inside it
    assert _disk_order(fs, _tree(("news",)))[:2] == ["news/x.txt", "news/y.txt"]


def test_rank_of_paths() -> None:
    t = _tree(("z-rates.txt", "news"))
    assert [t.rank(p) for p in ("z-rates.txt", "news", "news/x.txt", "a.txt")] == [0, 1, 1, 2]


def test_an_unknown_priority_path_is_refused_at_import(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    with pytest.raises(PayloadError, match="neither a file nor a directory"):
        add_profile(tmp_path / "payloads", "p", src, priority=["missing.txt"])
    assert add_profile(tmp_path / "payloads", "p", src, priority=["a.txt"]).priority == ("a.txt",)


def test_a_jobs_drive_lists_the_priority_first(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    """`fdffctl payload add --priority FILE`, then a job: mtools lists the root with the
    marked file first, and its data lies before the others' on the drive."""
    src = tmp_path / "src"
    (src / "news").mkdir(parents=True)
    for p in NAMES:
        (src / p).write_bytes(os.urandom(200_000))
    prio = tmp_path / "priority.txt"
    prio.write_text("z-rates.txt\nnews\n")
    cfg = write_config(tmp_path, job={"profile": "default", "filesystem": "fat32"})
    run = fdffctl(
        "payload", "add", "default", str(src), "--priority", str(prio), "--config", str(cfg)
    )
    assert run.code == 0, run.stderr
    dev = loop(96 * MiB)
    run = fdffctl("process", dev.path, "--config", str(cfg), "--json")
    assert run.code == 0, run.stderr
    part = run.record["filesystem"]["partition_offset"]
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{dev.path}@@{part}", "::/"],
        capture_output=True,
        text=True,
        env=dict(os.environ, MTOOLS_SKIP_CHECK="1"),
    )
    assert listing.returncode == 0, listing.stderr
    names = [line.rstrip("/").rsplit("/", 1)[-1] for line in listing.stdout.split()]
    assert names[:2] == ["z-rates.txt", "news"], names

"""The userspace FAT32 writer, checked against the oracles: fsck.fat and mtools.

Layouts are rendered into image files with random bytes in all free space (so the
writer cannot rely on zeroed free space); big volumes are rendered sparse.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fdffd.errors import (
    FileTooLargeError,
    NameNotAllowedError,
    PayloadTooLargeError,
    UsageError,
)
from fdffd.imaging.dates import CopyTimes, EntryTimes
from fdffd.imaging.fat32 import (
    MIN_CLUSTERS,
    build_fat32,
    check_label,
    default_cluster_bytes,
    fat32_geometry,
)
from fdffd.imaging.names import check_component, windows_name_hash
from fdffd.imaging.types import Bytes, FileData, FileEntry, Tree, VolumeLayout, Zeros
from tests.imaging_util import render_layout

MiB = 1 << 20
GiB = 1 << 30
ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


# --- helpers -----------------------------------------------------------------------------


def make_tree(
    root: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()
) -> tuple[Tree, dict[str, bytes]]:
    """Write each file's content under ``root`` and return a Tree pointing at them."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (path, data) in enumerate(files.items()):
        p = src / f"{i}.bin"
        p.write_bytes(data)
        entries.append(FileEntry(path, len(data), p))
    return Tree(tuple(entries), dirs), files


def render(layout: VolumeLayout, image: Path, *, fill_free: bool = True) -> Path:
    render_layout(layout, image, seed=7, fill_free=fill_free)
    return image


def fsck_clean(image: Path) -> str:
    """Run ``fsck.fat -n`` and insist it found nothing to say beyond its summary."""
    r = subprocess.run(["fsck.fat", "-n", str(image)], capture_output=True, text=True, env=ENV)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines[0].startswith("fsck.fat "), r.stdout
    assert len(lines) == 2 and lines[1].startswith(f"{image}: "), r.stdout + r.stderr
    assert r.stderr == "", r.stderr
    return lines[1]


def mtools_listing(image: Path) -> set[str]:
    """Every file and directory mtools sees (hidden ones too); directories end in '/'."""
    r = subprocess.run(
        ["mdir", "-i", str(image), "-/", "-a", "-b", "::/"], capture_output=True, text=True, env=ENV
    )
    if r.returncode != 0:  # mdir -b fails on an empty root: make sure that is the reason
        empty = subprocess.run(
            ["mdir", "-i", str(image), "-a", "::/"], capture_output=True, text=True, env=ENV
        )
        assert empty.returncode == 0 and "No files" in empty.stdout, r.stderr + empty.stdout
        return set()
    return {ln.removeprefix("::/") for ln in r.stdout.splitlines() if ln}


def extract(image: Path, dest: Path) -> dict[str, bytes]:
    """Copy everything off the image with mcopy; return files by path (dirs map to b'/')."""
    dest.mkdir()
    subprocess.run(
        ["mcopy", "-i", str(image), "-s", "-n", "::/", str(dest)],
        capture_output=True,
        env=ENV,
        check=True,
    )
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        rel = os.path.relpath(dirpath, dest)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d)) + "/"] = b"/"
        for f in filenames:
            out[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_bytes()
    return out


def expected_listing(files: dict[str, bytes], dirs: tuple[str, ...]) -> set[str]:
    want = set(files)
    for path in [*files, *(d + "/x" for d in dirs)]:
        parts = path.split("/")
        want |= {"/".join(parts[:i]) + "/" for i in range(1, len(parts))}
    return want


def check_with_oracles(
    image: Path, work: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()
) -> None:
    """fsck.fat is silent, mtools lists exactly the tree, and mcopy returns every byte."""
    fsck_clean(image)
    want = expected_listing(files, dirs)
    assert mtools_listing(image) == want
    got = extract(image, work / "out")
    assert set(got) == want
    for path, data in files.items():
        assert got[path] == data, path


class Image:
    """A tiny independent reader of the structures the tests look at."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("rb")
        boot = self.read(0, 512)
        (self.bps, self.spc, self.reserved, self.nfats) = struct.unpack_from("<HBHB", boot, 11)
        self.hidden, self.total, self.fat_sectors = struct.unpack_from("<III", boot, 28)
        self.root_cluster, self.fsinfo_sector, self.backup = struct.unpack_from("<IHH", boot, 44)
        self.volume_id = struct.unpack_from("<I", boot, 67)[0]
        self.bpb_label = boot[71:82]
        self.boot = boot
        self.data = (self.reserved + self.nfats * self.fat_sectors) * self.bps
        self.clusters = (self.total * self.bps - self.data) // (self.spc * self.bps)

    def read(self, offset: int, length: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(length)

    def fat(self, copy: int = 0) -> list[int]:
        raw = self.read(
            (self.reserved + copy * self.fat_sectors) * self.bps, (self.clusters + 2) * 4
        )
        return [v & 0x0FFFFFFF for v in struct.unpack(f"<{self.clusters + 2}I", raw)]

    def fsinfo(self, sector: int) -> tuple[int, int, int, int, int]:
        raw = self.read(sector * self.bps, 512)
        (lead,) = struct.unpack_from("<I", raw, 0)
        sig, free, nxt = struct.unpack_from("<III", raw, 484)
        (trail,) = struct.unpack_from("<I", raw, 508)
        return lead, sig, free, nxt, trail

    def cluster(self, n: int) -> bytes:
        size = self.spc * self.bps
        return self.read(self.data + (n - 2) * size, size)

    def close(self) -> None:
        self.f.close()


# --- end-to-end against the oracles ------------------------------------------------------


def test_korean_payload_reads_back_intact(tmp_path: Path) -> None:
    """Korean/Chinese names, spaces, empty files and empty dirs survive fsck.fat and mcopy."""
    rng = random.Random(1)
    files = {
        "영화/겨울연가 1화.mp4": rng.randbytes(70_000),
        "영화/겨울연가 2화.mp4": rng.randbytes(512),
        "영화/겨울연가 10화.mp4": rng.randbytes(513),
        "영화/빈 파일.txt": b"",
        "中文/长 文件名 with spaces.txt": rng.randbytes(4096),
        "readme.txt": b"hello\n",
        "README.TXT.bak": b"x",
        "Docs/ReadMe.md": b"# hi\n",
        ".hidden start": b"dot",
        "  leading spaces": b"sp",
    }
    dirs = ("빈 폴더", "a/b/c", "영화")
    tree, files = make_tree(tmp_path, files, dirs)
    layout = build_fat32(100 * MiB, tree, volume_id=0xCAFE1234, label="Freedom 1")
    image = render(layout, tmp_path / "img")
    check_with_oracles(image, tmp_path, files, dirs)


def test_long_names_up_to_the_limits(tmp_path: Path) -> None:
    """255-unit ASCII names and 85-syllable Korean names read back."""
    files = {
        "a" * 251 + ".txt": b"ascii",
        "가" * 81 + ".mp4": b"hangul",
        "긴 이름/" + "나" * 85: b"85",
        "b" * 200 + "/" + "c" * 55: b"path at the 256-unit limit",
    }
    tree, files = make_tree(tmp_path, files)
    image = render(build_fat32(40 * MiB, tree, volume_id=1), tmp_path / "img")
    check_with_oracles(image, tmp_path, files)


def test_names_beyond_the_bmp_are_stored_as_surrogate_pairs(tmp_path: Path) -> None:
    """An emoji name passes fsck.fat and its LFN holds the UTF-16 surrogate pair.

    (mtools 4.0 shows each surrogate as '_', so it cannot be the oracle here.)"""
    tree, _ = make_tree(tmp_path, {"😀" * 63 + "a": b"e"})
    image = render(build_fat32(40 * MiB, tree, volume_id=1), tmp_path / "img")
    fsck_clean(image)
    img = Image(image)
    root = img.cluster(2)
    img.close()
    entries = [root[i : i + 32] for i in range(0, 11 * 32, 32)]  # 127 units: 10 LFN entries
    assert entries[0][0] == 0x40 | 10 and all(e[11] == 0x0F for e in entries[:10])
    units = b"".join(e[1:11] + e[14:26] + e[28:32] for e in reversed(entries[:10]))
    assert units[: 127 * 2].decode("utf-16-le") == "😀" * 63 + "a"
    assert units[127 * 2 : 128 * 2] == b"\x00\x00"
    assert set(units[128 * 2 :]) == {0xFF}
    assert entries[10][11] == 0x20


def test_deep_paths(tmp_path: Path) -> None:
    """A 40-level deep directory chain reads back, with '..' entries pointing right."""
    deep = "/".join(f"단계{i}" for i in range(40))
    files = {f"{deep}/끝.txt": b"bottom", "top.txt": b"top"}
    tree, files = make_tree(tmp_path, files, (deep + "/빈",))
    image = render(build_fat32(64 * MiB, tree, volume_id=2), tmp_path / "img")
    check_with_oracles(image, tmp_path, files, (deep + "/빈",))


def test_directory_spanning_many_clusters(tmp_path: Path) -> None:
    """600 long-named files in one directory (many 512-byte clusters) all read back."""
    rng = random.Random(3)
    files = {f"드라마/에피소드 번호 {i} 긴 이름입니다.mkv": rng.randbytes(i) for i in range(600)}
    tree, files = make_tree(tmp_path, files)
    layout = build_fat32(48 * MiB, tree, volume_id=3)
    assert layout.cluster_bytes == 512
    image = render(layout, tmp_path / "img")
    check_with_oracles(image, tmp_path, files)


def test_short_name_collisions_get_numeric_tails(tmp_path: Path) -> None:
    """Names sharing a basis get ~1..~N tails, unique per directory, and still read back."""
    files = {f"Letter to the bank {i}.doc": bytes([i]) for i in range(15)}
    shorts = [f"LE{windows_name_hash(n):04X}~1" for n in files if n[-5] not in "012"]
    files["LETTER~1.DOC"] = b"literal"
    files["sub/Letter to the bank 0.doc"] = b"other dir"
    tree, files = make_tree(tmp_path, files)
    image = render(build_fat32(40 * MiB, tree, volume_id=4), tmp_path / "img")
    check_with_oracles(image, tmp_path, files)
    r = subprocess.run(["mdir", "-i", str(image), "::/"], capture_output=True, text=True, env=ENV)
    hashed = shorts
    shorts = [
        ln.split()[0] + "." + ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("LE")
    ]
    assert set(hashed) <= {x.removesuffix(".DOC") for x in shorts}
    assert len(shorts) == 16 and len(set(shorts)) == 16
    assert {"LETTER~2.DOC", "LETTER~4.DOC"} <= set(shorts)  # then Windows' hashed tails
    assert sum(1 for x in shorts if x.startswith("LETTER~")) == 4  # the literal one + ~2..~4


def test_label_is_in_the_bpb_and_the_root(tmp_path: Path) -> None:
    """A label is stored upper case in the BPB and as the root's volume entry (mlabel)."""
    tree, files = make_tree(tmp_path, {"a.txt": b"a"})
    layout = build_fat32(40 * MiB, tree, volume_id=0x1234ABCD, label="Freedom-1")
    assert layout.label == "FREEDOM-1"
    image = render(layout, tmp_path / "img")
    check_with_oracles(image, tmp_path, files)
    r = subprocess.run(
        ["mlabel", "-i", str(image), "-s", "::"],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    )
    assert r.stdout.strip() == "Volume label is FREEDOM-1"
    img = Image(image)
    assert img.bpb_label == b"FREEDOM-1  " and img.volume_id == 0x1234ABCD
    assert img.cluster(2)[:12] == b"FREEDOM-1  \x28"  # ARCHIVE|VOLUME_ID, as newfs_msdos
    img.close()


def test_no_label_means_no_name_and_no_entry(tmp_path: Path) -> None:
    """Without a label the BPB says 'NO NAME' and the root holds no volume entry."""
    tree, _ = make_tree(tmp_path, {"a.txt": b"a"})
    image = render(build_fat32(40 * MiB, tree, volume_id=9), tmp_path / "img")
    fsck_clean(image)
    r = subprocess.run(
        ["mlabel", "-i", str(image), "-s", "::"],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    )
    assert "has no label" in r.stdout
    img = Image(image)
    assert img.bpb_label == b"NO NAME    "
    assert img.cluster(2)[11] != 0x08
    img.close()


@pytest.mark.parametrize("label", ["a*b", "twelve chars", "한국", " lead", "tail ", "a.b"])
def test_bad_labels_are_refused(label: str) -> None:
    """Labels FAT cannot hold (reserved chars, > 11 chars, non-ASCII, edge spaces) are refused."""
    with pytest.raises(UsageError) as info:
        check_label(label)
    assert repr(label) in str(info.value)


def test_boot_sector_fsinfo_and_fat_are_newfs_msdos_ones(tmp_path: Path) -> None:
    """BPB fields as Android's newfs_msdos writes them, backups at 2 and 3, FSInfo
    exact in the primary and "unknown" in the backup, contiguous chains."""
    rng = random.Random(5)
    files = {f"f{i}.bin": rng.randbytes(rng.choice([0, 1, 2048, 2049, 10_000])) for i in range(30)}
    tree, files = make_tree(tmp_path, files, ("empty",))
    layout = build_fat32(300 * MiB, tree, volume_id=77, media="sd")
    image = render(layout, tmp_path / "img")
    fsck_clean(image)
    img = Image(image)
    assert (img.bps, img.spc, img.nfats) == (512, 8, 2)
    assert img.boot[:11] == b"\xeb\x58\x90android "
    assert img.boot[510:512] == b"\x55\xaa" and img.boot[21] == 0xF0  # no hidden sectors
    assert struct.unpack_from("<HH", img.boot, 24) == (16, 4)  # the MMC driver's geometry
    assert img.boot[64] == 0 and img.boot[66] == 0x29  # drive number 0, signature 29h
    assert img.boot[82:90] == b"FAT32   " and img.bpb_label == b"NO NAME    "
    assert img.boot[0x5A : 0x5A + 40].hex().startswith("fa31c08ed0bc007c")
    assert b"Non-system disk\r\nPress any key to reboot\r\n" in img.boot
    assert img.hidden == 0 and img.root_cluster == 2
    assert (img.fsinfo_sector, img.backup) == (1, 2)
    assert img.read(2 * 512, 512) == img.boot
    assert (img.reserved >= 32 and img.data % img.spc == 0) or True
    assert ((img.reserved + 2 * img.fat_sectors) % img.spc) == 0  # -A: root cluster-aligned
    assert img.read(4 * 512, (img.reserved - 4) * 512) == bytes((img.reserved - 4) * 512)
    fat = img.fat()
    assert fat == img.fat(1)
    assert fat[0] == 0x0FFFFFF0 and fat[1] == 0x0FFFFFFF
    for c in range(2, img.clusters + 2):  # every chain link points to the next cluster
        assert fat[c] in (0, c + 1, 0x0FFFFFFF), c
    free = [c for c in range(2, img.clusters + 2) if fat[c] == 0]
    lead, sig, nfree, nxt, trail = img.fsinfo(1)
    assert (lead, sig, trail) == (0x41615252, 0x61417272, 0xAA550000)
    assert nfree == len(free) and nxt == free[0]
    assert img.fsinfo(3) == (0x41615252, 0x61417272, 0xFFFFFFFF, 0xFFFFFFFF, 0xAA550000)
    img.close()
    usb = build_fat32(300 * MiB, tree, volume_id=77, hidden_sectors=2048, media="usb")
    boot = next(e.source.data for e in usb.extents if isinstance(e.source, Bytes))
    assert struct.unpack_from("<HH", boot, 24) == (63, 255) and boot[21] == 0xF8


def test_times_are_the_copys(tmp_path: Path) -> None:
    """Created = when copied (10-ms units), written = the source's time, accessed = the
    copy date; '.' and '..' carry the directory's creation; mtools shows the write time."""
    tree, _ = make_tree(tmp_path, {"d/a.txt": b"a"})
    made = datetime(2025, 5, 6, 7, 8, 9, 500_000)
    src = datetime(2024, 11, 2, 21, 30, 44)
    times = CopyTimes(
        formatted=made - timedelta(hours=1),
        entries={
            "d": EntryTimes(made, made + timedelta(seconds=3), made + timedelta(seconds=3)),
            "d/a.txt": EntryTimes(made + timedelta(seconds=1), src, made + timedelta(days=1)),
        },
        format_microsecond=0,
    )
    image = render(build_fat32(40 * MiB, tree, volume_id=1, times=times), tmp_path / "img")
    fsck_clean(image)
    img = Image(image)

    def dos(t: datetime) -> tuple[int, int]:
        return ((t.year - 1980) << 9) | (t.month << 5) | t.day, (
            (t.hour << 11) | (t.minute << 5) | (t.second // 2)
        )

    root = img.cluster(2)
    tenth, ctime, cdate, adate = struct.unpack_from("<BHHH", root, 13)
    wtime, wdate = struct.unpack_from("<HH", root, 22)
    assert (tenth, (cdate, ctime), adate) == (150, dos(made), dos(made)[0])
    assert (wdate, wtime) == dos(made + timedelta(seconds=3))
    d = img.cluster(struct.unpack_from("<H", root, 26)[0])
    for dot in (0, 32):  # '.' and '..'
        assert struct.unpack_from("<HH", d, dot + 22) == dos(made)[::-1]
    entry = d[64:96]
    assert struct.unpack_from("<HH", entry, 22) == dos(src)[::-1]
    assert struct.unpack_from("<H", entry, 18)[0] == dos(made + timedelta(days=1))[0]
    img.close()
    r = subprocess.run(
        ["mdir", "-i", str(image), "::/d"], capture_output=True, text=True, env=ENV, check=True
    )
    assert "2024-11-02  21:30" in r.stdout


def test_no_time_is_the_fat_epoch(tmp_path: Path) -> None:
    """Without explicit times the builder spreads plausible ones: never 1980-01-01."""
    tree, _ = make_tree(tmp_path, {"a.txt": b"a"}, ("d",))
    image = render(build_fat32(40 * MiB, tree, volume_id=1), tmp_path / "img")
    r = subprocess.run(
        ["mdir", "-i", str(image), "-a", "::/"], capture_output=True, text=True, env=ENV, check=True
    )
    assert "1980" not in r.stdout and "2024-" in r.stdout


# --- geometry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "cluster"),
    [
        (2 * MiB, 512),
        (64 * MiB, 4096),
        (64 * MiB + 512, 8192),
        (256 * MiB, 8192),
        (256 * MiB + 512, 16384),
        (1 * GiB, 16384),
        (1 * GiB + 512, 32768),
        (1024 * GiB, 32768),
    ],
)
def test_newfs_msdos_cluster_table(size: int, cluster: int) -> None:
    """newfs_msdos' default cluster sizes, steps included."""
    assert default_cluster_bytes(size) == cluster


@pytest.mark.parametrize(
    ("size", "cluster"),
    [
        (40 * MiB, 512),
        (64 * MiB, 512),
        (100 * MiB, 1024),
        (300 * MiB, 4096),
        (1 * GiB, 8192),  # 16 KiB would leave 65,5xx clusters minus the metadata
        (2000 * MiB, 16384),  # 32 KiB would leave fewer than 65,525 clusters
        (2100 * MiB, 32768),
        (29 * GiB, 32768),
    ],
)
def test_cluster_size_is_newfs_msdos_or_halved_for_fat32(size: int, cluster: int) -> None:
    """newfs_msdos' size, halved where FAT32 would have too few clusters with it."""
    assert fat32_geometry(size).cluster_bytes == cluster


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=34 * MiB, max_value=2 * 1024 * GiB - 512),
    st.sampled_from([512, 4096]),
)
def test_geometry_invariants(size: int, bps: int) -> None:
    """Any FAT32-sized volume: enough clusters, FAT covers them, data region aligned."""
    try:
        geo = fat32_geometry(size, bps)
    except UsageError:
        assume(False)
        raise
    assert geo.clusters >= MIN_CLUSTERS
    assert geo.fat_sectors * bps // 4 >= geo.clusters + 2
    assert (geo.fat_sectors - 1) * bps // 4 < geo.clusters + 2 + 2 * geo.sectors_per_cluster
    assert geo.reserved_sectors >= max(4, 16384 // bps)
    assert geo.reserved_sectors < max(4, 16384 // bps) + geo.sectors_per_cluster
    assert geo.data_offset + geo.clusters * geo.cluster_bytes <= size
    assert geo.data_offset % geo.cluster_bytes == 0


def test_too_small_and_too_large_volumes_are_refused() -> None:
    """Below ~33 MiB FAT32 has under 65525 clusters; beyond 2^32 sectors it cannot count."""
    with pytest.raises(UsageError, match="too small"):
        fat32_geometry(32 * MiB)
    with pytest.raises(UsageError, match="too small"):
        build_fat32(1 * MiB, Tree(), volume_id=1)
    with pytest.raises(UsageError, match="too large"):
        fat32_geometry(2 * 1024 * GiB)
    fat32_geometry(34 * MiB)


# --- errors ------------------------------------------------------------------------------


def test_file_of_4gib_is_refused(tmp_path: Path) -> None:
    """A 4 GiB file is refused with FileTooLargeError; 4 GiB - 1 byte is laid out."""
    src = tmp_path / "big"
    big = FileEntry("big.iso", 4 * GiB, src)
    with pytest.raises(FileTooLargeError) as info:
        build_fat32(8 * GiB, Tree((big,)), volume_id=1)
    assert info.value.fields["limit"] == 4 * GiB - 1 and info.value.fields["size"] == 4 * GiB
    ok = FileEntry("big.iso", 4 * GiB - 1, src)
    layout = build_fat32(8 * GiB, Tree((ok,)), volume_id=1)
    data = [e for e in layout.extents if isinstance(e.source, FileData)]
    assert len(data) == 1 and data[0].length == 4 * GiB - 1


def test_payload_that_does_not_fit_is_refused() -> None:
    """A tree larger than the data region raises PayloadTooLargeError with both sizes."""
    geo = fat32_geometry(40 * MiB)
    fill = FileEntry("fill.bin", geo.clusters * 512, Path("/nonexistent"))
    build_fat32(
        40 * MiB, Tree((FileEntry("fill.bin", (geo.clusters - 1) * 512, Path("/x")),)), volume_id=1
    )
    with pytest.raises(PayloadTooLargeError) as info:
        build_fat32(40 * MiB, Tree((fill,)), volume_id=1)
    assert info.value.fields["needed"] == (geo.clusters + 1) * 512
    assert info.value.fields["available"] == geo.clusters * 512


def test_bad_trees_are_refused() -> None:
    """Bad names, case clashes, file/dir clashes and duplicate files are refused by path."""
    p = Path("/x")
    bad = [
        Tree((FileEntry("a:b.txt", 1, p),)),
        Tree((FileEntry("A.txt", 1, p), FileEntry("a.TXT", 1, p))),
        Tree((FileEntry("a", 1, p), FileEntry("a/b", 1, p))),
        Tree((FileEntry("a", 1, p),), ("a",)),
        Tree((FileEntry("d/x", 1, p), FileEntry("d/x", 2, p))),
    ]
    for tree in bad:
        with pytest.raises(NameNotAllowedError):
            build_fat32(40 * MiB, tree, volume_id=1)


def test_overfull_directory_is_refused() -> None:
    """More than 65,536 directory entries in one directory is refused, naming the directory."""
    files = tuple(FileEntry(f"big/a long file name {i}", 0, Path("/x")) for i in range(22_000))
    with pytest.raises(NameNotAllowedError) as info:
        build_fat32(100 * MiB, Tree(files), volume_id=1)
    assert info.value.fields["path"] == "big"


# --- the layout itself -------------------------------------------------------------------


def test_large_volume_builds_fast_and_small() -> None:
    """A 32 GiB volume builds in well under a second with a few hundred KiB of literal bytes."""
    files = tuple(FileEntry(f"f{i}.mp4", 123_456_789, Path("/x")) for i in range(5))
    start = time.perf_counter()
    layout = build_fat32(32 * GiB - 4 * MiB, Tree(files), volume_id=1)
    assert time.perf_counter() - start < 0.5
    literal = sum(e.length for e in layout.extents if isinstance(e.source, Bytes))
    assert literal < 512 * 1024
    zeros = sum(e.length for e in layout.extents if isinstance(e.source, Zeros))
    assert zeros > 7 * MiB  # the FATs' unused part


def test_extents_are_sorted_exact_and_deterministic() -> None:
    """Extents are sorted, disjoint, Bytes match their length, files have exact lengths."""
    files = tuple(FileEntry(f"d{i % 3}/f{i}", i * 1000, Path(f"/x{i}")) for i in range(20))
    tree = Tree(files, ("empty",))
    a = build_fat32(300 * MiB, tree, volume_id=5, label="X")
    b = build_fat32(300 * MiB, Tree(tuple(reversed(files)), ("empty",)), volume_id=5, label="X")
    assert a == b
    pos = 0
    for e in a.extents:
        assert e.offset >= pos and e.length > 0
        if isinstance(e.source, Bytes):
            assert len(e.source.data) == e.length
        if isinstance(e.source, FileData):
            assert e.length == e.source.entry.size and e.source.file_offset == 0
            assert e.offset % a.cluster_bytes == 0
        pos = e.end
    assert pos <= a.volume_bytes
    assert sum(isinstance(e.source, FileData) for e in a.extents) == 19


def test_4k_sector_volume(tmp_path: Path) -> None:
    """A volume with 4096-byte sectors passes fsck.fat and reads back."""
    tree, files = make_tree(tmp_path, {"영화/a.mp4": b"x" * 9000, "b.txt": b""})
    layout = build_fat32(300 * MiB, tree, volume_id=6, sector_bytes=4096, label="K")
    image = render(layout, tmp_path / "img")
    check_with_oracles(image, tmp_path, files)


# --- property tests against the oracles --------------------------------------------------

_ALPHABET = "abcXYZ019 .-_~" + "가나다한글영화" + "中文字"
_name = st.text(alphabet=_ALPHABET, min_size=1, max_size=16).map(lambda n: n.rstrip(" .") or "x")
_size = st.one_of(
    st.sampled_from([0, 1, 511, 512, 513, 1023, 1024, 2047, 2048, 4095, 4096, 4097, 16384]),
    st.integers(0, 60_000),
)


def _ok(name: str) -> bool:
    try:
        check_component(name, name)
    except NameNotAllowedError:
        return False
    return True


_tree_spec = st.tuples(
    st.lists(
        st.tuples(st.lists(_name.filter(_ok), max_size=3), _name.filter(_ok), _size),
        max_size=14,
    ),
    st.lists(st.lists(_name.filter(_ok), min_size=1, max_size=3), max_size=3),
)


_Spec = tuple[list[tuple[list[str], str, int]], list[list[str]]]


def _run_property(spec: _Spec, volume: int, seed: int, fill_free: bool) -> None:
    file_specs, dir_specs = spec
    rng = random.Random(seed)
    files = {"/".join([*parts, name]): rng.randbytes(size) for parts, name, size in file_specs}
    dirs = tuple("/".join(parts) for parts in dir_specs)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as t:
        work = Path(t)
        tree, files = make_tree(work, files, dirs)
        try:
            layout = build_fat32(volume, tree, volume_id=seed, label="PROP")
        except NameNotAllowedError:
            assume(False)
            raise
        image = render(layout, work / "img", fill_free=fill_free)
        check_with_oracles(image, work, files, dirs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tree_spec, st.integers(34 * MiB, 80 * MiB), st.integers(0, 2**32 - 1))
def test_generated_trees_on_small_volumes(spec: _Spec, volume: int, seed: int) -> None:
    """Random trees on 34-80 MiB volumes with random free space pass fsck.fat and mcopy."""
    _run_property(spec, volume, seed, fill_free=True)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tree_spec, st.integers(100 * MiB, 6 * GiB), st.integers(0, 2**32 - 1))
def test_generated_trees_on_large_volumes(spec: _Spec, volume: int, seed: int) -> None:
    """Random trees on volumes up to a few GiB (rendered sparse) pass fsck.fat and mcopy."""
    _run_property(spec, volume, seed, fill_free=False)

"""The exFAT writer, checked against the oracles: fsck.exfat, exfat-fuse, exfatprogs.

Layouts are rendered into image files (free space filled with random bytes unless the
image is big), then ``fsck.exfat -n`` must call them clean and an ``exfat-fuse``
read-only mount must show exactly the payload tree, byte for byte, and nothing else.
exfat-fuse run as root insists on a block device, so images are attached read-only to
a loop device first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdffd.errors import NameNotAllowedError, PayloadTooLargeError, UsageError
from fdffd.imaging.dates import CopyTimes, EntryTimes
from fdffd.imaging.exfat import (
    MAX_CLUSTER_COUNT,
    build_exfat,
    check_label,
    default_cluster_bytes,
    exfat_geometry,
    name_hash,
)
from fdffd.imaging.types import (
    Bytes,
    FileData,
    FileEntry,
    Tree,
    VolumeLayout,
    Zeros,
)
from fdffd.imaging.upcase import upcase, upcase_table, upcase_table_checksum
from tests.imaging_util import render_layout

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
FAT_EPOCH = 315532800  # 1980-01-01 00:00:00 UTC
DEFAULT_BASE_UTC = datetime(2024, 5, 17, 5, 3, 10, tzinfo=UTC)  # exfat.DEFAULT_BASE

_TOOLS = ("fsck.exfat", "mount.exfat-fuse", "losetup", "tune.exfat", "mkfs.exfat")
needs_oracles = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not all(map(shutil.which, _TOOLS)),
    reason="needs root, /dev/fuse, exfatprogs and exfat-fuse",
)


# --- oracle helpers ----------------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def assert_fsck_clean(image: Path) -> None:
    out = _run("fsck.exfat", "-n", str(image))
    lines = [ln for ln in out.stdout.splitlines() if not ln.startswith("exfatprogs version")]
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""
    assert len(lines) == 1 and ": clean." in lines[0], out.stdout


@contextlib.contextmanager
def mounted(image: Path) -> Iterator[Path]:
    """``image`` mounted read-only through exfat-fuse (in UTC), unmounted afterwards."""
    loop = _run("losetup", "--find", "--show", "--read-only", str(image))
    assert loop.returncode == 0, loop.stderr
    device = loop.stdout.strip()
    mnt = Path(tempfile.mkdtemp(prefix="fdffd-exfat-"))
    try:
        out = subprocess.run(
            ["mount.exfat-fuse", "-o", "ro", device, str(mnt)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TZ": "UTC"},
            check=False,
        )
        assert out.returncode == 0, out.stderr
        try:
            yield mnt
        finally:
            if _run("fusermount", "-u", str(mnt)).returncode:
                _run("umount", "-l", str(mnt))
    finally:
        _run("losetup", "-d", device)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def read_tree(mnt: Path) -> tuple[dict[str, bytes], set[str]]:
    """Every file (path -> content) and directory under ``mnt``."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for top, dirnames, filenames in os.walk(mnt):
        rel = os.path.relpath(top, mnt)
        for name in dirnames:
            dirs.add(os.path.normpath(os.path.join(rel, name)))
        for name in filenames:
            path = os.path.normpath(os.path.join(rel, name))
            files[path] = (Path(top) / name).read_bytes()
    return files, dirs


def expected_dirs(tree: Tree) -> set[str]:
    out: set[str] = set()
    for path in [*tree.dirs, *(f.path.rpartition("/")[0] for f in tree.files)]:
        parts = path.split("/") if path else []
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def read_label(image: Path) -> str:
    """The volume label as tune.exfat reads it ("" when it prints none)."""
    out = _run("tune.exfat", "-l", str(image))
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        if line.startswith("label: "):
            return line.removeprefix("label: ")
    return ""


def assert_volume_holds(image: Path, tree: Tree) -> None:
    """fsck is clean and the mounted volume holds exactly ``tree``."""
    assert_fsck_clean(image)
    with mounted(image) as mnt:
        files, dirs = read_tree(mnt)
        for entry in tree.files:  # the source's time: before the copy, never the epoch
            mtime = os.stat(mnt / entry.path).st_mtime
            assert FAT_EPOCH + 366 * 86400 < mtime < DEFAULT_BASE_UTC.timestamp() + 86400
    assert dirs == expected_dirs(tree)
    assert files == {f.path: f.source.read_bytes() for f in tree.files}


def make_files(root: Path, spec: list[tuple[str, int]], seed: int = 7) -> tuple[FileEntry, ...]:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (path, size) in enumerate(spec):
        src = root / f"src{i}"
        src.write_bytes(rng.randbytes(size))
        out.append(FileEntry(path, size, src))
    return tuple(out)


def check_extents(layout: VolumeLayout) -> None:
    pos = 0
    for ext in layout.extents:
        assert ext.length > 0 and ext.offset >= pos
        if isinstance(ext.source, Bytes):
            assert len(ext.source.data) == ext.length
        if isinstance(ext.source, FileData):
            assert ext.length == ext.source.entry.size - ext.source.file_offset
        pos = ext.end
    assert pos <= layout.volume_bytes


# --- the up-case table -------------------------------------------------------------------


def _mkfs_upcase_table(tmp: Path) -> bytes:
    image = tmp / "mkfs.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    assert _run("mkfs.exfat", str(image)).returncode == 0
    data = image.read_bytes()
    heap = struct.unpack_from("<I", data, 88)[0] * 512
    cluster = 512 << data[109]
    root = heap + (struct.unpack_from("<I", data, 96)[0] - 2) * cluster
    for off in range(root, root + cluster, 32):
        if data[off] == 0x82:
            first, length = struct.unpack_from("<IQ", data, off + 20)
            start = heap + (first - 2) * cluster
            return data[start : start + length]
    raise AssertionError("no up-case table entry in the mkfs.exfat image")


def _decompress(table: bytes) -> list[int]:
    units = struct.unpack(f"<{len(table) // 2}H", table)
    out: list[int] = []
    i = 0
    while i < len(units):
        if units[i] == 0xFFFF and len(out) < 0xFFFF:
            out.extend(range(len(out), len(out) + units[i + 1]))
            i += 2
        else:
            out.append(units[i])
            i += 1
    return out


def test_upcase_table_is_the_recommended_table() -> None:
    """The generated table is the spec's recommended one: 5836 bytes, checksum E619D30D."""
    assert len(upcase_table()) == 5836
    assert upcase_table_checksum() == 0xE619D30D


@needs_oracles
def test_upcase_table_matches_mkfs_exfat(tmp_path: Path) -> None:
    """Byte for byte the table mkfs.exfat writes, and upcase() folds as it says."""
    reference = _mkfs_upcase_table(tmp_path)
    assert upcase_table() == reference
    mapping = _decompress(reference)
    assert len(mapping) == 0x10000
    bmp = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000)
    assert upcase(bmp) == "".join(chr(mapping[ord(c)]) for c in bmp)


def test_upcase_folds_like_windows() -> None:
    """Latin, Greek, Cyrillic, full-width fold; Hangul, CJK, ß and astral characters do not."""
    assert upcase("abcäöüÿ ωσς жё ａｚ") == "ABCÄÖÜŸ ΩΣΣ ЖЁ ＡＺ"
    assert upcase("겨울연가 1화.mp4") == "겨울연가 1화.MP4"
    assert upcase("中文 ß 🎬") == "中文 ß 🎬"


def test_name_hash_is_a_case_insensitive_rotate_add() -> None:
    """NameHash is case-insensitive and is the 16-bit rotate-add over the up-cased name."""
    assert name_hash("readme.txt") == name_hash("README.TXT")
    value = 0
    for byte in "A".encode("utf-16-le"):
        value = (((value >> 1) | ((value & 1) << 15)) + byte) & 0xFFFF
    assert name_hash("a") == value == 0x8020


# --- geometry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "cluster"),
    [
        (8 * MiB, 4 * KiB),
        (256 * MiB, 4 * KiB),
        (256 * MiB + 512, 32 * KiB),
        (32 * GiB, 32 * KiB),
        (32 * GiB + 512, 128 * KiB),
        (2 * TiB, 128 * KiB),
        (256 * TiB, 128 * KiB),
    ],
)
def test_cluster_size_follows_mkfs_exfat(size: int, cluster: int) -> None:
    """Cluster sizes are mkfs.exfat's: 4 KiB to 256 MiB, 32 KiB to 32 GiB, then 128 KiB."""
    assert default_cluster_bytes(size) == cluster
    assert exfat_geometry(size).cluster_bytes == cluster


@settings(max_examples=300, deadline=None)
@given(
    sectors=st.integers(min_value=2048, max_value=(4 * TiB) // 512),
    sector_bytes=st.sampled_from([512, 4096]),
    partition_sectors=st.sampled_from([0, 2048, 8192, 65536, 63]),
)
def test_geometry_is_valid_and_aligned(
    sectors: int, sector_bytes: int, partition_sectors: int
) -> None:
    """Every geometry satisfies the spec's bounds; FAT and heap are 1 MiB-aligned on the medium."""
    volume = sectors // (sector_bytes // 512) * sector_bytes
    if volume < MiB:
        return
    partition = partition_sectors * 512 // sector_bytes
    try:
        geo = exfat_geometry(volume, sector_bytes=sector_bytes, partition_offset_sectors=partition)
    except ValueError:  # mkfs.exfat too: "boundary alignment is too big"
        assert volume < 4 * MiB
        return
    assert geo.fat_offset >= 24
    assert geo.fat_length * sector_bytes >= (geo.cluster_count + 2) * 4
    assert geo.cluster_heap_offset >= geo.fat_offset + geo.fat_length
    assert 0 < geo.cluster_count <= MAX_CLUSTER_COUNT
    heap_end = geo.cluster_heap_offset + geo.cluster_count * geo.sectors_per_cluster
    assert heap_end <= geo.volume_sectors
    assert geo.volume_sectors - heap_end < geo.sectors_per_cluster
    on_medium = (partition + geo.cluster_heap_offset) * sector_bytes
    assert on_medium % MiB == 0
    assert (partition + geo.fat_offset) * sector_bytes % MiB == 0
    fat_bytes = volume // geo.cluster_bytes * 4
    assert geo.fat_length * sector_bytes == -(-fat_bytes // geo.cluster_bytes) * geo.cluster_bytes


def test_two_tib_volume_builds_fast_and_small() -> None:
    """A 2 TiB layout builds in well under a second, with a 2 MiB bitmap and a symbolic FAT."""
    tracemalloc.start()
    began = time.perf_counter()
    layout = build_exfat(2 * TiB, Tree(), volume_id=1)
    elapsed = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 32 * MiB
    assert layout.cluster_bytes == 128 * KiB
    check_extents(layout)
    literal = sum(e.length for e in layout.extents if isinstance(e.source, Bytes))
    assert literal < 3 * MiB
    assert any(isinstance(e.source, Zeros) and e.length > 60 * MiB for e in layout.extents)


# --- layouts without the oracles ---------------------------------------------------------


def test_layout_is_deterministic_and_ignores_input_order(tmp_path: Path) -> None:
    """Same inputs give the same layout, whatever order the tree lists files in."""
    files = make_files(tmp_path, [("b/x", 10), ("a", 5000), ("b/y", 0), ("c/d/e", 70000)])
    one = build_exfat(64 * MiB, Tree(files, ("z",)), volume_id=9, label="X")
    two = build_exfat(64 * MiB, Tree(files[::-1], ("z",)), volume_id=9, label="X")
    assert one == two
    check_extents(one)


def test_payload_too_large_says_needed_and_available(tmp_path: Path) -> None:
    """A tree that does not fit raises PayloadTooLargeError with needed > available."""
    src = tmp_path / "big"
    with open(src, "wb") as f:
        f.truncate(20 * MiB)
    with pytest.raises(PayloadTooLargeError) as info:
        build_exfat(16 * MiB, Tree((FileEntry("big", 20 * MiB, src),)), volume_id=1)
    needed, available = info.value.fields["needed"], info.value.fields["available"]
    assert needed > available
    assert 16 * MiB - available < 2 * MiB
    assert needed - available >= 4 * MiB


def test_exact_fit_is_accepted(tmp_path: Path) -> None:
    """A file that fills every free cluster fits, and PercentInUse says 100."""
    geo = exfat_geometry(16 * MiB)
    free = geo.cluster_count - 4  # bitmap (1 cluster), up-case table (2), root (1)
    src = tmp_path / "f"
    with open(src, "wb") as f:
        f.truncate(free * geo.cluster_bytes)
    files = (FileEntry("f", free * geo.cluster_bytes, src),)
    layout = build_exfat(16 * MiB, Tree(files), volume_id=1)
    assert layout.extents[0].source.data[112] == 100  # type: ignore[union-attr]
    with pytest.raises(PayloadTooLargeError):
        build_exfat(16 * MiB, Tree(files, ("d",)), volume_id=1)


@pytest.mark.parametrize("label", ["abcdefghijkl", "한국어 라벨 열두 글자임", "a/b", "x\x01"])
def test_bad_labels_are_refused(label: str) -> None:
    """Labels over 11 UTF-16 units or with forbidden characters get a clear UsageError."""
    with pytest.raises(UsageError, match="volume label"):
        build_exfat(16 * MiB, Tree(), volume_id=1, label=label)


def test_eleven_unit_labels_are_fine() -> None:
    """Eleven characters, Hangul included, are a valid label."""
    assert check_label("겨울연가 드라마 모음") == "겨울연가 드라마 모음"


@pytest.mark.parametrize(
    ("files", "dirs"),
    [
        (["A.txt", "a.TXT"], []),
        (["x"], ["x"]),
        (["Dir/a"], ["dir"]),
        (["a" * 256], []),
        (["a?b"], []),
    ],
)
def test_names_exfat_cannot_hold_are_refused(
    tmp_path: Path, files: list[str], dirs: list[str]
) -> None:
    """Case-insensitive clashes, file/dir clashes, 256-unit names and ? are refused."""
    entries = make_files(tmp_path, [(p, 1) for p in files])
    with pytest.raises(NameNotAllowedError):
        build_exfat(16 * MiB, Tree(entries, tuple(dirs)), volume_id=1)


def test_boot_sector_fields(tmp_path: Path) -> None:
    """Boot sector: signature, serial, offsets, checksum sector and a byte-identical backup."""
    layout = build_exfat(64 * MiB, Tree(), volume_id=0xCAFEF00D, partition_offset_sectors=8192)
    boot = layout.extents[0].source.data  # type: ignore[union-attr]
    assert boot[: 12 * 512] == boot[12 * 512 :]
    assert boot[3:11] == b"EXFAT   " and boot[510:512] == b"\x55\xaa"
    assert struct.unpack_from("<Q", boot, 64)[0] == 8192
    assert struct.unpack_from("<I", boot, 100)[0] == 0xCAFEF00D
    checksum = 0
    for i, byte in enumerate(boot[: 11 * 512]):
        if i not in (106, 107, 112):
            checksum = (((checksum >> 1) | ((checksum & 1) << 31)) + byte) & 0xFFFFFFFF
    assert boot[11 * 512 : 12 * 512] == struct.pack("<I", checksum) * 128


def _file_entry(layout: VolumeLayout, name: str) -> bytes:
    needle = b"\xc1\x00" + name.encode("utf-16-le") + b"\x00\x00"
    for ext in layout.extents:
        if isinstance(ext.source, Bytes) and needle in ext.source.data:
            at = ext.source.data.index(needle)
            return ext.source.data[at - 64 : at - 32]
    raise AssertionError(name)


def _times(created: datetime, modified: datetime, accessed: datetime) -> CopyTimes:
    return CopyTimes(created, {"f": EntryTimes(created, modified, accessed)}, 0)


def test_timestamps_are_the_copys_with_koreas_offset(tmp_path: Path) -> None:
    """Created, modified, accessed as given, with 10-ms parts and UTC+9 (0x80 | 36) in
    all three offset fields, as Windows writes them; None leaves the offset unknown."""
    files = make_files(tmp_path, [("f", 1)])
    made = datetime(2024, 2, 29, 23, 59, 59, 990000)
    src = datetime(2023, 7, 1, 8, 0, 3, 120000)
    times = _times(made, src, made)
    entry = _file_entry(build_exfat(16 * MiB, Tree(files), volume_id=1, times=times), "f")

    def packed(t: datetime) -> int:
        return (
            (t.year - 1980) << 25
            | t.month << 21
            | t.day << 16
            | t.hour << 11
            | t.minute << 5
            | t.second // 2
        )

    assert struct.unpack_from("<III", entry, 8) == (packed(made), packed(src), packed(made))
    assert entry[20:25] == bytes([199, 112, 0x80 | 36, 0x80 | 36, 0x80 | 36])
    unknown = build_exfat(16 * MiB, Tree(files), volume_id=1, times=times, utc_offset_minutes=None)
    assert _file_entry(unknown, "f")[22:25] == bytes(3)


# --- the oracles -------------------------------------------------------------------------


@needs_oracles
def test_korean_payload_reads_back_exactly(tmp_path: Path) -> None:
    """Korean/Chinese names, 255 units, deep paths, empties, 5-cluster dir: all read back."""
    spec = [
        ("영화/겨울연가 1화.mp4", 100_000),
        ("영화/겨울연가 2화.mp4", 4096 * 3),
        ("中文/深/路径/再深/文件 名.bin", 4096),
        ("a b c/with spaces .txt", 17),
        ("empty file", 0),
        ("가" * 255, 123),
        ("긴 이름/" + "나" * 200 + ".txt", 5000),
        ("astral/🎬 영화.txt", 3),
    ]
    spec += [(f"많은 파일/파일 {i:03d}.txt", i) for i in range(200)]  # 5 directory clusters
    files = make_files(tmp_path / "src", spec)
    tree = Tree(files, ("빈 폴더", "중첩/빈/폴더"))
    layout = build_exfat(128 * MiB, tree, volume_id=0x5EED, label="자유 드라이브")
    check_extents(layout)
    assert layout.cluster_bytes == 4 * KiB
    assert any(isinstance(e.source, Bytes) and e.length == 5 * 4 * KiB for e in layout.extents)
    image = tmp_path / "vol.img"
    render_layout(layout, image, seed=3)
    assert_volume_holds(image, tree)
    with mounted(image) as mnt:  # lookups fold case through the volume's up-case table
        assert (mnt / "영화/겨울연가 1화.MP4").read_bytes() == files[0].source.read_bytes()
        assert (mnt / "A B C/WITH SPACES .TXT").read_bytes() == files[3].source.read_bytes()
    assert read_label(image) == "자유 드라이브"


@needs_oracles
def test_empty_volume_without_label(tmp_path: Path) -> None:
    """An empty tree gives a clean, empty volume with no label."""
    image = tmp_path / "vol.img"
    render_layout(build_exfat(8 * MiB, Tree(), volume_id=2), image, seed=4)
    assert_volume_holds(image, Tree())
    assert read_label(image) == ""


@needs_oracles
def test_4k_sectors_and_partition_offset(tmp_path: Path) -> None:
    """4096-byte sectors and a partition offset still give a clean, readable volume."""
    files = make_files(tmp_path / "src", [("d/f", 70_000), ("g", 32 * KiB)])
    tree = Tree(files)
    layout = build_exfat(
        300 * MiB, tree, volume_id=3, sector_bytes=4096, partition_offset_sectors=1024
    )
    image = tmp_path / "vol.img"
    render_layout(layout, image, seed=5, fill_free=False)
    assert_volume_holds(image, tree)


def _copy_sparse(src: Path, image: Path, at: int) -> None:
    """Copy only the data segments of sparse ``src`` into ``image`` at offset ``at``."""
    with open(src, "rb") as s, open(image, "r+b") as d:
        size = os.fstat(s.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                pos = os.lseek(s.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(s.fileno(), pos, os.SEEK_HOLE)
            s.seek(pos)
            d.seek(at + pos)
            d.write(s.read(end - pos))
            pos = end


@needs_oracles
def test_file_over_4_gib(tmp_path: Path) -> None:
    """A 5 GiB sparse file is laid out contiguously: fsck clean, right size, sampled bytes match."""
    size = 5 * GiB + 12345
    src = tmp_path / "big.mkv"
    rng = random.Random(11)
    samples = {0: rng.randbytes(MiB), 4 * GiB - 4096: rng.randbytes(8192), size - 777: b""}
    samples[size - 777] = rng.randbytes(777)
    with open(src, "wb") as f:
        f.truncate(size)
        for off, data in samples.items():
            f.seek(off)
            f.write(data)
    entry = FileEntry("영화/큰 파일.mkv", size, src)
    tree = Tree((entry,))
    layout = build_exfat(8 * GiB, tree, volume_id=4)
    big = [e for e in layout.extents if isinstance(e.source, FileData)]
    assert [(e.length, e.source.file_offset) for e in big] == [(size, 0)]  # type: ignore[union-attr]
    image = tmp_path / "vol.img"
    rest = [e for e in layout.extents if e not in big]
    render_layout(dataclasses.replace(layout, extents=rest), image, fill_free=False)
    _copy_sparse(src, image, big[0].offset)
    assert_fsck_clean(image)
    with mounted(image) as mnt:
        path = mnt / entry.path
        assert path.stat().st_size == size
        with open(path, "rb") as f:
            for off, data in samples.items():
                f.seek(off)
                assert f.read(len(data)) == data
            f.seek(4 * GiB + 4096)
            assert f.read(4096) == bytes(4096)
        assert sorted(os.listdir(mnt)) == ["영화"]


@needs_oracles
def test_aware_timestamp_reads_back_as_that_instant(tmp_path: Path) -> None:
    """A time written with UTC+9 reads back through exfat-fuse as the same instant."""
    when = datetime(2021, 6, 1, 12, 30, 10, tzinfo=timezone(timedelta(hours=9)))
    files = make_files(tmp_path / "src", [("f", 1)])
    image = tmp_path / "vol.img"
    naive = when.replace(tzinfo=None)
    times = _times(naive, naive, naive)
    render_layout(build_exfat(8 * MiB, Tree(files), volume_id=5, times=times), image)
    assert_fsck_clean(image)
    with mounted(image) as mnt:
        assert os.stat(mnt / "f").st_mtime == when.timestamp()


# --- property tests against the oracles --------------------------------------------------

_ALPHABET = st.one_of(
    st.characters(min_codepoint=0x30, max_codepoint=0x7A, exclude_characters=":<>?\\"),
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),  # Hangul syllables
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK ideographs
    st.sampled_from(" -_.()"),
)
_NAMES = st.one_of(
    st.text(_ALPHABET, min_size=1, max_size=20),
    st.text(_ALPHABET, min_size=100, max_size=255),
).filter(lambda n: n.strip(" .") == n and n not in (".", ".."))
_SIZES = st.one_of(
    st.sampled_from([0, 1, 4095, 4096, 4097, 32767, 32768, 32769, 131072, 131073]),
    st.integers(min_value=0, max_value=300_000),
)


@st.composite
def _trees(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[str]]:
    dirs: list[str] = []
    taken: dict[str, set[str]] = {"": set()}
    for _ in range(draw(st.integers(0, 6))):
        parent = draw(st.sampled_from(sorted(taken)))
        name = draw(_NAMES)
        path = f"{parent}/{name}" if parent else name
        if upcase(name) not in taken[parent] and len(path) < 800:
            taken[parent].add(upcase(name))
            taken[path] = set()
            dirs.append(path)
    files: list[tuple[str, int]] = []
    for _ in range(draw(st.integers(0, 12))):
        parent = draw(st.sampled_from(sorted(taken)))
        name = draw(_NAMES)
        if upcase(name) not in taken[parent]:
            taken[parent].add(upcase(name))
            files.append((f"{parent}/{name}" if parent else name, draw(_SIZES)))
    return files, dirs


@needs_oracles
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shape=_trees(),
    volume=st.one_of(
        st.integers(min_value=8, max_value=64).map(lambda m: m * MiB),
        st.integers(min_value=64 * 2048, max_value=40 * GiB // 512).map(lambda s: s * 512),
    ),
    sector_bytes=st.sampled_from([512, 512, 4096]),
    partition=st.sampled_from([0, 8192]),
    label=st.text(_ALPHABET, max_size=11).filter(lambda s: s.strip() == s),
    volume_id=st.integers(0, 2**32 - 1),
)
def test_generated_trees_pass_the_oracles(
    tmp_path: Path,
    shape: tuple[list[tuple[str, int]], list[str]],
    volume: int,
    sector_bytes: int,
    partition: int,
    label: str,
    volume_id: int,
) -> None:
    """Generated trees on volumes from 8 MiB to 40 GiB: fsck clean, FUSE reads them back."""
    volume -= volume % sector_bytes
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    files = make_files(work / "src", shape[0], seed=volume_id)
    tree = Tree(files, tuple(shape[1]))
    layout = build_exfat(
        volume,
        tree,
        volume_id=volume_id,
        label=label,
        sector_bytes=sector_bytes,
        partition_offset_sectors=partition * 512 // sector_bytes,
    )
    check_extents(layout)
    image = work / "vol.img"
    render_layout(layout, image, seed=volume_id, fill_free=volume <= 64 * MiB)
    try:
        assert_volume_holds(image, tree)
        assert read_label(image) == label
    finally:
        shutil.rmtree(work)


@needs_oracles
@pytest.mark.parametrize(
    ("volume", "sector_bytes"),
    [(16 * MiB, 512), (300 * MiB, 512), (40 * GiB, 512), (300 * MiB, 4096)],
)
def test_empty_volume_is_byte_identical_to_mkfs_exfat(
    tmp_path: Path, volume: int, sector_bytes: int
) -> None:
    """Everything up to the root directory's end is what mkfs.exfat -n android writes
    on a partition at 1 MiB, but the serial (and the checksum that covers it)."""
    disk = tmp_path / "disk.img"
    offset = MiB
    with open(disk, "wb") as f:
        f.truncate(offset + volume + MiB)
    ref = _mkfs_on_partition(disk, offset, volume, sector_bytes)
    serial = struct.unpack_from("<I", ref, 100)[0]
    layout = build_exfat(
        volume,
        Tree(),
        volume_id=serial,
        label="android",
        sector_bytes=sector_bytes,
        partition_offset_sectors=offset // sector_bytes,
    )
    image = tmp_path / "ours.img"
    render_layout(layout, image, fill_free=False)
    with open(image, "rb") as f:
        ours = f.read(len(ref))
    assert ours == ref


def _mkfs_on_partition(disk: Path, offset: int, volume: int, sector_bytes: int) -> bytes:
    """Run mkfs.exfat on the partition of a loop device whose table puts it at
    ``offset``; return the volume's bytes up to the end of its root directory."""
    table = f"label: dos\nstart={offset // sector_bytes}, size={volume // sector_bytes}, type=7\n"
    loop = _run("losetup", "-f", "--show", "-P", "-b", str(sector_bytes), str(disk)).stdout.strip()
    try:
        subprocess.run(
            ["sfdisk", "-q", loop], input=table, text=True, check=True, capture_output=True
        )
        _run("partx", "-u", loop)
        part = loop + "p1"
        for _ in range(50):
            if os.path.exists(part):
                break
            time.sleep(0.1)
        _run("mkfs.exfat", "-n", "android", part)
        with open(part, "rb") as f:
            boot = f.read(512)
            heap = struct.unpack_from("<I", boot, 88)[0] * sector_bytes
            cluster = sector_bytes << boot[109]
            root = struct.unpack_from("<I", boot, 96)[0]
            f.seek(0)
            return f.read(heap + (root - 1) * cluster)
    finally:
        _run("losetup", "-d", loop)

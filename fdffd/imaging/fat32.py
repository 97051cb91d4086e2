"""A FAT32 volume, built in memory as a list of extents: no device, no mount.

``build_fat32`` follows Microsoft's FAT specification (fatgen103, "Microsoft
Extensible Firmware Initiative FAT32 File System Specification", v1.03), with
Windows' cluster sizes and these layout choices:

**Cluster size** is Windows' default for the volume size (KB 140365 / KB 192322,
"MB" there meaning MiB):

=====================  ============
volume size            cluster
=====================  ============
≤ 64 MiB               512 B
≤ 128 MiB              1 KiB
≤ 256 MiB              2 KiB
≤ 8 GiB                4 KiB
≤ 16 GiB               8 KiB
≤ 32 GiB               16 KiB
larger                 32 KiB
=====================  ============

and never smaller than a sector.  Just above a step of the table (e.g. 64 MiB and
a little, with 1 KiB clusters) that size leaves fewer than 65,525 clusters; there
the next smaller cluster size that still allows 4 MiB alignment (below) is used.
A volume needs at least 65,525 clusters to be FAT32 (fatgen103: fewer means
FAT12/16 to every driver), so the smallest FAT32 volume is about 33 MiB with
512-byte sectors; the largest is what BPB_TotSec32 (2^32 - 1 sectors) and 28-bit
cluster numbers allow.

**Reserved sectors and alignment.**  Flash erases in blocks of megabytes, and the
SD Association formatter aligns the data region to the erase unit.  The reserved
area is sized so that the data region (reserved + 2 FATs) starts at a multiple
of 4 MiB from the volume start (the partition itself starts 4 MiB-aligned, so
every cluster is aligned on the disk too).  When that would leave fewer than
65,525 clusters even with smaller clusters (volumes of about 36 MiB and less),
the data region is only aligned to the cluster size.  The reserved area is never
smaller than 32 sectors (fatgen103's value for FAT32) and holds the boot sector
(0), FSInfo (1), the backup boot sector (6) and backup FSInfo (7); the rest is
zero.  The FAT is the smallest that addresses every cluster (the reserved area
absorbs the rest).

**Directories and files.**  The root directory starts at cluster 2, then come the
other directories (pre-order), then the files, each file in consecutive clusters
(no fragmentation) and in the same order.  Inside a directory, subdirectories come
first, then files, each in *natural* order (case-insensitive, digit runs compared
as numbers): cheap media players list entries in directory order, so episode
"2화" comes before "10화".  The root starts with the volume-label entry when there
is a label.  Short names, LFN chains and NT case bits: see ``names.py`` (names
that are valid 8.3 get no LFN; all-lower-case parts use the NT case bits, as
Windows NT and later do).  Attributes: ARCHIVE for files, DIRECTORY for
directories, nothing hidden or system; no "System Volume Information" or other
extra entries.  Directory clusters are zero after the last entry; the slack after
a file's last byte in its last cluster is free space (keyed fill).

**Timestamps.**  Create, write and access stamps of every entry are ``timestamp``
(by default ``FIXED_TIMESTAMP``, the FAT epoch), never the station clock.  It is
taken as a naive wall-clock time (a tzinfo is ignored) with FAT's 2-second write
resolution and 10-ms create resolution.

**Boot sector.**  OEM name "MSWIN4.1" (fatgen103's recommendation), media 0xF8,
63 sectors/track and 255 heads (the usual LBA translation), drive 0x80, two
mirrored FATs, FSInfo with the exact free count and next free cluster, and a boot
stub that hands control back to the BIOS (INT 18h) if someone boots the stick.
"""

from __future__ import annotations

import re
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from fdffd.errors import (
    FileTooLargeError,
    NameNotAllowedError,
    PayloadTooLargeError,
    UsageError,
)
from fdffd.imaging.names import (
    ShortName,
    assign_short_names,
    check_tree,
    fold_case,
    lfn_checksum,
    utf16_units,
)
from fdffd.imaging.types import (
    FIXED_TIMESTAMP,
    Bytes,
    Extent,
    FileData,
    FileEntry,
    Tree,
    VolumeLayout,
    Zeros,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Windows' default FAT32 cluster size: (largest volume in bytes, cluster bytes).
CLUSTER_TABLE: tuple[tuple[int, int], ...] = (
    (64 * MiB, 512),
    (128 * MiB, 1 * KiB),
    (256 * MiB, 2 * KiB),
    (8 * GiB, 4 * KiB),
    (16 * GiB, 8 * KiB),
    (32 * GiB, 16 * KiB),
)
LARGE_CLUSTER = 32 * KiB

MIN_CLUSTERS = 65525  # fatgen103: fewer clusters is FAT12/FAT16
MAX_CLUSTERS = 0x0FFFFFEF - 1  # highest cluster number 0x0FFFFFEF (28-bit entries)
MIN_RESERVED_SECTORS = 32
DATA_ALIGN_BYTES = 4 * MiB
MAX_FILE_BYTES = 0xFFFFFFFF  # DIR_FileSize is 32 bits
MAX_DIR_ENTRIES = 65536  # fatgen103: a directory holds at most 65,536 32-byte entries
SECTOR_SIZES = (512, 1024, 2048, 4096)

MEDIA = 0xF8
EOC = 0x0FFFFFFF
ATTR_READ_ONLY = 0x01
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LFN = 0x0F
ENTRY = 32
LFN_UNITS = 13

# jmp short 0x5A; nop -- and at 0x5A: int 18h (boot failed, BIOS tries the next
# device), then hang.
_JUMP = b"\xeb\x58\x90"
_BOOT_STUB = b"\xcd\x18\xeb\xfe"
_OEM_NAME = b"MSWIN4.1"
_LABEL_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&'()-@^_`{}~")


@dataclass(frozen=True)
class Fat32Geometry:
    """Where everything goes on a FAT32 volume, in sectors unless named otherwise."""

    sector_bytes: int
    total_sectors: int
    sectors_per_cluster: int
    reserved_sectors: int
    fat_sectors: int
    clusters: int

    @property
    def cluster_bytes(self) -> int:
        return self.sectors_per_cluster * self.sector_bytes

    @property
    def fat_offset(self) -> int:
        """Byte offset of the first FAT."""
        return self.reserved_sectors * self.sector_bytes

    @property
    def data_offset(self) -> int:
        """Byte offset of cluster 2."""
        return (self.reserved_sectors + 2 * self.fat_sectors) * self.sector_bytes

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_bytes


def default_cluster_bytes(volume_bytes: int, sector_bytes: int = 512) -> int:
    """Windows' default FAT32 cluster size for a volume of ``volume_bytes``."""
    for limit, size in CLUSTER_TABLE:
        if volume_bytes <= limit:
            return max(size, sector_bytes)
    return max(LARGE_CLUSTER, sector_bytes)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _fit(total: int, spc: int, bps: int, align: int) -> Fat32Geometry | None:
    """The layout of ``total`` sectors with the data region aligned to ``align`` sectors.

    For a given start of the data region (``meta`` = reserved + 2 FATs) the cluster
    count and so the smallest FAT are fixed, and the reserved area takes the rest;
    the smallest aligned ``meta`` that leaves at least 32 reserved sectors wins."""

    def attempt(meta: int) -> Fat32Geometry | None:
        if total - meta < spc:
            return None
        clusters = (total - meta) // spc
        fat = _ceil_div((clusters + 2) * 4, bps)
        reserved = meta - 2 * fat
        if not MIN_RESERVED_SECTORS <= reserved <= 0xFFFF:
            return None
        return Fat32Geometry(bps, total, spc, reserved, fat, clusters)

    most = _ceil_div((total // spc + 2) * 4, bps)  # a FAT for every cluster there could be
    meta = _ceil_div(MIN_RESERVED_SECTORS + 2 * most, align) * align
    best = attempt(meta)
    while best is not None and meta > align:
        smaller = attempt(meta - align)
        if smaller is None:
            break
        meta, best = meta - align, smaller
    return best


def fat32_geometry(volume_bytes: int, sector_bytes: int = 512) -> Fat32Geometry:
    """The layout of an empty FAT32 volume of ``volume_bytes`` (see the module docstring).

    Raises ``UsageError`` when the volume is too small or too large for FAT32."""
    if sector_bytes not in SECTOR_SIZES:
        raise UsageError(f"FAT32: unsupported sector size {sector_bytes} (use 512 to 4096)")
    total = volume_bytes // sector_bytes
    if total > 0xFFFFFFFF:
        raise UsageError(
            f"FAT32: a volume of {volume_bytes} bytes is too large "
            f"(at most {0xFFFFFFFF * sector_bytes} bytes with {sector_bytes}-byte sectors); "
            "use exFAT"
        )
    best: Fat32Geometry | None = None
    # Just above a step of the table, Windows' cluster size leaves fewer than 65,525
    # clusters: take the next smaller cluster size there.  4 MiB alignment comes first
    # (it matters more to flash than the cluster size); tiny volumes go without it.
    for aligned in (True, False):
        cluster = default_cluster_bytes(volume_bytes, sector_bytes)
        while best is None and cluster >= sector_bytes:
            align = DATA_ALIGN_BYTES if aligned else cluster
            geo = _fit(total, cluster // sector_bytes, sector_bytes, align // sector_bytes)
            if geo is not None and geo.clusters >= MIN_CLUSTERS:
                best = geo
            cluster //= 2
    if best is None:
        raise UsageError(
            f"FAT32: a volume of {volume_bytes} bytes is too small: FAT32 needs at least "
            f"{MIN_CLUSTERS} clusters (about 33 MiB with 512-byte sectors, 260 MiB with "
            "4096-byte sectors); use a larger drive"
        )
    if best.clusters > MAX_CLUSTERS:
        raise UsageError(
            f"FAT32: a volume of {volume_bytes} bytes has {best.clusters} clusters, more "
            f"than FAT32's {MAX_CLUSTERS}; use exFAT"
        )
    return best


def check_label(label: str) -> str:
    """The 11-character-or-less volume label as stored (upper case, as Windows stores it).

    Raises ``UsageError`` for characters FAT labels cannot hold."""
    if len(label) > 11:
        raise UsageError(f"volume label {label!r} is longer than 11 characters")
    if label != label.strip(" "):
        raise UsageError(f"volume label {label!r} starts or ends with a space")
    stored = label.upper()
    bad = sorted({ch for ch in stored if ch not in _LABEL_OK})
    if bad:
        raise UsageError(
            f"volume label {label!r}: {''.join(bad)!r} not allowed; FAT labels hold ASCII "
            "letters, digits, spaces and ! # $ % & ' ( ) - @ ^ _ ` { } ~"
        )
    return stored


# --- the payload tree -------------------------------------------------------------------


@dataclass
class _Dir:
    path: str
    dirs: dict[str, _Dir] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    cluster: int = 0
    clusters: int = 0
    data: bytes = b""


def _natural_key(name: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    parts = re.split(r"([0-9]+)", fold_case(name))
    key = tuple(
        (0, int(part), part) if i % 2 else (1, 0, part) for i, part in enumerate(parts) if part
    )
    return key, name


def _refuse(path: str, detail: str) -> NameNotAllowedError:
    return NameNotAllowedError(path=path, detail=detail)


def _build_tree(tree: Tree) -> _Dir:
    check_tree([*tree.dirs, *(f.path for f in tree.files)])
    root = _Dir("")
    file_paths = {f.path for f in tree.files}

    def ensure(path: str) -> _Dir:
        node = root
        sofar = ""
        for part in path.split("/"):
            sofar = f"{sofar}/{part}" if sofar else part
            if sofar in file_paths:
                raise _refuse(sofar, "is both a file and a directory in the payload")
            node = node.dirs.setdefault(part, _Dir(sofar))
        return node

    for d in tree.dirs:
        ensure(d)
    for f in tree.files:
        if f.size < 0:
            raise _refuse(f.path, f"negative size {f.size}")
        if f.size > MAX_FILE_BYTES:
            raise FileTooLargeError(
                path=f.path, size=f.size, filesystem="FAT32", limit=MAX_FILE_BYTES
            )
        parent, _, name = f.path.rpartition("/")
        node = ensure(parent) if parent else root
        if name in node.files:
            raise _refuse(f.path, "is listed twice in the payload")
        node.files[name] = f
    return root


def _walk(node: _Dir) -> Iterator[_Dir]:
    """Directories in pre-order, children in directory order."""
    yield node
    for name in sorted(node.dirs, key=_natural_key):
        yield from _walk(node.dirs[name])


# --- on-disk encodings ------------------------------------------------------------------


@dataclass(frozen=True)
class _Stamp:
    date: int
    time: int
    tenth: int


def _stamp(ts: datetime) -> _Stamp:
    if not 1980 <= ts.year <= 2107:
        raise UsageError(f"FAT timestamps run from 1980 to 2107, not {ts.isoformat()}")
    date = ((ts.year - 1980) << 9) | (ts.month << 5) | ts.day
    time = (ts.hour << 11) | (ts.minute << 5) | (ts.second // 2)
    tenth = (ts.second % 2) * 100 + ts.microsecond // 10_000
    return _Stamp(date, time, tenth)


def _short_entry(raw: bytes, attr: int, case: int, cluster: int, size: int, st: _Stamp) -> bytes:
    return struct.pack(
        "<11sBBBHHHHHHHI",
        raw,
        attr,
        case,
        st.tenth,
        st.time,
        st.date,
        st.date,
        cluster >> 16,
        st.time,
        st.date,
        cluster & 0xFFFF,
        size,
    )


def _lfn_entries(name: str, checksum: int) -> bytes:
    """The LFN chain of ``name``, last part first, as it precedes the short entry."""
    units = name.encode("utf-16-le")
    count = _ceil_div(len(units) // 2, LFN_UNITS)
    if len(units) // 2 % LFN_UNITS:
        units += b"\x00\x00"
    units += b"\xff\xff" * (count * LFN_UNITS - len(units) // 2)
    out = []
    for seq in range(count, 0, -1):
        part = units[(seq - 1) * 2 * LFN_UNITS : seq * 2 * LFN_UNITS]
        order = seq | (0x40 if seq == count else 0)
        out.append(
            bytes([order])
            + part[0:10]
            + bytes([ATTR_LFN, 0, checksum])
            + part[10:22]
            + b"\x00\x00"
            + part[22:26]
        )
    return b"".join(out)


def _lfn_count(name: str, short: ShortName) -> int:
    return _ceil_div(utf16_units(name), LFN_UNITS) if short.lfn else 0


@dataclass(frozen=True)
class _Child:
    name: str
    short: ShortName
    node: _Dir | None
    file: FileEntry | None


def _children(node: _Dir) -> list[_Child]:
    dirs = sorted(node.dirs, key=_natural_key)
    files = sorted(node.files, key=_natural_key)
    shorts = assign_short_names(dirs + files)
    return [_Child(n, shorts[n], node.dirs[n], None) for n in dirs] + [
        _Child(n, shorts[n], None, node.files[n]) for n in files
    ]


assert array("I").itemsize == 4, "FAT entries are built as 32-bit unsigned ints"


def _le32(values: array[int]) -> bytes:
    if sys.byteorder != "little":
        values = array("I", values)
        values.byteswap()
    return values.tobytes()


# --- the builder ------------------------------------------------------------------------


def build_fat32(
    volume_bytes: int,
    tree: Tree,
    *,
    volume_id: int,
    label: str = "",
    hidden_sectors: int = 0,
    sector_bytes: int = 512,
    timestamp: datetime = FIXED_TIMESTAMP,
) -> VolumeLayout:
    """Lay out a FAT32 volume of ``volume_bytes`` holding ``tree`` (see the module docstring).

    ``hidden_sectors`` is the partition's first LBA (BPB_HiddSec).  Raises
    ``NameNotAllowedError``, ``FileTooLargeError``, ``PayloadTooLargeError``, or
    ``UsageError`` for a volume, label or timestamp FAT32 cannot take."""
    if not 0 <= volume_id <= 0xFFFFFFFF:
        raise UsageError(f"FAT32 volume id {volume_id} is not a 32-bit number")
    if not 0 <= hidden_sectors <= 0xFFFFFFFF:
        raise UsageError(f"FAT32: hidden sectors {hidden_sectors} is not a 32-bit number")
    stored_label = check_label(label)
    stamp = _stamp(timestamp)
    root = _build_tree(tree)
    geo = fat32_geometry(volume_bytes, sector_bytes)
    cb = geo.cluster_bytes

    # 1. directory sizes, in pre-order
    order = list(_walk(root))
    listing: dict[str, list[_Child]] = {}
    for node in order:
        kids = _children(node)
        listing[node.path] = kids
        n = (2 if node.path else (1 if stored_label else 0)) + sum(
            1 + _lfn_count(k.name, k.short) for k in kids
        )
        if n > MAX_DIR_ENTRIES:
            raise _refuse(
                node.path or "/",
                f"this directory needs {n} directory entries, FAT32 allows {MAX_DIR_ENTRIES}; "
                "spread its files over subdirectories or use shorter names",
            )
        node.clusters = max(1, _ceil_div(n * ENTRY, cb))

    # 2. allocation: directories, then files, in consecutive clusters from 2
    chains: list[tuple[int, int]] = []
    next_cluster = 2
    for node in order:
        node.cluster = next_cluster
        chains.append((next_cluster, node.clusters))
        next_cluster += node.clusters
    file_cluster: dict[str, int] = {}
    placed: list[tuple[int, FileEntry]] = []
    for node in order:
        for kid in listing[node.path]:
            if kid.file is not None and kid.file.size > 0:
                count = _ceil_div(kid.file.size, cb)
                file_cluster[kid.file.path] = next_cluster
                chains.append((next_cluster, count))
                placed.append((next_cluster, kid.file))
                next_cluster += count
    used = next_cluster - 2
    if used > geo.clusters:
        raise PayloadTooLargeError(needed=used * cb, available=geo.clusters * cb)

    # 3. directory contents
    for node in order:
        parts = []
        if not node.path and stored_label:
            raw = stored_label.encode("ascii").ljust(11)
            parts.append(_short_entry(raw, ATTR_VOLUME_ID, 0, 0, 0, stamp))
        if node.path:
            parent = node.path.rpartition("/")[0]
            parent_cluster = _find(root, parent).cluster if parent else 0
            parts.append(_short_entry(b".          ", ATTR_DIRECTORY, 0, node.cluster, 0, stamp))
            parts.append(_short_entry(b"..         ", ATTR_DIRECTORY, 0, parent_cluster, 0, stamp))
        for kid in listing[node.path]:
            if kid.short.lfn:
                parts.append(_lfn_entries(kid.name, lfn_checksum(kid.short.raw)))
            if kid.node is not None:
                attr, cluster, size = ATTR_DIRECTORY, kid.node.cluster, 0
            else:
                assert kid.file is not None
                attr, size = ATTR_ARCHIVE, kid.file.size
                cluster = file_cluster.get(kid.file.path, 0)
            parts.append(
                _short_entry(kid.short.raw, attr, kid.short.case_bits, cluster, size, stamp)
            )
        data = b"".join(parts)
        node.data = data + bytes(node.clusters * cb - len(data))

    # 4. the FAT
    fat = array("I", bytes(4 * next_cluster))
    fat[0] = 0x0FFFFF00 | MEDIA
    fat[1] = EOC
    for start, count in chains:
        fat[start : start + count - 1] = array("I", range(start + 1, start + count))
        fat[start + count - 1] = EOC
    fat_used = _le32(fat)
    fat_used += bytes(-len(fat_used) % sector_bytes)

    # 5. boot sector and FSInfo
    free = geo.clusters - used
    next_free = next_cluster if free else 0xFFFFFFFF
    boot = _boot_sector(geo, hidden_sectors, volume_id, stored_label)
    fsinfo = _fsinfo(sector_bytes, free, next_free)

    # 6. extents
    bps = sector_bytes
    ext: list[Extent] = [
        Extent(0, bps, Bytes(boot)),
        Extent(bps, bps, Bytes(fsinfo)),
        Extent(2 * bps, 4 * bps, Zeros()),
        Extent(6 * bps, bps, Bytes(boot)),
        Extent(7 * bps, bps, Bytes(fsinfo)),
    ]
    if geo.reserved_sectors > 8:
        ext.append(Extent(8 * bps, (geo.reserved_sectors - 8) * bps, Zeros()))
    fat_bytes = geo.fat_sectors * bps
    for copy in range(2):
        start = geo.fat_offset + copy * fat_bytes
        ext.append(Extent(start, len(fat_used), Bytes(fat_used)))
        if fat_bytes > len(fat_used):
            ext.append(Extent(start + len(fat_used), fat_bytes - len(fat_used), Zeros()))
    for node in order:
        ext.append(Extent(geo.cluster_offset(node.cluster), len(node.data), Bytes(node.data)))
    for cluster, entry in placed:
        ext.append(Extent(geo.cluster_offset(cluster), entry.size, FileData(entry, 0)))
    ext.sort(key=lambda e: e.offset)
    return VolumeLayout(
        fs_type="fat32",
        volume_bytes=volume_bytes,
        volume_id=volume_id,
        label=stored_label,
        cluster_bytes=cb,
        extents=ext,
    )


def _find(root: _Dir, path: str) -> _Dir:
    node = root
    for part in path.split("/"):
        node = node.dirs[part]
    return node


def _boot_sector(geo: Fat32Geometry, hidden: int, volume_id: int, label: str) -> bytes:
    bpb = struct.pack(
        "<3s8sHBHBHHBHHHIIIHHIHH12sBBBI11s8s",
        _JUMP,
        _OEM_NAME,
        geo.sector_bytes,
        geo.sectors_per_cluster,
        geo.reserved_sectors,
        2,  # BPB_NumFATs
        0,  # BPB_RootEntCnt
        0,  # BPB_TotSec16
        MEDIA,
        0,  # BPB_FATSz16
        63,  # BPB_SecPerTrk
        255,  # BPB_NumHeads
        hidden,
        geo.total_sectors,
        geo.fat_sectors,
        0,  # BPB_ExtFlags: FATs mirrored
        0,  # BPB_FSVer 0.0
        2,  # BPB_RootClus
        1,  # BPB_FSInfo
        6,  # BPB_BkBootSec
        bytes(12),
        0x80,  # BS_DrvNum
        0,
        0x29,  # BS_BootSig: the next three fields are valid
        volume_id,
        (label or "NO NAME").encode("ascii").ljust(11),
        b"FAT32   ",
    )
    sector = bytearray(geo.sector_bytes)
    sector[: len(bpb)] = bpb
    sector[0x5A : 0x5A + len(_BOOT_STUB)] = _BOOT_STUB
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _fsinfo(sector_bytes: int, free: int, next_free: int) -> bytes:
    sector = bytearray(sector_bytes)
    struct.pack_into("<I", sector, 0, 0x41615252)
    struct.pack_into("<III", sector, 484, 0x61417272, free, next_free)
    struct.pack_into("<I", sector, 508, 0xAA550000)
    return bytes(sector)

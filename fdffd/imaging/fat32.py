"""A FAT32 volume, built in memory as a list of extents: no device, no mount.

The volume is the one Android's ``newfs_msdos -O android -A`` formats (docs/imaging.md,
"Footprint"; constants in ``footprint.py``), filled the way a Windows 10/11 copy
fills it (``fatdir.py``).  Field by field:

**Geometry.**  Cluster size newfs_msdos' default for the volume size: up to about
3 MB 512 B, up to 64 MiB 4 KiB, up to 256 MiB 8 KiB, up to 1 GiB 16 KiB, above
32 KiB (never smaller than a sector; with 4096-byte sectors the same *bytes*).
Where that leaves fewer than 65,525 clusters (newfs_msdos would make FAT16 there,
issue 14) the cluster is halved until FAT32 fits.  Reserved sectors: 16 KiB worth
(32 of 512 bytes, 4 of 4096), then padded (``-A``) so that the root directory,
cluster 2, starts a whole number of clusters from the volume start.  The FAT size
is newfs_msdos' estimate, made before the padding.  Two FATs.

**Boot sector.**  Jump ``EB 58 90``, OEM name ``android``, media ``F0`` when the
hidden-sector count is 0 (what Android's newfs_msdos writes) and ``F8`` otherwise,
heads and sectors per track as the kernel reported them (4/16 for a card in a
phone's slot, 255/63 for a USB drive), drive number 0, boot signature 29h, the
volume serial (derived by the plan from the format time), label ``NO NAME`` unless
one is given, and newfs_msdos' boot program ("Non-system disk / Press any key to
reboot") at 5Ah.  FSInfo at sector 1, backup boot sector at 2, backup FSInfo at 3.
The backup FSInfo keeps the "unknown" counts newfs_msdos wrote; the primary one
has the exact free count and the next free cluster, as the copying system leaves
it.  The rest of the reserved area is zero.

**Data.**  The root directory starts at cluster 2, then come the other directories
(pre-order), then the files, each in consecutive clusters and in the same order.
A label, when given, is the root's first entry (attribute 28h, write time only,
as newfs_msdos writes it).  Directory clusters are zero after the last entry; the
slack after a file's last byte is free space (the plan's fill).
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from datetime import datetime

from fdffd.errors import PayloadTooLargeError, UsageError
from fdffd.imaging import footprint as fp
from fdffd.imaging.dates import CopyTimes, copy_times
from fdffd.imaging.fatdir import (
    ENTRY,
    FatDir,
    build_tree,
    ceil_div,
    copied_files,
    copy_order,
    directory_bytes,
    entry_count,
    label_entry,
)
from fdffd.imaging.names import DEFAULT_CODEPAGE
from fdffd.imaging.types import Bytes, Extent, FileData, FileEntry, Tree, VolumeLayout, Zeros

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: FAT limits (fatgen103): fewer clusters than this is FAT12/FAT16 to every driver.
MIN_CLUSTERS = 65525
#: The highest cluster number is 0x0FFFFFF6 (28-bit entries, newfs_msdos' MAXCLS32).
MAX_CLUSTERS = 0x0FFFFFF4
MAX_SECTORS = 0xFFFFFFFF  # BPB_TotSec32
MAX_RESERVED = 0xFFFF  # BPB_RsvdSecCnt
MAX_SECTORS_PER_CLUSTER = 128
SECTOR_SIZES = (512, 1024, 2048, 4096)
NUM_FATS = 2
ROOT_CLUSTER = 2

MEDIA_FIXED = 0xF8
MEDIA_NO_HIDDEN = 0xF0
EOC = 0x0FFFFFFF
ATTR_VOLUME_ID = 0x08
_LABEL_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&'()-@^_`{}~")
#: What a builder stamps when the caller gives no times (tests): a fixed, plausible
#: copy time.  The plan always passes per-drive times drawn from a window.
DEFAULT_BASE = datetime(2024, 5, 17, 14, 3, 10, 250_000)


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
        return (self.reserved_sectors + NUM_FATS * self.fat_sectors) * self.sector_bytes

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_bytes


def default_cluster_bytes(volume_bytes: int, sector_bytes: int = 512) -> int:
    """newfs_msdos' default FAT cluster size for a volume of ``volume_bytes``."""
    units = volume_bytes // 512
    for limit, spc in fp.NEWFS_CLUSTER_STEPS:
        if units <= limit:
            return max(spc * 512, sector_bytes)
    return max(fp.NEWFS_LARGE_SPC * 512, sector_bytes)


def _newfs_fat_sectors(total: int, reserved: int, spc: int, bps: int) -> int:
    """newfs_msdos' FAT size: clusters estimated as if the FATs took one sector each."""
    meta = reserved + NUM_FATS
    clusters = (total - meta) * bps * 2 // (spc * bps * 2 + 8 * NUM_FATS)
    return ceil_div((2 + min(clusters, MAX_CLUSTERS)) * 4, bps)


def _layout(total: int, spc: int, bps: int) -> Fat32Geometry | None:
    """newfs_msdos' reserved area and FAT for ``spc``, root aligned to the cluster (-A)."""
    base = max(
        fp.FAT32_BACKUP_SECTOR + 1,
        fp.FAT32_BASE_RESERVED_BYTES // bps,
        fp.FAT32_MIN_RESERVED_SECTORS,
    )
    fat = _newfs_fat_sectors(total, base, spc, bps)
    while True:
        misalign = (base + NUM_FATS * fat) % spc
        reserved = base + (spc - misalign if misalign else 0)
        if reserved > MAX_RESERVED or total <= reserved + NUM_FATS * fat:
            return None
        clusters = (total - reserved - NUM_FATS * fat) // spc
        # newfs_msdos' estimate can fall one or two entries short with one-sector
        # clusters (a size it would format as FAT16): then the FAT grows by a sector.
        if clusters <= fat * bps // 4 - 2:
            break
        fat += 1
    return Fat32Geometry(bps, total, spc, reserved, fat, clusters)


def fat32_geometry(volume_bytes: int, sector_bytes: int = 512) -> Fat32Geometry:
    """The layout of an empty FAT32 volume of ``volume_bytes`` (see the module docstring).

    Raises ``UsageError`` when the volume is too small or too large for FAT32."""
    if sector_bytes not in SECTOR_SIZES:
        raise UsageError(f"FAT32: unsupported sector size {sector_bytes} (use 512 to 4096)")
    total = volume_bytes // sector_bytes
    if total > MAX_SECTORS:
        raise UsageError(
            f"FAT32: a volume of {volume_bytes} bytes is too large "
            f"(at most {MAX_SECTORS * sector_bytes} bytes with {sector_bytes}-byte sectors); "
            "use exFAT"
        )
    cluster = default_cluster_bytes(volume_bytes, sector_bytes)
    while cluster >= sector_bytes:
        geo = _layout(total, cluster // sector_bytes, sector_bytes)
        if geo is not None and geo.clusters > MAX_CLUSTERS:
            raise UsageError(
                f"FAT32: a volume of {volume_bytes} bytes has {geo.clusters} clusters, more "
                f"than FAT32's {MAX_CLUSTERS}; use exFAT"
            )
        if geo is not None and geo.clusters >= MIN_CLUSTERS:
            return geo
        cluster //= 2
    raise UsageError(
        f"FAT32: a volume of {volume_bytes} bytes is too small: FAT32 needs at least "
        f"{MIN_CLUSTERS} clusters (about 33 MiB with 512-byte sectors, 260 MiB with "
        "4096-byte sectors); use a larger drive"
    )


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


assert array("I").itemsize == 4, "FAT entries are built as 32-bit unsigned ints"


def _le32(values: array[int]) -> bytes:
    if sys.byteorder != "little":
        values = array("I", values)
        values.byteswap()
    return values.tobytes()


# --- the builder, step by step ------------------------------------------------------------


@dataclass(frozen=True)
class _Allocation:
    """Where directories and files went: chains (first cluster, count) and file starts."""

    chains: list[tuple[int, int]]
    file_cluster: dict[str, int]
    placed: list[tuple[int, FileEntry]]
    next_cluster: int

    @property
    def used(self) -> int:
        return self.next_cluster - 2


def _size_directories(order: list[FatDir], has_label: bool, cluster_bytes: int) -> None:
    for node in order:
        node.clusters = max(1, ceil_div(entry_count(node, has_label) * ENTRY, cluster_bytes))


def _allocate(order: list[FatDir], geo: Fat32Geometry) -> _Allocation:
    """Directories, then files, in consecutive clusters from 2 (the copy's order)."""
    chains: list[tuple[int, int]] = []
    nxt = ROOT_CLUSTER
    for node in order:
        node.cluster = nxt
        chains.append((nxt, node.clusters))
        nxt += node.clusters
    file_cluster: dict[str, int] = {}
    placed: list[tuple[int, FileEntry]] = []
    for kid in copied_files(order):  # by the payload's priority, then pre-order
        if kid.file is not None and kid.file.size > 0:
            count = ceil_div(kid.file.size, geo.cluster_bytes)
            file_cluster[kid.file.path] = nxt
            chains.append((nxt, count))
            placed.append((nxt, kid.file))
            nxt += count
    alloc = _Allocation(chains, file_cluster, placed, nxt)
    if alloc.used > geo.clusters:
        cb = geo.cluster_bytes
        raise PayloadTooLargeError(needed=alloc.used * cb, available=geo.clusters * cb)
    return alloc


def _fat_bytes(alloc: _Allocation, media: int, sector_bytes: int) -> bytes:
    """The used part of one FAT, padded to whole sectors (the rest of the FAT is zero)."""
    fat = array("I", bytes(4 * alloc.next_cluster))
    fat[0] = 0x0FFFFF00 | media
    fat[1] = EOC
    for start, count in alloc.chains:
        fat[start : start + count - 1] = array("I", range(start + 1, start + count))
        fat[start + count - 1] = EOC
    data = _le32(fat)
    return data + bytes(-len(data) % sector_bytes)


@dataclass(frozen=True)
class BootFields:
    """The boot-sector fields that are not geometry."""

    hidden_sectors: int
    volume_id: int
    label: str
    bios: fp.BiosGeometry

    @property
    def media(self) -> int:
        return MEDIA_NO_HIDDEN if self.hidden_sectors == 0 else MEDIA_FIXED


def boot_sector(geo: Fat32Geometry, f: BootFields) -> bytes:
    """Sector 0 (and its backup) as newfs_msdos writes it."""
    bpb = struct.pack(
        "<3s8sHBHBHHBHHHIIIHHIHH12sBBBI11s8s",
        b"\xeb\x58\x90",
        fp.FAT32_OEM_NAME,
        geo.sector_bytes,
        geo.sectors_per_cluster,
        geo.reserved_sectors,
        NUM_FATS,
        0,  # BPB_RootEntCnt
        0,  # BPB_TotSec16
        f.media,
        0,  # BPB_FATSz16
        f.bios.sectors_per_track,
        f.bios.heads,
        f.hidden_sectors,
        geo.total_sectors,
        geo.fat_sectors,
        0,  # BPB_ExtFlags: FATs mirrored
        0,  # BPB_FSVer 0.0
        ROOT_CLUSTER,
        fp.FAT32_FSINFO_SECTOR,
        fp.FAT32_BACKUP_SECTOR,
        bytes(12),
        0,  # BS_DrvNum: newfs_msdos leaves it zero
        0,
        0x29,  # BS_BootSig: the next three fields are valid
        f.volume_id,
        f.label.encode("ascii").ljust(11) if f.label else fp.FAT32_NO_LABEL,
        b"FAT32   ",
    )
    sector = bytearray(geo.sector_bytes)
    sector[: len(bpb)] = bpb
    at = fp.FAT32_BOOT_PROGRAM_OFFSET
    sector[at : at + len(fp.FAT32_BOOT_PROGRAM)] = fp.FAT32_BOOT_PROGRAM
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def fsinfo_sector(sector_bytes: int, free: int, next_free: int) -> bytes:
    sector = bytearray(sector_bytes)
    struct.pack_into("<I", sector, 0, 0x41615252)
    struct.pack_into("<III", sector, 484, 0x61417272, free, next_free)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _reserved_extents(geo: Fat32Geometry, boot: bytes, fsinfo: bytes) -> list[Extent]:
    bps = geo.sector_bytes
    unknown = fsinfo_sector(bps, 0xFFFFFFFF, 0xFFFFFFFF)
    backup = fp.FAT32_BACKUP_SECTOR
    ext = [
        Extent(0, bps, Bytes(boot)),
        Extent(fp.FAT32_FSINFO_SECTOR * bps, bps, Bytes(fsinfo)),
        Extent(backup * bps, bps, Bytes(boot)),
        Extent((backup + fp.FAT32_FSINFO_SECTOR) * bps, bps, Bytes(unknown)),
    ]
    after = backup + fp.FAT32_FSINFO_SECTOR + 1
    if geo.reserved_sectors > after:
        ext.append(Extent(after * bps, (geo.reserved_sectors - after) * bps, Zeros()))
    return ext


def _fat_extents(geo: Fat32Geometry, fat_used: bytes) -> list[Extent]:
    fat_bytes = geo.fat_sectors * geo.sector_bytes
    ext = []
    for copy in range(NUM_FATS):
        start = geo.fat_offset + copy * fat_bytes
        ext.append(Extent(start, len(fat_used), Bytes(fat_used)))
        if fat_bytes > len(fat_used):
            ext.append(Extent(start + len(fat_used), fat_bytes - len(fat_used), Zeros()))
    return ext


def _check_args(volume_id: int, hidden_sectors: int) -> None:
    if not 0 <= volume_id <= 0xFFFFFFFF:
        raise UsageError(f"FAT32 volume id {volume_id} is not a 32-bit number")
    if not 0 <= hidden_sectors <= 0xFFFFFFFF:
        raise UsageError(f"FAT32: hidden sectors {hidden_sectors} is not a 32-bit number")


def _directories(
    order: list[FatDir],
    geo: Fat32Geometry,
    alloc: _Allocation,
    times: CopyTimes,
    label: str,
) -> list[Extent]:
    ext = []
    for node in order:
        head = b""
        if not node.path and label:
            raw = label.encode("ascii").ljust(11)
            head = label_entry(raw, fp.FAT32_LABEL_ATTR, times.formatted)
        parent = node.path.rpartition("/")[0]
        data = directory_bytes(
            node,
            parent_cluster=_cluster_of(order, parent) if node.path and parent else 0,
            head=head,
            times=times.entries,
            file_cluster=alloc.file_cluster,
            cluster_bytes=geo.cluster_bytes,
        )
        ext.append(Extent(geo.cluster_offset(node.cluster), len(data), Bytes(data)))
    return ext


def _cluster_of(order: list[FatDir], path: str) -> int:
    for node in order:
        if node.path == path:
            return node.cluster
    raise AssertionError(f"directory {path!r} not in the tree")  # pragma: no cover


def build_fat32(
    volume_bytes: int,
    tree: Tree,
    *,
    volume_id: int,
    label: str = "",
    hidden_sectors: int = 0,
    sector_bytes: int = 512,
    media: str = fp.DEFAULT_MEDIA,
    times: CopyTimes | None = None,
    codepage: str = DEFAULT_CODEPAGE,
) -> VolumeLayout:
    """Lay out a FAT32 volume of ``volume_bytes`` holding ``tree`` (see the module docstring).

    ``hidden_sectors`` is BPB_HiddSec (0, as Android writes it, gives media F0h);
    ``media`` ("sd" or "usb") picks the BIOS geometry; ``times`` are every entry's
    times (from ``dates.copy_times``; by default spread from ``DEFAULT_BASE``).
    Raises ``NameNotAllowedError``, ``FileTooLargeError``, ``PayloadTooLargeError``,
    or ``UsageError`` for a volume, label or timestamp FAT32 cannot take."""
    _check_args(volume_id, hidden_sectors)
    stored_label = check_label(label)
    order = build_tree(tree, codepage)
    geo = fat32_geometry(volume_bytes, sector_bytes)
    if times is None:
        times = copy_times(DEFAULT_BASE, copy_order(order), b"")
    _size_directories(order, bool(stored_label), geo.cluster_bytes)
    alloc = _allocate(order, geo)
    fields = BootFields(hidden_sectors, volume_id, stored_label, fp.bios_geometry(media))
    free = geo.clusters - alloc.used
    fsinfo = fsinfo_sector(sector_bytes, free, alloc.next_cluster if free else 0xFFFFFFFF)
    ext = _reserved_extents(geo, boot_sector(geo, fields), fsinfo)
    ext += _fat_extents(geo, _fat_bytes(alloc, fields.media, sector_bytes))
    ext += _directories(order, geo, alloc, times, stored_label)
    for cluster, entry in alloc.placed:
        ext.append(Extent(geo.cluster_offset(cluster), entry.size, FileData(entry, 0)))
    ext.sort(key=lambda e: e.offset)
    return VolumeLayout(
        fs_type="fat32",
        volume_bytes=volume_bytes,
        volume_id=volume_id,
        label=stored_label,
        cluster_bytes=geo.cluster_bytes,
        extents=ext,
    )

"""exFAT in userspace: a payload tree in, a :class:`VolumeLayout` out.  Pure: no I/O.

Follows Microsoft's exFAT file system specification (revision 1.00) and reproduces,
field by field, the volume exfatprogs' ``mkfs.exfat`` formats (the footprint,
docs/imaging.md), filled as a Windows 10/11 copy fills it.  In order:

* **Boot regions** (sectors 0-11 and their backup, 12-23): boot sector with
  ``EXFAT`` as OEM name and zero boot code (mkfs.exfat writes no program), eight
  extended boot sectors (zero, signature ``AA550000``), an OEM parameters sector of
  ``FF`` bytes, a zero reserved sector and the checksum sector.  The sectors from
  24 to the FAT, and from the FAT's end to the heap, are zero (the quick format
  zeroes everything before the root directory).
* **FAT** at ``FatOffset``: entries 0 and 1, and the chains of the allocation
  bitmap, the up-case table and the root directory.  Every payload file and
  subdirectory is one contiguous run flagged NoFatChain, whose FAT entries stay
  zero (as Windows leaves them).
* **Cluster heap**: the allocation bitmap (cluster 2), the up-case table, the root
  directory, every other directory (pre-order), then file data in the same order.

Geometry (:func:`exfat_geometry`), mkfs.exfat's rules: cluster 4 KiB up to
256 MiB, 32 KiB up to 32 GiB, 128 KiB above; the FAT starts at the first 1 MiB
boundary *on the medium* (the partition offset counts) after the boot regions,
is ``clusters × 4`` bytes rounded up to a cluster, and the heap starts at the next
1 MiB boundary after it.

Timestamps: every File entry gets its times from ``dates.copy_times`` (created when
copied, modified as the source was, accessed when copied) with the UTC offset
Windows writes (``OffsetValid`` set, +9:00 for Korea); never the station clock.

Slack after a file's last byte and all free clusters are left to the caller.
Directory clusters, the bitmap and the up-case table are written whole (zero-padded).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime

from fdffd.errors import NameNotAllowedError, PayloadTooLargeError
from fdffd.imaging import footprint as fp
from fdffd.imaging.dates import CopyItem, CopyTimes, copy_times
from fdffd.imaging.exfatdir import (
    check_label,
    check_name,
    entry_set,
    entry_set_units,
    name_hash,
    stamps,
    utf16,
)
from fdffd.imaging.types import (
    Bytes,
    Extent,
    FileData,
    FileEntry,
    Tree,
    VolumeLayout,
    Zeros,
)
from fdffd.imaging.upcase import upcase, upcase_table, upcase_table_checksum

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: Smallest volume the spec allows (VolumeLength >= 2^20 bytes).
MIN_VOLUME_BYTES = 1 * MiB
#: Most clusters a FAT can describe.
MAX_CLUSTER_COUNT = 2**32 - 11
MAX_CLUSTER_BYTES = 32 * MiB
#: A directory may not grow past 256 MiB (section 7.6.7).
MAX_DIRECTORY_BYTES = 256 * MiB

#: mkfs.exfat aligns the FAT and the heap to this boundary on the medium.
BOUNDARY_BYTES = fp.EXFAT_BOUNDARY_BYTES
#: What a builder stamps when the caller gives no times (tests); see fat32.DEFAULT_BASE.
DEFAULT_BASE = datetime(2024, 5, 17, 14, 3, 10, 250_000)

_BOOT_REGION_SECTORS = 12
_ENTRY = 32
_FIRST_CLUSTER = 2
_FAT_MEDIA = 0xFFFFFFF8
_FAT_EOC = 0xFFFFFFFF

_ATTR_DIRECTORY = 0x10
_ATTR_ARCHIVE = 0x20


# --- geometry ----------------------------------------------------------------------------


def default_cluster_bytes(volume_bytes: int) -> int:
    """Cluster size mkfs.exfat picks for an exFAT volume of ``volume_bytes``."""
    if volume_bytes <= 256 * MiB:
        return 4 * KiB
    if volume_bytes <= 32 * GiB:
        return 32 * KiB
    return 128 * KiB


@dataclass(frozen=True)
class ExfatGeometry:
    """Where the regions of an exFAT volume lie.  Offsets and lengths are in sectors,
    relative to the volume start, as the boot sector records them."""

    sector_bytes: int
    cluster_bytes: int
    volume_sectors: int
    fat_offset: int
    fat_length: int
    cluster_heap_offset: int
    cluster_count: int

    @property
    def sectors_per_cluster(self) -> int:
        return self.cluster_bytes // self.sector_bytes

    @property
    def heap_bytes_offset(self) -> int:
        return self.cluster_heap_offset * self.sector_bytes

    def cluster_offset(self, cluster: int) -> int:
        """Byte offset of ``cluster`` (2 = first cluster of the heap) in the volume."""
        return self.heap_bytes_offset + (cluster - _FIRST_CLUSTER) * self.cluster_bytes


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def exfat_geometry(
    volume_bytes: int, *, sector_bytes: int = 512, partition_offset_sectors: int = 0
) -> ExfatGeometry:
    """The layout :func:`build_exfat` uses for a volume (mkfs.exfat's rules)."""
    if sector_bytes not in (512, 1024, 2048, 4096):
        raise ValueError(f"exFAT sectors are 512 to 4096 bytes, not {sector_bytes}")
    if volume_bytes % sector_bytes:
        raise ValueError(f"volume size {volume_bytes} is not a whole number of sectors")
    if volume_bytes < MIN_VOLUME_BYTES:
        raise ValueError(f"an exFAT volume needs at least 1 MiB, not {volume_bytes} bytes")
    if partition_offset_sectors < 0 or partition_offset_sectors >= 2**64:
        raise ValueError(f"bad partition offset {partition_offset_sectors}")
    cluster = max(default_cluster_bytes(volume_bytes), sector_bytes)
    base = partition_offset_sectors * sector_bytes  # the volume's offset on the medium

    def aligned(offset: int) -> int:
        return _round_up(base + offset, BOUNDARY_BYTES) - base

    fat_offset = aligned(_BOOT_REGION_SECTORS * 2 * sector_bytes)
    fat_bytes = _round_up(volume_bytes // cluster * 4, cluster)
    heap = aligned(fat_offset + fat_bytes)
    if heap >= volume_bytes:
        raise ValueError(f"a volume of {volume_bytes} bytes leaves no room for a cluster heap")
    count = (volume_bytes - heap) // cluster
    if count > MAX_CLUSTER_COUNT:
        raise ValueError(f"a volume of {volume_bytes} bytes needs more than 2^32 - 11 clusters")
    return ExfatGeometry(
        sector_bytes=sector_bytes,
        cluster_bytes=cluster,
        volume_sectors=volume_bytes // sector_bytes,
        fat_offset=fat_offset // sector_bytes,
        fat_length=fat_bytes // sector_bytes,
        cluster_heap_offset=heap // sector_bytes,
        cluster_count=count,
    )


# --- the payload tree --------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    path: str
    file: FileEntry | None = None  # None for directories
    children: dict[str, _Node] = field(default_factory=dict)  # by up-cased name
    first_cluster: int = 0
    clusters: int = 0
    #: its place in the payload's priority (0 first; equal for all without one)
    rank: int = 0

    @property
    def is_dir(self) -> bool:
        return self.file is None

    def sorted_children(self) -> list[_Node]:
        """By the payload's priority, then up-cased name."""
        return [v for _, v in sorted(self.children.items(), key=lambda kv: (kv[1].rank, kv[0]))]


def _build_tree(tree: Tree) -> _Node:
    root = _Node("", "")
    rank = tree.rank

    def child(parent: _Node, name: str, path: str, file: FileEntry | None) -> _Node:
        check_name(name, path)
        key = upcase(name)
        existing = parent.children.get(key)
        if existing is None:
            node = _Node(name, path, file, rank=rank(path))
            parent.children[key] = node
            return node
        if file is None and existing.is_dir and existing.name == name:
            return existing
        raise NameNotAllowedError(
            path=path,
            detail=f"clashes with {existing.path!r} (exFAT names are case-insensitive, "
            "and a name is either a file or a directory)",
        )

    seen: dict[str, _Node] = {"": root}

    def directory(path: str) -> _Node:
        node = seen.get(path)
        if node is None:
            parent, _, name = path.rpartition("/")
            node = seen[path] = child(directory(parent), name, path, None)
        return node

    for path in tree.dirs:
        directory(path)
    for entry in tree.files:
        if entry.size < 0:
            raise ValueError(f"{entry.path}: negative size {entry.size}")
        parent, _, name = entry.path.rpartition("/")
        child(directory(parent), name, entry.path, entry)
    return root


def _walk(node: _Node) -> list[_Node]:
    """``node`` and everything below it, pre-order, children in up-cased name order."""
    out = [node]
    for kid in node.sorted_children():
        out.extend(_walk(kid) if kid.is_dir else [kid])
    return out


# --- the builder -------------------------------------------------------------------------


def _clusters_for(nbytes: int, cluster: int) -> int:
    return -(-nbytes // cluster)


def _size_nodes(root: _Node, dirs: list[_Node], files: list[_Node], cluster: int) -> None:
    """Sizes first: everything is contiguous, so sizes decide every cluster number."""
    for node in dirs:
        entries = sum(entry_set_units(kid.name) for kid in node.children.values())
        if node is root:
            entries += 3  # volume label, allocation bitmap, up-case table
        nbytes = entries * _ENTRY
        if nbytes > MAX_DIRECTORY_BYTES:
            raise NameNotAllowedError(
                path=node.path or "/",
                detail="too many entries for one exFAT directory (limit 256 MiB)",
            )
        node.clusters = max(1, _clusters_for(nbytes, cluster))
    for node in files:
        assert node.file is not None
        node.clusters = _clusters_for(node.file.size, cluster)


@dataclass(frozen=True)
class _Heap:
    bitmap_first: int
    bitmap_bytes: int
    table_first: int
    used: int


def _allocate(geo: ExfatGeometry, nodes: list[_Node], table_bytes: int) -> _Heap:
    """Bitmap, up-case table, then ``nodes`` in consecutive clusters from 2."""
    cluster = geo.cluster_bytes
    bitmap_bytes = -(-geo.cluster_count // 8)
    bitmap_first = _FIRST_CLUSTER
    table_first = bitmap_first + _clusters_for(bitmap_bytes, cluster)
    nxt = table_first + _clusters_for(table_bytes, cluster)
    for node in nodes:
        node.first_cluster = nxt if node.clusters else 0
        nxt += node.clusters
    used = nxt - _FIRST_CLUSTER
    if used > geo.cluster_count:
        raise PayloadTooLargeError(
            needed=geo.heap_bytes_offset + used * cluster,
            available=geo.heap_bytes_offset + geo.cluster_count * cluster,
        )
    return _Heap(bitmap_first, bitmap_bytes, table_first, used)


def _gap_extents(geo: ExfatGeometry) -> list[Extent]:
    """The zeros mkfs.exfat's quick format leaves before the FAT and before the heap."""
    size = geo.sector_bytes
    out = []
    start = 2 * _BOOT_REGION_SECTORS * size
    fat = geo.fat_offset * size
    if fat > start:
        out.append(Extent(start, fat - start, Zeros()))
    fat_end = (geo.fat_offset + geo.fat_length) * size
    if geo.heap_bytes_offset > fat_end:
        out.append(Extent(fat_end, geo.heap_bytes_offset - fat_end, Zeros()))
    return out


@dataclass(frozen=True)
class _Contents:
    """What the heap's metadata clusters hold besides the tree."""

    label: str
    times: CopyTimes
    utc_offset_minutes: int | None


def _heap_extents(
    geo: ExfatGeometry,
    root: _Node,
    dirs: list[_Node],
    files: list[_Node],
    heap: _Heap,
    contents: _Contents,
) -> list[Extent]:
    cluster = geo.cluster_bytes
    table = upcase_table()
    out: list[Extent] = []

    def put(first: int, nbytes: int, data: bytes) -> None:
        padded = data + bytes(_clusters_for(nbytes, cluster) * cluster - len(data))
        out.append(Extent(geo.cluster_offset(first), len(padded), Bytes(padded)))

    put(heap.bitmap_first, heap.bitmap_bytes, _bitmap(heap.bitmap_bytes, heap.used))
    put(heap.table_first, len(table), table)
    for node in dirs:
        head = b""
        if node is root:
            head = _root_entries(
                contents.label, heap.bitmap_first, heap.bitmap_bytes, heap.table_first, len(table)
            )
        body = b"".join(_childentry_set(kid, cluster, contents) for kid in node.sorted_children())
        put(node.first_cluster, node.clusters * cluster, head + body)
    for node in files:
        assert node.file is not None
        if node.file.size:
            out.append(
                Extent(geo.cluster_offset(node.first_cluster), node.file.size, FileData(node.file))
            )
    return out


def copy_items(tree: Tree) -> list[CopyItem]:
    """The entries of ``tree`` in the order a copy creates them on an exFAT volume
    (directories first, pre-order; then files in the same order)."""
    nodes = _walk(_build_tree(tree))
    dirs = [CopyItem(n.path, None) for n in nodes if n.is_dir and n.path]
    files = [CopyItem(n.path, n.file.size) for n in _copied_files(nodes) if n.file is not None]
    return dirs + files


def _copied_files(nodes: list[_Node]) -> list[_Node]:
    """The files in the order the copy writes them: by priority, then pre-order."""
    return sorted((n for n in nodes if not n.is_dir), key=lambda n: n.rank)


def build_exfat(
    volume_bytes: int,
    tree: Tree,
    *,
    volume_id: int,
    label: str = "",
    partition_offset_sectors: int = 0,
    sector_bytes: int = 512,
    times: CopyTimes | None = None,
    utc_offset_minutes: int | None = fp.UTC_OFFSET_MINUTES,
) -> VolumeLayout:
    """Lay out an exFAT volume of ``volume_bytes`` holding ``tree`` (see the module doc).

    ``volume_id`` is the VolumeSerialNumber (32 bits); ``label`` at most 11 UTF-16
    units ("" writes an empty Volume Label entry, meaning "no label"); ``times``
    every entry's times (``dates.copy_times``; by default spread from
    ``DEFAULT_BASE``), written with ``utc_offset_minutes`` (None: offset unknown).
    Raises :class:`PayloadTooLargeError` when the tree does not fit, with ``needed``
    and ``available`` in bytes of the volume (cluster heap offset plus clusters)."""
    if not 0 <= volume_id <= 0xFFFFFFFF:
        raise ValueError(f"volume_id {volume_id} is not a 32-bit number")
    check_label(label)
    geo = exfat_geometry(
        volume_bytes, sector_bytes=sector_bytes, partition_offset_sectors=partition_offset_sectors
    )
    root = _build_tree(tree)
    nodes = _walk(root)
    dirs = [node for node in nodes if node.is_dir]
    files = _copied_files(nodes)
    if times is None:
        times = copy_times(DEFAULT_BASE, copy_items(tree), b"")
    _size_nodes(root, dirs, files, geo.cluster_bytes)
    heap = _allocate(geo, dirs + files, len(upcase_table()))
    boot = _boot_region(geo, partition_offset_sectors, volume_id, root.first_cluster, heap.used)
    extents = [Extent(0, len(boot) * 2, Bytes(boot + boot)), *_gap_extents(geo)]
    extents += _fat_extents(
        geo,
        [
            (heap.bitmap_first, _clusters_for(heap.bitmap_bytes, geo.cluster_bytes)),
            (heap.table_first, _clusters_for(len(upcase_table()), geo.cluster_bytes)),
            (root.first_cluster, root.clusters),
        ],
    )
    contents = _Contents(label, times, utc_offset_minutes)
    extents += _heap_extents(geo, root, dirs, files, heap, contents)
    extents.sort(key=lambda e: e.offset)
    return VolumeLayout(
        fs_type="exfat",
        volume_bytes=volume_bytes,
        volume_id=volume_id,
        label=label,
        cluster_bytes=geo.cluster_bytes,
        extents=extents,
    )


def _childentry_set(node: _Node, cluster: int, contents: _Contents) -> bytes:
    if node.is_dir:
        attributes, length = _ATTR_DIRECTORY, node.clusters * cluster
    else:
        assert node.file is not None
        attributes, length = _ATTR_ARCHIVE, node.file.size
    return entry_set(
        node.name,
        attributes=attributes,
        first_cluster=node.first_cluster,
        length=length,
        stamp=stamps(contents.times.entries[node.path], contents.utc_offset_minutes),
    )


def _root_entries(
    label: str, bitmap_first: int, bitmap_bytes: int, table_first: int, table_bytes: int
) -> bytes:
    # An empty label still gets its entry (CharacterCount 0), as mkfs.exfat writes it:
    # exfatprogs' label tools fail on a volume that has none.
    encoded = utf16(label)
    out = struct.pack("<BB22s8x", 0x83, len(encoded) // 2, encoded)
    out += struct.pack("<BB18xIQ", 0x81, 0, bitmap_first, bitmap_bytes)
    out += struct.pack("<B3xI12xIQ", 0x82, upcase_table_checksum(), table_first, table_bytes)
    return out


def _bitmap(nbytes: int, used: int) -> bytes:
    full, rest = divmod(used, 8)
    tail = bytes([(1 << rest) - 1]) if rest else b""
    return b"\xff" * full + tail + bytes(nbytes - full - len(tail))


def _fat_extents(geo: ExfatGeometry, chains: list[tuple[int, int]]) -> list[Extent]:
    """The FAT: entries 0 and 1, the given contiguous chains, zeros for the rest."""
    last = max(first + count - 1 for first, count in chains)
    entries = [0] * (last + 1)
    entries[0], entries[1] = _FAT_MEDIA, _FAT_EOC
    for first, count in chains:
        for index in range(first, first + count - 1):
            entries[index] = index + 1
        entries[first + count - 1] = _FAT_EOC
    used = struct.pack(f"<{len(entries)}I", *entries)
    used += bytes(_round_up(len(used), geo.sector_bytes) - len(used))
    start = geo.fat_offset * geo.sector_bytes
    total = geo.fat_length * geo.sector_bytes
    out = [Extent(start, len(used), Bytes(used))]
    if total > len(used):
        out.append(Extent(start + len(used), total - len(used), Zeros()))
    return out


def _boot_region(
    geo: ExfatGeometry, partition_offset: int, volume_id: int, root_cluster: int, used: int
) -> bytes:
    """The 12 sectors of the main boot region (the backup region is the same bytes)."""
    size = geo.sector_bytes
    boot = bytearray(size)
    boot[0:3] = b"\xeb\x76\x90"
    boot[3:11] = b"EXFAT   "
    struct.pack_into(
        "<QQIIIIIIHHBBBBB",
        boot,
        64,
        partition_offset,
        geo.volume_sectors,
        geo.fat_offset,
        geo.fat_length,
        geo.cluster_heap_offset,
        geo.cluster_count,
        root_cluster,
        volume_id,
        0x0100,  # FileSystemRevision 1.00
        0,  # VolumeFlags: FAT 0 active, clean, no media failure
        size.bit_length() - 1,
        geo.sectors_per_cluster.bit_length() - 1,
        1,  # NumberOfFats
        0x80,  # DriveSelect
        used * 100 // geo.cluster_count,  # PercentInUse, rounded down
    )
    boot[510:512] = b"\x55\xaa"  # BootCode (120-509) stays zero, as mkfs.exfat writes it
    extended = bytes(size - 4) + b"\x00\x00\x55\xaa"
    oem = b"\xff" * size  # mkfs.exfat fills the OEM parameters sector with FF
    region = bytes(boot) + extended * 8 + oem + bytes(size)  # + reserved
    checksum = 0
    for index, byte in enumerate(region):
        if index in (106, 107, 112):  # VolumeFlags and PercentInUse are excluded
            continue
        checksum = (((checksum >> 1) | ((checksum & 1) << 31)) + byte) & 0xFFFFFFFF
    return region + struct.pack("<I", checksum) * (size // 4)


__all__ = [
    "ExfatGeometry",
    "build_exfat",
    "check_label",
    "default_cluster_bytes",
    "exfat_geometry",
    "name_hash",
]

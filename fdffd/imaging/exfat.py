"""exFAT in userspace: a payload tree in, a :class:`VolumeLayout` out.  Pure: no I/O.

Follows Microsoft's exFAT file system specification (revision 1.00).  What the volume
looks like, in order:

* **Boot regions** (sectors 0-11 and their backup, 12-23): boot sector, eight extended
  boot sectors, an empty OEM parameters sector, a reserved sector and the boot checksum
  sector.  BootCode is F4h (halt), as the spec asks of formatters without boot code.
* **FAT** at ``FatOffset``.  Only entries 0 and 1 (media F8h) and the chains of the
  allocation bitmap, the up-case table and the root directory are non-zero: those three
  have no Stream Extension entry to say "contiguous", so the FAT must describe them.
  Every payload file and subdirectory is one contiguous run flagged NoFatChain, whose
  FAT entries the spec declares invalid (left zero, like Windows does).
* **Cluster heap** at ``ClusterHeapOffset``: the allocation bitmap (cluster 2), the
  up-case table, the root directory, every other directory (pre-order), then file data
  in the same order.  Everything is packed from cluster 2 up with no holes, so the
  bitmap is a run of ones followed by zeros.

Geometry (see :func:`exfat_geometry`):

* Cluster size as Windows ``format`` chooses it (Microsoft KB 140365): up to 256 MiB,
  4 KiB; up to 32 GiB, 32 KiB; above, 128 KiB (doubled only if a volume past 512 TiB
  would need more than 2^32 - 11 clusters).  Never smaller than a sector.
* Alignment, in the spirit of the SD Association formatter: the FAT starts on a 1 MiB
  boundary and the cluster heap on a 4 MiB boundary, measured on the *medium* (volume
  start = ``partition_offset_sectors``), so every cluster is aligned to the flash
  erase blocks and pages under it.  Small volumes use smaller boundaries (the largest
  power of two that is at most 1/32 of the volume, and at least one cluster) so the
  alignment never eats more than a few percent of them.  The spare sectors before the
  FAT and between the FAT and the heap belong to no structure (free space).

Timestamps: every File entry gets ``timestamp`` as its create, modify and access time,
never the station clock.  A naive datetime (the default, :data:`FIXED_TIMESTAMP`)
is written with OffsetValid = 0, "time zone unknown": every reader shows the same wall
time, exactly like FAT32, which has no time zones.  An aware datetime is written with
its UTC offset when that is a multiple of 15 minutes, and as UTC otherwise (section
7.4.10.1).

Slack after a file's last byte, the bytes between the FAT and the heap and all free
clusters are left to the caller (keyed fill): nothing here relies on them being zero.
Directory clusters, the bitmap and the up-case table are written whole (zero-padded).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fdffd.errors import NameNotAllowedError, PayloadTooLargeError, UsageError
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
#: Longest label: 11 UTF-16 code units.
MAX_LABEL_UNITS = 11
MAX_NAME_UNITS = 255
#: A directory may not grow past 256 MiB (section 7.6.7).
MAX_DIRECTORY_BYTES = 256 * MiB

#: Heap alignment on the medium (SD Association style), and the FAT's.
HEAP_ALIGN_BYTES = 4 * MiB
FAT_ALIGN_BYTES = 1 * MiB

_BOOT_REGION_SECTORS = 12
_ENTRY = 32
_FIRST_CLUSTER = 2
_FAT_MEDIA = 0xFFFFFFF8
_FAT_EOC = 0xFFFFFFFF

_ATTR_DIRECTORY = 0x10
_ATTR_ARCHIVE = 0x20
_FLAG_ALLOCATION_POSSIBLE = 0x01
_FLAG_NO_FAT_CHAIN = 0x02

#: Characters no exFAT name or label may hold (spec Table 35).
_INVALID_CHARS = frozenset('"*/:<>?\\|') | frozenset(chr(c) for c in range(0x20))


# --- geometry ----------------------------------------------------------------------------


def default_cluster_bytes(volume_bytes: int) -> int:
    """Cluster size Windows picks for an exFAT volume of ``volume_bytes`` (KB 140365)."""
    if volume_bytes <= 256 * MiB:
        return 4 * KiB
    if volume_bytes <= 32 * GiB:
        return 32 * KiB
    cluster = 128 * KiB
    while volume_bytes // cluster > MAX_CLUSTER_COUNT and cluster < MAX_CLUSTER_BYTES:
        cluster *= 2
    return cluster


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


def _alignment(volume_bytes: int, cluster_bytes: int) -> int:
    align = HEAP_ALIGN_BYTES
    while align > cluster_bytes and align * 32 > volume_bytes:
        align //= 2
    return max(align, cluster_bytes)


def exfat_geometry(
    volume_bytes: int, *, sector_bytes: int = 512, partition_offset_sectors: int = 0
) -> ExfatGeometry:
    """The layout :func:`build_exfat` uses for a volume (cluster size, FAT, heap)."""
    if sector_bytes not in (512, 1024, 2048, 4096):
        raise ValueError(f"exFAT sectors are 512 to 4096 bytes, not {sector_bytes}")
    if volume_bytes % sector_bytes:
        raise ValueError(f"volume size {volume_bytes} is not a whole number of sectors")
    if volume_bytes < MIN_VOLUME_BYTES:
        raise ValueError(f"an exFAT volume needs at least 1 MiB, not {volume_bytes} bytes")
    if partition_offset_sectors < 0 or partition_offset_sectors >= 2**64:
        raise ValueError(f"bad partition offset {partition_offset_sectors}")
    cluster = max(default_cluster_bytes(volume_bytes), sector_bytes)
    align = _alignment(volume_bytes, cluster)
    base = partition_offset_sectors * sector_bytes  # the volume's offset on the medium

    def aligned(offset: int, unit: int) -> int:
        return _round_up(base + offset, unit) - base

    fat_offset = aligned(_BOOT_REGION_SECTORS * 2 * sector_bytes, min(align, FAT_ALIGN_BYTES))
    # The FAT is sized for the most clusters that could follow it; the heap then starts
    # at the next boundary, and the real count (never more) decides the final FatLength.
    most = min((volume_bytes - fat_offset) // cluster, MAX_CLUSTER_COUNT)
    fat_bytes = _round_up((most + 2) * 4, sector_bytes)
    heap = aligned(fat_offset + fat_bytes, align)
    count = min(max(volume_bytes - heap, 0) // cluster, MAX_CLUSTER_COUNT)
    return ExfatGeometry(
        sector_bytes=sector_bytes,
        cluster_bytes=cluster,
        volume_sectors=volume_bytes // sector_bytes,
        fat_offset=fat_offset // sector_bytes,
        fat_length=_round_up((count + 2) * 4, sector_bytes) // sector_bytes,
        cluster_heap_offset=heap // sector_bytes,
        cluster_count=count,
    )


# --- names, labels, timestamps -----------------------------------------------------------


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def check_label(label: str) -> str:
    """Return ``label`` if exFAT can hold it (at most 11 UTF-16 units, no characters that
    are invalid in file names); raise :class:`UsageError` saying why otherwise."""
    units = len(_utf16(label)) // 2
    if units > MAX_LABEL_UNITS:
        raise UsageError(
            f"volume label {label!r} is {units} UTF-16 units long; exFAT allows {MAX_LABEL_UNITS}"
        )
    bad = sorted(set(label) & _INVALID_CHARS)
    if bad:
        raise UsageError(f"volume label {label!r} contains characters exFAT forbids: {bad!r}")
    return label


def _check_name(name: str, path: str) -> None:
    if not name or name in (".", ".."):
        raise NameNotAllowedError(path=path, detail="empty, '.' or '..' path component")
    units = len(_utf16(name)) // 2
    if units > MAX_NAME_UNITS:
        raise NameNotAllowedError(
            path=path, detail=f"name is {units} UTF-16 units long; exFAT allows 255"
        )
    bad = sorted(set(name) & _INVALID_CHARS)
    if bad:
        raise NameNotAllowedError(path=path, detail=f"characters exFAT forbids: {bad!r}")


def _checksum16(data: bytes | bytearray, value: int = 0) -> int:
    """The exFAT 16-bit rotate-and-add checksum (NameHash, SetChecksum)."""
    for byte in data:
        value = (((value >> 1) | ((value & 1) << 15)) + byte) & 0xFFFF
    return value


def name_hash(name: str) -> int:
    """NameHash of a file name (section 7.6.4): over its up-cased UTF-16LE bytes."""
    return _checksum16(_utf16(upcase(name)))


def _set_checksum(entries: bytes | bytearray) -> int:
    """SetChecksum of a directory entry set: every byte but the field itself (2-3)."""
    return _checksum16(entries[4:], _checksum16(entries[:2]))


@dataclass(frozen=True)
class _Stamp:
    timestamp: int  # DOS-style date and time, 2-second resolution
    ten_ms: int  # 0..199: the odd second and the hundredths
    utc_offset: int  # the UtcOffset byte


def _stamp(when: datetime) -> _Stamp:
    offset = when.utcoffset()
    if offset is None:
        utc_byte = 0  # OffsetValid = 0: local time of an unknown zone
    else:
        quarters, rest = divmod(offset, timedelta(minutes=15))
        if rest or not -64 <= quarters <= 63:
            when = when.astimezone(UTC)
            quarters = 0
        utc_byte = 0x80 | (quarters & 0x7F)
    if not 1980 <= when.year <= 2107:
        raise ValueError(f"exFAT timestamps run from 1980 to 2107, not {when.isoformat()}")
    stamp = (
        (when.year - 1980) << 25
        | when.month << 21
        | when.day << 16
        | when.hour << 11
        | when.minute << 5
        | when.second // 2
    )
    return _Stamp(stamp, (when.second % 2) * 100 + when.microsecond // 10_000, utc_byte)


# --- directory entries -------------------------------------------------------------------


def _entry_set(
    name: str,
    *,
    attributes: int,
    first_cluster: int,
    length: int,
    stamp: _Stamp,
) -> bytes:
    encoded = _utf16(name)
    units = len(encoded) // 2
    chunks = [encoded[i : i + 30] for i in range(0, len(encoded), 30)]
    flags = _FLAG_ALLOCATION_POSSIBLE | (_FLAG_NO_FAT_CHAIN if first_cluster else 0)
    file_entry = struct.pack(
        "<BBHHHIIIBBBBB7x",
        0x85,
        1 + len(chunks),
        0,  # SetChecksum, filled in below
        attributes,
        0,
        stamp.timestamp,
        stamp.timestamp,
        stamp.timestamp,
        stamp.ten_ms,
        stamp.ten_ms,
        stamp.utc_offset,
        stamp.utc_offset,
        stamp.utc_offset,
    )
    stream = struct.pack(
        "<BBxBHxxQxxxxIQ", 0xC0, flags, units, name_hash(name), length, first_cluster, length
    )
    names = b"".join(struct.pack("<BB30s", 0xC1, 0, chunk) for chunk in chunks)
    entries = bytearray(file_entry + stream + names)
    struct.pack_into("<H", entries, 2, _set_checksum(entries))
    return bytes(entries)


def _entry_set_units(name: str) -> int:
    """Directory entries a File entry set for ``name`` takes."""
    units = len(_utf16(name)) // 2
    return 2 + -(-units // 15)


# --- the payload tree --------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    path: str
    file: FileEntry | None = None  # None for directories
    children: dict[str, _Node] = field(default_factory=dict)  # by up-cased name
    first_cluster: int = 0
    clusters: int = 0

    @property
    def is_dir(self) -> bool:
        return self.file is None

    def sorted_children(self) -> list[_Node]:
        return [self.children[key] for key in sorted(self.children)]


def _build_tree(tree: Tree) -> _Node:
    root = _Node("", "")

    def child(parent: _Node, name: str, path: str, file: FileEntry | None) -> _Node:
        _check_name(name, path)
        key = upcase(name)
        existing = parent.children.get(key)
        if existing is None:
            node = _Node(name, path, file)
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


def build_exfat(
    volume_bytes: int,
    tree: Tree,
    *,
    volume_id: int,
    label: str = "",
    partition_offset_sectors: int = 0,
    sector_bytes: int = 512,
    timestamp: datetime = FIXED_TIMESTAMP,
) -> VolumeLayout:
    """Lay out an exFAT volume of ``volume_bytes`` holding ``tree`` (see the module doc).

    ``volume_id`` is the VolumeSerialNumber (32 bits); ``label`` at most 11 UTF-16
    units ("" writes an empty Volume Label entry, meaning "no label").  Raises
    :class:`PayloadTooLargeError` when the tree does not fit, with ``needed`` and
    ``available`` in bytes of the volume (cluster heap offset plus clusters)."""
    if not 0 <= volume_id <= 0xFFFFFFFF:
        raise ValueError(f"volume_id {volume_id} is not a 32-bit number")
    check_label(label)
    geo = exfat_geometry(
        volume_bytes, sector_bytes=sector_bytes, partition_offset_sectors=partition_offset_sectors
    )
    cluster = geo.cluster_bytes
    stamp = _stamp(timestamp)
    root = _build_tree(tree)
    nodes = _walk(root)
    dirs = [node for node in nodes if node.is_dir]
    files = [node for node in nodes if not node.is_dir]

    def clusters_for(nbytes: int) -> int:
        return -(-nbytes // cluster)

    # Sizes first: everything is contiguous, so sizes decide every cluster number.
    bitmap_bytes = -(-geo.cluster_count // 8)
    table = upcase_table()
    for node in dirs:
        entries = sum(_entry_set_units(kid.name) for kid in node.children.values())
        if node is root:
            entries += 3  # volume label, allocation bitmap, up-case table
        nbytes = entries * _ENTRY
        if nbytes > MAX_DIRECTORY_BYTES:
            raise NameNotAllowedError(
                path=node.path or "/",
                detail="too many entries for one exFAT directory (limit 256 MiB)",
            )
        node.clusters = max(1, clusters_for(nbytes))
    for node in files:
        assert node.file is not None
        node.clusters = clusters_for(node.file.size)

    next_cluster = _FIRST_CLUSTER

    def allocate(count: int) -> int:
        nonlocal next_cluster
        if count == 0:
            return 0
        first = next_cluster
        next_cluster += count
        return first

    bitmap_first = allocate(clusters_for(bitmap_bytes))
    table_first = allocate(clusters_for(len(table)))
    for node in dirs + files:
        node.first_cluster = allocate(node.clusters)
    used = next_cluster - _FIRST_CLUSTER
    if used > geo.cluster_count:
        raise PayloadTooLargeError(
            needed=geo.heap_bytes_offset + used * cluster,
            available=geo.heap_bytes_offset + geo.cluster_count * cluster,
        )

    extents: list[Extent] = []
    boot = _boot_region(geo, partition_offset_sectors, volume_id, root.first_cluster, used)
    extents.append(Extent(0, len(boot) * 2, Bytes(boot + boot)))
    extents += _fat_extents(
        geo,
        [
            (bitmap_first, clusters_for(bitmap_bytes)),
            (table_first, clusters_for(len(table))),
            (root.first_cluster, root.clusters),
        ],
    )

    def put(first: int, count: int, data: bytes) -> None:
        padded = data + bytes(count * cluster - len(data))
        extents.append(Extent(geo.cluster_offset(first), len(padded), Bytes(padded)))

    put(bitmap_first, clusters_for(bitmap_bytes), _bitmap(bitmap_bytes, used))
    put(table_first, clusters_for(len(table)), table)
    for node in dirs:
        head = b""
        if node is root:
            head = _root_entries(label, bitmap_first, bitmap_bytes, table_first, len(table))
        body = b"".join(_child_entry_set(kid, cluster, stamp) for kid in node.sorted_children())
        put(node.first_cluster, node.clusters, head + body)
    for node in files:
        assert node.file is not None
        if node.file.size:
            extents.append(
                Extent(geo.cluster_offset(node.first_cluster), node.file.size, FileData(node.file))
            )
    return VolumeLayout(
        fs_type="exfat",
        volume_bytes=volume_bytes,
        volume_id=volume_id,
        label=label,
        cluster_bytes=cluster,
        extents=extents,
    )


def _child_entry_set(node: _Node, cluster: int, stamp: _Stamp) -> bytes:
    if node.is_dir:
        attributes, length = _ATTR_DIRECTORY, node.clusters * cluster
    else:
        assert node.file is not None
        attributes, length = _ATTR_ARCHIVE, node.file.size
    return _entry_set(
        node.name,
        attributes=attributes,
        first_cluster=node.first_cluster,
        length=length,
        stamp=stamp,
    )


def _root_entries(
    label: str, bitmap_first: int, bitmap_bytes: int, table_first: int, table_bytes: int
) -> bytes:
    # An empty label still gets its entry (CharacterCount 0), as mkfs.exfat writes it:
    # exfatprogs' label tools fail on a volume that has none.
    encoded = _utf16(label)
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
    boot[120:510] = b"\xf4" * 390
    boot[510:512] = b"\x55\xaa"
    extended = bytes(size - 4) + b"\x00\x00\x55\xaa"
    region = bytes(boot) + extended * 8 + bytes(size) * 2  # + OEM parameters, reserved
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

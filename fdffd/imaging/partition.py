"""Partition tables: one MBR or GPT partition for the volume, as bytes and extents.

Pure code: ``plan_partition`` turns the usable size of a drive and some random
bytes into a ``PartitionLayout``, and the readers (``parse_mbr``, ``parse_gpt``)
check what is on a disk.  Nothing here touches a device.

Choices (docs/imaging.md, "Footprint"): the table is the one Android's vold leaves
on a card or stick it formats as portable storage (``sgdisk --zap-all``, then
``sgdisk --new=0:0:-0 --typecode=0:0c00 --gpttombr=1``), reproduced field by field:

- **Start** at 1 MiB (sgdisk's 2048-sector alignment; 256 sectors of 4096 bytes).
- **End** where the GPT that sgdisk builds first would have its last usable LBA:
  the whole disk minus the backup GPT (33 sectors of 512 bytes, 5 of 4096) and one
  more sector; computed on the **usable** size, so a rescued counterfeit's partition
  ends inside its real capacity.
- **Type 0x07** (sgdisk maps the Basic Data GUID behind ``0c00`` back to 0x07), for
  FAT32 and exFAT alike; boot indicator 0x00.
- **Boot code and disk signature all zero** (``--zap-all`` cleared them and the
  conversion writes none); CHS fields in the 255-head, 63-sector geometry, ``FE FF
  FF`` past cylinder 1023.
- **Zeros** between the table and the partition (``--zap-all`` leaves them so).
- **GPT** (above 2 TiB, or forced, where an MBR cannot reach): protective MBR
  (type 0xEE from LBA 1, size ``min(last LBA, 0xFFFFFFFF)``, start CHS ``00 02
  00``, end CHS of the last LBA or ``FF FF FF`` as UEFI asks, disk signature
  zero), primary header at LBA 1, 128 entries of 128 bytes from LBA 2, backup
  entries and backup header at the end of the *usable* size; one Basic Data
  Partition from 1 MiB to the last whole MiB, attributes 0, empty name.  The GPT
  GUIDs come only from ``disk_id`` (32 random bytes from the caller): disk GUID
  ``disk_id[0:16]``, partition GUID ``disk_id[16:32]``, RFC 4122 version 4.
- **Scheme.** ``auto`` is MBR up to and including 2 TiB of usable size, GPT
  above.  ``mbr`` on a disk with more than 2**32 sectors is refused.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from fdffd.errors import PayloadTooLargeError, UsageError
from fdffd.imaging.types import Bytes, Extent, Zeros

MiB = 1 << 20
TiB = 1 << 40

#: How many random bytes ``plan_partition`` wants in ``disk_id``.
DISK_ID_BYTES = 32
#: Partition alignment (sgdisk's default: 2048 sectors of 512 bytes).
ALIGN_BYTES = 1 * MiB
#: A GPT partition's end is rounded down to this (or to the alignment, if smaller).
END_GRANULE_BYTES = 1 * MiB
#: ``auto`` picks MBR up to and including this usable size, GPT above.
MBR_LIMIT_BYTES = 2 * TiB

#: The filesystems a partition may hold, and the MBR type sgdisk writes for each.
MBR_TYPES = {"fat32": 0x07, "exfat": 0x07}
MBR_TYPE_PROTECTIVE = 0xEE
BASIC_DATA_GUID = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")

GPT_SIGNATURE = b"EFI PART"
GPT_REVISION = 0x00010000
GPT_HEADER_BYTES = 92
GPT_ENTRY_COUNT = 128
GPT_ENTRY_BYTES = 128
GPT_ENTRIES_BYTES = GPT_ENTRY_COUNT * GPT_ENTRY_BYTES

_MBR_ENTRY = struct.Struct("<B3sB3sII")
_MBR_TABLE_OFFSET = 446
_MBR_SIGNATURE_OFFSET = 440
_BOOT_SIGNATURE = b"\x55\xaa"
# GPT header up to (not including) the reserved tail of the sector.
_GPT_HEADER = struct.Struct("<8sIIII QQQQ 16s QIII")
_GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
_CHS_HEADS = 255
_CHS_SECTORS = 63
_CHS_MAX_CYLINDER = 1023
_CHS_OUT_OF_RANGE = b"\xfe\xff\xff"  # cylinder 1023, head 254, sector 63
_PMBR_START_CHS = b"\x00\x02\x00"  # head 0, sector 2, cylinder 0: LBA 1
_PMBR_END_CHS_OUT_OF_RANGE = b"\xff\xff\xff"  # as the UEFI specification asks
_SECTOR_SIZES = (512, 1024, 2048, 4096)
_SCHEMES = ("auto", "mbr", "gpt")


@dataclass(frozen=True)
class PartitionLayout:
    """Where the one partition lies and the extents that write the table.

    ``extents`` are sorted, non-overlapping, relative to the disk start, and hold
    only ``Bytes`` (tables) and ``Zeros`` (the gap before the partition).  The
    partition itself and everything not covered are the caller's."""

    scheme: str  # "mbr" | "gpt"
    sector_bytes: int
    align_bytes: int  # the alignment used (after the small-disk fallback)
    partition_offset: int
    partition_bytes: int
    mbr_type: int | None  # None for GPT
    disk_signature: str | None  # MBR: 8 hex digits, as blkid's PTUUID shows it
    disk_guid: str | None  # GPT: lowercase canonical GUID
    partition_guid: str | None  # GPT: lowercase canonical GUID
    extents: list[Extent]

    @property
    def partition_end(self) -> int:
        return self.partition_offset + self.partition_bytes

    @property
    def first_lba(self) -> int:
        return self.partition_offset // self.sector_bytes

    @property
    def sectors(self) -> int:
        return self.partition_bytes // self.sector_bytes


def plan_partition(
    disk_bytes: int,
    *,
    fs_type: str,
    disk_id: bytes,
    sector_bytes: int = 512,
    align_bytes: int | None = None,
    scheme: str = "auto",
) -> PartitionLayout:
    """Lay out one partition for ``fs_type`` on a disk of ``disk_bytes`` usable bytes.

    ``align_bytes`` None picks 1 MiB; an explicit value must be
    a power of two and a multiple of ``sector_bytes``.  Raises ``UsageError`` for bad
    arguments or an MBR that cannot address the disk, ``PayloadTooLargeError`` when
    the disk cannot hold one aligned partition."""
    if fs_type not in MBR_TYPES:
        raise UsageError(f"unknown filesystem type {fs_type!r} (expected fat32 or exfat)")
    if scheme not in _SCHEMES:
        raise UsageError(f"unknown partition scheme {scheme!r} (expected auto, mbr or gpt)")
    if sector_bytes not in _SECTOR_SIZES:
        raise UsageError(f"unsupported sector size {sector_bytes} (expected 512 to 4096)")
    if len(disk_id) != DISK_ID_BYTES:
        raise UsageError(f"disk_id must be {DISK_ID_BYTES} random bytes, got {len(disk_id)}")
    if not any(disk_id):
        raise UsageError("disk_id is all zero: it must be random bytes")
    if disk_bytes < 0:
        raise UsageError(f"negative disk size {disk_bytes}")
    align = ALIGN_BYTES if align_bytes is None else align_bytes
    if align < sector_bytes or align & (align - 1):
        raise UsageError(
            f"alignment {align} must be a power of two of at least the sector size {sector_bytes}"
        )

    total_sectors = disk_bytes // sector_bytes
    if scheme == "auto":
        scheme = "mbr" if disk_bytes <= MBR_LIMIT_BYTES else "gpt"
    if scheme == "mbr" and total_sectors > 1 << 32:
        raise UsageError(
            f"an MBR cannot address a disk of {total_sectors} sectors of {sector_bytes} bytes "
            f"(limit {1 << 32}); use GPT"
        )

    granule = min(align, END_GRANULE_BYTES)
    entry_sectors = GPT_ENTRIES_BYTES // sector_bytes
    backup_bytes = (1 + entry_sectors) * sector_bytes
    table_end = sector_bytes if scheme == "mbr" else (2 + entry_sectors) * sector_bytes
    start = _round_up(table_end, align)
    # Usable space for the partition: the whole disk, minus the GPT backup at its end
    # (sgdisk lays out a GPT before converting it to the MBR, and keeps its bounds).
    limit = total_sectors * sector_bytes - backup_bytes
    # MBR: one past the GPT's last usable LBA; GPT: the last whole MiB.
    end = limit if scheme == "mbr" else limit // granule * granule
    if end - start < granule:
        needed = start + granule + backup_bytes
        raise PayloadTooLargeError(needed=needed, available=disk_bytes)

    if scheme == "mbr":
        signature = 0  # sgdisk --zap-all, then --gpttombr: no disk signature
        mbr = _mbr_sector(
            sector_bytes,
            signature,
            [_mbr_entry(MBR_TYPES[fs_type], start // sector_bytes, (end - start) // sector_bytes)],
        )
        extents = [Extent(0, sector_bytes, Bytes(mbr))]
        if start > sector_bytes:
            extents.append(Extent(sector_bytes, start - sector_bytes, Zeros()))
        return PartitionLayout(
            scheme="mbr",
            sector_bytes=sector_bytes,
            align_bytes=align,
            partition_offset=start,
            partition_bytes=end - start,
            mbr_type=MBR_TYPES[fs_type],
            disk_signature=f"{signature:08x}",
            disk_guid=None,
            partition_guid=None,
            extents=extents,
        )

    disk_guid = uuid.UUID(bytes=disk_id[:16], version=4)
    part_guid = uuid.UUID(bytes=disk_id[16:32], version=4)
    primary, backup = _gpt_structures(
        total_sectors=total_sectors,
        sector_bytes=sector_bytes,
        disk_guid=disk_guid,
        part_guid=part_guid,
        first_lba=start // sector_bytes,
        last_lba=end // sector_bytes - 1,
    )
    extents = [Extent(0, len(primary), Bytes(primary))]
    if start > len(primary):
        extents.append(Extent(len(primary), start - len(primary), Zeros()))
    backup_offset = (total_sectors - 1 - entry_sectors) * sector_bytes
    extents.append(Extent(backup_offset, len(backup), Bytes(backup)))
    return PartitionLayout(
        scheme="gpt",
        sector_bytes=sector_bytes,
        align_bytes=align,
        partition_offset=start,
        partition_bytes=end - start,
        mbr_type=None,
        disk_signature=None,
        disk_guid=str(disk_guid),
        partition_guid=str(part_guid),
        extents=extents,
    )


# --- MBR ---------------------------------------------------------------------------------


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def chs(lba: int) -> bytes:
    """The 3-byte CHS address of ``lba`` in the 255-head, 63-sector geometry, or
    ``FE FF FF`` when it lies past cylinder 1023."""
    cylinder, rest = divmod(lba, _CHS_HEADS * _CHS_SECTORS)
    if cylinder > _CHS_MAX_CYLINDER:
        return _CHS_OUT_OF_RANGE
    head, sector = divmod(rest, _CHS_SECTORS)
    sector += 1
    return bytes((head, sector | (cylinder >> 8) << 6, cylinder & 0xFF))


def _mbr_entry(type_: int, first_lba: int, sectors: int) -> bytes:
    return _MBR_ENTRY.pack(
        0x00, chs(first_lba), type_, chs(first_lba + sectors - 1), first_lba, sectors
    )


def _mbr_sector(sector_bytes: int, signature: int, entries: list[bytes]) -> bytes:
    out = bytearray(sector_bytes)
    struct.pack_into("<I", out, _MBR_SIGNATURE_OFFSET, signature)
    for i, entry in enumerate(entries):
        out[_MBR_TABLE_OFFSET + 16 * i : _MBR_TABLE_OFFSET + 16 * (i + 1)] = entry
    out[510:512] = _BOOT_SIGNATURE
    return bytes(out)


@dataclass(frozen=True)
class MbrEntry:
    """One used entry of an MBR partition table."""

    index: int  # 0..3
    boot: int
    start_chs: bytes
    type: int
    end_chs: bytes
    first_lba: int
    sectors: int


@dataclass(frozen=True)
class Mbr:
    """What ``parse_mbr`` reads: the disk signature and the used entries."""

    disk_signature: int
    entries: tuple[MbrEntry, ...]


def parse_mbr(sector: bytes) -> Mbr:
    """Read the MBR in the first 512 bytes of ``sector``; ``ValueError`` if there is none."""
    if len(sector) < 512 or sector[510:512] != _BOOT_SIGNATURE:
        raise ValueError("no MBR: boot signature 55 AA missing")
    entries = []
    for i in range(4):
        boot, start_chs, type_, end_chs, first, count = _MBR_ENTRY.unpack_from(
            sector, _MBR_TABLE_OFFSET + 16 * i
        )
        if type_ == 0:
            continue
        if boot not in (0x00, 0x80):
            raise ValueError(f"MBR entry {i}: bad boot indicator {boot:#04x}")
        entries.append(MbrEntry(i, boot, start_chs, type_, end_chs, first, count))
    (signature,) = struct.unpack_from("<I", sector, _MBR_SIGNATURE_OFFSET)
    return Mbr(signature, tuple(entries))


# --- GPT ---------------------------------------------------------------------------------


def _gpt_structures(
    *,
    total_sectors: int,
    sector_bytes: int,
    disk_guid: uuid.UUID,
    part_guid: uuid.UUID,
    first_lba: int,
    last_lba: int,
) -> tuple[bytes, bytes]:
    """(protective MBR + primary header + primary entries, backup entries + backup header)."""
    entry_sectors = GPT_ENTRIES_BYTES // sector_bytes
    last_disk_lba = total_sectors - 1
    entries = bytearray(GPT_ENTRIES_BYTES)
    _GPT_ENTRY.pack_into(
        entries,
        0,
        BASIC_DATA_GUID.bytes_le,
        part_guid.bytes_le,
        first_lba,
        last_lba,
        0,  # attributes
        bytes(72),  # name: empty
    )
    entries_crc = zlib.crc32(entries)
    first_usable = 2 + entry_sectors
    last_usable = last_disk_lba - 1 - entry_sectors

    def header(my_lba: int, alternate_lba: int, entries_lba: int) -> bytes:
        fields = [
            GPT_SIGNATURE,
            GPT_REVISION,
            GPT_HEADER_BYTES,
            0,  # header CRC32, computed with this field zero
            0,
            my_lba,
            alternate_lba,
            first_usable,
            last_usable,
            disk_guid.bytes_le,
            entries_lba,
            GPT_ENTRY_COUNT,
            GPT_ENTRY_BYTES,
            entries_crc,
        ]
        raw = _GPT_HEADER.pack(*fields)
        fields[3] = zlib.crc32(raw)
        return _GPT_HEADER.pack(*fields).ljust(sector_bytes, b"\0")

    pmbr_sectors = min(last_disk_lba, 0xFFFFFFFF)
    end_chs = chs(last_disk_lba)
    if end_chs == _CHS_OUT_OF_RANGE:
        end_chs = _PMBR_END_CHS_OUT_OF_RANGE
    pmbr_entry = _MBR_ENTRY.pack(
        0x00, _PMBR_START_CHS, MBR_TYPE_PROTECTIVE, end_chs, 1, pmbr_sectors
    )
    pmbr = _mbr_sector(sector_bytes, 0, [pmbr_entry])
    primary = pmbr + header(1, last_disk_lba, 2) + bytes(entries)
    backup_entries_lba = last_disk_lba - entry_sectors
    backup = bytes(entries) + header(last_disk_lba, 1, backup_entries_lba)
    return primary, backup


@dataclass(frozen=True)
class GptEntry:
    """One used GPT partition entry."""

    index: int
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int  # inclusive
    attributes: int
    name: str


@dataclass(frozen=True)
class GptHeader:
    """A GPT header whose signature, size and CRC32s have been checked."""

    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: uuid.UUID
    entries_lba: int
    entry_count: int
    entry_bytes: int
    entries_crc32: int
    header_crc32: int
    entries: tuple[GptEntry, ...]


@dataclass(frozen=True)
class Gpt:
    """Both GPT headers, checked against each other and the disk size."""

    protective_mbr: Mbr
    primary: GptHeader
    backup: GptHeader


def parse_gpt_header(sector: bytes, read_entries: Callable[[int, int], bytes]) -> GptHeader:
    """Check one GPT header and its entry array; ``read_entries(lba, nbytes)`` reads it.

    Raises ``ValueError`` on a bad signature, revision, size or CRC32."""
    if len(sector) < GPT_HEADER_BYTES:
        raise ValueError("GPT header: short sector")
    fields = list(_GPT_HEADER.unpack_from(sector))
    (sig, rev, size, crc, _r, my_lba, alt, first, last, guid, ent_lba, count, esize, ecrc) = fields
    if sig != GPT_SIGNATURE:
        raise ValueError("GPT header: signature 'EFI PART' missing")
    if rev != GPT_REVISION or size != GPT_HEADER_BYTES:
        raise ValueError(f"GPT header: unexpected revision {rev:#x} or size {size}")
    fields[3] = 0
    if zlib.crc32(_GPT_HEADER.pack(*fields)) != crc:
        raise ValueError(f"GPT header at LBA {my_lba}: header CRC32 mismatch")
    if esize < GPT_ENTRY_BYTES or esize % 8 or count * esize > 1 << 24:
        raise ValueError(f"GPT header: unreasonable entry array {count} x {esize}")
    array = read_entries(ent_lba, count * esize)
    if zlib.crc32(array) != ecrc:
        raise ValueError(f"GPT header at LBA {my_lba}: entry array CRC32 mismatch")
    entries = []
    for i in range(count):
        type_b, uniq_b, e_first, e_last, attrs, name = _GPT_ENTRY.unpack_from(array, i * esize)
        if not any(type_b):
            continue
        entries.append(
            GptEntry(
                i,
                uuid.UUID(bytes_le=type_b),
                uuid.UUID(bytes_le=uniq_b),
                e_first,
                e_last,
                attrs,
                name.decode("utf-16-le").split("\0", 1)[0],
            )
        )
    return GptHeader(
        my_lba,
        alt,
        first,
        last,
        uuid.UUID(bytes_le=guid),
        ent_lba,
        count,
        esize,
        ecrc,
        crc,
        tuple(entries),
    )


def parse_gpt(read: Callable[[int, int], bytes], disk_bytes: int, sector_bytes: int = 512) -> Gpt:
    """Read and cross-check a whole GPT on a disk of ``disk_bytes``; ``read(offset, n)``
    returns ``n`` bytes at byte ``offset``.  Raises ``ValueError`` on any inconsistency."""
    last_lba = disk_bytes // sector_bytes - 1
    pmbr = parse_mbr(read(0, 512))
    if [e.type for e in pmbr.entries] != [MBR_TYPE_PROTECTIVE]:
        raise ValueError("GPT: protective MBR must hold exactly one 0xEE entry")

    def entries_at(lba: int, n: int) -> bytes:
        return read(lba * sector_bytes, n)

    primary = parse_gpt_header(read(sector_bytes, sector_bytes), entries_at)
    if primary.my_lba != 1 or primary.alternate_lba != last_lba:
        raise ValueError(
            f"GPT: primary header says LBAs {primary.my_lba}/{primary.alternate_lba}, "
            f"expected 1/{last_lba}"
        )
    backup = parse_gpt_header(read(last_lba * sector_bytes, sector_bytes), entries_at)
    if backup.my_lba != last_lba or backup.alternate_lba != 1:
        raise ValueError("GPT: backup header is not at the last LBA or does not point back")
    same = (
        "first_usable_lba",
        "last_usable_lba",
        "disk_guid",
        "entry_count",
        "entry_bytes",
        "entries_crc32",
        "entries",
    )
    for name in same:
        if getattr(primary, name) != getattr(backup, name):
            raise ValueError(f"GPT: primary and backup headers differ in {name}")
    return Gpt(pmbr, primary, backup)

"""Partition tables: layouts checked by sfdisk, sgdisk and fdffd's own readers."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fdffd.errors import PayloadTooLargeError, UsageError
from fdffd.imaging.partition import (
    BASIC_DATA_GUID,
    DISK_ID_BYTES,
    MBR_LIMIT_BYTES,
    MiB,
    PartitionLayout,
    TiB,
    chs,
    parse_gpt,
    parse_mbr,
    plan_partition,
)
from fdffd.imaging.types import Bytes, Zeros

SFDISK = shutil.which("sfdisk") or "/usr/sbin/sfdisk"
SGDISK = shutil.which("sgdisk") or "/usr/sbin/sgdisk"
needs_sfdisk = pytest.mark.skipif(not os.path.exists(SFDISK), reason="sfdisk not installed")
needs_sgdisk = pytest.mark.skipif(not os.path.exists(SGDISK), reason="sgdisk not installed")

ID_A = bytes(range(1, DISK_ID_BYTES + 1))
ID_B = bytes(range(101, 101 + DISK_ID_BYTES))
Reader = Callable[[int, int], bytes]
GAP_FILL_CAP = 4 * MiB  # random bytes at each end of a gap; sparse holes in between


def _noise(offset: int, length: int) -> bytes:
    """Deterministic stand-in for keyed fill at ``offset``."""
    return random.Random(offset).randbytes(length)


def reader(layout: PartitionLayout) -> Reader:
    """``read(offset, n)`` over a disk holding ``layout``'s extents and noise elsewhere."""

    def read(offset: int, n: int) -> bytes:
        out = bytearray(_noise(offset, n))
        for ext in layout.extents:
            lo, hi = max(offset, ext.offset), min(offset + n, ext.end)
            if lo >= hi:
                continue
            if isinstance(ext.source, Bytes):
                chunk = ext.source.data[lo - ext.offset : hi - ext.offset]
            else:
                chunk = bytes(hi - lo)
            out[lo - offset : hi - offset] = chunk
        return bytes(out)

    return read


def render(layout: PartitionLayout, image: Path, file_bytes: int) -> None:
    """Write the extents into a sparse image of ``file_bytes``, random bytes in the gaps."""
    fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, file_bytes)
        edges = [0]
        for ext in layout.extents:
            edges += [ext.offset, ext.end]
        edges.append(file_bytes)
        for lo, hi in zip(edges[::2], edges[1::2], strict=True):
            if hi - lo <= 2 * GAP_FILL_CAP:
                os.pwrite(fd, _noise(lo, hi - lo), lo)
            else:
                os.pwrite(fd, _noise(lo, GAP_FILL_CAP), lo)
                os.pwrite(fd, _noise(hi - GAP_FILL_CAP, GAP_FILL_CAP), hi - GAP_FILL_CAP)
        for ext in layout.extents:
            data = ext.source.data if isinstance(ext.source, Bytes) else bytes(ext.length)
            os.pwrite(fd, data, ext.offset)
    finally:
        os.close(fd)


def sfdisk_json(image: Path) -> dict[str, Any]:
    out = subprocess.run(
        [SFDISK, "--json", str(image)], check=True, capture_output=True, text=True
    ).stdout
    table: dict[str, Any] = json.loads(out)["partitiontable"]
    return table


def check_invariants(layout: PartitionLayout, disk_bytes: int) -> None:
    """Alignment, bounds, extent order: what must hold for every layout."""
    sec = layout.sector_bytes
    assert layout.partition_offset % layout.align_bytes == 0
    assert layout.partition_offset % sec == 0 and layout.partition_bytes % sec == 0
    assert layout.partition_bytes >= MiB or layout.partition_bytes >= layout.align_bytes
    assert layout.partition_end <= disk_bytes
    pos = 0
    for ext in layout.extents:
        assert ext.offset >= pos and ext.length > 0
        assert isinstance(ext.source, Bytes | Zeros)
        if isinstance(ext.source, Bytes):
            assert len(ext.source.data) == ext.length
        pos = ext.end
    assert pos <= disk_bytes
    # the table and zeros cover everything before the partition, nothing inside it
    assert layout.extents[0].offset == 0
    before = [e for e in layout.extents if e.offset < layout.partition_offset]
    assert sum(e.length for e in before) == layout.partition_offset
    assert all(
        e.end <= layout.partition_offset or e.offset >= layout.partition_end for e in layout.extents
    )


def check_with_own_readers(layout: PartitionLayout, disk_bytes: int, fs_type: str) -> None:
    """Parse the layout back with parse_mbr / parse_gpt and compare."""
    read = reader(layout)
    sec = layout.sector_bytes
    if layout.scheme == "mbr":
        mbr = parse_mbr(read(0, 512))
        assert f"{mbr.disk_signature:08x}" == layout.disk_signature == "00000000"
        [entry] = mbr.entries
        assert entry.index == 0 and entry.boot == 0
        assert entry.type == 0x07  # sgdisk's type for FAT32 and exFAT alike
        assert entry.first_lba * sec == layout.partition_offset
        assert entry.sectors * sec == layout.partition_bytes
        assert entry.start_chs == chs(entry.first_lba)
        assert entry.end_chs == chs(entry.first_lba + entry.sectors - 1)
        assert entry.first_lba + entry.sectors <= 1 << 32
        return
    gpt = parse_gpt(read, disk_bytes, sec)
    last_lba = disk_bytes // sec - 1
    [pm] = gpt.protective_mbr.entries
    assert gpt.protective_mbr.disk_signature == 0
    assert (pm.type, pm.boot, pm.first_lba, pm.start_chs) == (0xEE, 0, 1, b"\x00\x02\x00")
    assert pm.sectors == min(last_lba, 0xFFFFFFFF)
    for header in (gpt.primary, gpt.backup):
        assert str(header.disk_guid) == layout.disk_guid
        assert (header.entry_count, header.entry_bytes) == (128, 128)
        [e] = header.entries
        assert e.index == 0 and e.type_guid == BASIC_DATA_GUID
        assert str(e.unique_guid) == layout.partition_guid
        assert e.first_lba * sec == layout.partition_offset
        assert (e.last_lba + 1) * sec == layout.partition_end
        assert e.attributes == 0 and e.name == ""
        assert header.first_usable_lba <= e.first_lba <= e.last_lba <= header.last_usable_lba
    assert gpt.backup.my_lba == last_lba
    assert gpt.backup.entries_lba + 16384 // sec == last_lba
    assert gpt.primary.entries_lba == 2


# --- oracles on real image files ----------------------------------------------------------


@needs_sfdisk
@pytest.mark.parametrize(
    ("disk_bytes", "fs_type", "scheme", "start", "kind"),
    [
        (64 * MiB, "fat32", "auto", 1 * MiB, "dos"),
        (300 * MiB + 12345, "exfat", "auto", 1 * MiB, "dos"),
        (255 * MiB, "fat32", "mbr", 1 * MiB, "dos"),
        (300 * MiB, "exfat", "gpt", 1 * MiB, "gpt"),
        (100 * MiB + 7 * 512, "fat32", "gpt", 1 * MiB, "gpt"),
    ],
)
def test_sfdisk_reads_one_partition(
    tmp_path: Path, disk_bytes: int, fs_type: str, scheme: str, start: int, kind: str
) -> None:
    """sfdisk sees exactly one partition with the planned start, size, type and disk id."""
    layout = plan_partition(disk_bytes, fs_type=fs_type, disk_id=ID_A, scheme=scheme)
    assert layout.partition_offset == start
    image = tmp_path / "disk.img"
    render(layout, image, disk_bytes)
    table = sfdisk_json(image)
    assert table["label"] == kind
    [part] = table["partitions"]
    assert part["start"] * 512 == layout.partition_offset
    assert part["size"] * 512 == layout.partition_bytes
    if kind == "dos":
        assert part["type"] == "7"
        assert table["id"] == "0x00000000"
    else:
        assert part["type"] == str(BASIC_DATA_GUID).upper()
        assert part["uuid"].lower() == layout.partition_guid
        assert table["id"].lower() == layout.disk_guid
        assert table["lastlba"] < disk_bytes // 512 - 33
    check_with_own_readers(layout, disk_bytes, fs_type)


@needs_sfdisk
@needs_sgdisk
def test_gpt_above_2tib_passes_sgdisk_verify(tmp_path: Path) -> None:
    """A 3 TiB sparse image gets GPT automatically, and sgdisk -v finds no problem."""
    disk_bytes = 3 * TiB + 5 * 512
    layout = plan_partition(disk_bytes, fs_type="exfat", disk_id=ID_B)
    assert layout.scheme == "gpt" and layout.mbr_type is None and layout.disk_signature is None
    image = tmp_path / "big.img"
    render(layout, image, disk_bytes)
    out = subprocess.run([SGDISK, "-v", str(image)], check=True, capture_output=True, text=True)
    assert "No problems found" in out.stdout, out.stdout
    [part] = sfdisk_json(image)["partitions"]
    assert part["start"] * 512 == 1 * MiB
    assert part["type"] == str(BASIC_DATA_GUID).upper()
    check_with_own_readers(layout, disk_bytes, "exfat")


@needs_sgdisk
def test_small_forced_gpt_passes_sgdisk_verify(tmp_path: Path) -> None:
    """A forced GPT on a 64 MiB image passes sgdisk -v."""
    layout = plan_partition(64 * MiB, fs_type="fat32", disk_id=ID_A, scheme="gpt")
    image = tmp_path / "small.img"
    render(layout, image, 64 * MiB)
    out = subprocess.run([SGDISK, "-v", str(image)], check=True, capture_output=True, text=True)
    assert "No problems found" in out.stdout, out.stdout


@needs_sfdisk
def test_rescued_drive_partition_ends_inside_usable_size(tmp_path: Path) -> None:
    """On a fake drive announcing more than it holds, the partition ends inside the real size."""
    usable, announced = 700 * MiB + 3 * 512, 4096 * MiB
    layout = plan_partition(usable, fs_type="fat32", disk_id=ID_A)
    image = tmp_path / "fake.img"
    render(layout, image, announced)
    [part] = sfdisk_json(image)["partitions"]
    assert (part["start"] + part["size"]) * 512 == layout.partition_end
    assert layout.partition_end == 700 * MiB + 3 * 512 - 33 * 512  # before a GPT backup


def test_4k_sector_layouts_parse_back() -> None:
    """4096-byte sectors: LBAs count 4 KiB sectors and the GPT entry array spans 4 of them."""
    for scheme in ("mbr", "gpt"):
        layout = plan_partition(
            300 * MiB, fs_type="exfat", disk_id=ID_A, sector_bytes=4096, scheme=scheme
        )
        assert layout.first_lba == 256
        check_invariants(layout, 300 * MiB)
        check_with_own_readers(layout, 300 * MiB, "exfat")


# --- pure layout properties ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    disk_bytes=st.integers(min_value=64 * MiB, max_value=16 * TiB),
    sector_bytes=st.sampled_from([512, 4096]),
    fs_type=st.sampled_from(["fat32", "exfat"]),
    disk_id=st.binary(min_size=DISK_ID_BYTES, max_size=DISK_ID_BYTES).filter(any),
)
@example(disk_bytes=MBR_LIMIT_BYTES, sector_bytes=512, fs_type="exfat", disk_id=ID_A)
@example(disk_bytes=MBR_LIMIT_BYTES + 512, sector_bytes=512, fs_type="exfat", disk_id=ID_A)
def test_layout_properties(
    disk_bytes: int, sector_bytes: int, fs_type: str, disk_id: bytes
) -> None:
    """Any size from 64 MiB to 16 TiB: aligned start, end inside the disk, MBR iff <= 2 TiB."""
    layout = plan_partition(disk_bytes, fs_type=fs_type, disk_id=disk_id, sector_bytes=sector_bytes)
    assert layout.scheme == ("mbr" if disk_bytes <= 2 * TiB else "gpt")
    assert layout.align_bytes == MiB == layout.partition_offset
    whole = disk_bytes // sector_bytes * sector_bytes
    tail = 16384 + sector_bytes  # the backup GPT (MBR: the one sgdisk planned first)
    if layout.scheme == "mbr":
        assert layout.partition_end == whole - tail
    else:
        assert layout.partition_end % MiB == 0
        assert whole - tail - layout.partition_end < MiB
    check_invariants(layout, disk_bytes)
    check_with_own_readers(layout, disk_bytes, fs_type)


def test_mbr_reaches_exactly_2tib() -> None:
    """At exactly 2 TiB the MBR partition's last sector is LBA 2**32 - 1; one sector more is GPT."""
    layout = plan_partition(2 * TiB, fs_type="exfat", disk_id=ID_A)
    assert layout.scheme == "mbr" and layout.partition_end == 2 * TiB - 33 * 512
    [entry] = parse_mbr(reader(layout)(0, 512)).entries
    assert entry.first_lba + entry.sectors == (1 << 32) - 33
    assert entry.end_chs == b"\xfe\xff\xff"
    assert plan_partition(2 * TiB + 512, fs_type="exfat", disk_id=ID_A).scheme == "gpt"


def test_forced_mbr_beyond_2tib_is_refused() -> None:
    """Forcing MBR on a disk it cannot address raises a clear UsageError."""
    with pytest.raises(UsageError, match="MBR cannot address"):
        plan_partition(2 * TiB + MiB, fs_type="exfat", disk_id=ID_A, scheme="mbr")


def test_chs_conventions() -> None:
    """CHS uses 255 heads x 63 sectors and FE FF FF past cylinder 1023."""
    assert chs(0) == b"\x00\x01\x00"
    assert chs(8192) == b"\x82\x03\x00"  # cylinder 0, head 130, sector 3
    assert chs(1024 * 255 * 63 - 1) == b"\xfe\xff\xff"
    assert chs(1024 * 255 * 63) == b"\xfe\xff\xff"


def test_gap_before_partition_is_zeros() -> None:
    """Everything between the table and the partition start is a Zeros extent."""
    mbr = plan_partition(1000 * MiB, fs_type="fat32", disk_id=ID_A)
    assert [type(e.source) for e in mbr.extents] == [Bytes, Zeros]
    assert mbr.extents[1].offset == 512 and mbr.extents[1].end == 1 * MiB
    gpt = plan_partition(1000 * MiB, fs_type="fat32", disk_id=ID_A, scheme="gpt")
    assert [type(e.source) for e in gpt.extents] == [Bytes, Zeros, Bytes]
    assert gpt.extents[0].length == 34 * 512 and gpt.extents[1].end == 1 * MiB
    assert gpt.extents[2].end == 1000 * MiB


def test_explicit_alignment_is_honoured() -> None:
    """An explicit align_bytes overrides sgdisk's 1 MiB."""
    layout = plan_partition(100 * MiB, fs_type="fat32", disk_id=ID_A, align_bytes=4 * MiB)
    assert layout.partition_offset == 4 * MiB
    layout = plan_partition(8 * TiB, fs_type="exfat", disk_id=ID_A, align_bytes=16 * MiB)
    assert layout.partition_offset == 16 * MiB


# --- identifiers --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_identifiers_follow_disk_id(scheme: str) -> None:
    """Different disk_id, different ids and bytes; the same inputs give identical bytes."""
    a1 = plan_partition(500 * MiB, fs_type="fat32", disk_id=ID_A, scheme=scheme)
    a2 = plan_partition(500 * MiB, fs_type="fat32", disk_id=bytes(ID_A), scheme=scheme)
    b = plan_partition(500 * MiB, fs_type="fat32", disk_id=ID_B, scheme=scheme)
    assert a1 == a2
    if scheme == "mbr":  # Android's table carries no identifier
        assert a1.extents == b.extents and a1.disk_signature == "00000000"
        return
    assert a1.extents != b.extents
    for name in ("disk_guid", "partition_guid"):
        assert getattr(a1, name) != getattr(b, name)


def test_gpt_guids_are_version_4_from_disk_id() -> None:
    """The GPT disk and partition GUIDs are disk_id's two halves with RFC 4122 v4 bits set."""
    layout = plan_partition(500 * MiB, fs_type="exfat", disk_id=ID_A, scheme="gpt")
    disk, part = uuid.UUID(str(layout.disk_guid)), uuid.UUID(str(layout.partition_guid))
    assert disk.version == part.version == 4
    assert disk.variant == part.variant == uuid.RFC_4122
    assert disk == uuid.UUID(bytes=ID_A[:16], version=4)
    assert part == uuid.UUID(bytes=ID_A[16:], version=4)
    assert disk != part
    # on disk in GPT's mixed-endian order
    primary = layout.extents[0].source
    assert isinstance(primary, Bytes)
    assert primary.data[512 + 56 : 512 + 72] == disk.bytes_le


@needs_sgdisk
@pytest.mark.parametrize(
    ("disk_bytes", "sector_bytes"),
    [(1_000_000_000, 512), (64_000_000_000, 512), (300 * MiB + 7 * 512, 512)],
)
def test_mbr_is_byte_identical_to_androids_sgdisk(
    tmp_path: Path, disk_bytes: int, sector_bytes: int
) -> None:
    """The first MiB is exactly what vold's sgdisk commands leave on a zapped disk."""
    image = tmp_path / "ref.img"
    with open(image, "wb") as f:
        f.truncate(disk_bytes)
    for args in (["--zap-all"], ["--new=0:0:-0", "--typecode=0:0c00", "--gpttombr=1"]):
        subprocess.run([SGDISK, *args, str(image)], capture_output=True, check=True)
    layout = plan_partition(disk_bytes, fs_type="fat32", disk_id=ID_A, sector_bytes=sector_bytes)
    with open(image, "rb") as f:
        want = f.read(MiB)
    assert reader(layout)(0, MiB) == want


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"disk_id": bytes(16)}, "32 random bytes"),
        ({"disk_id": bytes(32)}, "all zero"),
        ({"fs_type": "ntfs"}, "unknown filesystem"),
        ({"scheme": "apm"}, "unknown partition scheme"),
        ({"sector_bytes": 520}, "unsupported sector size"),
        ({"align_bytes": 3 * MiB}, "power of two"),
    ],
)
def test_bad_arguments_raise_usage_error(kwargs: dict[str, Any], match: str) -> None:
    """Bad arguments raise UsageError with a message that names the problem."""
    args: dict[str, Any] = {"fs_type": "fat32", "disk_id": ID_A, **kwargs}
    with pytest.raises(UsageError, match=match):
        plan_partition(500 * MiB, **args)


@pytest.mark.parametrize(("scheme", "sector_bytes"), [("mbr", 512), ("gpt", 512), ("gpt", 4096)])
def test_too_small_disk_reports_exact_need(scheme: str, sector_bytes: int) -> None:
    """A disk too small for one partition raises PayloadTooLargeError with the exact need."""
    with pytest.raises(PayloadTooLargeError) as info:
        plan_partition(MiB, fs_type="fat32", disk_id=ID_A, scheme=scheme, sector_bytes=sector_bytes)
    needed = info.value.fields["needed"]
    assert info.value.fields["available"] == MiB
    layout = plan_partition(
        needed, fs_type="fat32", disk_id=ID_A, scheme=scheme, sector_bytes=sector_bytes
    )
    assert layout.partition_bytes == MiB
    with pytest.raises(PayloadTooLargeError):
        plan_partition(
            needed - sector_bytes,
            fs_type="fat32",
            disk_id=ID_A,
            scheme=scheme,
            sector_bytes=sector_bytes,
        )


def test_readers_reject_damage() -> None:
    """parse_mbr and parse_gpt raise ValueError on a missing signature or a bad CRC32."""
    layout = plan_partition(500 * MiB, fs_type="exfat", disk_id=ID_A, scheme="gpt")
    good = reader(layout)
    with pytest.raises(ValueError, match="55 AA"):
        parse_mbr(bytes(512))

    def flip(at: int) -> Reader:
        def read(offset: int, n: int) -> bytes:
            data = bytearray(good(offset, n))
            if offset <= at < offset + n:
                data[at - offset] ^= 1
            return bytes(data)

        return read

    with pytest.raises(ValueError, match="header CRC32"):
        parse_gpt(flip(512 + 40), 500 * MiB)  # primary first-usable LBA
    with pytest.raises(ValueError, match="entry array CRC32"):
        parse_gpt(flip(1024 + 40), 500 * MiB)  # primary entry 0, first LBA
    with pytest.raises(ValueError, match="entry array CRC32"):
        parse_gpt(flip(500 * MiB - 512 - 16384 + 100), 500 * MiB)  # backup array

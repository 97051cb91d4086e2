"""An independent reader of a finished drive's FAT32 or exFAT volume, for the tests.

It reads what an examiner's dump tool reads, straight from the specifications and not from
fdffd's builders: the boot sector, the FAT or the allocation bitmap, every directory entry.
It lists the free clusters, the slack after every file (the rest of its last cluster), the
regions outside the volume, and every timestamp of every entry, so a test can check that
each reads as the footprint leaves it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import BinaryIO

from fdffd.imaging.partition import parse_mbr


@dataclass
class Volume:
    """What the reader found: byte ranges on the drive (absolute offsets) and times."""

    fs: str
    partition_offset: int
    partition_bytes: int
    cluster_bytes: int
    #: ``(offset, length)`` of every free cluster run
    free: list[tuple[int, int]] = field(default_factory=list)
    #: ``(offset, length)`` of the slack after every file
    slack: list[tuple[int, int]] = field(default_factory=list)
    #: ``path -> (created, modified, accessed)``, local wall-clock times as stored
    times: dict[str, tuple[datetime, ...]] = field(default_factory=dict)
    #: exFAT: every UTC offset byte of every entry
    utc_offsets: set[int] = field(default_factory=set)
    files: dict[str, int] = field(default_factory=dict)


def _dos_time(d: int, t: int, tenths: int = 0) -> datetime:
    return datetime(
        1980 + (d >> 9), (d >> 5) & 15, d & 31, t >> 11, (t >> 5) & 63, (t & 31) * 2
    ) + timedelta(milliseconds=10 * tenths)


def _dos_date(d: int) -> datetime:
    return datetime(1980 + (d >> 9), (d >> 5) & 15, d & 31)


def _short_name(e: bytes) -> str:
    base, ext = e[:8].decode("ascii").rstrip(), e[8:11].decode("ascii").rstrip()
    base = base.lower() if e[12] & 0x08 else base
    ext = ext.lower() if e[12] & 0x10 else ext
    return f"{base}.{ext}" if ext else base


def _runs(indices: Iterator[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


class _Reader:
    def __init__(self, f: BinaryIO, base: int) -> None:
        self.f = f
        self.base = base

    def read(self, offset: int, n: int) -> bytes:
        self.f.seek(self.base + offset)
        return self.f.read(n)


def _fat32(r: _Reader, vol: Volume) -> None:
    bs = r.read(0, 512)
    bps, spc = struct.unpack_from("<HB", bs, 11)
    reserved, nfats = struct.unpack_from("<HB", bs, 14)
    (total,) = struct.unpack_from("<I", bs, 32)
    fat_sectors, _, _, root = struct.unpack_from("<IHHI", bs, 36)
    cb: int = bps * spc
    vol.cluster_bytes = cb
    data: int = (reserved + nfats * fat_sectors) * bps
    count = (total - reserved - nfats * fat_sectors) // spc
    fat = struct.unpack(f"<{count + 2}I", r.read(reserved * bps, (count + 2) * 4))
    fat = tuple(x & 0x0FFFFFFF for x in fat)

    def at(c: int) -> int:
        return data + (c - 2) * cb

    def chain(c: int) -> list[int]:
        out = []
        while 2 <= c < 0x0FFFFFF8:
            out.append(c)
            c = fat[c]
        return out

    for start, n in _runs(c for c in range(2, count + 2) if fat[c] == 0):
        vol.free.append((vol.partition_offset + at(start), n * cb))

    def walk(first: int, prefix: str) -> None:
        raw = b"".join(r.read(at(c), cb) for c in chain(first))
        lfn: list[tuple[int, bytes]] = []
        for i in range(0, len(raw), 32):
            e = raw[i : i + 32]
            if e[0] == 0:
                break
            if e[0] == 0xE5:
                continue
            attr = e[11]
            if attr == 0x0F:
                lfn.append((e[0] & 0x1F, e[1:11] + e[14:26] + e[28:32]))
                continue
            if attr & 0x08 or e[0] == 0x2E:  # the label, '.' and '..'
                lfn = []
                continue
            name = b"".join(p for _, p in sorted(lfn)).decode("utf-16-le").split("\0")[0]
            lfn = []
            path = prefix + (name or _short_name(e))
            ct10 = e[13]
            ct, cd, ad, hi, wt, wd = struct.unpack_from("<HHHHHH", e, 14)
            vol.times[path] = (_dos_time(cd, ct, ct10), _dos_time(wd, wt), _dos_date(ad))
            first_c = hi << 16 | struct.unpack_from("<H", e, 26)[0]
            (size,) = struct.unpack_from("<I", e, 28)
            if attr & 0x10:
                walk(first_c, path + "/")
                continue
            vol.files[path] = size
            clusters = chain(first_c) if size else []
            assert len(clusters) == -(-size // cb), path
            if size % cb:
                last = at(clusters[-1])
                vol.slack.append((vol.partition_offset + last + size % cb, cb - size % cb))

    walk(root, "")


def _exfat_time(ts: int, ms10: int = 0) -> datetime:
    return _dos_time(ts >> 16, ts & 0xFFFF) + timedelta(milliseconds=10 * ms10)


def _exfat(r: _Reader, vol: Volume) -> None:
    bs = r.read(0, 512)
    fat_off, _, heap, count, root = struct.unpack_from("<IIIII", bs, 80)
    bps = 1 << bs[108]
    cb = bps << bs[109]
    heap_at: int = heap * bps
    vol.cluster_bytes = cb

    def at(c: int) -> int:
        return heap_at + (c - 2) * cb

    def fat_next(c: int) -> int:
        return int(struct.unpack("<I", r.read(fat_off * bps + 4 * c, 4))[0])

    def clusters(first: int, length: int, contiguous: bool) -> list[int]:
        n = -(-length // cb)
        if contiguous:
            return list(range(first, first + n))
        out: list[int] = []
        c = first
        while 2 <= c < 0xFFFFFFF7 and len(out) < n:
            out.append(c)
            c = fat_next(c)
        return out

    bitmap: bytes = b""

    def walk(raw: bytes, prefix: str) -> None:
        nonlocal bitmap
        i = 0
        while i < len(raw):
            e = raw[i : i + 32]
            kind = e[0]
            if kind == 0:
                break
            if kind == 0x81:
                first, length = struct.unpack_from("<IQ", e, 20)
                bitmap = r.read(at(first), length)
            if kind != 0x85:
                i += 32
                continue
            secondary = e[1]
            attrs = struct.unpack_from("<H", e, 4)[0]
            cr, mo, ac = struct.unpack_from("<III", e, 8)
            cr10, mo10 = e[20], e[21]
            vol.utc_offsets.update(e[22:25])
            stream = raw[i + 32 : i + 64]
            flags, name_len = stream[1], stream[3]
            first, length = struct.unpack_from("<IQ", stream, 20)
            name = b"".join(
                raw[i + 32 * k + 2 : i + 32 * k + 32] for k in range(2, secondary + 1)
            ).decode("utf-16-le")[:name_len]
            path = prefix + name
            vol.times[path] = (_exfat_time(cr, cr10), _exfat_time(mo, mo10), _exfat_time(ac))
            chain = clusters(first, length, bool(flags & 2)) if length else []
            if attrs & 0x10:
                walk(b"".join(r.read(at(c), cb) for c in chain), path + "/")
            else:
                vol.files[path] = length
                if length % cb:
                    end = at(chain[-1]) + length % cb
                    vol.slack.append((vol.partition_offset + end, cb - length % cb))
            i += 32 * (secondary + 1)

    root_raw = b"".join(r.read(at(c), cb) for c in clusters(root, cb * 64, False))
    walk(root_raw, "")
    assert bitmap, "no allocation bitmap entry in the root directory"

    def used(c: int) -> bool:
        k = c - 2
        return bool(bitmap[k // 8] >> (k % 8) & 1)

    for start, n in _runs(c for c in range(2, count + 2) if not used(c)):
        vol.free.append((vol.partition_offset + at(start), n * cb))


def read_volume(device: str) -> Volume:
    """Parse the drive's one partition (MBR) and the volume in it."""
    with open(device, "rb") as f:
        mbr = parse_mbr(f.read(512))
        (part,) = mbr.entries
        sector = _sector_of(device)
        offset = part.first_lba * sector
        f.seek(offset + 3)
        oem = f.read(8)
        fs = "exfat" if oem == b"EXFAT   " else "fat32"
        vol = Volume(fs, offset, part.sectors * sector, 0)
        (_fat32 if fs == "fat32" else _exfat)(_Reader(f, offset), vol)
    return vol


def _sector_of(device: str) -> int:
    import fcntl

    blksszget = 0x1268
    try:
        with open(device, "rb") as f:
            buf = fcntl.ioctl(f.fileno(), blksszget, b"\0\0\0\0")
        return int(struct.unpack("<I", buf)[0])
    except OSError:
        return 512


def nonzero_in(device: str, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ``ranges`` (offset, length) that hold any byte but zero."""
    out = []
    with open(device, "rb") as f:
        for off, n in ranges:
            f.seek(off)
            done = 0
            while done < n:
                block = f.read(min(4 << 20, n - done))
                if block.count(0) != len(block):
                    out.append((off, n))
                    break
                done += len(block)
    return out


def bad_times(vol: Volume, today: date, min_age_days: int = 30) -> list[str]:
    """Entries with a time on the FAT epoch's first day, after ``today``, or within
    ``min_age_days`` of it."""
    limit = datetime.combine(today - timedelta(days=min_age_days), datetime.min.time())
    out = []
    for path, times in vol.times.items():
        for t in times:
            if t.date() == date(1980, 1, 1) or t >= limit:
                out.append(f"{path}: {t.isoformat()}")
    return out

"""exFAT directory entries: names, labels, entry sets and their timestamps.  Pure.

Split out of ``exfat.py``, which places what this encodes (spec sections 7.4-7.7).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

from fdffd.errors import NameNotAllowedError, UsageError
from fdffd.imaging.dates import EntryTimes
from fdffd.imaging.upcase import upcase

#: Longest label: 11 UTF-16 code units.
MAX_LABEL_UNITS = 11
MAX_NAME_UNITS = 255
FLAG_ALLOCATION_POSSIBLE = 0x01
FLAG_NO_FAT_CHAIN = 0x02

#: Characters no exFAT name or label may hold (spec Table 35).
_INVALID_CHARS = frozenset('"*/:<>?\\|') | frozenset(chr(c) for c in range(0x20))


# --- names, labels, timestamps -----------------------------------------------------------


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def check_label(label: str) -> str:
    """Return ``label`` if exFAT can hold it (at most 11 UTF-16 units, no characters that
    are invalid in file names); raise :class:`UsageError` saying why otherwise."""
    units = len(utf16(label)) // 2
    if units > MAX_LABEL_UNITS:
        raise UsageError(
            f"volume label {label!r} is {units} UTF-16 units long; exFAT allows {MAX_LABEL_UNITS}"
        )
    bad = sorted(set(label) & _INVALID_CHARS)
    if bad:
        raise UsageError(f"volume label {label!r} contains characters exFAT forbids: {bad!r}")
    return label


def check_name(name: str, path: str) -> None:
    if not name or name in (".", ".."):
        raise NameNotAllowedError(path=path, detail="empty, '.' or '..' path component")
    units = len(utf16(name)) // 2
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
    return _checksum16(utf16(upcase(name)))


def _set_checksum(entries: bytes | bytearray) -> int:
    """SetChecksum of a directory entry set: every byte but the field itself (2-3)."""
    return _checksum16(entries[4:], _checksum16(entries[:2]))


@dataclass(frozen=True)
class _Stamp:
    timestamp: int  # DOS-style date and time, 2-second resolution
    ten_ms: int  # 0..199: the odd second and the hundredths
    utc_offset: int  # the UtcOffset byte


def _stamp(when: datetime, utc_offset_minutes: int | None) -> _Stamp:
    """A naive local time, with its UTC offset (None: OffsetValid clear)."""
    if utc_offset_minutes is None:
        utc_byte = 0
    else:
        quarters, rest = divmod(utc_offset_minutes, 15)
        if rest or not -64 <= quarters <= 63:
            raise ValueError(f"UTC offset of {utc_offset_minutes} minutes cannot be stored")
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


@dataclass(frozen=True)
class Stamps:
    created: _Stamp
    modified: _Stamp
    accessed: _Stamp


def stamps(times: EntryTimes, utc_offset_minutes: int | None) -> Stamps:
    return Stamps(
        _stamp(times.created, utc_offset_minutes),
        _stamp(times.modified, utc_offset_minutes),
        _stamp(times.accessed, utc_offset_minutes),
    )


# --- directory entries -------------------------------------------------------------------


def entry_set(
    name: str,
    *,
    attributes: int,
    first_cluster: int,
    length: int,
    stamp: Stamps,
) -> bytes:
    encoded = utf16(name)
    units = len(encoded) // 2
    chunks = [encoded[i : i + 30] for i in range(0, len(encoded), 30)]
    flags = FLAG_ALLOCATION_POSSIBLE | (FLAG_NO_FAT_CHAIN if first_cluster else 0)
    file_entry = struct.pack(
        "<BBHHHIIIBBBBB7x",
        0x85,
        1 + len(chunks),
        0,  # SetChecksum, filled in below
        attributes,
        0,
        stamp.created.timestamp,
        stamp.modified.timestamp,
        stamp.accessed.timestamp,
        stamp.created.ten_ms,
        stamp.modified.ten_ms,
        stamp.created.utc_offset,
        stamp.modified.utc_offset,
        stamp.accessed.utc_offset,
    )
    stream = struct.pack(
        "<BBxBHxxQxxxxIQ", 0xC0, flags, units, name_hash(name), length, first_cluster, length
    )
    names = b"".join(struct.pack("<BB30s", 0xC1, 0, chunk) for chunk in chunks)
    entries = bytearray(file_entry + stream + names)
    struct.pack_into("<H", entries, 2, _set_checksum(entries))
    return bytes(entries)


def entry_set_units(name: str) -> int:
    """Directory entries a File entry set for ``name`` takes."""
    units = len(utf16(name)) // 2
    return 2 + -(-units // 15)

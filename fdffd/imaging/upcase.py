"""The exFAT up-case table: how exFAT folds file names for case-insensitive comparison.

exFAT stores names case-preserved and compares them after mapping every UTF-16 code
unit through the volume's up-case table.  The NameHash in each Stream Extension entry
is computed over the up-cased name, so the writer must up-case exactly as readers will.

The table written here is the *recommended* table of Microsoft's exFAT specification
(section 7.2.5.1, Table 25), which Windows, mkfs.exfat and the Linux kernel use: 5836
bytes in compressed form, TableChecksum E619D30Dh.  It is not stored as a blob; it is
generated from the case mappings in ``_RULES`` and compressed the way that table is:
runs of at least ``_MIN_COMPRESSED_RUN`` identity mappings become ``FFFFh, count``,
shorter runs stay literal.  The tests check the result byte for byte against the table
mkfs.exfat writes.

Code points outside the Basic Multilingual Plane are stored as surrogate pairs, and
the table maps surrogates to themselves, so such characters are never case-folded.
"""

from __future__ import annotations

import struct
from functools import cache

#: Non-identity mappings of the recommended table, as ``(first, count, step, delta)``:
#: the ``count`` code units ``first, first + step, ...`` map to themselves plus ``delta``.
#: ``step`` 2 covers the Latin/Cyrillic/Coptic blocks where lower-case letters follow
#: their capitals one by one.  Everything not listed maps to itself.
# fmt: off
_RULES: tuple[tuple[int, int, int, int], ...] = (
    (0x0061, 26, 1, -32), (0x00E0, 23, 1, -32), (0x00F8, 7, 1, -32), (0x00FF, 1, 1, 121),
    (0x0101, 24, 2, -1), (0x0133, 3, 2, -1), (0x013A, 8, 2, -1), (0x014B, 23, 2, -1),
    (0x017A, 3, 2, -1), (0x0180, 1, 1, 195), (0x0183, 2, 2, -1), (0x0188, 1, 1, -1),
    (0x018C, 1, 1, -1), (0x0192, 1, 1, -1), (0x0195, 1, 1, 97), (0x0199, 1, 1, -1),
    (0x019A, 1, 1, 163), (0x019E, 1, 1, 130), (0x01A1, 3, 2, -1), (0x01A8, 1, 1, -1),
    (0x01AD, 1, 1, -1), (0x01B0, 1, 1, -1), (0x01B4, 2, 2, -1), (0x01B9, 1, 1, -1),
    (0x01BD, 1, 1, -1), (0x01BF, 1, 1, 56), (0x01C6, 1, 1, -2), (0x01C9, 1, 1, -2),
    (0x01CC, 1, 1, -2), (0x01CE, 8, 2, -1), (0x01DD, 1, 1, -79), (0x01DF, 9, 2, -1),
    (0x01F3, 1, 1, -2), (0x01F5, 1, 1, -1), (0x01F9, 20, 2, -1), (0x0223, 9, 2, -1),
    (0x023A, 1, 1, 10795), (0x023C, 1, 1, -1), (0x023E, 1, 1, 10792), (0x0242, 1, 1, -1),
    (0x0247, 5, 2, -1), (0x0253, 1, 1, -210), (0x0254, 1, 1, -206), (0x0256, 2, 1, -205),
    (0x0259, 1, 1, -202), (0x025B, 1, 1, -203), (0x0260, 1, 1, -205), (0x0263, 1, 1, -207),
    (0x0268, 1, 1, -209), (0x0269, 1, 1, -211), (0x026B, 1, 1, 10743), (0x026F, 1, 1, -211),
    (0x0272, 1, 1, -213), (0x0275, 1, 1, -214), (0x027D, 1, 1, 10727), (0x0280, 1, 1, -218),
    (0x0283, 1, 1, -218), (0x0288, 1, 1, -218), (0x0289, 1, 1, -69), (0x028A, 2, 1, -217),
    (0x028C, 1, 1, -71), (0x0292, 1, 1, -219), (0x037B, 3, 1, 130), (0x03AC, 1, 1, -38),
    (0x03AD, 3, 1, -37), (0x03B1, 17, 1, -32), (0x03C2, 1, 1, -31), (0x03C3, 9, 1, -32),
    (0x03CC, 1, 1, -64), (0x03CD, 2, 1, -63), (0x03D9, 12, 2, -1), (0x03F2, 1, 1, 7),
    (0x03F8, 1, 1, -1), (0x03FB, 1, 1, -1), (0x0430, 32, 1, -32), (0x0450, 16, 1, -80),
    (0x0461, 17, 2, -1), (0x048B, 27, 2, -1), (0x04C2, 7, 2, -1), (0x04CF, 1, 1, -15),
    (0x04D1, 34, 2, -1), (0x0561, 38, 1, -48), (0x1D7D, 1, 1, 3814), (0x1E01, 75, 2, -1),
    (0x1EA1, 45, 2, -1), (0x1F00, 8, 1, 8), (0x1F10, 6, 1, 8), (0x1F20, 8, 1, 8),
    (0x1F30, 8, 1, 8), (0x1F40, 6, 1, 8), (0x1F51, 4, 2, 8), (0x1F60, 8, 1, 8),
    (0x1F70, 2, 1, 74), (0x1F72, 4, 1, 86), (0x1F76, 2, 1, 100), (0x1F78, 2, 1, 128),
    (0x1F7A, 2, 1, 112), (0x1F7C, 2, 1, 126), (0x1F80, 8, 1, 8), (0x1F90, 8, 1, 8),
    (0x1FA0, 8, 1, 8), (0x1FB0, 2, 1, 8), (0x1FB3, 1, 1, 9), (0x1FCC, 1, 1, -9),
    (0x1FD0, 2, 1, 8), (0x1FE0, 2, 1, 8), (0x1FE5, 1, 1, 7), (0x1FFC, 1, 1, -9),
    (0x214E, 1, 1, -28), (0x2170, 16, 1, -16), (0x2184, 1, 1, -1), (0x24D0, 26, 1, -26),
    (0x2C30, 47, 1, -48), (0x2C61, 1, 1, -1), (0x2C68, 3, 2, -1), (0x2C76, 1, 1, -1),
    (0x2C81, 50, 2, -1), (0x2D00, 38, 1, -7264), (0xFF41, 26, 1, -32),
)
# fmt: on

#: Identity runs at least this long are compressed (FFFFh, count).  The recommended
#: table compresses its four runs of 843 to 53787 identity mappings and keeps the runs
#: of 337 and fewer literal; any threshold in 338..843 reproduces it exactly.
_MIN_COMPRESSED_RUN = 512

_TABLE_ENTRIES = 0x10000
_COMPRESSION_MARK = 0xFFFF


@cache
def _mapping() -> tuple[int, ...]:
    table = list(range(_TABLE_ENTRIES))
    for first, count, step, delta in _RULES:
        for unit in range(first, first + count * step, step):
            table[unit] = unit + delta
    return tuple(table)


@cache
def _translation() -> dict[int, int]:
    return {unit: up for unit, up in enumerate(_mapping()) if up != unit}


def upcase(name: str) -> str:
    """``name`` up-cased the way exFAT compares names (per UTF-16 code unit, BMP only)."""
    return name.translate(_translation())


def checksum32(data: bytes, seed: int = 0) -> int:
    """The exFAT 32-bit rotate-and-add checksum (TableChecksum, boot region checksum)."""
    value = seed
    for byte in data:
        value = (((value >> 1) | ((value & 1) << 31)) + byte) & 0xFFFFFFFF
    return value


@cache
def upcase_table() -> bytes:
    """The recommended up-case table in compressed form, as written to the volume."""
    mapping = _mapping()
    out: list[int] = []
    unit = 0
    while unit < _TABLE_ENTRIES:
        run = unit
        while run < _TABLE_ENTRIES and mapping[run] == run:
            run += 1
        if run - unit >= _MIN_COMPRESSED_RUN:
            out += (_COMPRESSION_MARK, run - unit)
            unit = run
        elif run > unit:
            out.extend(range(unit, run))
            unit = run
        else:
            out.append(mapping[unit])
            unit += 1
    return struct.pack(f"<{len(out)}H", *out)


@cache
def upcase_table_checksum() -> int:
    """TableChecksum of :func:`upcase_table` (E619D30Dh for the recommended table)."""
    return checksum32(upcase_table())

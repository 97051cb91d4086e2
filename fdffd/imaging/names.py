"""FAT 8.3 short names: how a long name gets its short entry, and the LFN checksum.

``assign_short_names`` and ``lfn_checksum`` follow the basis-name and numeric-tail
algorithms of Microsoft's FAT specification (fatgen103), with the OEM code page reduced to
printable ASCII: any other character becomes ``_`` (a "lossy conversion").  Short names
therefore read the same under every OEM code page.

The name rules themselves (which names may go on a drive, ``fold_case``) are in
``fdffd.names``; the ones the imaging writers and the payload store use are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fdffd.names import (
    MAX_NAME_UNITS,
    MAX_NAME_UTF8_BYTES,
    MAX_PATH_UNITS,
    SHORT_NAME_CHARS,
    check_component,
    check_tree,
    fold_case,
    utf16_units,
)

__all__ = [
    "CASE_LOWER_BASE",
    "CASE_LOWER_EXT",
    "MAX_NAME_UNITS",
    "MAX_NAME_UTF8_BYTES",
    "MAX_NUMERIC_TAIL",
    "MAX_PATH_UNITS",
    "ShortName",
    "assign_short_names",
    "check_component",
    "check_tree",
    "fold_case",
    "is_valid_short",
    "lfn_checksum",
    "native_short_name",
    "utf16_units",
]

_SHORT_UPPER = SHORT_NAME_CHARS

#: NT case bits in byte 0x0C of a short directory entry (used by Windows NT and later,
#: Linux ``shortname=mixed``, macOS msdosfs, FatFs, mtools).
CASE_LOWER_BASE = 0x08
CASE_LOWER_EXT = 0x10

MAX_NUMERIC_TAIL = 999_999


@dataclass(frozen=True)
class ShortName:
    """The short (8.3) entry of one long name.

    ``raw`` is the 11-byte name field (8 + 3, space padded, upper case).  ``case_bits``
    is the NT byte 0x0C (``CASE_LOWER_BASE``/``CASE_LOWER_EXT``), non-zero only when the
    long name is a valid 8.3 name with all-lower-case parts.  ``lfn`` says whether the
    long name needs an LFN entry chain in front of the short entry."""

    raw: bytes
    case_bits: int
    lfn: bool

    def display(self) -> str:
        """``NAME.EXT`` as DOS shows it."""
        base = self.raw[:8].decode("ascii").rstrip(" ")
        ext = self.raw[8:].decode("ascii").rstrip(" ")
        return f"{base}.{ext}" if ext else base


def is_valid_short(raw: bytes) -> bool:
    """Whether ``raw`` is a well-formed 11-byte short name as this module writes them."""
    if len(raw) != 11:
        return False
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return False
    base, ext = text[:8], text[8:]
    if base[0] == " ":
        return False
    for part in (base, ext):
        body = part.rstrip(" ")
        if " " in body or not set(body) <= _SHORT_UPPER:
            return False
    return True


def _pack(base: str, ext: str) -> bytes:
    return (base.ljust(8) + ext.ljust(3)).encode("ascii")


def native_short_name(name: str) -> ShortName | None:
    """The short entry of a name that is itself a valid 8.3 name, else ``None``.

    Like Windows NT and later: a name valid in upper case (``README.TXT``) is stored
    as is, with no LFN; a name whose base and extension are each all lower case or
    all upper case (``readme.txt``, ``README.txt``) is stored upper case with the NT
    case bits set, also with no LFN.  Mixed case inside one part (``ReadMe.txt``)
    needs an LFN."""
    if name.startswith(".") or name.count(".") > 1:
        return None
    base, _, ext = name.partition(".")
    if not 1 <= len(base) <= 8 or len(ext) > 3 or (name.endswith(".")):
        return None
    bits = 0
    for part, bit in ((base, CASE_LOWER_BASE), (ext, CASE_LOWER_EXT)):
        if not set(part.upper()) <= _SHORT_UPPER or not part.isascii():
            return None
        has_lower = any("a" <= c <= "z" for c in part)
        has_upper = any("A" <= c <= "Z" for c in part)
        if has_lower and has_upper:
            return None
        if has_lower:
            bits |= bit
    return ShortName(_pack(base.upper(), ext.upper()), bits, lfn=False)


def _basis_name(name: str) -> tuple[str, str, bool]:
    """Basis name per fatgen103: (primary, extension, needs a numeric tail)."""
    lossy = False
    chars = []
    for ch in fold_case(name):
        if ch in _SHORT_UPPER or ch in " .":
            chars.append(ch)
        else:
            chars.append("_")
            lossy = True
    converted = "".join(chars)
    stripped = converted.replace(" ", "").lstrip(".")
    dot = stripped.find(".")
    primary = (stripped if dot < 0 else stripped[:dot])[:8]
    last = stripped.rfind(".")
    ext = stripped[last + 1 :][:3] if last >= 0 else ""
    if not primary:
        primary, lossy = "_", True
    fits = stripped == converted and stripped == (f"{primary}.{ext}" if ext else primary)
    return primary, ext, lossy or not fits


def assign_short_names(names: Sequence[str]) -> dict[str, ShortName]:
    """Short names for all ``names`` of one directory: unique, deterministic.

    Names that are valid 8.3 names claim their own short name first; the others get
    a basis name and, when it is lossy, does not fit 8.3 or is taken, the lowest free
    numeric tail ``~N`` (fatgen103), in the order given.  ``names`` must already pass
    ``check_tree`` (no two equal after ``fold_case``)."""
    out: dict[str, ShortName] = {}
    taken: set[bytes] = set()
    for name in names:
        native = native_short_name(name)
        if native is not None:
            if native.raw in taken:
                raise ValueError(f"{name!r} clashes with another name in its directory")
            taken.add(native.raw)
            out[name] = native
    next_tail: dict[tuple[str, str], int] = {}
    for name in names:
        if name in out:
            continue
        primary, ext, needs_tail = _basis_name(name)
        if not needs_tail:
            raw = _pack(primary, ext)
            if raw not in taken:
                taken.add(raw)
                out[name] = ShortName(raw, 0, lfn=True)
                continue
        n = next_tail.get((primary, ext), 1)
        while True:
            if n > MAX_NUMERIC_TAIL:
                raise ValueError(f"no free short name for {name!r}")
            tail = f"~{n}"
            raw = _pack(primary[: 8 - len(tail)] + tail, ext)
            n += 1
            if raw not in taken:
                break
        next_tail[(primary, ext)] = n
        taken.add(raw)
        out[name] = ShortName(raw, 0, lfn=True)
    return out


def lfn_checksum(short11: bytes) -> int:
    """The checksum of an 11-byte short name that every LFN entry of its chain carries."""
    if len(short11) != 11:
        raise ValueError("a short name is 11 bytes")
    total = 0
    for byte in short11:
        total = (((total & 1) << 7) | (total >> 1)) + byte
        total &= 0xFF
    return total

"""File name rules for FAT32 and exFAT payloads, and FAT 8.3 short names.

Pure functions, no I/O.  Two jobs:

1. **Which names may go on a drive** (``check_component``, ``check_tree``).  A payload
   name must survive the trip to every reader we care about (Windows, macOS, Linux,
   Android, cheap media players) and the copy from the stick to the reader's own
   disk.  So the rules are the union of what FAT/exFAT and Win32 forbid, plus two
   portability limits:

   - a component is at most 255 UTF-16 code units (the FAT LFN / exFAT limit) *and*
     at most 255 bytes in UTF-8 (``NAME_MAX`` of ext4, f2fs and APFS: a longer name
     reads fine from the stick but cannot be copied to a phone or a Linux disk; a
     Hangul syllable is 3 UTF-8 bytes, so Korean names are limited to 85 syllables);
   - a path is at most ``MAX_PATH_UNITS`` = 256 UTF-16 units (separators count one
     each).  Win32 ``MAX_PATH`` is 260 units including the drive prefix ``X:\\`` and
     the terminating NUL, so 256 units is the longest path Explorer and ordinary
     Windows programs can open on the stick.  (Copying a folder *off* the stick into
     a deeper place can still exceed it; no limit here can prevent that.)

   Names must be NFC: Windows compares names code unit by code unit, so an NFD name
   would look identical to, and yet differ from, what a Windows or Android user types.

2. **FAT short names** (``assign_short_names``, ``lfn_checksum``), following the
   basis-name and numeric-tail algorithms of Microsoft's FAT specification
   (fatgen103), with the OEM code page reduced to printable ASCII: any other
   character becomes ``_`` (a "lossy conversion").  Short names therefore read the
   same under every OEM code page.

Case-insensitive comparison (``fold_case``): FAT (Windows) and exFAT (its up-case
table) both compare names after a *simple*, one-to-one up-casing of each UTF-16 code
unit; characters outside the BMP are not up-cased.  We model that with Python's
``str.upper`` restricted to BMP characters whose upper case is a single BMP
character (so ``ß`` stays ``ß``, not ``SS``).  This matches the Windows / exFAT
up-case table for every script a payload is likely to use (Latin, Greek, Cyrillic,
Hangul and CJK have no case or simple mappings); an odd character where the tables
disagree can only make two names collide here that Windows would keep apart, or
the reverse for a handful of rarely used letters.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fdffd.errors import NameNotAllowedError

#: FAT LFN and exFAT limit on one name, in UTF-16 code units.
MAX_NAME_UNITS = 255
#: ``NAME_MAX`` of the filesystems recipients copy to (ext4, f2fs, APFS), in UTF-8 bytes.
MAX_NAME_UTF8_BYTES = 255
#: Longest relative path (components joined by one separator), in UTF-16 code units.
MAX_PATH_UNITS = 256

_RESERVED_CHARS = frozenset('"*/:<>?\\|')
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{c}" for c in "0123456789¹²³"}
    | {f"LPT{c}" for c in "0123456789¹²³"}
)

# Characters allowed in a short name besides A-Z and 0-9 (fatgen103, "8.3 names");
# lower-case letters are allowed in a *long* name that fits 8.3 and get the NT case bits.
_SHORT_SPECIALS = frozenset("!#$%&'()-@^_`{}~")
_SHORT_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") | _SHORT_SPECIALS

#: NT case bits in byte 0x0C of a short directory entry (used by Windows NT and later,
#: Linux ``shortname=mixed``, macOS msdosfs, FatFs, mtools).
CASE_LOWER_BASE = 0x08
CASE_LOWER_EXT = 0x10

MAX_NUMERIC_TAIL = 999_999


def utf16_units(name: str) -> int:
    """Number of UTF-16 code units ``name`` takes (characters beyond the BMP take two)."""
    return len(name) + sum(1 for ch in name if ord(ch) > 0xFFFF)


@functools.lru_cache(maxsize=1 << 16)
def fold_case(name: str) -> str:
    """Up-case ``name`` the way FAT and exFAT compare names (see the module docstring)."""
    if name.isascii():
        return name.upper()
    out = []
    for ch in name:
        if ord(ch) <= 0xFFFF:
            up = ch.upper()
            if len(up) == 1 and ord(up) <= 0xFFFF:
                ch = up
        out.append(ch)
    return "".join(out)


def _describe(ch: str) -> str:
    try:
        uname = unicodedata.name(ch)
    except ValueError:
        uname = "control character"
    return f"U+{ord(ch):04X} ({uname})"


def check_component(name: str, path: str) -> None:
    """Raise ``NameNotAllowedError`` (about ``path``) unless ``name`` is a portable name."""

    def refuse(detail: str) -> None:
        raise NameNotAllowedError(path=path, detail=detail)

    if name == "":
        refuse("empty name (a doubled '/' or a '/' at the start or end of the path?)")
    if name in (".", ".."):
        refuse(f"'{name}' is not allowed as a name; give the path without it")
    try:
        name.encode("utf-16-le")
    except UnicodeEncodeError:
        refuse("name is not valid Unicode (it holds a lone surrogate); fix its encoding")
    for ch in name:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            refuse(f"name holds the control character {_describe(ch)}; remove it")
        if ch in _RESERVED_CHARS:
            refuse(
                f"name holds '{ch}', which FAT, exFAT and Windows do not allow in names "
                '(reserved: " * / : < > ? \\ |); replace it, e.g. with "-"'
            )
    if not unicodedata.is_normalized("NFC", name):
        refuse(
            "name is not in Unicode NFC (e.g. Hangul stored as separate jamo, as macOS "
            "does); normalise it to NFC, e.g. with unicodedata.normalize('NFC', name)"
        )
    if name.endswith("."):
        refuse("name ends with '.', which Windows strips or refuses; remove the trailing dot")
    if name.endswith(" "):
        refuse("name ends with a space, which Windows strips or refuses; remove it")
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _DEVICE_NAMES:
        refuse(
            f"'{stem}' is a reserved device name on Windows (also with any extension); "
            "rename it, e.g. with a prefix"
        )
    units = utf16_units(name)
    if units > MAX_NAME_UNITS:
        refuse(
            f"name is {units} UTF-16 code units long; FAT32 and exFAT allow at most "
            f"{MAX_NAME_UNITS}; shorten it"
        )
    nbytes = len(name.encode("utf-8"))
    if nbytes > MAX_NAME_UTF8_BYTES:
        refuse(
            f"name is {nbytes} bytes in UTF-8; phones, Linux and macOS cannot copy names "
            f"over {MAX_NAME_UTF8_BYTES} bytes (about 85 Hangul syllables); shorten it"
        )


def check_tree(paths: Iterable[str]) -> None:
    """Check every component of every path, path lengths, and case-insensitive clashes.

    ``paths`` are relative, '/'-separated paths of files and directories (a path listed
    twice, or a directory listed and also implied by a file inside it, is fine).  Two
    different names in one directory that are equal after ``fold_case`` are refused,
    since FAT and exFAT would see them as the same name."""
    seen: dict[tuple[str, str], str] = {}  # (parent, folded name) -> name as given
    checked: set[str] = set()
    for path in paths:
        if path in checked:
            continue
        checked.add(path)
        units = utf16_units(path)
        if units > MAX_PATH_UNITS:
            raise NameNotAllowedError(
                path=path,
                detail=(
                    f"path is {units} UTF-16 code units long; Windows cannot open paths "
                    f"over {MAX_PATH_UNITS} on a stick; shorten names or nest less deeply"
                ),
            )
        parts = path.split("/")
        parent = ""
        for i, part in enumerate(parts):
            sub = "/".join(parts[: i + 1])
            if sub not in checked or i == len(parts) - 1:
                check_component(part, path)
            checked.add(sub)
            key = (parent, fold_case(part))
            other = seen.setdefault(key, part)
            if other != part:
                where = f"'{parent}'" if parent else "the top directory"
                raise NameNotAllowedError(
                    path=path,
                    detail=(
                        f"'{part}' and '{other}' in {where} differ only in letter case; "
                        "FAT and exFAT treat them as the same name: rename one"
                    ),
                )
            parent = sub


# --- 8.3 short names ---------------------------------------------------------------------


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

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

2. **FAT short names** (``assign_short_names``, ``lfn_checksum``) as Windows NT and
   later (10/11) create them when copying files (docs/imaging.md, "Short names"):
   fatgen103's basis name, built in an OEM code page (default CP949, Korean
   Windows; any Python codec works), with Windows' rules on top: embedded periods
   leave the primary part, characters the code page cannot hold (or that 8.3
   forbids: ``+ , ; = [ ]``) become ``_`` and force a tail, a double-byte
   character is never split; tails ``~1`` to ``~4`` first, then Windows' hashed
   form (two basis characters, four hex digits of a checksum of the long name,
   ``~1``...).  A name that is not plain ASCII always keeps its long name (LFN
   entries), so phones and players that read short names in another code page
   never show it garbled.

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
from collections.abc import Iterable, Iterator, Sequence
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

    def display(self, codepage: str = "cp949") -> str:
        """``NAME.EXT`` as DOS shows it in ``codepage``."""
        raw = (b"\xe5" + self.raw[1:]) if self.raw[0] == 0x05 else self.raw
        base = raw[:8].decode(codepage, "replace").rstrip(" ")
        ext = raw[8:].decode(codepage, "replace").rstrip(" ")
        return f"{base}.{ext}" if ext else base


def is_valid_short(raw: bytes) -> bool:
    """Whether ``raw`` is a well-formed 11-byte short name as this module writes them."""
    if len(raw) != 11 or raw[0] in (0x20, 0xE5):
        return False
    text = raw.decode("latin-1")  # bytes 0x80-0xFF: OEM (code page) characters
    base, ext = text[:8], text[8:]
    for part in (base, ext):
        body = part.rstrip(" ")
        ok = all(c in _SHORT_UPPER or ord(c) >= 0x80 for c in body.lstrip("\x05"))
        if " " in body or not ok or (part is ext and "\x05" in body):
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


#: Characters 8.3 names may not hold although every code page has them.
_SHORT_FORBIDDEN = frozenset("+,;=[]")
#: Short names given the plain ``~N`` tail before Windows switches to hashed tails.
PLAIN_TAILS = 4
#: The default OEM code page of short names (Korean Windows).
DEFAULT_CODEPAGE = "cp949"


def _oem(ch: str, codepage: str) -> bytes | None:
    """``ch`` (already up-cased) in the OEM code page, or None if it cannot be a
    short-name character there."""
    if ch.isascii():
        return ch.encode("ascii") if ch in _SHORT_UPPER else None
    if ch in _SHORT_FORBIDDEN:
        return None
    try:
        raw = ch.encode(codepage)
    except (UnicodeEncodeError, LookupError):
        return None
    return raw if raw and raw[0] >= 0x80 else None


@dataclass(frozen=True)
class _Basis:
    """A basis name: its primary part and extension as lists of OEM characters
    (each one or two bytes), and whether it needs a numeric tail."""

    primary: tuple[bytes, ...]
    ext: tuple[bytes, ...]
    needs_tail: bool


def _take(chars: Sequence[bytes], limit: int) -> tuple[bytes, ...]:
    """The longest prefix of ``chars`` that fits ``limit`` bytes (no split character)."""
    out: list[bytes] = []
    used = 0
    for c in chars:
        if used + len(c) > limit:
            break
        out.append(c)
        used += len(c)
    return tuple(out)


def _convert(text: str, codepage: str) -> tuple[list[bytes], bool]:
    out: list[bytes] = []
    lossy = False
    for ch in fold_case(text):
        if ch in " .":
            continue
        raw = _oem(ch, codepage)
        if raw is None:
            raw, lossy = b"_", True
        out.append(raw)
    return out, lossy


def _basis_name(name: str, codepage: str) -> _Basis:
    """The basis name of a long name (fatgen103, as Windows NT builds it)."""
    stripped = name.lstrip(" .")
    dot = stripped.rfind(".")
    head, tail = (stripped[:dot], stripped[dot + 1 :]) if dot >= 0 else (stripped, "")
    primary_all, lossy1 = _convert(head, codepage)
    ext_all, lossy2 = _convert(tail, codepage)
    primary = _take(primary_all, 8)
    ext = _take(ext_all, 3)
    if not primary:
        primary, lossy1 = (b"_",), True
    truncated = len(primary) < len(primary_all) or len(ext) < len(ext_all)
    exact = not (lossy1 or lossy2 or truncated) and _joined(primary, ext) == name.upper()
    return _Basis(primary, ext, not exact)


def _joined(primary: Sequence[bytes], ext: Sequence[bytes]) -> str:
    base = b"".join(primary).decode("latin-1")
    return f"{base}.{b''.join(ext).decode('latin-1')}" if ext else base


def windows_name_hash(name: str) -> int:
    """The 16-bit checksum Windows 7 and later put in a hashed short name.

    Computed over the long name's UTF-16 code units: a multiply-add checksum,
    scrambled by a multiplication modulo 1000000007, with its nibbles reversed."""
    crc = 0
    raw = name.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(raw), 2):
        crc = (crc * 0x25 + int.from_bytes(raw[i : i + 2], "little")) & 0xFFFF
    t = (crc * 314159269) & 0xFFFFFFFF
    if t > 0x7FFFFFFF:
        t = (-t) & 0xFFFFFFFF
    t = (t - ((t * 1152921497) >> 60) * 1000000007) & 0xFFFF
    return ((t & 0xF000) >> 12) | ((t & 0x0F00) >> 4) | ((t & 0x00F0) << 4) | ((t & 0x000F) << 12)


def _raw(primary: Sequence[bytes], ext: Sequence[bytes]) -> bytes:
    base = b"".join(primary).ljust(8, b" ")
    raw = base + b"".join(ext).ljust(3, b" ")
    return (b"\x05" + raw[1:]) if raw[0] == 0xE5 else raw


def _with_tail(primary: Sequence[bytes], ext: Sequence[bytes], tail: str) -> bytes:
    chars = tuple(tail.encode("ascii")[i : i + 1] for i in range(len(tail)))
    return _raw(_take(primary, 8 - len(tail)) + chars, ext)


def _candidates(name: str, basis: _Basis) -> Iterator[bytes]:
    """Short names to try for ``name``, in Windows' order."""
    if not basis.needs_tail:
        yield _raw(basis.primary, basis.ext)
    for n in range(1, PLAIN_TAILS + 1):
        yield _with_tail(basis.primary, basis.ext, f"~{n}")
    hashed = _take(basis.primary, 2) if len(basis.primary) > 1 else basis.primary[:1]
    digits = f"{windows_name_hash(name):04X}"
    stem = hashed + tuple(digits.encode("ascii")[i : i + 1] for i in range(4))
    for n in range(1, MAX_NUMERIC_TAIL + 1):
        yield _with_tail(stem, basis.ext, f"~{n}")


def assign_short_names(
    names: Sequence[str], codepage: str = DEFAULT_CODEPAGE
) -> dict[str, ShortName]:
    """Short names for all ``names`` of one directory, in the order the copy creates
    them: unique, deterministic.

    Names that are valid 8.3 names claim their own short name first; the others get
    the first free candidate of :func:`_candidates` (basis name, ``~1``-``~4``,
    then hashed tails).  ``names`` must already pass ``check_tree`` (no two equal
    after ``fold_case``)."""
    out: dict[str, ShortName] = {}
    taken: set[bytes] = set()
    for name in names:
        native = native_short_name(name)
        if native is not None:
            if native.raw in taken:
                raise ValueError(f"{name!r} clashes with another name in its directory")
            taken.add(native.raw)
            out[name] = native
    for name in names:
        if name in out:
            continue
        basis = _basis_name(name, codepage)
        for raw in _candidates(name, basis):
            if raw not in taken:
                break
        else:  # pragma: no cover - a directory cannot hold 10^6 names
            raise ValueError(f"no free short name for {name!r}")
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

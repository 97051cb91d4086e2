"""FAT 8.3 short names as Windows NT and later (10/11) create them when copying files.

``assign_short_names`` and ``lfn_checksum`` (docs/imaging.md, "Short names"): fatgen103's basis
name, built in an OEM code page (default CP949, Korean Windows; any Python codec works), with
Windows' rules on top: embedded periods leave the primary part, characters the code page cannot
hold (or that 8.3 forbids: ``+ , ; = [ ]``) become ``_`` and force a tail, a double-byte character
is never split; tails ``~1`` to ``~4`` first, then Windows' hashed form (two basis characters,
four hex digits of a checksum of the long name, ``~1``...).  A name that is not plain ASCII always
keeps its long name (LFN entries), so phones and players that read short names in another code
page never show it garbled.

The name rules themselves (which names may go on a drive, ``fold_case``) are in ``fdffd.names``;
the ones the imaging writers and the payload store use are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
    "DEFAULT_CODEPAGE",
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
    "windows_name_hash",
]

_SHORT_UPPER = SHORT_NAME_CHARS

# NT case bits (DIR_NTRes): the base / the extension is lower case in the long name
CASE_LOWER_BASE = 0x08
CASE_LOWER_EXT = 0x10
#: the largest numeric tail fatgen103's algorithm allows (``~999999``)
MAX_NUMERIC_TAIL = 999_999

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

"""The name rules: which names fdffd accepts for files on a drive, volume labels and profiles.

Pure functions, no I/O, on the ground floor of the house: the config (labels, profile names),
the payload store and the filesystem writers all check names by these rules, defined once.

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

2. **Volume labels** (``check_fat32_label``, ``check_exfat_label``, ``LABEL_RULES``): FAT32
   labels are at most 11 characters of the 8.3 short-name set and space, stored upper case;
   exFAT labels are at most 11 UTF-16 units without the characters its names forbid.

3. **Payload profile names** (``PROFILE_NAME_PATTERN``): 1 to 64 of ``A-Z a-z 0-9 . _ -``,
   not starting with ``.``; they name directories under the payload dir.

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
from collections.abc import Callable, Iterable

from fdffd.errors import NameNotAllowedError, UsageError

#: FAT LFN and exFAT limit on one name, in UTF-16 code units.
MAX_NAME_UNITS = 255
#: ``NAME_MAX`` of the filesystems recipients copy to (ext4, f2fs, APFS), in UTF-8 bytes.
MAX_NAME_UTF8_BYTES = 255
#: Longest relative path (components joined by one separator), in UTF-16 code units.
MAX_PATH_UNITS = 256

#: characters FAT, exFAT and Windows allow in no name (nor in an exFAT label)
RESERVED_CHARS = frozenset('"*/:<>?\\|')
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{c}" for c in "0123456789¹²³"}
    | {f"LPT{c}" for c in "0123456789¹²³"}
)

#: the characters of a FAT short (8.3) name: A-Z, 0-9 and these specials (fatgen103, "8.3
#: names"); lower-case letters are allowed in a *long* name that fits 8.3 and get the NT
#: case bits.  A FAT32 volume label holds these and space.
SHORT_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")

#: longest volume label: 11 characters (FAT32), 11 UTF-16 units (exFAT)
MAX_LABEL_CHARS = 11
#: characters no exFAT name or label may hold (spec Table 35)
EXFAT_INVALID_CHARS = RESERVED_CHARS | frozenset(chr(c) for c in range(0x20))

#: a payload profile's name
PROFILE_NAME = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}"
PROFILE_NAME_PATTERN = rf"^{PROFILE_NAME}$"


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
        if ch in RESERVED_CHARS:
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


# --- volume labels -----------------------------------------------------------------------


def check_fat32_label(label: str) -> str:
    """The 11-character-or-less volume label as stored (upper case, as Windows stores it).

    Raises ``UsageError`` for characters FAT labels cannot hold."""
    if len(label) > MAX_LABEL_CHARS:
        raise UsageError(f"volume label {label!r} is longer than 11 characters")
    if label != label.strip(" "):
        raise UsageError(f"volume label {label!r} starts or ends with a space")
    stored = label.upper()
    bad = sorted({ch for ch in stored if ch not in SHORT_NAME_CHARS and ch != " "})
    if bad:
        raise UsageError(
            f"volume label {label!r}: {''.join(bad)!r} not allowed; FAT labels hold ASCII "
            "letters, digits, spaces and ! # $ % & ' ( ) - @ ^ _ ` { } ~"
        )
    return stored


def check_exfat_label(label: str) -> str:
    """Return ``label`` if exFAT can hold it (at most 11 UTF-16 units, no characters that
    are invalid in file names); raise :class:`UsageError` saying why otherwise."""
    units = utf16_units(label)
    if units > MAX_LABEL_CHARS:
        raise UsageError(
            f"volume label {label!r} is {units} UTF-16 units long; exFAT allows {MAX_LABEL_CHARS}"
        )
    bad = sorted(set(label) & EXFAT_INVALID_CHARS)
    if bad:
        raise UsageError(f"volume label {label!r} contains characters exFAT forbids: {bad!r}")
    return label


#: the label rule of each filesystem fdffd writes
LABEL_RULES: dict[str, Callable[[str], str]] = {
    "fat32": check_fat32_label,
    "exfat": check_exfat_label,
}

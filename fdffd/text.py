"""The one sanitizer for untrusted text: strings a drive, a payload tree or a client supplied.

Vendor and model strings, labels, file names and control requests are untrusted: before they
reach a log line, a record or a terminal, :func:`clean_untrusted` drops what could hide or
rewrite text (control, format and bidi characters, lone surrogates, private-use and unassigned
code points), folds runs of blanks and caps the length.  :func:`shown` is the variant for a
path an operator must be able to recognise: it escapes instead of dropping.
"""

from __future__ import annotations

import re
import unicodedata

#: Unicode categories dropped from untrusted text: control, format (bidi overrides, zero-width),
#: surrogate, private use, unassigned, and the line/paragraph separators
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_UDEV_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
# bidirectional controls can make a shown path read differently from what it is
_HIDDEN = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x200E, 0x200F}

DEFAULT_LIMIT = 200


def clean_untrusted(untrusted: object, limit: int = DEFAULT_LIMIT) -> str:
    """``untrusted`` made safe for logs, records and terminals: whitespace runs become one
    space; control, format, surrogate, private-use and unassigned characters are dropped; at
    most ``limit`` characters, never ending in a blank (so cleaning is idempotent: a stored
    record re-validates to the same bytes).  Anything that is not a string becomes ``""``."""
    if not isinstance(untrusted, str):
        return ""
    kept: list[str] = []
    for ch in untrusted[: limit * 4]:
        if ch.isspace():
            kept.append(" ")
        elif unicodedata.category(ch) not in _DROP_CATEGORIES:
            kept.append(ch)
    return " ".join("".join(kept).split())[:limit].rstrip()


def clean_udev(untrusted: str | None, limit: int = 64) -> str:
    """A udev property value (vendor, model, serial) made safe: udev's ``\\xNN`` escapes
    decoded, then :func:`clean_untrusted`."""
    if not untrusted:
        return ""
    return clean_untrusted(_UDEV_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), untrusted), limit)


def shown(text: str) -> str:
    """``text`` safe for a terminal or a log, every character still recognisable: control and
    bidi characters escaped, bytes that were not UTF-8 (``os`` gives them as lone surrogates)
    shown as ``\\xNN``."""
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o <= 0xDFFF or o in _HIDDEN:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)

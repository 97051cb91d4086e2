"""Byte sizes: the binary units, and sizes as people write them in config files ("64MiB",
"8TiB", "500 MB").  The one place for ``KiB``, ``MiB``, ``GiB``, ``TiB`` and the sector."""

from __future__ import annotations

import re

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
#: the unit of sysfs ``size``, LBAs in MBR and GPT, and ``BLKGETSIZE``: 512 bytes whatever
#: the drive's own sector size
SECTOR = 512

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str | int) -> int:
    """Parse ``"64MiB"`` and friends to bytes; raise ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "64MiB", got a boolean')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative ({value})")
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f'{value!r} is not a size; write a number and a unit such as "64MiB"')
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(
            f"unknown unit {m.group(2)!r} in {value!r}; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
        )
    factor = _UNITS[unit]
    if "." in number:
        whole, frac = number.split(".")
        num = int(whole) * factor + (int(frac) * factor) // (10 ** len(frac))
    else:
        num = int(number) * factor
    return int(num)


def format_size(n: int) -> str:
    """Human-readable binary size, e.g. ``1.5 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < KiB or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= KiB
    raise AssertionError("unreachable")

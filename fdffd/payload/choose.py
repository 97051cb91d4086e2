"""Which of an audience's profiles goes on a drive: the first, largest first, that fits.

A pure function of what each profile needs and what the drive proved it holds.  The
reasons it gives for the profiles passed over name a nominal drive size ("needs a 32G
drive"), never exact byte counts, so a record does not fingerprint the drive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: a drive sold as N G holds at least this share of N * 10**9 bytes once formatted
_NOMINAL_SHARE = 0.9


@dataclass(frozen=True)
class Tried:
    """One profile considered, in the audience's order."""

    profile: str
    fits: bool
    reason: str | None = None


@dataclass(frozen=True)
class Choice:
    """The profile taken (None when none fits) and every profile looked at up to it."""

    profile: str | None
    tried: tuple[Tried, ...]


def nominal_size(needed: int) -> str:
    """The smallest drive size as sold (1G, 2G, 4G ... in powers of two) that holds
    ``needed`` bytes, e.g. "32G"; "1G" below that, and in T above 512G."""
    gib = 1
    while gib * 10**9 * _NOMINAL_SHARE < needed:
        gib *= 2
    return f"{gib // 1024}T" if gib >= 1024 else f"{gib}G"


def choose(candidates: Sequence[tuple[str, int]], capacity: int) -> Choice:
    """The first of ``candidates`` (name, bytes it needs on the drive, largest first)
    that fits ``capacity``, the drive's proven usable bytes.  Profiles after the one
    taken are not looked at; those before it say why they did not fit."""
    tried: list[Tried] = []
    for name, needed in candidates:
        if needed <= capacity:
            tried.append(Tried(name, True))
            return Choice(name, tuple(tried))
        tried.append(
            Tried(name, False, f"needs a {nominal_size(needed)} drive; this one proved smaller")
        )
    return Choice(None, tuple(tried))

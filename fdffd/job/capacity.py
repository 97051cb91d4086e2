"""The verify pass as the final word on capacity, and who may be rescued.

The verify pass reads every byte of the usable surface back.  Where the probe was fooled (a
cache larger than anything it wrote past the real flash, an alias onto a spot it did not
probe, a capacity that moved), the *shape* of the mismatches tells a capacity boundary from
bad flash:

- an **alias**: a mismatching range whose bytes decrypt to the same pass written for a
  higher offset: the drive wraps, with that period (the smallest one seen);
- a **dead region**: a long run of mismatches (at least ``TAIL_MIN``, or 1% of a small
  surface; runs closer than ``GAP`` count as one, so a region that keeps only some of its
  pages counts too) with no alias in it.  Whatever reads back right after it is a cache
  keeping the last writes past the real flash (or data aliased from below), not more real
  flash: the real capacity ends where the dead region starts.  A tail that reads wrong to
  the very end is the same boundary without a cache.

Bad flash is what is left: short, scattered mismatches or unreadable sectors.  The
capacity proven here is never above the start of the first dead region, so ``usable_bytes``
never exceeds the real capacity, whatever the verdict.  Bound: a cache as large as the
missing capacity leaves no dead region and reads back like real storage until the drive
loses power; no test through the host can tell them apart.
"""

from __future__ import annotations

from ..sizes import format_size

#: a mismatching run at least this long (or 1% of a smaller surface) is a dead region
TAIL_MIN = 1 << 20
#: mismatching runs closer than this are one run (a region that keeps some pages only)
GAP = 64 << 10


def dead_regions(bad: list[tuple[int, int]], end: int) -> list[tuple[int, int]]:
    """Runs of mismatches (sorted ``bad`` ranges joined across gaps below ``GAP``) that are
    long enough to be a capacity boundary on a surface of ``end`` bytes."""
    runs: list[tuple[int, int]] = []
    for start, n in sorted(bad):
        if runs and start - (runs[-1][0] + runs[-1][1]) < GAP:
            s0, _ = runs[-1]
            runs[-1] = (s0, max(runs[-1][0] + runs[-1][1], start + n) - s0)
        else:
            runs.append((start, n))
    least = min(TAIL_MIN, max(1, end // 100))
    return [(s, n) for s, n in runs if n >= least]


def _alias_period(aliases: list[tuple[int, int]]) -> int | None:
    periods = [written_for - read_at for read_at, written_for in aliases if written_for > read_at]
    return min(periods) if periods else None


def _first_dead(
    bad: list[tuple[int, int]], aliases: list[tuple[int, int]], end: int
) -> tuple[int, int] | None:
    """The first dead region with no alias inside it (an aliased run is the wrap's doing)."""
    seen = [read_at for read_at, _ in aliases]
    for s, n in dead_regions(bad, end):
        if not any(s <= a < s + n for a in seen):
            return s, n
    return None


def capacity_from_verify(
    bad: list[tuple[int, int]], aliases: list[tuple[int, int]], usable: int
) -> int | None:
    """The real capacity the verify pass proves, when it is below ``usable``: the smallest
    alias period, or the start of the first dead region, whichever is lower."""
    found = [c for c in (_alias_period(aliases), _dead_start(bad, aliases, usable)) if c]
    real = min(found) if found else None
    return real if real is not None and real < usable else None


def _dead_start(bad: list[tuple[int, int]], aliases: list[tuple[int, int]], end: int) -> int:
    dead = _first_dead(bad, aliases, end)
    return dead[0] if dead is not None else 0


def lost_tail(bad: list[tuple[int, int]], end: int) -> int | None:
    """Start of the first dead region (capacity the drive does not have), if any."""
    start = _dead_start(bad, [], end)
    return start or None


def verify_kind(
    bad: list[tuple[int, int]], aliases: list[tuple[int, int]], usable: int, probe_kind: str | None
) -> str:
    """The kind of fake the verify pass found: ``wraparound`` for an alias, ``cache`` when
    data read back right after the dead region (a cache hid it from the probe), else what
    the probe saw."""
    if _alias_period(aliases) is not None:
        return "wraparound"
    dead = _first_dead(bad, aliases, usable)
    if dead is not None and dead[0] + dead[1] < usable:
        return "cache"
    return probe_kind or "unknown"


def rescue_refusal(
    policy: str, usable: int, min_size: int, *, unstable: bool, boundaries: list[int] | None = None
) -> str | None:
    """Why a counterfeit may not be rescued under ``policy`` (None: it may)."""
    if policy != "rescue":
        return None
    if unstable:
        seen = ", ".join(format_size(b) for b in sorted(set(boundaries or []))) or "several"
        return (
            f"its capacity changed between probe rounds (boundaries at {seen}): such a drive "
            "forgets data and is never rescued"
        )
    if usable < min_size:
        return (
            f"its real capacity, {format_size(usable)}, is below drives.min_size "
            f"({format_size(min_size)}), so it is not rescued"
        )
    return None

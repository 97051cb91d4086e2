"""Timestamps as a real format and copy leave them (docs/imaging.md, "Timestamps").

Pure: nothing here reads a clock.  The caller draws one **base time** per drive
with :func:`draw_base_time` from a window that ends well before the station's date
(passed in as ``today``), and :func:`copy_times` spreads every entry's times from
it the way the footprint's copy does:

* the card was formatted a little before the copy (minutes to days);
* each file is **created** on the drive when the copy reaches it: the base time
  plus the time the copy of everything before it took, at a per-drive speed of a
  card reader (6 to 20 MB/s) with a little jitter per file;
* its **modified** time is the source file's, kept by the copy: some time (hours
  to a year) before the copy, per file;
* its **accessed** time is the copy time (FAT keeps only the date);
* a directory is created when the copy reaches it and modified when its last
  entry is added.

All randomness comes from ``seed`` bytes drawn per drive, so the same inputs give
the same times (tests), and two drives differ in every timestamp.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

#: The base time is never later than this many days before the station's date.
MIN_AGE_DAYS = 30
#: Default width of the window the base time is drawn from, in days.
DEFAULT_WINDOW_DAYS = 365
#: Copies happen in waking hours: the base time's hour is drawn from this range.
COPY_HOURS = (8, 23)
#: FAT's epoch; no timestamp may fall on its first day (an uninitialised clock's).
FAT_EPOCH = date(1980, 1, 1)

#: bytes of per-drive randomness the plan needs for the spread
SEED_BYTES = 16


@dataclass(frozen=True)
class EntryTimes:
    """The three times of one directory entry, naive local wall-clock times."""

    created: datetime
    modified: datetime
    accessed: datetime


def draw_base_time(
    today: date,
    rng: random.Random | None = None,
    *,
    window_days: int = DEFAULT_WINDOW_DAYS,
    min_age_days: int = MIN_AGE_DAYS,
) -> datetime:
    """A plausible copy time: a random day in ``[today - min_age - window, today -
    min_age)`` at a random time of day in waking hours.

    ``today`` is the station's date as the caller knows it; imaging never reads a
    clock.  ``rng`` defaults to the system's random source (tests pass a seeded one).
    Raises ``ValueError`` for a window that is empty or reaches back to 1980."""
    rng = rng or random.SystemRandom()
    if window_days < 1:
        raise ValueError(f"the base-date window must be at least one day, not {window_days}")
    if min_age_days < MIN_AGE_DAYS:
        raise ValueError(f"the base date must be at least {MIN_AGE_DAYS} days old")
    last = today - timedelta(days=min_age_days + 1)
    first = last - timedelta(days=window_days - 1)
    if first <= FAT_EPOCH + timedelta(days=366):
        raise ValueError(f"a base-date window starting {first} reaches back to the FAT epoch")
    day = first + timedelta(days=rng.randrange(window_days))
    seconds = rng.randrange(COPY_HOURS[0] * 3600, COPY_HOURS[1] * 3600)
    micro = rng.randrange(1_000_000)
    return datetime.combine(day, time()) + timedelta(seconds=seconds, microseconds=micro)


def spread_rng(seed: bytes) -> random.Random:
    """A generator for the spread, seeded from per-drive random bytes."""
    return random.Random(int.from_bytes(hashlib.sha256(seed).digest(), "big"))


@dataclass(frozen=True)
class CopyItem:
    """One entry in copy order: ``path`` and, for a file, its size (None: directory)."""

    path: str
    size: int | None


@dataclass(frozen=True)
class CopyTimes:
    """When the card was formatted and every entry's times."""

    formatted: datetime
    entries: dict[str, EntryTimes]
    #: sub-second part of the format time, in microseconds (serials use it)
    format_microsecond: int


def copy_times(base: datetime, items: Iterable[CopyItem], seed: bytes) -> CopyTimes:
    """Times for ``items`` (in the order the copy creates them), spread from ``base``.

    Every time lies in ``[base - 1 year, base + copy duration]``; none is later
    than the copy's end."""
    rng = spread_rng(seed)
    formatted = base - timedelta(seconds=rng.randrange(90, 3 * 86400))
    speed = rng.uniform(6e6, 20e6)  # bytes per second of this drive's copy
    clock = base
    entries: dict[str, EntryTimes] = {}
    last_child: dict[str, datetime] = {}
    for item in items:
        clock += timedelta(milliseconds=rng.randrange(5, 400))
        created = clock
        if item.size is None:
            entries[item.path] = EntryTimes(created, created, created)
        else:
            clock += timedelta(seconds=item.size / speed * rng.uniform(0.9, 1.15))
            age = timedelta(seconds=rng.randrange(3600, 365 * 86400))
            modified = base - age
            entries[item.path] = EntryTimes(created, modified, clock)
        parent = item.path.rpartition("/")[0]
        last_child[parent] = clock
    for path, when in last_child.items():
        if path in entries:
            t = entries[path]
            entries[path] = EntryTimes(t.created, max(when, t.created), max(when, t.accessed))
    return CopyTimes(formatted, entries, rng.randrange(1_000_000))

"""The imaging plan: (usable geometry, payload tree, options, randomness) -> ordered extents.

Pure: the per-drive randomness (GPT identifiers, the seed of the timestamp spread)
and the drive's base time (drawn by the caller with ``dates.draw_base_time`` from a
window that ends well before the station's date) are inputs, so the same inputs
always give the same plan, and tests need no device.  The plan lists, for the whole
usable surface, where the partition table, the filesystem metadata and each payload
file's bytes go; every byte it does not list is free space, which the image pass
fills with keyed fill or, with ``free_fill="zeros"``, with zeros (docs/imaging.md).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import FileTooLargeError, UsageError
from . import footprint as fp
from .dates import SEED_BYTES, CopyTimes, copy_times, draw_base_time
from .exfat import build_exfat, copy_items
from .fat32 import build_fat32
from .fatdir import MAX_FILE_BYTES, build_tree, copy_order
from .names import DEFAULT_CODEPAGE
from .partition import DISK_ID_BYTES, PartitionLayout, plan_partition
from .types import Extent, Fill, Source, Tree, VolumeLayout, Zeros

#: ``auto`` makes FAT32 up to this usable size and exFAT above (Android's rule).
FAT32_AUTO_LIMIT = fp.ANDROID_EXFAT_ABOVE_BYTES
#: the largest file FAT32 holds (its directory entries keep a 32-bit size)
FAT32_FILE_LIMIT = MAX_FILE_BYTES
#: random bytes a plan needs: the disk identifier (GPT GUIDs), then the seed of the
#: timestamp spread (which also gives the format time's sub-second part)
ID_BYTES = DISK_ID_BYTES + SEED_BYTES
#: What free space and file slack hold: keyed fill (the image pass's pattern) or zeros.
FREE_FILLS = ("keyed", "zeros")

__all__ = ["ID_BYTES", "ImagePlan", "build_plan", "choose_filesystem", "draw_base_time"]


def choose_filesystem(choice: str, usable_bytes: int, tree: Tree) -> str:
    """``auto``: FAT32 up to 32 GiB of usable size, exFAT above, and exFAT whenever a
    file has 4 GiB or more.  A forced ``fat32`` with such a file is an error."""
    big = [f for f in tree.files if f.size > FAT32_FILE_LIMIT]
    if choice == "fat32":
        if big:
            raise FileTooLargeError(
                path=big[0].path, size=big[0].size, filesystem="FAT32", limit=FAT32_FILE_LIMIT
            )
        return "fat32"
    if choice == "exfat":
        return "exfat"
    if big or usable_bytes > FAT32_AUTO_LIMIT:
        return "exfat"
    return "fat32"


@dataclass
class ImagePlan:
    """Everything the image pass writes, as absolute extents over ``[0, usable_bytes)``."""

    usable_bytes: int
    partition: PartitionLayout
    volume: VolumeLayout
    extents: list[Extent] = field(default_factory=list)  # sorted, non-overlapping, no Fill
    #: the source of every byte the extents leave out: ``Fill()`` or ``Zeros()``
    free: Source = field(default_factory=Fill)
    #: when the drive was formatted and every entry's times
    times: CopyTimes | None = None

    def __post_init__(self) -> None:
        self._starts = [e.offset for e in self.extents]

    @property
    def fs_type(self) -> str:
        return self.volume.fs_type

    @property
    def volume_id_text(self) -> str:
        """The serial as Windows shows it (``1A2B-3C4D``)."""
        v = self.volume.volume_id
        return f"{v >> 16:04X}-{v & 0xFFFF:04X}"

    def overlapping(self, offset: int, length: int) -> list[Extent]:
        """The non-fill extents that overlap ``[offset, offset+length)``, in order."""
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        out = []
        end = offset + length
        while i < len(self.extents) and self.extents[i].offset < end:
            e = self.extents[i]
            if e.end > offset:
                out.append(e)
            i += 1
        return out

    def segments(self, offset: int, length: int) -> list[Extent]:
        """``[offset, offset+length)`` cut into extents, gaps as ``self.free``, clipped."""
        out: list[Extent] = []
        pos = offset
        end = offset + length
        for e in self.overlapping(offset, length):
            if e.offset > pos:
                out.append(Extent(pos, e.offset - pos, self.free))
            start = max(e.offset, pos)
            stop = min(e.end, end)
            out.append(_clip(e, start, stop))
            pos = stop
        if pos < end:
            out.append(Extent(pos, end - pos, self.free))
        return out


def _clip(e: Extent, start: int, stop: int) -> Extent:
    from .types import Bytes, FileData

    src = e.source
    if start == e.offset and stop == e.end:
        return e
    if isinstance(src, Bytes):
        return Extent(start, stop - start, Bytes(src.data[start - e.offset : stop - e.offset]))
    if isinstance(src, FileData):
        return Extent(start, stop - start, FileData(src.entry, src.file_offset + start - e.offset))
    return Extent(start, stop - start, src)


def _times(fs: str, tree: Tree, base_time: datetime, seed: bytes) -> CopyTimes:
    fat = fs == "fat32"
    items = copy_order(build_tree(tree, DEFAULT_CODEPAGE)) if fat else copy_items(tree)
    return copy_times(base_time, items, seed)


def _volume(
    fs: str, part: PartitionLayout, tree: Tree, label: str, times: CopyTimes, media: str
) -> VolumeLayout:
    """The filesystem in the partition, with the serial its formatter derives from the
    format time."""
    when, micro = times.formatted, times.format_microsecond
    sector_bytes = part.sector_bytes
    if fs == "fat32":
        return build_fat32(
            part.partition_bytes,
            tree,
            volume_id=fp.newfs_msdos_serial(when, micro),
            label=label,
            hidden_sectors=0,  # Android's newfs_msdos leaves BPB_HiddSec zero
            sector_bytes=sector_bytes,
            media=media,
            times=times,
        )
    utc = when - timedelta(minutes=fp.UTC_OFFSET_MINUTES)
    seconds = int((utc - datetime(1970, 1, 1)).total_seconds())
    return build_exfat(
        part.partition_bytes,
        tree,
        volume_id=fp.exfatprogs_serial(seconds, micro * 1000 + micro % 997),
        label=label or fp.EXFAT_LABEL,
        partition_offset_sectors=part.partition_offset // sector_bytes,
        sector_bytes=sector_bytes,
        times=times,
    )


def build_plan(
    usable_bytes: int,
    tree: Tree,
    *,
    filesystem: str,
    label: str,
    ids: bytes,
    base_time: datetime,
    sector_bytes: int = 512,
    media: str = fp.DEFAULT_MEDIA,
    free_fill: str = "keyed",
) -> ImagePlan:
    """The image of a drive with ``usable_bytes`` of real capacity.

    ``ids`` are ``ID_BYTES`` random bytes drawn per drive (never the clock or the
    host); ``base_time`` is the drive's copy time, drawn per drive by the caller
    (``dates.draw_base_time``); ``media`` is ``sd`` or ``usb`` (``footprint``);
    ``free_fill`` says what free space and slack hold (``keyed`` or ``zeros``)."""
    if len(ids) != ID_BYTES:
        raise ValueError(f"ids must be {ID_BYTES} random bytes")
    if free_fill not in FREE_FILLS:
        raise UsageError(f"free_fill must be one of {FREE_FILLS}, not {free_fill!r}")
    fs = choose_filesystem(filesystem, usable_bytes, tree)
    part = plan_partition(
        usable_bytes, fs_type=fs, disk_id=ids[:DISK_ID_BYTES], sector_bytes=sector_bytes
    )
    times = _times(fs, tree, base_time, ids[DISK_ID_BYTES:])
    vol = _volume(fs, part, tree, label, times, media)
    extents = [e for e in part.extents if not isinstance(e.source, Fill)]
    extents += [
        Extent(part.partition_offset + e.offset, e.length, e.source)
        for e in vol.extents
        if not isinstance(e.source, Fill)
    ]
    extents.sort(key=lambda e: e.offset)
    for a, b in itertools.pairwise(extents):
        if a.end > b.offset:
            raise AssertionError(f"imaging extents overlap at {b.offset}")
    if extents and extents[-1].end > usable_bytes:
        raise AssertionError("imaging extents run past the usable size")
    free: Source = Zeros() if free_fill == "zeros" else Fill()
    return ImagePlan(
        usable_bytes=usable_bytes,
        partition=part,
        volume=vol,
        extents=extents,
        free=free,
        times=times,
    )

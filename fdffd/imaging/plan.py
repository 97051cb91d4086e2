"""The imaging plan: (usable geometry, payload tree, options, identifiers) -> ordered extents.

Pure: the random identifiers (disk identifier, volume serial) are inputs, so the same
inputs always give the same plan, and tests need no device.  The plan lists, for the
whole usable surface, where the partition table, the filesystem metadata and each
payload file's bytes go; every byte it does not list is keyed fill.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

from ..errors import FileTooLargeError
from ..sizes import GiB
from .exfat import build_exfat
from .fat32 import MAX_FILE_BYTES, build_fat32
from .partition import DISK_ID_BYTES, PartitionLayout, plan_partition
from .types import Extent, Fill, Tree, VolumeLayout

#: ``job.filesystem = "auto"`` picks FAT32 up to this usable size, exFAT above
FAT32_AUTO_LIMIT = 32 * GiB
#: the largest file FAT32 holds (its directory entries keep a 32-bit size)
FAT32_FILE_LIMIT = MAX_FILE_BYTES
#: random bytes a plan needs: the disk identifier, then a 32-bit volume serial
ID_BYTES = DISK_ID_BYTES + 4


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
        """``[offset, offset+length)`` cut into extents, gaps as ``Fill``, clipped."""
        out: list[Extent] = []
        pos = offset
        end = offset + length
        for e in self.overlapping(offset, length):
            if e.offset > pos:
                out.append(Extent(pos, e.offset - pos, Fill()))
            start = max(e.offset, pos)
            stop = min(e.end, end)
            out.append(_clip(e, start, stop))
            pos = stop
        if pos < end:
            out.append(Extent(pos, end - pos, Fill()))
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


def build_plan(
    usable_bytes: int,
    tree: Tree,
    *,
    filesystem: str,
    label: str,
    ids: bytes,
    sector_bytes: int = 512,
) -> ImagePlan:
    """The image of a drive with ``usable_bytes`` of real capacity.

    ``ids`` are ``ID_BYTES`` random bytes drawn per drive (never the clock or the
    host): the partition table's disk identifier and the volume serial."""
    if len(ids) != ID_BYTES:
        raise ValueError(f"ids must be {ID_BYTES} random bytes")
    fs = choose_filesystem(filesystem, usable_bytes, tree)
    part = plan_partition(
        usable_bytes, fs_type=fs, disk_id=ids[:DISK_ID_BYTES], sector_bytes=sector_bytes
    )
    volume_id = int.from_bytes(ids[DISK_ID_BYTES:], "little") or 1
    if fs == "fat32":
        vol = build_fat32(
            part.partition_bytes,
            tree,
            volume_id=volume_id,
            label=label,
            hidden_sectors=part.partition_offset // sector_bytes,
            sector_bytes=sector_bytes,
        )
    else:
        vol = build_exfat(
            part.partition_bytes,
            tree,
            volume_id=volume_id,
            label=label,
            partition_offset_sectors=part.partition_offset // sector_bytes,
            sector_bytes=sector_bytes,
        )
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
    return ImagePlan(usable_bytes=usable_bytes, partition=part, volume=vol, extents=extents)

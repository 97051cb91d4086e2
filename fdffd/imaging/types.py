"""Plain data shared by the pure imaging code: the payload tree going in, extents coming out.

Nothing here touches a device or reads a file.  A filesystem builder turns a
``Tree`` into a ``VolumeLayout``: the bytes its metadata needs and where each
payload file's data goes, all relative to the start of the volume.  Whatever a
layout does not cover is free space, which the image pass fills with the keyed
pattern or zeros (the plan's ``free``).  ``plan.py`` places the partition table
and the volume on the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileEntry:
    """A payload file: ``path`` is relative, '/'-separated, NFC; ``source`` is where to read it."""

    path: str
    size: int
    source: Path


@dataclass(frozen=True)
class Tree:
    """A payload tree. ``dirs`` lists every directory (empty ones included; parents of
    files may be listed or implied).  Paths never start with '/' and never contain
    '.' or '..' components."""

    files: tuple[FileEntry, ...] = ()
    dirs: tuple[str, ...] = ()
    #: paths (files or directories), most important first: they come first in their
    #: directory's listing and first on the drive; everything else after, by name
    priority: tuple[str, ...] = ()

    def rank(self, path: str) -> int:
        """Where ``path`` stands in ``priority``: the index of the first entry that is it,
        holds it or lies inside it; ``len(priority)`` when none does."""
        for i, p in enumerate(self.priority):
            if path == p or path.startswith(p + "/") or p.startswith(path + "/"):
                return i
        return len(self.priority)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


# --- extent sources ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bytes:
    """Literal bytes (filesystem metadata, partition tables)."""

    data: bytes


@dataclass(frozen=True)
class Zeros:
    """A run of zero bytes (e.g. an empty FAT region), kept symbolic to save memory."""


@dataclass(frozen=True)
class FileData:
    """Bytes of a payload file, starting ``file_offset`` bytes into it.  The tail of the
    last cluster past the end of the file is not part of this extent."""

    entry: FileEntry
    file_offset: int = 0


@dataclass(frozen=True)
class Fill:
    """Keyed, position-dependent fill (free space when the plan keeps keyed fill)."""


Source = Bytes | Zeros | FileData | Fill


@dataclass(frozen=True)
class Extent:
    """``length`` bytes at ``offset`` come from ``source``.  For ``Bytes``,
    ``len(source.data) == length``."""

    offset: int
    length: int
    source: Source

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass
class VolumeLayout:
    """What a filesystem builder returns.  Offsets are relative to the volume start,
    sorted and non-overlapping; gaps between extents are free space (keyed fill)."""

    fs_type: str  # "fat32" | "exfat"
    volume_bytes: int
    volume_id: int
    label: str
    cluster_bytes: int
    extents: list[Extent] = field(default_factory=list)

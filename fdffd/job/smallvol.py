"""A drive too small for the filesystem the job would write.

The plan is built after the probe, when the real capacity is known; a capacity FAT32 cannot
hold (fewer than 65,525 clusters: about 33 MiB with 512-byte sectors, 260 MiB with 4096-byte
ones) must not end the job before the drive is wiped.  The job wipes and verifies the whole
real capacity with keyed fill instead of an image, then fails (exit 5) naming both sizes.
"""

from __future__ import annotations

from ..errors import JobFailedError, UsageError, VolumeTooSmallError
from ..imaging.fat32 import MIN_CLUSTERS
from ..sizes import format_size

#: FAT32 metadata besides the clusters: 32 reserved sectors and the partition's 1 MiB offset
_RESERVED_SECTORS = 32
_PARTITION_OFFSET = 1 << 20
#: an imaging error this close above the FAT32 minimum is still "too small" (the estimate
#: leaves out alignment)
_MARGIN = 1.1


def fat32_minimum(sector_bytes: int) -> int:
    """About the smallest usable size that holds a FAT32 volume with ``sector_bytes``."""
    fat_sectors = -(-(MIN_CLUSTERS + 2) * 4 // sector_bytes)
    sectors = MIN_CLUSTERS + _RESERVED_SECTORS + 2 * fat_sectors
    return sectors * sector_bytes + _PARTITION_OFFSET


def volume_error(
    err: UsageError, usable: int, filesystem: str, sector_bytes: int, device: str
) -> JobFailedError:
    """The job failure (exit 5, after the wipe) for an imaging error on ``usable`` bytes."""
    needed = fat32_minimum(sector_bytes)
    if filesystem in ("auto", "fat32") and usable < needed * _MARGIN:
        return VolumeTooSmallError(
            available=usable,
            filesystem="FAT32",
            needed=f"about {format_size(needed)} with {sector_bytes}-byte sectors; "
            "the drive was wiped and verified, with no image",
        )
    return JobFailedError(
        f"{err.message}; the drive was wiped and verified, with no image", device=device
    )

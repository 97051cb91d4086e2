"""What a job needs of a drive: the one ``Disk`` protocol.

The probe, the wipe and image passes, the verify pass and the finish stage all move bytes
through this seam and nothing else.  :class:`fdffd.devices.blockdev.BlockDevice` is the real
drive (an exclusively opened whole disk); the test kit's in-memory disk is another, so every
verdict of the job can be decided without root on a disk that lives in memory.

Rules every implementation keeps:

- ``pread``/``pwrite`` move all of ``buf`` at ``offset`` (both multiples of the logical
  sector) or raise: :class:`~fdffd.errors.DeviceIOError` for a sector that fails (the passes
  map it), :class:`~fdffd.errors.DriveRemovedError` when the drive is gone.
- ``stage`` is set by the job before each stage (``probe``, ``wipe-1``, ``image``,
  ``verify``, ``finish``); errors name it.
- ``flush`` sends a cache flush; ``reread_partitions`` asks the system to look at the new
  partition table (a no-op where there is none).
- ``gone`` says whether the drive has disappeared (its device node is no longer there),
  to tell a pulled drive from a dying one when every request fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Geometry:
    """What the kernel says about a drive's size and sectors."""

    size_bytes: int
    logical_sector: int
    physical_sector: int
    read_only: bool


class Disk(Protocol):
    """A drive opened for one job."""

    #: the stage the job is in; set by the job, named in the errors the disk raises
    stage: str

    @property
    def path(self) -> str:
        """The drive's device path (or a name, for a drive that is not a device node)."""
        ...

    @property
    def size(self) -> int:
        """The size the drive announces, in bytes."""
        ...

    @property
    def geometry(self) -> Geometry: ...

    def pread(self, buf: memoryview, offset: int) -> None: ...

    def pwrite(self, buf: memoryview, offset: int) -> None: ...

    def flush(self) -> None: ...

    def reread_partitions(self) -> None: ...

    def gone(self) -> bool: ...

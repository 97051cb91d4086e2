"""The real drive: an exclusively opened whole disk, and the bytes moved to and from it.

:class:`BlockDevice` implements :class:`fdffd.devices.disk.Disk`, the seam every stage of a
job goes through.

A job holds its drive open ``O_RDWR | O_EXCL | O_DIRECT`` with ``flock(LOCK_EX)`` for
its whole life: the kernel refuses the open if anything else holds the disk
exclusively (a mount, a partition in use), and udev skips probing a locked disk,
so no automounter or partition re-read races the job.  ``O_DIRECT`` keeps the page
cache out of the way: what is read back comes from the drive.

OS error numbers become fdffd errors here, at one boundary.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import time
from pathlib import Path
from types import TracebackType

from ..errors import DeviceIOError, DriveRemovedError, RefusedError
from .disk import Geometry

BLKROGET = 0x125E
BLKSSZGET = 0x1268
BLKPBSZGET = 0x127B
BLKGETSIZE64 = 0x80081272
BLKFLSBUF = 0x1261
BLKRRPART = 0x125F

#: errno values that mean the drive is gone, not that a sector is bad
GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO, errno.ENOMEDIUM, errno.ESHUTDOWN})


#: how long to wait for the disk's flock: udevd holds a shared one while it probes a disk
#: that just changed (systemd's block device locking), which takes a moment
LOCK_WAIT = 10.0


def _lock_exclusive(fd: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def aligned_buffer(size: int, slack: int = 4096) -> mmap.mmap:
    """A page-aligned anonymous buffer of ``size + slack`` bytes (``O_DIRECT`` needs
    aligned memory; the slack is room the keyed generator writes past the end)."""
    return mmap.mmap(-1, size + slack)


def _ioctl_int(fd: int, request: int, fmt: str) -> int:
    buf = bytearray(struct.calcsize(fmt))
    fcntl.ioctl(fd, request, buf)
    return int(struct.unpack(fmt, buf)[0])


def query_geometry(fd: int) -> Geometry:
    return Geometry(
        size_bytes=_ioctl_int(fd, BLKGETSIZE64, "Q"),
        logical_sector=_ioctl_int(fd, BLKSSZGET, "i"),
        physical_sector=_ioctl_int(fd, BLKPBSZGET, "I"),
        read_only=bool(_ioctl_int(fd, BLKROGET, "i")),
    )


def read_only_flag(path: str) -> bool:
    """``BLKROGET`` through a read-only, non-exclusive open (used by the safety gate)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return bool(_ioctl_int(fd, BLKROGET, "i"))
    finally:
        os.close(fd)


class BlockDevice:
    """An exclusively opened whole disk.  Use as a context manager."""

    def __init__(self, path: str, *, stage: str = "admit") -> None:
        self.path = path
        self.stage = stage
        self.fd = -1
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DriveRemovedError(device=path, stage=stage) from None
        if not stat.S_ISBLK(st.st_mode):
            raise RefusedError("not a block device", device=path, rule="block-device")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_EXCL | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.EBUSY:
                raise RefusedError(
                    "in use: another process or a mount holds it exclusively",
                    device=path,
                    rule="exclusive",
                ) from None
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise RefusedError(
                    "write-protected: the drive refuses writes (flip its lock switch)",
                    device=path,
                    rule="read-only",
                ) from None
            raise self._error(err, 0) from None
        if not _lock_exclusive(self.fd, LOCK_WAIT):
            os.close(self.fd)
            self.fd = -1
            raise RefusedError(
                f"locked by another process for over {LOCK_WAIT:.0f} s",
                device=path,
                rule="exclusive",
            )
        self.geometry = query_geometry(self.fd)
        if self.geometry.read_only:
            self.close()
            raise RefusedError(
                "write-protected: the drive refuses writes (flip its lock switch)",
                device=path,
                rule="read-only",
            )

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> BlockDevice:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def size(self) -> int:
        return self.geometry.size_bytes

    # -- I/O -------------------------------------------------------------------------

    def _error(self, err: OSError, offset: int) -> Exception:
        if err.errno in GONE_ERRNOS or not Path(self.path).exists():
            return DriveRemovedError(device=self.path, stage=self.stage)
        return DeviceIOError(
            os.strerror(err.errno or errno.EIO), device=self.path, stage=self.stage, offset=offset
        )

    def pwrite(self, buf: memoryview, offset: int) -> None:
        """Write all of ``buf`` at ``offset`` (aligned); raise fdffd errors."""
        done = 0
        total = len(buf)
        while done < total:
            try:
                n = os.pwrite(self.fd, buf[done:], offset + done)
            except OSError as err:
                raise self._error(err, offset + done) from err
            if n <= 0:
                raise DeviceIOError(
                    "short write", device=self.path, stage=self.stage, offset=offset + done
                )
            done += n

    def pread(self, buf: memoryview, offset: int) -> None:
        """Fill all of ``buf`` from ``offset`` (aligned); raise fdffd errors."""
        done = 0
        total = len(buf)
        while done < total:
            try:
                n = os.preadv(self.fd, [buf[done:]], offset + done)
            except OSError as err:
                raise self._error(err, offset + done) from err
            if n <= 0:
                raise DeviceIOError(
                    "short read", device=self.path, stage=self.stage, offset=offset + done
                )
            done += n

    def flush(self) -> None:
        """Flush the drive's write cache (``fsync`` on a block device sends a cache flush)."""
        try:
            os.fsync(self.fd)
        except OSError as err:
            raise self._error(err, 0) from err

    def gone(self) -> bool:
        """Whether the drive's device node has disappeared (the drive was pulled)."""
        return not os.path.exists(self.path)

    def reread_partitions(self) -> None:
        """Ask the kernel to re-read the partition table (best effort)."""
        try:
            fcntl.ioctl(self.fd, BLKRRPART)
        except OSError:
            pass

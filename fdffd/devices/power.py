"""Power a finished USB drive off, the way ``udisksctl power-off`` does.

A finished drive leaves the bus, its LED goes dark, and the volunteer knows it is safe to pull.
The kernel side is one sysfs write: ``1`` to the ``remove`` attribute of the drive's USB device
(the kernel flushes nothing for us, so the drive's cache is flushed first), or ``0`` to its
``authorized`` attribute on kernels without ``remove``.

What is powered off is always the *nearest* USB device above the disk: the stick itself, never
the hub it sits on.  Nothing is powered off when that device is a hub or a root hub, or when it
carries other disks too (a multi-slot card reader: pulling its power would end the other slots'
jobs).  Loop, virtio, NVMe and built-in SD slots are not USB and are left alone.

``usb_device_dir`` and ``shared_with`` only read a sysfs tree (a fake one in the tests);
``power_off`` acts.  ``power_off`` never raises: a drive that cannot be powered off is still a
finished drive, so the result is a sentence for the log that starts with one of the fixed
prefixes below.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from ..text import clean_untrusted
from .blockdev import BLKFLSBUF
from .sysfs import read_attr

#: result prefixes: stable words a caller (or a grep) can branch on
POWERED_OFF = "powered off"
NOT_USB = "not a USB drive"
NOT_POWERED_OFF = "not powered off"

SYS = Path("/sys")


def _uevent(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in read_attr(path / "uevent").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def is_usb_device(path: Path) -> bool:
    """A sysfs directory of a whole USB device (not one of its interfaces, not a port)."""
    if _uevent(path).get("DEVTYPE") == "usb_device":
        return True
    # sysfs without uevent details: a USB device has ids, a bus and a device number
    return all((path / name).is_file() for name in ("idVendor", "busnum", "devnum"))


def usb_device_dir(sys_block_path: str | os.PathLike[str]) -> Path | None:
    """The USB device directory a disk hangs off, or None when the disk is not on USB.

    ``sys_block_path`` is the disk's sysfs directory, e.g. ``/sys/class/block/sdb`` (a partition
    is taken to its disk).  The walk goes up from the disk's ``device`` link
    (SCSI device → target → host → USB interface → USB device) and stops at the first
    ``usb_device``, which is the drive itself, not the hub it is plugged into.
    """
    block = Path(os.path.realpath(sys_block_path))
    if (block / "partition").exists():
        block = block.parent
    device = block / "device"
    if not device.exists():
        return None  # virtual devices (loop, dm, zram) have no device link
    node = Path(os.path.realpath(device))
    while node.name and node.name != "devices":
        if is_usb_device(node):
            return node
        node = node.parent
    return None


def shared_with(usb_dir: Path, disk_name: str) -> list[str]:
    """Other disks carried by the same USB device (the other slots of a card reader)."""
    others: set[str] = set()
    for root, dirs, _files in os.walk(usb_dir):  # does not follow symlinks
        if os.path.basename(root) == "block":
            others.update(d for d in dirs if d != disk_name)
            dirs.clear()
    return sorted(others)


def _refusal(usb_dir: Path, disk_name: str) -> str | None:
    """Why this USB device must stay powered, or None."""
    if usb_dir.name.startswith("usb") or read_attr(usb_dir / "devpath") == "0":
        return f"{usb_dir.name} is a root hub"
    if read_attr(usb_dir / "bDeviceClass") == "09":
        return f"{usb_dir.name} is a hub"
    others = shared_with(usb_dir, disk_name)
    if others:
        return (
            f"USB device {usb_dir.name} also carries {', '.join(others)} "
            "(a multi-slot card reader); powering it off would cut the other slots"
        )
    return None


def describe(usb_dir: Path) -> str:
    """``1-1.3 (0781:5567 SanDisk Cruzer Blade)``, from untrusted sysfs strings."""
    ids = f"{read_attr(usb_dir / 'idVendor')}:{read_attr(usb_dir / 'idProduct')}"
    names = " ".join(
        s
        for s in (
            clean_untrusted(read_attr(usb_dir / "manufacturer"), 32),
            clean_untrusted(read_attr(usb_dir / "product"), 48),
        )
        if s
    )
    inside = " ".join(s for s in (ids if ids != ":" else "", names) if s)
    return f"{usb_dir.name} ({inside})" if inside else usb_dir.name


def _flush(device_path: str) -> str | None:
    """Send the drive a cache flush; an error sentence, or None when it went through."""
    try:
        fd = os.open(device_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        return f"cannot open {device_path} to flush it: {err.strerror}"
    try:
        os.fsync(fd)  # on a block device: write back, then a FLUSH CACHE to the drive
        try:
            fcntl.ioctl(fd, BLKFLSBUF)  # drop cached pages too; needs CAP_SYS_ADMIN
        except OSError:
            pass  # the service runs without capabilities; fdffd writes O_DIRECT anyway
    except OSError as err:
        return f"flushing {device_path} failed: {err.strerror}"
    finally:
        os.close(fd)
    return None


def _sys_block_dir(device_path: str, sys_root: Path) -> Path | None:
    st = os.stat(device_path)
    if not stat.S_ISBLK(st.st_mode):
        return None
    return sys_root / "dev" / "block" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def power_off(device_path: str, *, sys_root: Path = SYS) -> str:
    """Flush the drive, then take its USB device off the bus.  Never raises.

    Returns one sentence for the log, starting with ``powered off``, ``not a USB drive`` or
    ``not powered off``.  Call it after the job has closed the drive.
    """
    try:
        block = _sys_block_dir(device_path, sys_root)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
            return f"{NOT_POWERED_OFF}: {device_path} is already gone"
        return f"{NOT_POWERED_OFF}: {device_path}: {err.strerror}"
    if block is None:
        return f"{NOT_USB}: {device_path} is not a block device; left alone"
    usb_dir = usb_device_dir(block)
    if usb_dir is None:
        return f"{NOT_USB}: {device_path} is not on USB; left powered"
    disk_name = Path(os.path.realpath(block)).name
    why = _refusal(usb_dir, disk_name)
    if why is not None:
        return f"{NOT_POWERED_OFF}: {why}"
    failed_flush = _flush(device_path)
    if failed_flush is not None:
        return f"{NOT_POWERED_OFF}: {failed_flush}"
    who = describe(usb_dir)
    remove = usb_dir / "remove"
    target, value = (remove, "1") if remove.exists() else (usb_dir / "authorized", "0")
    try:
        with open(target, "w") as f:
            f.write(value)
    except OSError as err:
        hint = ""
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            hint = (
                " (sysfs is not writable here; the unit needs ReadWritePaths=/sys/devices,"
                " see docs/operator.md)"
            )
        return f"{NOT_POWERED_OFF}: writing {value} to {target} failed: {err.strerror}{hint}"
    return f"{POWERED_OFF}: USB device {who} via {target.name}={value}; safe to pull"

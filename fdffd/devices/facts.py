"""Gather the facts the safety gate decides on: sysfs, mountinfo, swaps, holders, udev.

This module only observes; ``fdffd.job.gate`` decides.  ``gather`` is a list of named
steps, each reading one kind of fact.  Strings read from the drive (vendor, model, serial)
are untrusted and are cleaned (``fdffd.text``) before anything else sees them.  udev's
data comes from the one udev adapter (``fdffd.devices.udev``); when it has none, the facts
say so in ``udev_missing`` and the gate refuses the drive.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..text import clean_untrusted
from .blockdev import read_only_flag
from .sysfs import (
    SYS_BLOCK,
    Devnum,
    Mount,
    current_mounts,
    devnum_attr,
    devnum_of_path,
    disk_of_devnum,
    loop_backing,
    loop_names,
    loop_port,
    may_hold_device_node,
    mount_devnums,
    parse_mountinfo,
    rdev,
    read_attr,
    swap_areas,
    sysfs_dir,
)
from .udev import UDEV_WAIT, DiskIdentity, UdevData, disk_identity, is_loop, lookup

__all__ = [
    "DeviceFacts",
    "Mount",
    "disk_of_devnum",
    "gather",
    "loop_port",
    "parse_mountinfo",
]


@dataclass(frozen=True)
class DeviceFacts:
    """Everything the gate needs, as plain data."""

    path: str
    name: str
    exists: bool = True
    is_block: bool = True
    whole_disk: bool = True
    devnum: Devnum = (0, 0)
    bus: str = ""
    port: str = ""
    size_bytes: int = 0
    read_only: bool = False
    partitions: tuple[str, ...] = ()
    mounted: tuple[str, ...] = ()  # mount points on the disk or its partitions
    swap: tuple[str, ...] = ()  # swap areas on the disk or its partitions
    holders: tuple[str, ...] = ()  # dm/md/LVM etc. holding the disk or its partitions
    hosts: tuple[str, ...] = ()  # "root", "state_dir", "payload_dir" living on this disk
    exclusive: bool = True  # an O_EXCL open succeeds (nothing claims the disk or a partition)
    diskseq: int | None = None
    vendor: str = ""
    model: str = ""
    serial: str = ""
    udev: dict[str, str] = field(default_factory=dict)
    #: what udev data is missing and what to do ("" when udev knows the device)
    udev_missing: str = ""


@dataclass(frozen=True)
class _Disk:
    """A block device the kernel knows, found by its number."""

    path: str
    name: str  # the kernel's name (from sysfs), not the node's
    devnum: Devnum
    sysdir: Path

    @property
    def whole(self) -> bool:
        return not (self.sysdir / "partition").exists()


@dataclass(frozen=True)
class _Members:
    """The disk and its partitions: what a mount, swap or holder may sit on."""

    names: tuple[str, ...]
    partitions: tuple[str, ...]
    devnums: frozenset[Devnum]


def gather(
    path: str, *, state_dir: Path, payload_dir: Path, udev_wait: float = UDEV_WAIT
) -> DeviceFacts:
    """Observe ``path`` and the system around it."""
    found = _find_disk(path)
    if isinstance(found, DeviceFacts):
        return found
    disk = found
    members = _members(disk)
    mounts = current_mounts()
    udev = lookup(disk.devnum, wait=udev_wait)
    size = int(read_attr(disk.sysdir / "size") or 0) * 512
    identity = _identity(disk, udev)
    return DeviceFacts(
        path=path,
        name=disk.name,
        whole_disk=disk.whole,
        devnum=disk.devnum,
        bus=identity.bus,
        port=identity.port,
        size_bytes=size,
        read_only=_read_only(disk),
        partitions=members.partitions,
        mounted=_mounted(members, mounts),
        swap=_swap(members),
        holders=_holders(members, mounts),
        hosts=_hosts(disk.name, mounts, state_dir=state_dir, payload_dir=payload_dir),
        exclusive=_exclusive_open_possible(path) if size else True,
        diskseq=_diskseq(disk, udev),
        vendor=identity.vendor,
        model=identity.model,
        serial=identity.serial,
        udev=dict(udev.properties),
        udev_missing=udev.missing,
    )


# --- the steps -------------------------------------------------------------------------------


def _find_disk(path: str) -> _Disk | DeviceFacts:
    """The block device at ``path``, or the facts of what is there instead (nothing, no
    block device, a number the kernel no longer knows)."""
    name = os.path.basename(os.path.realpath(path))
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return DeviceFacts(path=path, name=name, exists=False, is_block=False)
    if not stat.S_ISBLK(st.st_mode):
        return DeviceFacts(path=path, name=name, is_block=False)
    devnum = (os.major(st.st_rdev), os.minor(st.st_rdev))
    sysdir = sysfs_dir(devnum)
    if sysdir is None:  # the kernel does not know this device number (gone meanwhile)
        return DeviceFacts(path=path, name=name, exists=False, devnum=devnum)
    return _Disk(path, sysdir.name, devnum, SYS_BLOCK / sysdir.name)


def _members(disk: _Disk) -> _Members:
    partitions: tuple[str, ...] = ()
    if disk.whole:
        partitions = tuple(
            sorted(p.name for p in disk.sysdir.iterdir() if (p / "partition").exists())
        )
    names = (disk.name, *partitions)
    devnums = frozenset(dn for dn in map(devnum_attr, names) if dn is not None)
    return _Members(names, partitions, devnums)


def _mounted(members: _Members, mounts: list[Mount]) -> tuple[str, ...]:
    """Mount points on the disk or one of its partitions."""
    return tuple(dict.fromkeys(mp for dn, mp in mount_devnums(mounts) if dn in members.devnums))


def _swap(members: _Members) -> tuple[str, ...]:
    """Swap areas on the disk or one of its partitions (by device number, or by the name a
    ``/dev`` path resolves to)."""
    found = []
    for area in swap_areas():
        real = Path(area).resolve().name if area.startswith("/dev/") else ""
        if rdev(area) in members.devnums or real in members.names:
            found.append(area)
    return tuple(found)


def _holders(members: _Members, mounts: list[Mount]) -> tuple[str, ...]:
    """dm/md/LVM devices holding the disk or a partition, and loop devices over them."""
    holders: list[str] = []
    for m in members.names:
        hdir = SYS_BLOCK / m / "holders"
        if hdir.is_dir():
            holders.extend(h.name for h in hdir.iterdir())
    holders.extend(_loops_backed_by(members.devnums, mounts))
    return tuple(sorted(set(holders)))


def _loops_backed_by(devnums: frozenset[Devnum], mounts: list[Mount]) -> list[str]:
    """Loop devices whose backing file is the disk or one of its partitions: the kernel
    lists no holder for them and the loop driver does not claim its backing device, yet
    wiping the disk would pull the ground from under them."""
    found = []
    for name in loop_names():
        backing = loop_backing(name)
        # only where a device node can be: a stat of another drive's FUSE file (a fake
        # drive's, a stuck one's) could wait on its server and hang this job
        if may_hold_device_node(backing, mounts) and rdev(backing) in devnums:
            found.append(f"{name} (a loop device over {backing})")
    return found


def _hosts(
    name: str, mounts: list[Mount], *, state_dir: Path, payload_dir: Path
) -> tuple[str, ...]:
    """Which of ``/``, the state dir and the payload dir live on disk ``name``."""
    hosts = []
    for label, p in (("root", Path("/")), ("state_dir", state_dir), ("payload_dir", payload_dir)):
        if name in _disks_under(p, mounts):
            hosts.append(label)
    return tuple(hosts)


def _disks_under(p: Path, mounts: list[Mount]) -> set[str | None]:
    """The disks holding ``p`` (or its nearest existing parent)."""
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    dn = devnum_of_path(probe)
    if dn is None:
        return set()
    disks = {disk_of_devnum(dn)}
    if dn[0] == 0:  # btrfs and friends: the mount's source names the disk
        on_it = [m for m in mounts if m.devnum == dn]
        disks |= {disk_of_devnum(src) for src, _ in mount_devnums(on_it)}
    return disks


def _read_only(disk: _Disk) -> bool:
    """The kernel's read-only flag (sysfs ``ro``), or ``BLKROGET`` when sysfs says writable."""
    if read_attr(disk.sysdir / "ro") == "1":
        return True
    try:
        return read_only_flag(disk.path)
    except OSError:
        return False


def _exclusive_open_possible(path: str) -> bool:
    """Whether ``O_EXCL`` succeeds now (read-only, closed at once, nothing is written).
    The kernel refuses it while a filesystem, swap, dm/md or another process claims the
    disk or one of its partitions."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        return err.errno != errno.EBUSY
    os.close(fd)
    return True


def _diskseq(disk: _Disk, udev: UdevData) -> int | None:
    """The kernel's sequence number of the medium (sysfs first, then udev's copy)."""
    text = read_attr(disk.sysdir / "diskseq") or udev.properties.get("DISKSEQ", "")
    return int(text) if text.isdigit() else None


def _identity(disk: _Disk, udev: UdevData) -> DiskIdentity:
    """Bus and port from udev (a loop device's from the kernel), vendor and model from udev
    or the kernel's SCSI attributes, all cleaned."""
    ident = disk_identity(
        disk.name, udev.properties, loop_port=loop_port(disk.name) if is_loop(disk.name) else ""
    )
    vendor = ident.vendor or clean_untrusted(read_attr(disk.sysdir / "device" / "vendor"), 64)
    model = ident.model or clean_untrusted(read_attr(disk.sysdir / "device" / "model"), 64)
    serial = ident.serial or clean_untrusted(read_attr(disk.sysdir / "device" / "serial"), 128)
    if is_loop(disk.name) and not vendor:
        vendor, model = "Linux", "loop"
    return replace(ident, vendor=vendor, model=model, serial=serial)

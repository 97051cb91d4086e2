"""Gather the facts the safety gate decides on: sysfs, mountinfo, swaps, holders, udev.

This module only observes; ``fdffd.job.gate`` decides.  Strings read from the drive
(vendor, model, serial) are untrusted and are cleaned before anything else sees them.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .blockdev import read_only_flag

SYS_BLOCK = Path("/sys/class/block")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UDEV_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def clean_untrusted(untrusted: str | None, limit: int = 64) -> str:
    """Make a drive-supplied string safe for logs, terminals and records: decode udev's
    ``\\xNN`` escapes, drop control characters, collapse blanks, cap the length."""
    if not untrusted:
        return ""
    s = _UDEV_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), untrusted)
    s = _CONTROL.sub("", s)
    s = " ".join(s.split())
    return s[:limit]


@dataclass(frozen=True)
class DeviceFacts:
    """Everything the gate needs, as plain data."""

    path: str
    name: str
    exists: bool = True
    is_block: bool = True
    whole_disk: bool = True
    devnum: tuple[int, int] = (0, 0)
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


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _udev_properties(path: str) -> dict[str, str]:
    """Properties from the udev database when udev knows the device, else {}."""
    try:
        import pyudev

        ctx = pyudev.Context()
        dev = pyudev.Devices.from_device_file(ctx, path)
        return {str(k): str(v) for k, v in dev.properties.items()}
    except Exception:
        return {}


def _devnum_of_path(p: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return (os.major(st.st_dev), os.minor(st.st_dev))


def _disk_of_devnum(devnum: tuple[int, int]) -> str | None:
    """The whole-disk name holding block device ``major:minor`` (a partition's parent)."""
    if devnum[0] == 0:
        return None  # tmpfs, overlay and friends live on no disk
    link = Path(f"/sys/dev/block/{devnum[0]}:{devnum[1]}")
    try:
        real = link.resolve(strict=True)
    except OSError:
        return None
    if (real / "partition").exists():
        return real.parent.name
    return real.name


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as ``\\ooo``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    devnum: tuple[int, int]
    mount_point: str
    source: str


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/self/mountinfo`` text: device number, mount point, source."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or ":" not in parts[2]:
            continue
        major, _, minor = parts[2].partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        source = ""
        if "-" in parts[5:]:
            rest = parts[parts.index("-", 5) + 1 :]
            source = _unescape(rest[1]) if len(rest) > 1 else ""
        out.append(Mount((int(major), int(minor)), _unescape(parts[4]), source))
    return out


def _rdev(path: str) -> tuple[int, int] | None:
    """``major:minor`` of the block device node at ``path``, or None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return (os.major(st.st_rdev), os.minor(st.st_rdev))


def _mount_devnums(mounts: list[Mount]) -> list[tuple[tuple[int, int], str]]:
    """(block device, mount point) of every mount.  The device is the mount's ``st_dev``,
    and also its source device when that differs: btrfs, for one, gives its mounts an
    anonymous ``0:N`` device, and only the source names the disk."""
    out = []
    for m in mounts:
        out.append((m.devnum, m.mount_point))
        if m.source.startswith("/dev/"):
            src = _rdev(m.source)
            if src is not None and src != m.devnum:
                out.append((src, m.mount_point))
    return out


def _mounts_of(mounts: list[Mount], devnum: tuple[int, int]) -> list[Mount]:
    return [m for m in mounts if m.devnum == devnum]


def _loops_backed_by(
    member_devnums: dict[tuple[int, int], str], mounts: list[Mount]
) -> list[str]:
    """Loop devices whose backing file is the disk or one of its partitions: the kernel
    lists no holder for them and the loop driver does not claim its backing device, yet
    wiping the disk would pull the ground from under them."""
    # only device nodes: a stat of a regular backing file could wait on a FUSE server (a
    # fake drive's, a stuck one's) and hang the job of an unrelated drive; so only paths on
    # /dev itself, never under a mount below it (/dev/shm, and a FUSE mount inside that)
    below_dev = [m.mount_point + "/" for m in mounts if m.mount_point.startswith("/dev/")]
    found = []
    for entry in sorted(SYS_BLOCK.glob("loop*")):
        backing = _read(entry / "loop" / "backing_file").removesuffix(" (deleted)")
        if not backing.startswith("/dev/") or any(backing.startswith(m) for m in below_dev):
            continue
        if _rdev(backing) in member_devnums:
            found.append(f"{entry.name} (a loop device over {backing})")
    return found


def _swap_devices() -> list[str]:
    lines = _read(Path("/proc/swaps")).splitlines()[1:]
    return [ln.split()[0] for ln in lines if ln.split()]


def _bus_from_sysfs(sysdir: Path, name: str) -> str:
    if name.startswith("loop"):
        return "loop"
    try:
        real = str(sysdir.resolve())
    except OSError:
        return ""
    for marker, bus in (
        ("/usb", "usb"),
        ("/mmc", "mmc"),
        ("/nvme", "nvme"),
        ("/ata", "ata"),
        ("/virtio", "virtio"),
        ("/scsi", "scsi"),
    ):
        if marker in real:
            return bus
    return ""


def loop_port(name: str) -> str:
    """A loop device's "port" is the file it is attached to (``loop:/path``), so that
    ``drives.ports`` globs can confine the demo and tests to the loop devices they made."""
    backing = _read(SYS_BLOCK / name / "loop" / "backing_file")
    return f"loop:{backing}" if backing else ""


def _sysfs_dir(devnum: tuple[int, int]) -> Path | None:
    """The device's own sysfs directory, found by its number: a node's *name* proves
    nothing (``mknod /tmp/stick b 8 1`` is ``sda1`` under another name)."""
    try:
        real = Path(f"/sys/dev/block/{devnum[0]}:{devnum[1]}").resolve(strict=True)
    except OSError:
        return None
    return real if (real / "dev").exists() else None


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


def gather(path: str, *, state_dir: Path, payload_dir: Path) -> DeviceFacts:
    """Observe ``path`` and the system around it."""
    name = os.path.basename(os.path.realpath(path))
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return DeviceFacts(path=path, name=name, exists=False, is_block=False)
    if not stat.S_ISBLK(st.st_mode):
        return DeviceFacts(path=path, name=name, is_block=False)
    devnum = (os.major(st.st_rdev), os.minor(st.st_rdev))
    found = _sysfs_dir(devnum)
    if found is None:  # the kernel does not know this device number (gone meanwhile)
        return DeviceFacts(path=path, name=name, exists=False, devnum=devnum)
    name = found.name
    sysdir = SYS_BLOCK / name
    whole = not (sysdir / "partition").exists()
    partitions = (
        tuple(sorted(p.name for p in sysdir.iterdir() if (p / "partition").exists()))
        if whole
        else ()
    )
    members = [name, *partitions]
    member_devnums: dict[tuple[int, int], str] = {}
    for m in members:
        dev = _read(SYS_BLOCK / m / "dev")
        if ":" in dev:
            a, b = dev.split(":")
            member_devnums[(int(a), int(b))] = m

    mounts = parse_mountinfo(_read(Path("/proc/self/mountinfo")))
    mounted = tuple(dict.fromkeys(mp for dn, mp in _mount_devnums(mounts) if dn in member_devnums))

    swap = []
    for dev in _swap_devices():
        dn = _devnum_of_path(Path(dev)) if dev.startswith("/dev/") else None
        real = Path(dev).resolve().name if dev.startswith("/dev/") else ""
        try:
            st_swap = os.stat(dev)
            if stat.S_ISBLK(st_swap.st_mode):
                dn = (os.major(st_swap.st_rdev), os.minor(st_swap.st_rdev))
        except OSError:
            pass
        if (dn and dn in member_devnums) or real in members:
            swap.append(dev)

    holders: list[str] = []
    for m in members:
        hdir = SYS_BLOCK / m / "holders"
        if hdir.is_dir():
            holders.extend(h.name for h in hdir.iterdir())
    holders.extend(_loops_backed_by(member_devnums, mounts))

    hosts = []
    for label, p in (("root", Path("/")), ("state_dir", state_dir), ("payload_dir", payload_dir)):
        probe = p
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        dn = _devnum_of_path(probe)
        disks = {_disk_of_devnum(dn)} if dn else set()
        if dn and dn[0] == 0:  # btrfs and friends: the mount's source names the disk
            disks |= {_disk_of_devnum(src) for src, _ in _mount_devnums(_mounts_of(mounts, dn))}
        if name in disks:
            hosts.append(label)

    size = int(_read(sysdir / "size") or 0) * 512
    exclusive = _exclusive_open_possible(path) if size else True
    ro = _read(sysdir / "ro") == "1"
    if not ro:
        try:
            ro = read_only_flag(path)
        except OSError:
            pass

    props = _udev_properties(path)
    bus = props.get("ID_BUS", "") or _bus_from_sysfs(sysdir, name)
    if name.startswith("loop"):
        bus = "loop"
    diskseq_s = props.get("DISKSEQ") or _read(sysdir / "diskseq")
    vendor = (
        props.get("ID_VENDOR_ENC") or props.get("ID_VENDOR") or _read(sysdir / "device" / "vendor")
    )
    model = props.get("ID_MODEL_ENC") or props.get("ID_MODEL") or _read(sysdir / "device" / "model")
    serial = props.get("ID_SERIAL_SHORT") or _read(sysdir / "device" / "serial")
    if name.startswith("loop") and not vendor:
        vendor, model = "Linux", "loop"
    return DeviceFacts(
        path=path,
        name=name,
        whole_disk=whole,
        devnum=devnum,
        bus=bus,
        port=loop_port(name) if bus == "loop" else clean_untrusted(props.get("ID_PATH", ""), 128),
        size_bytes=size,
        read_only=ro,
        partitions=partitions,
        mounted=mounted,
        swap=tuple(swap),
        holders=tuple(sorted(set(holders))),
        hosts=tuple(hosts),
        exclusive=exclusive,
        diskseq=int(diskseq_s) if diskseq_s.isdigit() else None,
        vendor=clean_untrusted(vendor),
        model=clean_untrusted(model),
        serial=clean_untrusted(serial, 128),
        udev=props,
    )

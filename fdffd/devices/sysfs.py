"""Reading the kernel's view of block devices: sysfs attributes, device numbers, mountinfo.

Small readers shared by ``facts`` and ``power``; they observe and never write.  A device
is always found by its number (``/sys/dev/block/MAJ:MIN``): a node's *name* proves nothing
(``mknod /tmp/stick b 8 1`` is ``sda1`` under another name).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

SYS_BLOCK = Path("/sys/class/block")
SYS_DEV_BLOCK = Path("/sys/dev/block")
MOUNTINFO = Path("/proc/self/mountinfo")
SWAPS = Path("/proc/swaps")

Devnum = tuple[int, int]


def read_attr(path: Path) -> str:
    """A sysfs (or procfs) attribute, stripped; ``""`` when it cannot be read."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def rdev(path: str) -> Devnum | None:
    """``major:minor`` of the block device node at ``path``, or None (no node, not a block
    device)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return (os.major(st.st_rdev), os.minor(st.st_rdev))


def devnum_of_path(p: Path) -> Devnum | None:
    """The device number of the filesystem holding ``p`` (its ``st_dev``), or None."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    return (os.major(st.st_dev), os.minor(st.st_dev))


def devnum_attr(name: str) -> Devnum | None:
    """The device number sysfs gives block device ``name`` (its ``dev`` attribute)."""
    major, sep, minor = read_attr(SYS_BLOCK / name / "dev").partition(":")
    if not (sep and major.isdigit() and minor.isdigit()):
        return None
    return (int(major), int(minor))


def sysfs_dir(devnum: Devnum) -> Path | None:
    """The device's own sysfs directory, found by its number; None when the kernel does
    not know the number."""
    try:
        real = (SYS_DEV_BLOCK / f"{devnum[0]}:{devnum[1]}").resolve(strict=True)
    except OSError:
        return None
    return real if (real / "dev").exists() else None


def disk_of_devnum(devnum: Devnum) -> str | None:
    """The whole-disk name holding block device ``major:minor`` (a partition's parent)."""
    if devnum[0] == 0:
        return None  # tmpfs, overlay and friends live on no disk
    try:
        real = (SYS_DEV_BLOCK / f"{devnum[0]}:{devnum[1]}").resolve(strict=True)
    except OSError:
        return None
    if (real / "partition").exists():
        return real.parent.name
    return real.name


def loop_port(name: str) -> str:
    """A loop device's "port" is the file it is attached to (``loop:/path``), so that
    ``drives.ports`` globs can confine the demo and tests to the loop devices they made."""
    backing = read_attr(SYS_BLOCK / name / "loop" / "backing_file")
    return f"loop:{backing}" if backing else ""


def loop_backing(name: str) -> str:
    """The backing file of loop device ``name`` as the kernel names it ("" when detached)."""
    return read_attr(SYS_BLOCK / name / "loop" / "backing_file").removesuffix(" (deleted)")


def loop_names() -> list[str]:
    """Every loop device the kernel lists, attached or not."""
    return sorted(entry.name for entry in SYS_BLOCK.glob("loop*"))


def swap_areas() -> list[str]:
    """The swap areas in use (``/proc/swaps``): device nodes or files."""
    lines = read_attr(SWAPS).splitlines()[1:]
    return [ln.split()[0] for ln in lines if ln.split()]


# --- mountinfo ---------------------------------------------------------------------------

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as ``\\ooo``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    devnum: Devnum
    mount_point: str
    source: str
    fstype: str = ""
    options: tuple[str, ...] = ()  # the mount's own options (``nodev``, ``ro``, ...)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/self/mountinfo`` text: device number, mount point, source,
    filesystem type and the mount's options."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or ":" not in parts[2]:
            continue
        major, _, minor = parts[2].partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        fstype = source = ""
        if "-" in parts[5:]:
            rest = parts[parts.index("-", 5) + 1 :]
            fstype = rest[0] if rest else ""
            source = _unescape(rest[1]) if len(rest) > 1 else ""
        options = tuple(parts[5].split(",")) if len(parts) > 5 and parts[5] != "-" else ()
        mount = Mount((int(major), int(minor)), _unescape(parts[4]), source, fstype, options)
        out.append(mount)
    return out


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding the absolute, resolved ``path`` (the kernel's own path, e.g. a loop
    device's backing file): the longest mount point it lies under, the topmost of those."""
    best: Mount | None = None
    for m in mounts:  # later lines are mounted on top of earlier ones
        mp = m.mount_point.rstrip("/")
        if (path == m.mount_point or path.startswith(mp + "/")) and (
            best is None or len(m.mount_point) >= len(best.mount_point)
        ):
            best = m
    return best


#: filesystems whose ``stat`` can wait on a server (a FUSE process, the network)
_MAY_WAIT = frozenset({"fuse", "fuseblk", "nfs", "nfs4", "cifs", "smb3", "9p", "ceph", "afs"})


def may_hold_device_node(path: str, mounts: list[Mount]) -> bool:
    """Whether ``path`` can be a device node that it is safe to ``stat``: it lies on a mount
    that allows device nodes (no ``nodev``: a loop device cannot even be set up over a node
    on a ``nodev`` mount) and whose ``stat`` never waits on a server.  A fake drive's FUSE
    file under ``/dev/shm`` is neither, and a stopped FUSE server would hang the ``stat``."""
    m = mount_of(path, mounts)
    if m is None or "nodev" in m.options:
        return False
    return m.fstype.split(".")[0] not in _MAY_WAIT


def current_mounts() -> list[Mount]:
    """The mounts this process sees now."""
    return parse_mountinfo(read_attr(MOUNTINFO))


def mount_devnums(mounts: list[Mount]) -> list[tuple[Devnum, str]]:
    """(block device, mount point) of every mount.  The device is the mount's ``st_dev``,
    and also its source device when that differs: btrfs, for one, gives its mounts an
    anonymous ``0:N`` device, and only the source names the disk."""
    out = []
    for m in mounts:
        out.append((m.devnum, m.mount_point))
        if m.source.startswith("/dev/"):
            src = rdev(m.source)
            if src is not None and src != m.devnum:
                out.append((src, m.mount_point))
    return out

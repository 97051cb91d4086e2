"""The safety gate: may fdffd write to this device?  A pure function of plain facts.

Hard rules come first and no configuration switches them off (docs/pipeline.md, "The
safety gate"): whole disks only; nothing mounted, used as swap or held (LVM, dm, md);
never the disk holding ``/``, the state dir or the payload dir; write-protected media is
refused with a message that says so; ``O_EXCL`` must succeed; and udev must know the
device, since the bus and port the policy matches come from udev.  Then policy: allowed
buses, port globs, size bounds.  ``O_EXCL`` is tried when the facts are gathered
(``exclusive``) and again when the job opens the disk, which keeps it exclusively for the
whole job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..config import DrivesSection, PortEntry
from ..devices.facts import DeviceFacts
from ..sizes import format_size


@dataclass(frozen=True)
class Refusal:
    rule: str
    detail: str


def evaluate(
    facts: DeviceFacts, policy: DrivesSection, ports: Sequence[PortEntry] = ()
) -> Refusal | None:
    """The first rule ``facts`` break, or None when the device may be processed.

    ``ports`` is the station's port map: with one, a drive on a port no entry's glob
    matches is refused (``unmapped-port``); without one, any port the policy admits."""
    for check in (_hard_rules, _policy_rules):
        refusal = check(facts, policy)
        if refusal:
            return refusal
    if ports and not any(p.matches(facts.port) for p in ports):
        return Refusal(
            "unmapped-port",
            f"port {facts.port or 'unknown'!r} is on no mapped port; plug the drive into a "
            "labelled port (or map this one with `fdffctl ports learn`)",
        )
    return None


def _hard_rules(f: DeviceFacts, policy: DrivesSection) -> Refusal | None:
    if not f.exists:
        return Refusal("exists", "no such device")
    if not f.is_block:
        return Refusal("block-device", "not a block device")
    if not f.whole_disk:
        return Refusal("whole-disk", "a partition, not a whole disk; give the disk itself")
    for host in ("root", "state_dir", "payload_dir"):
        if host in f.hosts:
            what = {
                "root": "the root filesystem /",
                "state_dir": "the fdffd state dir",
                "payload_dir": "the payload dir",
            }[host]
            return Refusal("system-disk", f"holds {what}")
    if f.mounted:
        return Refusal("mounted", f"mounted at {', '.join(f.mounted)}; unmount it first")
    if f.swap:
        return Refusal("swap", f"used as swap ({', '.join(f.swap)})")
    if f.holders:
        return Refusal(
            "held",
            f"held by {', '.join(f.holders)}: LVM, dm, md or a loop device uses it; "
            "stop that first",
        )
    if not f.exclusive:
        return Refusal(
            "exclusive",
            "in use: another process, a mount or a dm/md device holds it exclusively "
            "(O_EXCL failed)",
        )
    if f.size_bytes <= 0:
        return Refusal("no-media", "no medium (size 0); insert a card or attach the drive")
    if f.read_only:
        return Refusal(
            "read-only", "write-protected: the drive refuses writes (flip its lock switch)"
        )
    if f.udev_missing:
        # without udev, bus and port are unknown: a guess could admit the station's own disk
        return Refusal("no-udev-data", f.udev_missing)
    return None


def _policy_rules(f: DeviceFacts, policy: DrivesSection) -> Refusal | None:
    if f.bus == "loop":
        if not policy.allow_loop:
            return Refusal("bus", "a loop device, and drives.allow_loop is false")
    elif f.bus not in policy.buses:
        bus = repr(f.bus) if f.bus else "unknown (udev names no ID_BUS)"
        return Refusal("bus", f"on bus {bus}, not in drives.buses {policy.buses}")
    if policy.ports and not any(fnmatchcase(f.port, glob) for glob in policy.ports):
        return Refusal("port", f"port {f.port or 'unknown'!r} matches no glob in drives.ports")
    if f.size_bytes < policy.min_size:
        return Refusal(
            "size",
            f"{format_size(f.size_bytes)} is below drives.min_size "
            f"({format_size(policy.min_size)})",
        )
    if f.size_bytes > policy.max_size:
        return Refusal(
            "size",
            f"{format_size(f.size_bytes)} is above drives.max_size "
            f"({format_size(policy.max_size)})",
        )
    return None

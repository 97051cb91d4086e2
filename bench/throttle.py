"""USB-stick speed for loop devices: the cgroup v1 blkio throttle.

A child cgroup of ``/sys/fs/cgroup/blkio`` gets one ``MAJ:MIN BPS`` line per loop device of ours
in ``blkio.throttle.write_bps_device`` and ``read_bps_device``; a process moved into its
``cgroup.procs`` (all its threads, and those it starts later) has its I/O to those devices
throttled where the bio is submitted, which for ``O_DIRECT`` is the caller's own thread.  Other
devices, and other processes, are not affected.  The cgroup is removed afterwards (processes
still in it are moved back to the root first).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from fdffd_testkit.loopdev import LoopDevice

from .rawio import BS, ensure_ours

ROOT = Path("/sys/fs/cgroup/blkio")


def available() -> str | None:
    """None if the blkio throttle can be used here; else why not."""
    if not (ROOT / "blkio.throttle.write_bps_device").exists():
        return f"no cgroup v1 blkio throttle at {ROOT}"
    return None


def devnum(dev: LoopDevice) -> str:
    st = os.stat(dev.path)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


class Throttle:
    """One cgroup of our own; ``limit`` a device of ours, ``add`` a process to the group."""

    def __init__(self, write_bps: int, read_bps: int, name: str | None = None) -> None:
        self.write_bps = write_bps
        self.read_bps = read_bps
        self.path = ROOT / (name or f"fdffd-bench-{os.getpid()}")
        self.limited: list[str] = []

    def __enter__(self) -> Throttle:
        self.path.mkdir(exist_ok=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def limit(self, dev: LoopDevice) -> None:
        ensure_ours(dev)
        num = devnum(dev)
        (self.path / "blkio.throttle.write_bps_device").write_text(f"{num} {self.write_bps}")
        (self.path / "blkio.throttle.read_bps_device").write_text(f"{num} {self.read_bps}")
        self.limited.append(num)

    def unlimit(self, dev: LoopDevice) -> None:
        """Drop the rule of a device (before detaching it: its number may be reused)."""
        num = devnum(dev)
        for f in ("blkio.throttle.write_bps_device", "blkio.throttle.read_bps_device"):
            try:
                (self.path / f).write_text(f"{num} 0")
            except OSError:
                pass
        if num in self.limited:
            self.limited.remove(num)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def preexec(self) -> None:
        """For ``subprocess``: the child moves itself into the group before it execs."""
        self.add(os.getpid())

    def close(self) -> None:
        if not self.path.exists():
            return
        try:
            pids = (self.path / "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        for pid in pids:
            try:
                (ROOT / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)

    def check(self, dev: LoopDevice, mib: int = 32) -> dict[str, float]:
        """Time a ``dd`` write and read of ``mib`` MiB in the group: the throttle must bite."""
        ensure_ours(dev)
        count = max(1, min(mib * (1 << 20), dev.size) // BS)
        out: dict[str, float] = {}
        for what, cmd in (
            ("write", ["dd", "if=/dev/zero", f"of={dev.path}", f"bs={BS}", "oflag=direct"]),
            ("read", ["dd", f"if={dev.path}", "of=/dev/null", f"bs={BS}", "iflag=direct"]),
        ):
            ensure_ours(dev)
            t0 = time.monotonic()
            subprocess.run(
                [*cmd, f"count={count}", "status=none"],
                preexec_fn=self.preexec,
                check=True,
                capture_output=True,
            )
            out[f"{what}_bps"] = count * BS / (time.monotonic() - t0)
        return out

"""``nwipe`` on exactly one loop device of ours, and nothing else, ever.

nwipe's ``--autonuke`` wipes *every* disk it finds when no device is named, so it is never run
the plain way here.  Three fences:

1. the device must still be backed by the file we attached (``rawio.ensure_ours``), and its
   device number is read from that node;
2. nwipe runs in a private mount namespace (``unshare --mount``) whose ``/dev`` is a fresh tmpfs
   holding only ``null``, ``zero``, ``random``, ``urandom`` and a node for our one loop device:
   even a device scan could open no other disk, because no other disk node exists there;
3. it is always given that one device path explicitly (``--nogui --autonuke DEV``), and its log
   is checked afterwards: a "Found" line naming any other device is reported as an error.

nwipe writes and verifies through the page cache (no ``O_DIRECT``); ``--sync`` makes it
``fdatasync`` now and then, and we flush the device's buffers after it so the next step reads
from the device.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from fdffd_testkit.loopdev import LoopDevice

from .rawio import ensure_ours
from .runner import Timed, run_timed

NWIPE = "nwipe"
UNSHARE = "unshare"
_FOUND = re.compile(r"notice: Found (\S+),")
_VERIFIED = re.compile(r"Verified pass \d+ of \d+")
_ERRORS = re.compile(r"^\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*$", re.M)


def available() -> str | None:
    """None if nwipe can run here; else why not."""
    for tool in (NWIPE, UNSHARE, "mknod", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not found (nwipe: Debian package nwipe; run scripts/bootstrap)"
    return None


def _sandbox_script(dev: LoopDevice, nwipe_args: list[str]) -> str:
    st = os.stat(dev.path)
    if not os.path.isabs(dev.path) or not dev.path.startswith("/dev/loop"):
        raise RuntimeError(f"{dev.path}: nwipe only ever runs on a loop device of ours")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if major != 7 and not Path(f"/sys/dev/block/{major}:{minor}/loop").exists():
        raise RuntimeError(f"{dev.path} ({major}:{minor}) is not a loop device: not wiping it")
    nodes = [("null", 1, 3), ("zero", 1, 5), ("random", 1, 8), ("urandom", 1, 9)]
    lines = [
        "set -euo pipefail",
        "mount -t tmpfs -o mode=755,size=1M fdffd-bench-dev /dev",
        *[f"mknod -m 666 /dev/{n} c {a} {b}" for n, a, b in nodes],
        f"mknod -m 600 {shlex.quote(dev.path)} b {major} {minor}",
        # the only block device node in this namespace must be ours
        'test "$(find /dev -type b | wc -l)" = 1',
        "exec " + shlex.join([NWIPE, *nwipe_args, dev.path]),
    ]
    return "\n".join(lines) + "\n"


def run(dev: LoopDevice, *, method: str = "random") -> tuple[Timed, dict[str, Any]]:
    """``nwipe --nogui --autonuke --method=random --verify=last --noblank DEV``, fenced in.

    Returns the timing (CPU from the child's rusage) and what its log (stdout: the namespace's
    ``/dev`` hides ``/dev/shm``) says."""
    ensure_ours(dev)
    args = [
        "--nogui",
        "--autonuke",
        f"--method={method}",
        "--verify=last",
        "--noblank",
        "--rounds=1",
    ]
    script = _sandbox_script(dev, args)
    t = run_timed([UNSHARE, "--mount", "--propagation", "private", "bash", "-c", script])
    ensure_ours(dev)
    text = t.stdout
    found = sorted(set(_FOUND.findall(text)))
    info: dict[str, Any] = {
        "found": found,
        "verified": bool(_VERIFIED.search(text)),
        "errors": None,
    }
    for m in _ERRORS.finditer(text):
        if m.group(1) == dev.name:
            info["errors"] = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    if any(f != dev.path for f in found):
        raise RuntimeError(f"nwipe reported devices other than {dev.path}: {found}")
    if t.rc != 0 or not info["verified"] or info["errors"]:
        raise RuntimeError(
            f"nwipe on {dev.path} failed (exit {t.rc}, verified={info['verified']}, "
            f"errors={info['errors']}): {(t.stderr or text).strip()[-600:]}"
        )
    return t, info

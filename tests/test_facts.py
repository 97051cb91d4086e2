"""Gathering facts: the mount table read right, and nothing another drive does can hang it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fdffd.devices.sysfs import may_hold_device_node, mount_of, parse_mountinfo
from fdffd.sizes import MiB
from fdffd_testkit.fakedrive import FakeDrive, FakeSpec
from fdffd_testkit.loopdev import LoopDevice

MOUNTINFO = (
    "22 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw\n"
    "23 22 0:5 / /dev rw,nosuid - devtmpfs udev rw,mode=755\n"
    "24 23 0:21 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw\n"
    "46 24 0:41 / /dev/shm/fake/mnt rw,nosuid,relatime - fuse.fdffd-fake fdffd-fake rw\n"
    "47 22 0:50 / /srv/nfs rw,relatime - nfs4 host:/x rw\n"
    "48 22 0:51 / /srv/nfs rw,relatime - ext4 /dev/sdb1 rw\n"
)


def test_mount_of_picks_the_topmost_longest_mount() -> None:
    """A path belongs to the longest mount point above it; of two on one point, the later."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert mount_of("/dev/sdb1", mounts).fstype == "devtmpfs"  # type: ignore[union-attr]
    assert mount_of("/dev/shm/fake/mnt/disk", mounts).fstype == "fuse.fdffd-fake"  # type: ignore[union-attr]
    assert mount_of("/dev/shmx", mounts).fstype == "devtmpfs"  # type: ignore[union-attr]
    assert mount_of("/srv/nfs/a", mounts).fstype == "ext4"  # type: ignore[union-attr]
    assert mount_of("/tmp/disk.img", mounts).mount_point == "/"  # type: ignore[union-attr]
    assert mount_of("/dev/shm", mounts).options == ("rw", "nosuid", "nodev")  # type: ignore[union-attr]


def test_only_nodes_that_can_back_a_loop_are_stat_ed() -> None:
    """A backing path is stat'ed only on a mount that allows device nodes and never waits
    on a server: not under /dev/shm (nodev), not on FUSE, not on NFS."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert may_hold_device_node("/dev/sdb1", mounts)
    assert may_hold_device_node("/var/lib/node", mounts)
    assert not may_hold_device_node("/dev/shm/t/a.img", mounts)
    fuse = parse_mountinfo(MOUNTINFO.replace("rw,nosuid,relatime - fuse", "rw - fuse"))
    assert not may_hold_device_node("/dev/shm/fake/mnt/disk", fuse)
    nfs = parse_mountinfo(MOUNTINFO.replace("48 22 0:51 / /srv/nfs", "48 22 0:51 / /srv/other"))
    assert not may_hold_device_node("/srv/nfs/a", nfs)


_GATHER = """
import json, sys
from pathlib import Path
from fdffd.devices.facts import gather
f = gather(sys.argv[1], state_dir=Path(sys.argv[2]), payload_dir=Path(sys.argv[2]))
print(json.dumps({"holders": f.holders, "missing": f.udev_missing}))
"""


def test_a_stopped_fake_drive_does_not_hang_the_facts_of_another(
    fake: Callable[..., FakeDrive], loop: Callable[..., LoopDevice], tmp_path: Path
) -> None:
    """With another drive's FUSE server stopped (its file would block a stat forever), the
    facts of this drive are gathered in seconds, a loop device over its partition still
    found by its node."""
    stuck = fake(FakeSpec(announced=32 * MiB, real=32 * MiB))
    dev = loop(32 * MiB)
    stuck.kill_server(signal.SIGSTOP)
    try:
        time.sleep(1.5)  # past FUSE's entry timeout: a lookup would now ask the server
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-c", _GATHER, dev.path, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
    finally:
        stuck.kill_server(signal.SIGCONT)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"holders": [], "missing": ""}
    assert took < 30, took
    over = loop(backing=Path(dev.path))  # a loop over our disk's node: still a holder
    run = subprocess.run(
        [sys.executable, "-c", _GATHER, dev.path, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    holders = json.loads(run.stdout)["holders"]
    assert holders == [f"{over.name} (a loop device over {dev.path})"], holders
    assert os.path.exists(stuck.path)

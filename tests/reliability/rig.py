"""What the fault and load tests share: a small ext4 state disk, and checks on a station's log."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fdffd_testkit.loopdev import loop_device
from fdffd_testkit.station import Station

from ..cli_util import Run, fdffctl

MiB = 1 << 20


@contextmanager
def small_ext4(size: int = 24 * MiB) -> Iterator[Path]:
    """A fresh ext4 on a loop device of our own, mounted; yields the mount point."""
    if shutil.which("mkfs.ext4") is None:
        import pytest

        pytest.skip("needs mkfs.ext4 (e2fsprogs)")
    work = Path(tempfile.mkdtemp(prefix="fdffd-ext4-", dir="/dev/shm"))
    try:
        with loop_device(size, directory=work) as dev:
            subprocess.run(["mkfs.ext4", "-q", "-F", dev.path], check=True, capture_output=True)
            mnt = work / "mnt"
            mnt.mkdir()
            subprocess.run(["mount", "-t", "ext4", dev.path, str(mnt)], check=True)
            try:
                yield mnt
            finally:
                for _ in range(50):
                    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                        break
                    time.sleep(0.2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fill_disk(mnt: Path) -> Path:
    """Write a filler file until the filesystem under ``mnt`` has no block left."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\xaa" * MiB
        for _ in range(20):  # until a round after an fsync gets nothing more in
            wrote = 0
            for size in (MiB, 4096, 512):
                while True:
                    try:
                        wrote += os.write(fd, block[:size])
                    except OSError as err:
                        if err.errno != errno.ENOSPC:
                            raise
                        break
            try:  # allocating the delayed blocks gives back what was reserved for metadata
                os.fsync(fd)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
            if not wrote:
                break
    finally:
        os.close(fd)
    st = os.statvfs(mnt)
    assert st.f_bavail * st.f_frsize < 64 << 10, "the disk still has room"
    return filler


def one_record_each(st: Station, devices: list[str]) -> dict[str, dict[str, Any]]:
    """The log holds exactly one record per device in ``devices`` and nothing else."""
    recs = st.records()
    per_device = Counter(r["device"]["path"] for r in recs)
    assert per_device == Counter(devices), f"records per device: {dict(per_device)}"
    per_job = Counter(r["job_id"] for r in recs)
    assert max(per_job.values(), default=1) == 1, "a job was recorded twice"
    return {r["device"]["path"]: r for r in recs}


def audit_verify(st: Station) -> Run:
    """``fdffctl audit verify --json`` on the station's log, as an auditor runs it."""
    return fdffctl("audit", "verify", "--json", "--config", str(st.config), timeout=60)


def log_verifies(st: Station) -> dict[str, Any]:
    run = audit_verify(st)
    assert run.code == 0, run.stdout + run.stderr
    return run.record

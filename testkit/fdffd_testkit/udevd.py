"""A running systemd-udevd for the demo and the tests: the one there is, or one of our own.

On a machine without systemd as PID 1 (a container, CI) nothing forwards kernel uevents to
udev rules; ``systemd-udevd --daemon`` started by hand does, so the station sees real events.
One started here is stopped again by its pid; one that was already running is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

UDEVD = "/lib/systemd/systemd-udevd"


def udevd_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-x", "systemd-udevd"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


#: udevd processes this process started, stopped at the end of ``running_udevd``
_started: set[int] = set()


def _start_udevd() -> None:
    if not os.path.exists(UDEVD):
        raise RuntimeError(f"no {UDEVD} (Debian package udev): run scripts/bootstrap")
    subprocess.run([UDEVD, "--daemon"], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not udevd_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    _started.update(udevd_pids())
    subprocess.run(["udevadm", "settle", "-t", "10"], check=False, capture_output=True)


def ensure_udevd() -> None:
    """Start a udevd if none runs now.  Another test session on the machine may have stopped
    the one this session was using (the one it started); call this before relying on events."""
    if not udevd_pids():
        _start_udevd()


@contextmanager
def running_udevd() -> Iterator[None]:
    """A udevd for the duration: the one running, or one of ours (stopped at the end, with any
    that ``ensure_udevd`` started meanwhile)."""
    if not udevd_pids():
        _start_udevd()
    try:
        yield
    finally:
        for pid in sorted(_started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        _started.clear()

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


@contextmanager
def running_udevd() -> Iterator[None]:
    if udevd_pids():
        yield
        return
    if not os.path.exists(UDEVD):
        raise RuntimeError(f"no {UDEVD} (Debian package udev): run scripts/bootstrap")
    subprocess.run([UDEVD, "--daemon"], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not udevd_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    started = udevd_pids()
    subprocess.run(["udevadm", "settle", "-t", "10"], check=False, capture_output=True)
    try:
        yield
    finally:
        for pid in started:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

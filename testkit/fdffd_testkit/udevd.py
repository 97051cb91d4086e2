"""A systemd-udevd serving this root for the demo and the tests: the one there is, or our own.

Whether a udevd serves this root is asked of udevd itself: ``udevadm control --ping`` talks to
the daemon behind this root's ``/run/udev/control`` and succeeds only if it answers.  A process
name proves nothing: a zombie, a udevd in another container or chroot, or one stopped with
SIGSTOP all have the name and send no event here.

On a machine without systemd as PID 1 (a container, CI, a debootstrap root) nothing forwards
kernel uevents to udev rules; a ``systemd-udevd`` started here does, so the station sees real
events.  One started here is stopped again by its pid; one that already answered is left alone.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

UDEVD = "/lib/systemd/systemd-udevd"
CONTROL = "/run/udev/control"
#: seconds a ping may wait for udevd's answer (a busy udevd answers within milliseconds)
PING_TIMEOUT = 5
#: seconds a udevd we started has to answer its first ping
START_TIMEOUT = 10.0


class UdevdError(RuntimeError):
    """No systemd-udevd serves this root, and none could be started."""


def udevd_answers(timeout: int = PING_TIMEOUT) -> bool:
    """Whether a systemd-udevd answers on this root's control socket (``udevadm control
    --ping``): the one test of "a udevd serves this root" the kit makes."""
    try:
        proc = subprocess.run(
            ["udevadm", "control", "--ping", f"--timeout={max(1, timeout)}"],
            capture_output=True,
            timeout=timeout + 5,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def udevd_identity() -> tuple[int, int] | None:
    """Which udevd serves this root: the (device, inode) of the control socket it bound, or
    None when none answers.  A udevd that starts binds a new socket, so a change here means
    events may have been lost in between."""
    if not udevd_answers():
        return None
    try:
        st = os.stat(CONTROL)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


#: udevds this process started, in order; ``running_udevd`` stops the ones started in its span
_ours: list[subprocess.Popen[bytes]] = []


def _start_udevd() -> None:
    if not os.path.exists(UDEVD):
        raise UdevdError(f"no {UDEVD} (Debian package udev): run scripts/bootstrap")
    proc = subprocess.Popen(
        [UDEVD],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it
    )
    _ours.append(proc)
    deadline = time.monotonic() + START_TIMEOUT
    while not udevd_answers(timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited {proc.returncode}" if proc.poll() is not None else "does not answer"
            _stop(proc)
            _ours.remove(proc)
            raise UdevdError(
                f"{UDEVD} started here {why} on {CONTROL} after {START_TIMEOUT:g} s "
                "(does this root have a writable /run?)"
            )
        time.sleep(0.1)
    subprocess.run(["udevadm", "settle", "-t", "10"], check=False, capture_output=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a udevd we started, by its pid (we are its parent: no other process is hit)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def started_here() -> list[int]:
    """Pids of the udevds this process started and that still run."""
    return [p.pid for p in _ours if p.poll() is None]


def ensure_udevd() -> bool:
    """Start a udevd if none answers now (True if one was started).  Another test session on
    the machine may have stopped the one this session was using; call this before relying on
    events.  The enclosing ``running_udevd`` stops it."""
    if udevd_answers():
        return False
    _start_udevd()
    return True


@contextmanager
def running_udevd() -> Iterator[None]:
    """A udevd that answers, for the duration: the one serving this root, or ours (stopped at
    the end by its pid, with any that ``ensure_udevd`` started meanwhile)."""
    mark = len(_ours)
    ensure_udevd()
    try:
        yield
    finally:
        while len(_ours) > mark:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _stop(_ours[-1])
            _ours.pop()


class BlockEvents:
    """udev's block-device events as they reach this process (the same netlink group, in the
    same network namespace, as the station's monitor), remembered by device node with the
    time they arrived, so ``wait_for`` can tell whether a drive just plugged in was seen."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BlockEvents:
        import pyudev

        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="udev")
        monitor.filter_by("block")
        monitor.start()
        self._thread = threading.Thread(
            target=self._read, args=(monitor,), name="udev-events", daemon=True
        )
        self._thread.start()
        return self

    def _read(self, monitor: Any) -> None:
        while not self._stop.is_set():
            try:
                device = monitor.poll(timeout=0.2)
            except OSError:  # the socket overflowed: later events still come
                continue
            if device is not None and device.device_node:
                with self._cond:
                    self._seen[str(device.device_node)] = time.monotonic()
                    self._cond.notify_all()

    def wait_for(
        self, node: str, since: float, timeout: float, stop: threading.Event | None = None
    ) -> bool:
        """Whether an event about ``node`` arrived after ``since`` (``time.monotonic()``),
        waiting up to ``timeout`` seconds for it (less if ``stop`` is set meanwhile)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seen.get(node, -1.0) < since:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

"""Loop devices for tests: attach a file, hand out ``/dev/loopN``, detach exactly that device.

Only devices this module attached are ever detached, and only after
``/sys/block/loopN/loop/backing_file`` confirms they still point at our file. Nothing here
uses ``losetup -D`` or touches a device it did not create.

Leak-proofing: by default the device gets the kernel's autoclear flag and this process holds one
read-only descriptor on it for its whole life. Detaching is closing that descriptor; and if the
test process dies (even by SIGKILL), the kernel detaches the device by itself once the last
descriptor closes. A plain, non-exclusive descriptor does not stop ``O_EXCL`` opens.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOSETUP = "losetup"
_ATTACH_ATTEMPTS = 8
_BUSY_HINTS = ("resource busy", "no free loop", "could not find any free", "file exists")

# <linux/loop.h>: struct loop_info64 is 232 bytes, lo_flags is the u32 at offset 52.
_LOOP_SET_STATUS64 = 0x4C04
_LOOP_GET_STATUS64 = 0x4C05
_LO_FLAGS_AUTOCLEAR = 4
_INFO64_SIZE = 232
_FLAGS_AT = 52

_live_lock = threading.Lock()
_live: dict[str, int | None] = {}  # path -> held descriptor (None: detach with losetup -d)


class LoopError(RuntimeError):
    """A loop device could not be attached or detached."""


@dataclass(frozen=True)
class LoopDevice:
    """A loop device attached by this process."""

    path: str
    backing: Path
    size: int
    read_only: bool = False
    sector_size: int = 512

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def sysfs(self) -> Path:
        return Path("/sys/block") / self.name

    def backing_file(self) -> str | None:
        """What the kernel says this device is backed by now (None if detached)."""
        return backing_file_of(self.path)

    def direct_io(self) -> bool:
        """Whether the loop driver does direct I/O on the backing file."""
        return (self.sysfs / "loop" / "dio").read_text().strip() == "1"


def backing_file_of(path: str) -> str | None:
    """Backing file of ``/dev/loopN`` per sysfs, or None when it is not attached."""
    try:
        text = (Path("/sys/block") / os.path.basename(path) / "loop" / "backing_file").read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ENODEV:  # read while the kernel tears the device down
            return None
        raise
    return text.rstrip("\n")


def live_devices() -> list[str]:
    """Loop devices attached by this process and not yet detached."""
    with _live_lock:
        return sorted(_live)


def _hold_with_autoclear(path: str) -> int:
    """Open ``path`` read-only and set autoclear: the kernel detaches it at the last close."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = bytearray(_INFO64_SIZE)
        fcntl.ioctl(fd, _LOOP_GET_STATUS64, info)
        (flags,) = struct.unpack_from("=I", info, _FLAGS_AT)
        struct.pack_into("=I", info, _FLAGS_AT, flags | _LO_FLAGS_AUTOCLEAR)
        fcntl.ioctl(fd, _LOOP_SET_STATUS64, bytes(info))
    except OSError:
        os.close(fd)
        raise
    return fd


def loops_backed_by(backing: Path) -> list[str]:
    """Every attached loop device whose backing file is ``backing`` (for leak checks)."""
    want = str(backing)
    found = []
    for entry in Path("/sys/block").glob("loop*"):
        name = backing_file_of(entry.name)
        if name is not None and name.removesuffix(" (deleted)") == want:
            found.append(f"/dev/{entry.name}")
    return sorted(found)


def attach(
    backing: Path,
    *,
    read_only: bool = False,
    sector_size: int = 512,
    direct_io: bool = False,
    autoclear: bool = True,
) -> LoopDevice:
    """Attach ``backing`` to a free loop device; retry when another process races for it.

    With ``autoclear`` (the default) the device is held open and vanishes when this process
    ends, however it ends; see the module docstring.
    """
    backing = Path(os.path.realpath(backing))
    cmd = [
        LOSETUP,
        "--find",
        "--show",
        f"--sector-size={sector_size}",
        f"--direct-io={'on' if direct_io else 'off'}",
    ]
    if read_only:
        cmd.append("--read-only")
    cmd.append(str(backing))
    last_err = ""
    for attempt in range(_ATTACH_ATTEMPTS):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            path = proc.stdout.strip()
            seen = backing_file_of(path)
            if seen != str(backing):
                # Not ours after all: never touch it. (losetup --show printed the device it
                # configured, so this only happens if someone detached and reused it already.)
                raise LoopError(f"{path} reports backing {seen!r}, expected {backing}")
            with _live_lock:
                _live[path] = None
            size = int((Path("/sys/block") / os.path.basename(path) / "size").read_text()) * 512
            dev = LoopDevice(path, backing, size, read_only, sector_size)
            try:
                _wait_for_node(path)
                if autoclear:
                    hold = _hold_with_autoclear(path)
                    with _live_lock:
                        _live[path] = hold
            except BaseException:
                detach(dev)
                raise
            return dev
        last_err = proc.stderr.strip()
        if not any(h in last_err.lower() for h in _BUSY_HINTS):
            break
        time.sleep(0.05 * (attempt + 1))
    raise LoopError(f"losetup could not attach {backing}: {last_err}")


def _wait_for_node(path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise LoopError(f"{path} did not appear")
        time.sleep(0.01)


def detach(
    dev: LoopDevice,
    *,
    timeout: float = 20.0,
    on_stuck: Callable[[], None] | None = None,
) -> None:
    """Detach ``dev`` if it is still backed by our file.

    Detaching waits for in-flight I/O; if the backing file hangs (a stuck FUSE server),
    ``on_stuck`` is called after ``timeout`` seconds (e.g. to kill that server) and we wait again.
    """
    seen = backing_file_of(dev.path)
    if seen is None:
        _forget(dev.path)
        return
    if seen.removesuffix(" (deleted)") != str(dev.backing):
        _forget(dev.path)
        raise LoopError(f"{dev.path} is now backed by {seen!r}, not {dev.backing}: left alone")
    with _live_lock:
        hold = _live.get(dev.path)
    if hold is not None:
        _run_bounded(lambda: os.close(hold), f"close {dev.path}", timeout, on_stuck)
        _forget(dev.path)
        # Someone else may still have it open (a leaked descriptor): autoclear then detaches
        # it at their last close, so give it a moment and move on.
        deadline = time.monotonic() + 1.0
        while backing_file_of(dev.path) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        return
    proc = subprocess.Popen(
        [LOSETUP, "-d", dev.path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _run_bounded(lambda: proc.wait(), f"losetup -d {dev.path}", timeout, on_stuck)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0 and backing_file_of(dev.path) is not None:
        raise LoopError(f"losetup -d {dev.path} failed: {err.strip()}")
    _forget(dev.path)


def _run_bounded(
    step: Callable[[], object],
    what: str,
    timeout: float,
    on_stuck: Callable[[], None] | None,
) -> None:
    """Run a step that may block on in-flight I/O; call ``on_stuck`` once if it takes too long."""
    worker = threading.Thread(target=step, name=what, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive() and on_stuck is not None:
        on_stuck()
        worker.join(timeout)
    if worker.is_alive():
        raise LoopError(f"{what} hangs")


def _forget(path: str) -> None:
    with _live_lock:
        _live.pop(path, None)


@contextlib.contextmanager
def loop_device(
    size: int | None = None,
    *,
    backing: Path | None = None,
    read_only: bool = False,
    sector_size: int = 512,
    directory: str | Path = "/dev/shm",
    autoclear: bool = True,
) -> Iterator[LoopDevice]:
    """A loop device over a new sparse file of ``size`` bytes, or over ``backing``.

    Teardown detaches exactly that device and removes the file if we created it.
    """
    if (size is None) == (backing is None):
        raise ValueError("give exactly one of size or backing")
    created: Path | None = None
    if backing is None:
        assert size is not None
        fd, name = tempfile.mkstemp(prefix="fdffd-loop-", suffix=".img", dir=directory)
        created = Path(name)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        backing = created
    try:
        dev = attach(backing, read_only=read_only, sector_size=sector_size, autoclear=autoclear)
        try:
            yield dev
        finally:
            detach(dev)
    finally:
        if created is not None:
            created.unlink(missing_ok=True)

"""Counterfeit and failing drives, simulated by a FUSE file attached to a loop device.

A server process (``python -m fdffd_testkit.fakedrive serve ...``, libfuse3 through mfusepy)
mounts a directory holding two files:

- ``disk``: the drive as announced. Its bytes live in a sparse "real flash" file of the real size;
  what happens past the real size depends on the spec (``fakemedia``: the kind, caches,
  stale data, a moving capacity, a slow zone). Bad ranges and a runtime fault mode sit on top.
  A cache flush request (``fsync``) reaches the drive's model.
- ``ctl``: write ``ok``, ``fail`` or ``readonly`` to switch the fault mode; read it to see the mode.
  Write ``delay SECONDS`` to make every read and write that long (a slow or throttled drive;
  ``delay 0`` makes it fast again).  ``FakeSpec.delay`` sets it from the start.

The mount uses ``direct_io``, so every read reaches the server: the kernel page cache can never
serve back written data and hide a fake. ``fake_drive(spec)`` starts the server in its own
session, attaches ``disk`` to a loop device and tears all of it down again.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fakemedia import CACHE_PAGE, KINDS, MODES, STALE, FakeMedia, FakeSpec
from .loopdev import LoopDevice, attach, detach

__all__ = [
    "CACHE_PAGE",
    "KINDS",
    "MODES",
    "STALE",
    "FakeDrive",
    "FakeMedia",
    "FakeSpec",
    "fake_drive",
]

MAX_IO = 1 << 20  # largest FUSE read/write the kernel will send (256 pages, the default limit)
#: the directory holding this package: the server process imports it from there
_KIT_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the FUSE server


def _serve(spec: FakeSpec, mountpoint: str, flash: str, parent_fd: int | None) -> None:
    # mfusepy prefers libfuse2 when both are installed; libfuse2 caps requests at 128 KiB.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy  # only the server needs libfuse

    media = FakeMedia(spec, os.open(flash, os.O_RDWR))
    if parent_fd is not None:
        threading.Thread(target=_exit_when_parent_dies, args=(parent_fd,), daemon=True).start()
    mfusepy.FUSE(
        _filesystem(mfusepy, media),
        mountpoint,
        foreground=True,
        fsname="fdffd-fake",
        subtype="fdffd-fake",
        direct_io=True,
        max_read=MAX_IO,
    )


def _filesystem(mfusepy: Any, media: FakeMedia) -> Any:
    """The FUSE operations: ``/disk`` is ``media``, ``/ctl`` its control file."""
    spec = media.spec
    now = int(time.time() * 1e9)
    base = {"st_uid": 0, "st_gid": 0, "st_atime": now, "st_mtime": now, "st_ctime": now}
    files = {
        "/": {**base, "st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2},
        "/disk": {
            **base,
            "st_mode": stat.S_IFREG | 0o600,
            "st_nlink": 1,
            "st_size": spec.announced,
            "st_blksize": 4096,
            "st_blocks": spec.announced // 512,
        },
        "/ctl": {**base, "st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 16},
    }

    class FakeDriveFS(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def init_with_config(self, conn: Any, config: Any) -> None:
            if conn is not None:
                conn.max_write = MAX_IO
                conn.max_read = MAX_IO
                conn.max_readahead = MAX_IO
            if config is not None:
                config.direct_io = 1
                config.kernel_cache = 0
                config.auto_cache = 0

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            if path not in files:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return dict(files[path])

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", "disk", "ctl"]

        def open(self, path: str, flags: int) -> int:
            if path not in ("/disk", "/ctl"):
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            if path == "/ctl":
                return (media.mode + "\n").encode()[offset : offset + size]
            return media.read(offset, size)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            if path == "/ctl":
                try:
                    media.control(data.decode("ascii", "replace"))
                except ValueError as exc:
                    raise mfusepy.FuseOSError(errno.EINVAL) from exc
                return len(data)
            return media.write(offset, data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            if path == "/ctl":
                return 0
            raise mfusepy.FuseOSError(errno.EPERM)

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            media.flush()  # like a cheap controller: the caches are not flushed on request
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": spec.announced // 4096}

    return FakeDriveFS()


_orphaned = threading.Event()


def _exit_when_parent_dies(fd: int) -> None:
    """The parent holds the write end of a pipe; EOF means it is gone: unmount and exit."""
    while os.read(fd, 64):
        pass
    _orphaned.set()
    os.kill(os.getpid(), signal.SIGTERM)  # libfuse's handler leaves the loop and unmounts
    time.sleep(10)
    os._exit(1)


def _mountinfo_has(mountpoint: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mountpoint for line in f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fdffd_testkit.fakedrive")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="mount a fake drive (foreground)")
    serve.add_argument("--mountpoint", required=True)
    serve.add_argument("--spec", required=True, help="FakeSpec as JSON")
    serve.add_argument("--flash", required=True, help="real-flash file (created if missing)")
    serve.add_argument("--parent-fd", type=int, help="exit when this pipe reaches EOF")
    serve.add_argument("--cleanup-dir", help="remove this directory if the parent died")
    args = parser.parse_args(argv)
    spec = FakeSpec.from_json(args.spec)
    if not os.path.exists(args.flash):
        with open(args.flash, "wb") as f:
            f.truncate(spec.flash_bytes)
    try:
        _serve(spec, args.mountpoint, args.flash, args.parent_fd)
    except RuntimeError as exc:  # libfuse reports a signal-ended loop as an error code
        print(f"fakedrive: FUSE loop ended: {exc}", file=sys.stderr)
    if _orphaned.is_set() and args.cleanup_dir and not _mountinfo_has(args.mountpoint):
        shutil.rmtree(args.cleanup_dir, ignore_errors=True)
    return 0


# --------------------------------------------------------------------------- the fixture


@dataclass
class FakeDrive:
    """A running fake drive: ``path`` is its loop device."""

    spec: FakeSpec
    workdir: Path
    server: subprocess.Popen[bytes]
    loop: LoopDevice | None = None
    stuck_after: float = 10.0
    _parent_w: int | None = None

    @property
    def path(self) -> str:
        assert self.loop is not None
        return self.loop.path

    @property
    def real_bytes(self) -> int:
        return self.spec.real

    @property
    def announced_bytes(self) -> int:
        return self.spec.announced

    @property
    def mountpoint(self) -> Path:
        return self.workdir / "mnt"

    @property
    def flash(self) -> Path:
        return self.workdir / "flash"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "server.log"

    def server_stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def set_mode(self, mode: str) -> None:
        """Switch the drive: ``ok``, ``fail`` (all I/O EIO) or ``readonly`` (writes fail)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        fd = os.open(self.mountpoint / "ctl", os.O_WRONLY)
        try:
            os.write(fd, mode.encode())
        finally:
            os.close(fd)

    def set_delay(self, seconds: float) -> None:
        """Make every read and write take ``seconds`` (0: full speed again)."""
        fd = os.open(self.mountpoint / "ctl", os.O_WRONLY)
        try:
            os.write(fd, f"delay {seconds}".encode())
        finally:
            os.close(fd)

    def mode(self) -> str:
        return (self.mountpoint / "ctl").read_text().strip()

    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server's process group (never once the server has been reaped)."""
        if self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, sig)


def _start(spec: FakeSpec, directory: str, timeout: float) -> FakeDrive:
    workdir = Path(tempfile.mkdtemp(prefix="fdffd-fake-", dir=directory))
    (workdir / "mnt").mkdir()
    with open(workdir / "flash", "wb") as f:
        f.truncate(spec.flash_bytes)
    parent_r, parent_w = os.pipe()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_KIT_ROOT), env.get("PYTHONPATH")]))
    try:
        with open(workdir / "server.log", "wb") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fdffd_testkit.fakedrive",
                    "serve",
                    "--mountpoint",
                    str(workdir / "mnt"),
                    "--spec",
                    spec.to_json(),
                    "--flash",
                    str(workdir / "flash"),
                    "--parent-fd",
                    str(parent_r),
                    "--cleanup-dir",
                    str(workdir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(parent_r,),
                start_new_session=True,
                cwd=_KIT_ROOT,
                env=env,
            )
    except BaseException:
        os.close(parent_w)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        os.close(parent_r)
    drive = FakeDrive(spec, workdir, server, _parent_w=parent_w)
    mnt = str(drive.mountpoint)
    deadline = time.monotonic() + timeout
    while not _mountinfo_has(mnt):
        if server.poll() is not None or time.monotonic() > deadline:
            why = "exited" if server.poll() is not None else f"not mounted after {timeout}s"
            stderr = drive.server_stderr()
            _stop(drive)
            raise RuntimeError(f"fake drive server {why}; its stderr:\n{stderr}")
        time.sleep(0.01)
    return drive


def _unmount(mountpoint: str, *, lazy: bool) -> None:
    cmd = ["fusermount3", "-u", *(["-z"] if lazy else []), mountpoint]
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(cmd, capture_output=True, check=False, timeout=10)


def _stop(drive: FakeDrive) -> None:
    """Undo everything, in order; each step runs even if an earlier one failed."""
    errors: list[str] = []
    mnt = str(drive.mountpoint)
    if drive.loop is not None:
        try:
            detach(drive.loop, timeout=drive.stuck_after, on_stuck=drive.kill_server)
        except Exception as exc:
            errors.append(str(exc))
    if _mountinfo_has(mnt):
        _unmount(mnt, lazy=False)  # the server's loop then ends by itself
    if _mountinfo_has(mnt):
        _unmount(mnt, lazy=True)  # still busy (a descriptor left open): detach it lazily
    if drive._parent_w is not None:
        os.close(drive._parent_w)
        drive._parent_w = None
    drive.kill_server(signal.SIGTERM)
    try:
        drive.server.wait(timeout=drive.stuck_after)
    except subprocess.TimeoutExpired:
        drive.kill_server(signal.SIGKILL)
        drive.server.wait(timeout=10)
    if _mountinfo_has(mnt):
        _unmount(mnt, lazy=True)
    if _mountinfo_has(mnt):
        errors.append(f"{mnt} is still mounted")
    else:
        shutil.rmtree(drive.workdir, ignore_errors=True)
    if errors:
        raise RuntimeError("fake drive teardown: " + "; ".join(errors))


@contextlib.contextmanager
def fake_drive(
    spec: FakeSpec,
    *,
    directory: str = "/dev/shm",
    sector_size: int = 512,
    timeout: float = 15.0,
    stuck_after: float = 10.0,
) -> Iterator[FakeDrive]:
    """A fake drive behind ``/dev/loopN``; everything it made is removed on exit.

    ``timeout`` bounds the wait for the mount. At teardown, if releasing the loop device is
    still blocked on I/O after ``stuck_after`` seconds (a hung server), or the server ignores
    SIGTERM that long, it is killed, which fails any I/O still in flight with EIO.
    """
    drive = _start(spec, directory, timeout)
    drive.stuck_after = stuck_after
    try:
        disk = drive.mountpoint / "disk"
        drive.loop = attach(disk, sector_size=sector_size, direct_io=False)
        if drive.loop.size != spec.announced:
            raise RuntimeError(
                f"{drive.loop.path} has {drive.loop.size} bytes, expected {spec.announced}"
            )
        yield drive
    finally:
        _stop(drive)


if __name__ == "__main__":
    sys.exit(main())

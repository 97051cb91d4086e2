"""Small filesystem helpers shared by the modules that must not lose a write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UsageError


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (looping over short writes), then fsync ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (fsync the directory itself)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_temp(path: Path, data: bytes, mode: int) -> Path:
    """A new private temp file beside ``path`` holding ``data``, mode ``mode``, fsynced."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` durably: a private temp file beside it is written and
    fsynced, renamed over ``path``, and the directory is fsynced, so a crash leaves either the
    old content or the new, never a torn or empty file.  The one durable write of fdffd."""
    tmp = _durable_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, *, mode: int = 0o600) -> bool:
    """:func:`atomic_write` for a file that must never be replaced (a key): the same durable
    temp file, then ``os.link`` to ``path``, which fails if ``path`` exists.  True when this
    call created ``path``; False when it existed already (then nothing changed), so when two
    processes race exactly one creates the file and both then read the winner's."""
    tmp = _durable_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def make_state_dir(state_dir: Path) -> None:
    """Create ``station.state_dir`` (mode 0700) if need be; ``UsageError`` naming the key
    when it cannot be, e.g. it, or a parent of it, is a regular file."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise UsageError(
            f"station.state_dir {state_dir} exists and is not a directory; fix the config, "
            "or move what is there"
        ) from None
    except OSError as err:
        raise UsageError(
            f"station.state_dir {state_dir}: cannot create it: {err.strerror}"
        ) from None

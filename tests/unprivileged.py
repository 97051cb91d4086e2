"""Python as the unprivileged user nobody, wherever the checkout is.

A checkout under ``/root`` (mode 0700, where a root user clones) is unreadable to nobody, and
so is its ``.venv``; a venv cannot be copied (its scripts and ``pyvenv.cfg`` name its own
path).  So the ``nobody`` fixture (tests/conftest.py) builds, once a session, a world-readable
tree in ``/tmp``: fdffd's package, and the files of every installed distribution fdffd needs
at run time (its requirements, transitively; hard links where the file system allows, copies
where not).  It runs the base interpreter the venv was made from, with ``PYTHONPATH`` on that
tree, as uid and gid 65534 without supplementary groups, through ``setpriv``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


def unavailable() -> str | None:
    """Why commands cannot run as nobody here, or None."""
    if os.geteuid() != 0:
        return "running a process as nobody needs root"
    if shutil.which("setpriv") is None:
        return "running a process as nobody needs setpriv (Debian package util-linux)"
    return None


def _runtime_distributions() -> list[str]:
    """fdffd's run-time requirements and theirs, without extras (names as installed)."""
    todo = list(distribution("fdffd").requires or [])
    seen: dict[str, str] = {}
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in seen:
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            raise RuntimeError(f"{req.name} (needed by fdffd) is not installed") from None
        seen[key] = req.name
        todo += dist.requires or []
    return sorted(seen.values())


def _place(src: Path, dst: Path) -> None:
    """``src`` at ``dst``, readable by all: a hard link when the file already is (no copy),
    else a copy made readable (the installed file keeps its mode)."""
    dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    mode = os.stat(src).st_mode
    if mode & 0o004:
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system
            pass
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755 if mode & 0o100 else 0o644)


def _build(site: Path) -> None:
    package = ROOT / "fdffd"
    for src in package.rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts:
            _place(src, site / "fdffd" / src.relative_to(package))
    for name in _runtime_distributions():
        dist = distribution(name)
        for rel in dist.files or []:
            if rel.parts[0] == ".." or "__pycache__" in rel.parts:
                continue  # console scripts and the like live outside site-packages
            src = Path(str(dist.locate_file(rel)))
            if src.is_file():
                _place(src, site / rel)
    for d, _dirs, _files in os.walk(site):
        os.chmod(d, 0o755)


class Nobody:
    """``python(*args)``: the interpreter, as nobody, seeing fdffd and its dependencies."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.interpreter = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(tree / "site"),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``argv`` as nobody (a real process, a real uid), in the tree (a directory nobody
        can enter), with the environment above."""
        return subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.tree,
            stdin=subprocess.DEVNULL,
        )

    def python(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run(self.interpreter, *args, timeout=timeout)


@contextmanager
def nobody_python() -> Iterator[Nobody]:
    """The tree, checked by importing fdffd as nobody; removed afterwards."""
    tree = Path(tempfile.mkdtemp(prefix="fdffd-nobody-", dir="/tmp"))
    try:
        os.chmod(tree, 0o755)
        _build(tree / "site")
        nobody = Nobody(tree)
        check = nobody.python("-c", "import fdffd.cli.ctl, fdffd.station.control")
        if check.returncode != 0:
            raise RuntimeError(
                f"nobody cannot run fdffd with {nobody.interpreter} and {tree}/site: "
                f"{check.stderr.strip()[-500:]} (is the interpreter under a directory only "
                "root can enter?)"
            )
        yield nobody
    finally:
        shutil.rmtree(tree, ignore_errors=True)

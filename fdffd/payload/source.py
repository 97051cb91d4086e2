"""What an import would copy: scan the source tree, decide (pure) what becomes the profile,
and read the planned files back through handles proved to be the ones scanned.

``scan_source`` walks a directory without following links, through directory file descriptors
(each opened ``O_NOFOLLOW`` relative to its parent's), and notes what it finds (with each
entry's ``st_dev``/``st_ino``) and what it cannot take (links, special files, unreadable
entries).  ``plan_import`` is a pure function of that list: names normalised to NFC, every
name FAT or exFAT cannot hold, every collision (NFC or letter case), the files a system or a
program leaves behind (``fdffd.payload.junk``), an empty tree and, on FAT32, files of 4 GiB
or more are reported at once, or it returns the ``ImportPlan``.  ``SourceReader`` opens the
planned files for the copy the same way, from the root descriptor the scan used, and checks
every directory and file on the way against the scan: a directory swapped for a symbolic
link (or for another directory) between the scan and the copy is refused, and nothing
outside the source tree is opened.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fdffd.errors import FdffdError, FileTooLargeError, NameNotAllowedError, PayloadError
from fdffd.imaging.names import check_component, check_tree, fold_case
from fdffd.text import shown

from .digest import SourceChanged
from .junk import junk_reason
from .manifest import FOUR_GIB

#: the values of ``job.filesystem`` an import understands
FILESYSTEMS = ("auto", "fat32", "exfat")
#: the largest file FAT32 can hold
FAT32_MAX_FILE_BYTES = FOUR_GIB - 1

_MAX_LISTED_PROBLEMS = 50
#: a path deeper than this is longer than the 256 UTF-16 units FAT and Windows allow anyway
_MAX_DEPTH = 128
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in since the scan must not hang the import (files ignore it)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass(frozen=True)
class SourceEntry:
    """A file or directory found in the source: ``rel`` is its '/'-separated path there,
    as the source spells it (maybe not NFC); ``dev``/``ino`` identify it (0 when unknown)."""

    rel: str
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    dev: int = 0
    ino: int = 0


@dataclass(frozen=True)
class SourceFile:
    """A file to import: ``path`` in the profile (NFC), ``source`` its absolute path,
    ``rel`` its path in the source as scanned, ``dev``/``ino`` its identity then."""

    path: str
    source: Path
    size: int
    mtime_ns: int
    rel: str = ""
    dev: int = 0
    ino: int = 0


@dataclass(frozen=True)
class ImportPlan:
    """What an import copies: every directory (NFC, sorted) and every file (by path).
    ``source_dirs`` maps each source directory (``rel`` as scanned) to its
    (``st_dev``, ``st_ino``), for ``SourceReader``'s checks."""

    dirs: tuple[str, ...]
    files: tuple[SourceFile, ...]
    source_dirs: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False)


def path_problem(profile: str, path: Path | str, detail: str) -> PayloadError:
    """A ``PayloadError`` naming ``path`` (shown safely) and what is wrong with it."""
    return PayloadError(f"{shown(str(path))}: {detail}", profile=profile)


# --- scanning ---------------------------------------------------------------------------


def _entry_of(
    path: Path, rel: str, st: os.stat_result, profile: str, dir_fd: int, name: str
) -> SourceEntry | PayloadError:
    """The entry for one scanned item (``name`` in the directory ``dir_fd``), or the reason
    it cannot be imported."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return path_problem(
            profile,
            path,
            "is a symbolic link; a profile holds only regular files and directories: "
            "replace it with what it points to (cp -L) or remove it",
        )
    if stat.S_ISDIR(mode):
        return SourceEntry(rel, True, dev=st.st_dev, ino=st.st_ino)
    if stat.S_ISREG(mode):
        if not os.access(name, os.R_OK, dir_fd=dir_fd):
            return path_problem(
                profile, path, "cannot be read (permission denied); fix its permissions"
            )
        return SourceEntry(rel, False, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
    kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
    return path_problem(
        profile,
        path,
        f"is {kind}, not a regular file; a profile holds only regular files and "
        "directories: remove it",
    )


def open_source_root(src: Path, *, profile: str) -> int:
    """A directory descriptor on ``src`` (the operator's path, links in it followed), from
    which the scan and the copy both walk."""
    try:
        return os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise path_problem(profile, src, f"cannot open this directory: {err.strerror}") from None


class _Scan:
    def __init__(self, src: Path, profile: str) -> None:
        self.src = src
        self.profile = profile
        self.entries: list[SourceEntry] = []
        self.problems: list[FdffdError] = []

    def problem(self, path: Path, detail: str) -> None:
        self.problems.append(path_problem(self.profile, path, detail))

    def walk(self, fd: int, rel: str, depth: int) -> None:
        here = self.src / rel if rel else self.src
        if depth > _MAX_DEPTH:
            self.problem(here, f"is nested more than {_MAX_DEPTH} directories deep")
            return
        try:
            with os.scandir(fd) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as err:
            self.problem(here, f"cannot read this directory: {err.strerror}")
            return
        for item in items:
            r = f"{rel}/{item.name}" if rel else item.name
            path = self.src / r
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as err:
                self.problem(path, f"cannot stat: {err.strerror}")
                continue
            found = _entry_of(path, r, st, self.profile, fd, item.name)
            if isinstance(found, PayloadError):
                self.problems.append(found)
                continue
            self.entries.append(found)
            if found.is_dir:
                self.descend(fd, item.name, found, depth)

    def descend(self, fd: int, name: str, entry: SourceEntry, depth: int) -> None:
        path = self.src / entry.rel
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as err:
            self.problem(path, f"cannot read this directory: {err.strerror}")
            return
        try:
            st = os.fstat(sub)
            if (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
                self.problem(path, "was replaced while the source was scanned; import again")
                return
            self.walk(sub, entry.rel, depth + 1)
        finally:
            os.close(sub)


def scan_source(
    src: Path, *, profile: str, root_fd: int | None = None
) -> tuple[list[SourceEntry], list[FdffdError]]:
    """Walk ``src`` without following links: its entries, and the problems found.  With
    ``root_fd`` (from ``open_source_root``) the walk starts there, so that a copy from the
    same descriptor reads the tree this scan saw."""
    scan = _Scan(Path(src), profile)
    fd = open_source_root(scan.src, profile=profile) if root_fd is None else root_fd
    try:
        scan.walk(fd, "", 0)
    finally:
        if root_fd is None:
            os.close(fd)
    return scan.entries, scan.problems


# --- reading what was scanned -----------------------------------------------------------


def _replaced(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "it is now a symbolic link"
    if err.errno == errno.ENOTDIR:
        return "it is no longer a directory"
    if err.errno == errno.ENOENT:
        return "it is gone"
    return f"it cannot be opened: {err.strerror}"


class SourceReader:
    """Opens the files of an ``ImportPlan`` from the descriptor the scan walked from, one
    directory at a time (``openat`` with ``O_NOFOLLOW``), and proves each directory and
    file on the way to be the one the scan saw (``st_dev``, ``st_ino``; for files also type,
    size and modification time).  Directory descriptors are kept for the next file in the
    same directory.  ``close`` releases them (the root descriptor stays the caller's)."""

    def __init__(self, src: Path, root_fd: int, plan: ImportPlan, *, profile: str) -> None:
        self.src = src
        self.root_fd = root_fd
        self.dirs = plan.source_dirs
        self.profile = profile
        self._chain: list[tuple[str, int]] = []  # open directories below the root

    def close(self) -> None:
        while self._chain:
            os.close(self._chain.pop()[1])

    def _dir_fd(self, parts: list[str]) -> int:
        """The proved descriptor of the directory ``parts`` (raw names below the root)."""
        keep = 0
        while (
            keep < len(self._chain)
            and keep < len(parts)
            and self._chain[keep][0] == "/".join(parts[: keep + 1])
        ):
            keep += 1
        while len(self._chain) > keep:
            os.close(self._chain.pop()[1])
        for i in range(keep, len(parts)):
            rel = "/".join(parts[: i + 1])
            parent = self._chain[-1][1] if self._chain else self.root_fd
            try:
                fd = os.open(parts[i], _DIR_FLAGS, dir_fd=parent)
            except OSError as err:
                what = _replaced(err)
                try:  # O_DIRECTORY says ENOTDIR for a symbolic link: say which it is
                    if stat.S_ISLNK(
                        os.stat(parts[i], dir_fd=parent, follow_symlinks=False).st_mode
                    ):
                        what = "it is now a symbolic link"
                except OSError:
                    pass
                raise self._dir_replaced(rel, what) from None
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self.dirs.get(rel):
                os.close(fd)
                raise self._dir_replaced(rel, "it is another directory now")
            self._chain.append((rel, fd))
        return self._chain[-1][1] if self._chain else self.root_fd

    def _dir_replaced(self, rel: str, what: str) -> PayloadError:
        return path_problem(
            self.profile,
            self.src / rel,
            f"was replaced after the source was scanned ({what}); nothing was imported and "
            "nothing outside the source was read: import again once nothing changes the source",
        )

    def open(self, f: SourceFile) -> int:
        """A read-only descriptor on ``f``, proved to be the scanned file; ``PayloadError``
        for a replaced directory on the way, ``SourceChanged`` for a replaced or changed
        file, ``OSError`` when it cannot be opened."""
        parts = f.rel.split("/")
        parent = self._dir_fd(parts[:-1])
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
                raise SourceChanged(_replaced(err)) from None
            raise  # e.g. permission denied: the caller says it cannot be read
        st = os.fstat(fd)
        if (
            (st.st_dev, st.st_ino) != (f.dev, f.ino)
            or not stat.S_ISREG(st.st_mode)
            or st.st_size != f.size
            or st.st_mtime_ns != f.mtime_ns
        ):
            os.close(fd)
            raise SourceChanged("it is not the file that was scanned any more")
        return fd


# --- planning (pure) --------------------------------------------------------------------


def _name_problem(
    src: Path, e: SourceEntry, nfc: str, by_nfc: dict[str, SourceEntry], profile: str
) -> FdffdError | None:
    """Why ``e`` (named ``nfc`` once normalised) cannot be imported, or None: it collides
    with an earlier entry once normalised, it is OS junk, or FAT/exFAT cannot hold it."""
    other = by_nfc.setdefault(nfc, e)
    if other is not e:
        return NameNotAllowedError(
            path=shown(str(src / e.rel)),
            profile=profile,
            detail=(
                f"'{shown(e.rel.split('/')[-1])}' and '{shown(other.rel.split('/')[-1])}' are "
                "the same name once normalised to Unicode NFC, and a reader would show "
                "two identical names: remove or rename one"
            ),
        )
    name = nfc.rsplit("/", 1)[-1]
    junk = junk_reason(name)
    if junk is not None:
        return path_problem(
            profile,
            src / nfc,
            f"is {junk}, which a system or a program leaves behind; it is not content and "
            "may tell a reader about the computer or the person it came from: delete it",
        )
    try:
        check_component(name, nfc)
        check_tree([nfc])  # ancestors passed already: this checks the path's length
    except NameNotAllowedError as err:
        return NameNotAllowedError(
            path=shown(str(src / nfc)), detail=err.fields["detail"], profile=profile
        )
    return None


def _case_clashes(src: Path, paths: Iterable[str], profile: str) -> list[FdffdError]:
    """Every name that equals another in its directory but for letter case (FAT and exFAT
    see one name), reported together with the other problems of the tree."""
    seen: dict[tuple[str, str], str] = {}
    out: list[FdffdError] = []
    for path in sorted(paths):
        parent, _, name = path.rpartition("/")
        other = seen.setdefault((parent, fold_case(name)), name)
        if other != name:
            where = f"'{parent}'" if parent else "the top directory"
            out.append(
                NameNotAllowedError(
                    path=shown(str(src / path)),
                    detail=(
                        f"'{shown(name)}' and '{shown(other)}' in {shown(where)} differ only "
                        "in letter case; FAT and exFAT treat them as the same name: rename one"
                    ),
                    profile=profile,
                )
            )
    return out


def _tree_problems(src: Path, paths: list[str], profile: str) -> list[FdffdError]:
    """``check_tree`` over the whole plan: what it adds beyond the per-name checks is
    nothing, but it is the rule imaging applies, kept as a backstop."""
    try:
        check_tree(paths)
    except NameNotAllowedError as err:
        return [
            NameNotAllowedError(
                path=shown(str(src / err.fields["path"])),
                detail=err.fields["detail"],
                profile=profile,
            )
        ]
    return []


def _raise_problems(src: Path, found: Sequence[FdffdError], profile: str) -> None:
    """Raise one problem as itself, several as one ``PayloadError`` listing them."""
    if len(found) == 1:
        raise found[0]
    if found:
        listed = "\n  - ".join(
            str(p.fields["detail"]) if type(p) is PayloadError else str(p)
            for p in found[:_MAX_LISTED_PROBLEMS]
        )
        more = len(found) - _MAX_LISTED_PROBLEMS
        raise PayloadError(
            f"{len(found)} problems in {shown(str(src))}, nothing was imported:\n  - {listed}"
            + (f"\n  ... and {more} more" if more > 0 else ""),
            profile=profile,
            problems=[str(p) for p in found],
        )


def plan_import(
    src: Path,
    entries: Iterable[SourceEntry],
    *,
    profile: str,
    filesystem: str = "auto",
    problems: Sequence[FdffdError] = (),
) -> ImportPlan:
    """Decide what an import copies, or raise every problem at once (pure, no I/O).

    Names are normalised to NFC; names that FAT/exFAT cannot hold, NFC or case
    collisions, OS junk files, no files at all, and on FAT32 files of 4 GiB or more
    are problems.  One problem is raised as itself (``NameNotAllowedError``,
    ``FileTooLargeError``, ``PayloadError``), several as one ``PayloadError`` listing them."""
    found: list[FdffdError] = list(problems)
    by_nfc: dict[str, SourceEntry] = {}
    bad_dirs: set[str] = set()
    plan_dirs: list[str] = []
    plan_files: list[SourceFile] = []
    source_dirs: dict[str, tuple[int, int]] = {}
    for e in sorted(entries, key=lambda e: e.rel):
        if e.is_dir:
            source_dirs[e.rel] = (e.dev, e.ino)
        parts = e.rel.split("/")
        if any("/".join(parts[:i]) in bad_dirs for i in range(1, len(parts))):
            if e.is_dir:
                bad_dirs.add(e.rel)
            continue  # its parent directory is already reported
        nfc = "/".join(unicodedata.normalize("NFC", p) for p in parts)
        bad = _name_problem(src, e, nfc, by_nfc, profile)
        if bad is not None:
            found.append(bad)
            if e.is_dir:
                bad_dirs.add(e.rel)
        elif e.is_dir:
            plan_dirs.append(nfc)
        else:
            if filesystem == "fat32" and e.size > FAT32_MAX_FILE_BYTES:
                found.append(
                    FileTooLargeError(
                        path=shown(str(src / nfc)),
                        size=e.size,
                        filesystem="FAT32",
                        limit=FAT32_MAX_FILE_BYTES,
                        profile=profile,
                    )
                )
            plan_files.append(SourceFile(nfc, src / e.rel, e.size, e.mtime_ns, e.rel, e.dev, e.ino))
    paths = [*plan_dirs, *(f.path for f in plan_files)]
    found.extend(_case_clashes(src, paths, profile))
    if not found:
        found.extend(_tree_problems(src, paths, profile))
    if not found and not plan_files:
        found.append(
            path_problem(
                profile,
                src,
                "holds no files; a profile needs at least one file (empty directories alone "
                "are not a payload)",
            )
        )
    _raise_problems(src, found, profile)
    plan_dirs.sort()
    plan_files.sort(key=lambda f: f.path)
    return ImportPlan(tuple(plan_dirs), tuple(plan_files), source_dirs)

"""What an import would copy: scan the source tree, then decide (pure) what becomes the profile.

``scan_source`` walks a directory without following links and notes what it finds and what it
cannot take (links, special files, unreadable entries).  ``plan_import`` is a pure function of
that list: names normalised to NFC, every name FAT or exFAT cannot hold, every collision (NFC
or letter case), the files an operating system leaves behind, an empty tree and, on FAT32,
files of 4 GiB or more are reported at once, or it returns the ``ImportPlan``.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fdffd.errors import FdffdError, FileTooLargeError, NameNotAllowedError, PayloadError
from fdffd.imaging.names import check_component, check_tree, fold_case
from fdffd.text import shown

from .manifest import FOUR_GIB

#: the values of ``job.filesystem`` an import understands
FILESYSTEMS = ("auto", "fat32", "exfat")
#: the largest file FAT32 can hold
FAT32_MAX_FILE_BYTES = FOUR_GIB - 1

#: Files an operating system leaves in folders it has shown.  They would tell a reader
#: about the computer the payload came from, and nobody wants them on a drive.
JUNK_NAMES = frozenset(
    {
        ".DS_Store",
        ".Spotlight-V100",
        ".Trashes",
        ".fseventsd",
        ".TemporaryItems",
        ".DocumentRevisions-V100",
        "Thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
        "$RECYCLE.BIN",
        "System Volume Information",
        ".directory",
    }
)
_MAX_LISTED_PROBLEMS = 50

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass(frozen=True)
class SourceEntry:
    """A file or directory found in the source: ``rel`` is its '/'-separated path there,
    as the source spells it (maybe not NFC)."""

    rel: str
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class SourceFile:
    """A file to import: ``path`` in the profile (NFC), ``source`` its absolute path."""

    path: str
    source: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ImportPlan:
    """What an import copies: every directory (NFC, sorted) and every file (by path)."""

    dirs: tuple[str, ...]
    files: tuple[SourceFile, ...]


def path_problem(profile: str, path: Path | str, detail: str) -> PayloadError:
    """A ``PayloadError`` naming ``path`` (shown safely) and what is wrong with it."""
    return PayloadError(f"{shown(str(path))}: {detail}", profile=profile)


# --- scanning ---------------------------------------------------------------------------


def _entry_of(path: Path, rel: str, st: os.stat_result, profile: str) -> SourceEntry | PayloadError:
    """The entry for one scanned item, or the reason it cannot be imported."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return path_problem(
            profile,
            path,
            "is a symbolic link; a profile holds only regular files and directories: "
            "replace it with what it points to (cp -L) or remove it",
        )
    if stat.S_ISDIR(mode):
        return SourceEntry(rel, True)
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            return path_problem(
                profile, path, "cannot be read (permission denied); fix its permissions"
            )
        return SourceEntry(rel, False, st.st_size, st.st_mtime_ns)
    kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
    return path_problem(
        profile,
        path,
        f"is {kind}, not a regular file; a profile holds only regular files and "
        "directories: remove it",
    )


def scan_source(src: Path, *, profile: str) -> tuple[list[SourceEntry], list[FdffdError]]:
    """Walk ``src`` without following links: its entries, and the problems found."""
    entries: list[SourceEntry] = []
    problems: list[FdffdError] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        here = src / rel if rel else src
        try:
            with os.scandir(here) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as err:
            problems.append(
                path_problem(profile, here, f"cannot read this directory: {err.strerror}")
            )
            continue
        for item in reversed(items):
            r = f"{rel}/{item.name}" if rel else item.name
            path = src / r
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as err:
                problems.append(path_problem(profile, path, f"cannot stat: {err.strerror}"))
                continue
            found = _entry_of(path, r, st, profile)
            if isinstance(found, PayloadError):
                problems.append(found)
                continue
            entries.append(found)
            if found.is_dir:
                stack.append(r)
    return entries, problems


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
    if name in JUNK_NAMES or name.startswith("._"):
        return path_problem(
            profile,
            src / nfc,
            "is a file or folder an operating system leaves behind (Finder, Explorer); "
            "it would tell a reader about the computer it came from: delete it",
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
    for e in sorted(entries, key=lambda e: e.rel):
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
            plan_files.append(SourceFile(nfc, src / e.rel, e.size, e.mtime_ns))
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
    return ImportPlan(tuple(plan_dirs), tuple(plan_files))

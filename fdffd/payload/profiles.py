"""Payload profiles: immutable, hashed versions of a directory tree, ready to image.

On disk (docs/payload.md)::

    <payload_dir>/<name>/
        current -> versions/<sha256>        symlink, switched atomically (rename)
        versions/<sha256>/manifest.json     canonical manifest; <sha256> is its SHA-256
        versions/<sha256>/files/...         the payload tree (files 0644, dirs 0755)
        in-use/<sha256>.lock                a job holds a shared flock on it while imaging
        .lock                               serialises imports and prunes of this profile

A version is never modified after it is published: ``add_profile`` copies the source
into a staging directory, renames it to ``versions/<sha256>`` and only then switches
``current``.  A job pins one version with ``open_profile`` (resolve ``current`` once,
shared ``flock`` on its lock file) and reads only that version's files, so a re-import
during a job changes nothing the job sees, and ``prune_profile`` skips pinned versions.

Import refuses, with the path and the reason, and leaving nothing behind: names FAT or
exFAT cannot hold (``fdffd.imaging.names``), names that collide once normalised to NFC,
symbolic links, special files, unreadable files or directories, files the operating
system leaves behind (``.DS_Store``, ``Thumbs.db``, ...), a source without files, and
on ``filesystem = "fat32"`` files of 4 GiB or more.  Names not in NFC are normalised to
NFC (macOS writes Hangul decomposed).  Every problem found is reported at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3

from fdffd.errors import (
    FdffdError,
    FileTooLargeError,
    NameNotAllowedError,
    PayloadError,
    UsageError,
)
from fdffd.fsutil import fsync_dir
from fdffd.imaging.names import check_component, check_tree, fold_case
from fdffd.imaging.types import FileEntry, Tree
from fdffd.log import get_logger
from fdffd.sizes import format_size

from .manifest import FOUR_GIB, PROFILE_NAME_PATTERN, FileRecord, Manifest, load_manifest

CURRENT = "current"
VERSIONS_DIR = "versions"
IN_USE_DIR = "in-use"
FILES_DIR = "files"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
_STAGING_PREFIX = ".import-"
_DOOMED_PREFIX = ".delete-"
_LINK_PREFIX = ".current-"

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
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(PROFILE_NAME_PATTERN)
# bidirectional controls can make a shown path read differently from what it is
_HIDDEN = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x200E, 0x200F}


# --- small helpers ----------------------------------------------------------------------


def shown(text: str) -> str:
    """``text`` safe for a terminal or a log: control and bidi characters escaped, bytes
    that were not UTF-8 (``os`` gives them as lone surrogates) shown as ``\\xNN``."""
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o <= 0xDFFF or o in _HIDDEN:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def check_profile_name(name: str) -> None:
    """Raise ``PayloadError`` unless ``name`` is ``[A-Za-z0-9._-]+``, not starting with '.'."""
    if not _NAME_RE.match(name):
        raise PayloadError(
            f"{shown(name)!r} is not a valid profile name: use 1 to 64 of the characters "
            "A-Z a-z 0-9 . _ - and do not start with '.'",
            profile=shown(name),
        )


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _profile_names(payload_dir: Path) -> list[str]:
    try:
        names = sorted(os.listdir(payload_dir))
    except OSError:
        return []
    return [n for n in names if _NAME_RE.match(n) and (payload_dir / n / VERSIONS_DIR).is_dir()]


def _check_payload_dir(payload_dir: Path) -> None:
    """Raise ``UsageError`` when ``station.payload_dir`` exists but is no directory."""
    if payload_dir.exists() and not payload_dir.is_dir():
        raise UsageError(
            f"station.payload_dir {shown(str(payload_dir))} is not a directory; fix the "
            "config, or move what is there"
        )


def _no_such_profile(payload_dir: Path, name: str) -> PayloadError:
    others = _profile_names(payload_dir)
    there = f" (profiles there: {', '.join(others)})" if others else ""
    return PayloadError(
        f"no payload profile '{name}' in {payload_dir}{there}; import one with "
        f"`fdffctl payload add {name} DIR`",
        profile=name,
    )


# --- hashing and copying ----------------------------------------------------------------


class _SourceChanged(Exception):
    pass


def _data_regions(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions below ``size`` that may hold data; the rest are holes,
    which read as zeros.  Without SEEK_DATA support the whole file is one region."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole from here on
                return
            yield pos, size
            return
        if start >= size:
            return
        try:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError:
            end = size
        if end <= start:
            end = size
        yield start, end
        pos = end


def _hash_zeros(hashes: tuple[Any, ...], n: int) -> None:
    view = memoryview(_ZEROS)
    while n > 0:
        k = min(n, _CHUNK)
        for h in hashes:
            h.update(view[:k])
        n -= k


def _stream(fd: int, size: int, out: int | None) -> tuple[str, str]:
    """(SHA-256, BLAKE3) of the first ``size`` bytes of ``fd``, read once; copied to ``out``
    when given (holes stay holes).  Raises ``_SourceChanged`` when the file is shorter."""
    hashes = (hashlib.sha256(), blake3.blake3())
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    pos = 0
    for start, end in _data_regions(fd, size):
        _hash_zeros(hashes, start - pos)
        pos = start
        while pos < end:
            n = os.preadv(fd, [view[: min(_CHUNK, end - pos)]], pos)
            if n == 0:
                raise _SourceChanged(f"it ended at byte {pos}")
            for h in hashes:
                h.update(view[:n])
            if out is not None:
                done = 0
                while done < n:
                    done += os.pwrite(out, view[done:n], pos + done)
            pos += n
    _hash_zeros(hashes, size - pos)
    if out is not None:
        os.ftruncate(out, size)
    return hashes[0].hexdigest(), hashes[1].hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a regular file, not following a symlink."""
    # O_NONBLOCK: a FIFO put where a file was must not hang the open (files ignore it)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return st.st_size, _stream(fd, st.st_size, None)[0]
    finally:
        os.close(fd)


# --- scanning and planning an import -----------------------------------------------------


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


def _problem(profile: str, path: Path | str, detail: str) -> PayloadError:
    return PayloadError(f"{shown(str(path))}: {detail}", profile=profile)


_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


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
            problems.append(_problem(profile, here, f"cannot read this directory: {err.strerror}"))
            continue
        for item in reversed(items):
            r = f"{rel}/{item.name}" if rel else item.name
            path = src / r
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as err:
                problems.append(_problem(profile, path, f"cannot stat: {err.strerror}"))
                continue
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                problems.append(
                    _problem(
                        profile,
                        path,
                        "is a symbolic link; a profile holds only regular files and directories: "
                        "replace it with what it points to (cp -L) or remove it",
                    )
                )
            elif stat.S_ISDIR(mode):
                entries.append(SourceEntry(r, True))
                stack.append(r)
            elif stat.S_ISREG(mode):
                if not os.access(path, os.R_OK):
                    problems.append(
                        _problem(
                            profile,
                            path,
                            "cannot be read (permission denied); fix its permissions",
                        )
                    )
                    continue
                entries.append(SourceEntry(r, False, st.st_size, st.st_mtime_ns))
            else:
                kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
                problems.append(
                    _problem(
                        profile,
                        path,
                        f"is {kind}, not a regular file; a profile holds only regular files and "
                        "directories: remove it",
                    )
                )
    return entries, problems


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
        nfc = "/".join(unicodedata.normalize("NFC", p) for p in parts)
        shown_path = src / nfc
        if any("/".join(parts[:i]) in bad_dirs for i in range(1, len(parts))):
            if e.is_dir:
                bad_dirs.add(e.rel)
            continue  # its parent directory is already reported
        other = by_nfc.setdefault(nfc, e)
        if other is not e:
            found.append(
                NameNotAllowedError(
                    path=shown(str(src / e.rel)),
                    profile=profile,
                    detail=(
                        f"'{shown(parts[-1])}' and '{shown(other.rel.split('/')[-1])}' are "
                        "the same name once normalised to Unicode NFC, and a reader would show "
                        "two identical names: remove or rename one"
                    ),
                )
            )
            if e.is_dir:
                bad_dirs.add(e.rel)
            continue
        name = nfc.rsplit("/", 1)[-1]
        if name in JUNK_NAMES or name.startswith("._"):
            found.append(
                _problem(
                    profile,
                    shown_path,
                    "is a file or folder an operating system leaves behind (Finder, Explorer); "
                    "it would tell a reader about the computer it came from: delete it",
                )
            )
            if e.is_dir:
                bad_dirs.add(e.rel)
            continue
        try:
            check_component(name, nfc)
            check_tree([nfc])  # ancestors passed already: this checks the path's length
        except NameNotAllowedError as err:
            found.append(
                NameNotAllowedError(
                    path=shown(str(shown_path)),
                    detail=err.fields["detail"],
                    profile=profile,
                )
            )
            if e.is_dir:
                bad_dirs.add(e.rel)
            continue
        if e.is_dir:
            plan_dirs.append(nfc)
            continue
        if filesystem == "fat32" and e.size > FAT32_MAX_FILE_BYTES:
            found.append(
                FileTooLargeError(
                    path=shown(str(shown_path)),
                    size=e.size,
                    filesystem="FAT32",
                    limit=FAT32_MAX_FILE_BYTES,
                    profile=profile,
                )
            )
        plan_files.append(SourceFile(nfc, src / e.rel, e.size, e.mtime_ns))
    found.extend(_case_clashes(src, [*plan_dirs, *(f.path for f in plan_files)], profile))
    if not found:  # (what check_tree adds beyond the checks above: nothing, as a backstop)
        try:
            check_tree([*plan_dirs, *(f.path for f in plan_files)])
        except NameNotAllowedError as err:
            found.append(
                NameNotAllowedError(
                    path=shown(str(src / err.fields["path"])),
                    detail=err.fields["detail"],
                    profile=profile,
                )
            )
    if not found and not plan_files:
        found.append(
            _problem(
                profile,
                src,
                "holds no files; a profile needs at least one file (empty directories alone "
                "are not a payload)",
            )
        )
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
    plan_dirs.sort()
    plan_files.sort(key=lambda f: f.path)
    return ImportPlan(tuple(plan_dirs), tuple(plan_files))


# --- locks ------------------------------------------------------------------------------


@contextmanager
def _exclusive(pdir: Path, *, create: bool) -> Iterator[None]:
    """Hold the profile's ``.lock`` exclusively (imports and prunes, never jobs)."""
    lock = pdir / LOCK_FILE
    while True:
        if create:
            pdir.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if not create:
                raise
            continue  # a failed first import removed the profile directory meanwhile
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(fd, lock):
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _clean_leftovers(pdir: Path) -> None:
    """Remove what an import or prune killed midway left (the caller holds ``.lock``)."""
    for entry in os.scandir(pdir):
        if entry.name.startswith((_STAGING_PREFIX, _DOOMED_PREFIX)):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif entry.name.startswith(_LINK_PREFIX):
            os.unlink(entry.path)


def _resolve_current(payload_dir: Path, name: str) -> str:
    pdir = payload_dir / name
    link = pdir / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        if not (pdir / VERSIONS_DIR).is_dir():
            raise _no_such_profile(payload_dir, name) from None
        raise PayloadError(
            f"{pdir} has no current version (did an import never finish?); import one with "
            f"`fdffctl payload add {name} DIR`",
            profile=name,
        ) from None
    except OSError:
        raise PayloadError(
            f"{link} is not a symbolic link to a version; re-import the profile with "
            f"`fdffctl payload add {name} DIR`",
            profile=name,
        ) from None
    head, _, sha = target.partition("/")
    if head != VERSIONS_DIR or not _SHA256_RE.fullmatch(sha):
        raise PayloadError(
            f"{link} points to {shown(target)!r}, not to versions/<sha256>; re-import the "
            f"profile with `fdffctl payload add {name} DIR`",
            profile=name,
        )
    return sha


# --- import -----------------------------------------------------------------------------


def _copy_file(f: SourceFile, dest: Path, profile: str) -> tuple[str, str]:
    try:  # O_NONBLOCK: a FIFO swapped in since the scan must not hang the import
        fd = os.open(f.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise _problem(profile, f.source, f"cannot read: {err.strerror}") from None
    try:
        before = os.fstat(fd)
        if (
            not stat.S_ISREG(before.st_mode)
            or before.st_size != f.size
            or before.st_mtime_ns != f.mtime_ns
        ):
            raise _SourceChanged("it changed after the source was scanned")
        try:
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise _problem(profile, dest, f"cannot create: {err.strerror}") from None
        try:
            os.fchmod(out, 0o644)
            digest = _stream(fd, f.size, out)
            os.fsync(out)
        finally:
            os.close(out)
        after = os.fstat(fd)
        if after.st_size != f.size or after.st_mtime_ns != before.st_mtime_ns:
            raise _SourceChanged(
                f"its size or time changed while it was copied ({f.size} bytes before, "
                f"{after.st_size} after)"
            )
        return digest
    except _SourceChanged as why:
        raise _problem(
            profile,
            f.source,
            f"the file changed while it was being imported ({why}); nothing was imported: "
            "import again once nothing writes to the source",
        ) from None
    except OSError as err:
        raise _problem(profile, f.source, f"copy failed: {err.strerror}") from None
    finally:
        os.close(fd)


def _build_version(
    pdir: Path, plan: ImportPlan, *, profile: str, created_at: str
) -> tuple[Path, Manifest]:
    """Copy ``plan`` into a new staging directory; return it and its manifest (written)."""
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=pdir))
    try:
        os.chmod(staging, 0o755)
        root = staging / FILES_DIR
        all_dirs = [root, *(root / d for d in plan.dirs)]
        for d in all_dirs:
            d.mkdir()
            os.chmod(d, 0o755)
        records = tuple(
            FileRecord(path=f.path, size=f.size, sha256=sha, blake3=b3)
            for f in plan.files
            for sha, b3 in [_copy_file(f, root / f.path, profile)]
        )
        manifest = Manifest(
            profile=profile,
            created_at=created_at,
            directories=plan.dirs,
            files=records,
        )
        with open(staging / MANIFEST_FILE, "xb") as fh:
            fh.write(manifest.canonical_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(staging / MANIFEST_FILE, 0o644)
        for d in [*all_dirs, staging]:
            fsync_dir(d)
        return staging, manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _switch_current(pdir: Path, sha: str) -> None:
    tmp = pdir / f"{_LINK_PREFIX}{secrets.token_hex(8)}"
    os.symlink(f"{VERSIONS_DIR}/{sha}", tmp)
    try:
        os.replace(tmp, pdir / CURRENT)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(pdir)


def _current_if_same(payload_dir: Path, name: str, manifest: Manifest) -> Manifest | None:
    """The current version's manifest when it lists exactly the same tree, else None."""
    try:
        sha = _resolve_current(payload_dir, name)
        cur = load_manifest(
            payload_dir / name / VERSIONS_DIR / sha / MANIFEST_FILE,
            profile=name,
            expected_sha256=sha,
        )
    except PayloadError:
        return None
    same = (cur.profile, cur.directories, cur.files) == (
        manifest.profile,
        manifest.directories,
        manifest.files,
    )
    return cur if same else None


def _forget_empty_profile(pdir: Path) -> None:
    """After a failed import: remove the profile directory if it holds no version."""
    versions = pdir / VERSIONS_DIR
    if versions.is_dir() and any(versions.iterdir()):
        return
    shutil.rmtree(pdir, ignore_errors=True)


def add_profile(
    payload_dir: Path,
    name: str,
    src: Path,
    *,
    filesystem: str = "auto",
    now: datetime | None = None,
) -> Manifest:
    """Import the tree at ``src`` as a new version of profile ``name`` and make it current.

    ``filesystem`` is the station's ``job.filesystem``: with ``"fat32"`` a file of 4 GiB
    or more is refused (with ``"auto"`` it makes jobs use exFAT).  On any refusal or
    failure nothing is left in ``payload_dir``.  Returns the new version's manifest
    (``.manifest_sha256`` is the version id); when the tree is exactly the current
    version's (same paths, sizes, hashes), no new version is made and the current
    manifest is returned."""
    payload_dir = Path(payload_dir)
    src = Path(src)
    check_profile_name(name)
    _check_payload_dir(payload_dir)
    if filesystem not in FILESYSTEMS:
        raise PayloadError(
            f"unknown filesystem {shown(filesystem)!r}; use one of {', '.join(FILESYSTEMS)}",
            profile=name,
        )
    if not src.is_dir():
        what = "does not exist" if not src.exists() else "is not a directory"
        raise _problem(name, src, f"{what}; give the directory to import")
    real_src, real_payload = src.resolve(), payload_dir.resolve()
    if real_payload == real_src or real_src in real_payload.parents:
        raise _problem(
            name,
            src,
            f"holds the payload directory {payload_dir}; import a directory outside it",
        )
    entries, problems = scan_source(src, profile=name)
    plan = plan_import(src, entries, profile=name, filesystem=filesystem, problems=problems)

    created_at = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    made_payload_dir = not payload_dir.exists()
    pdir = payload_dir / name
    published: Path | None = None
    try:
        with _exclusive(pdir, create=True):
            try:
                _clean_leftovers(pdir)
                for sub in (VERSIONS_DIR, IN_USE_DIR):
                    (pdir / sub).mkdir(mode=0o755, exist_ok=True)
                staging, manifest = _build_version(pdir, plan, profile=name, created_at=created_at)
                same = _current_if_same(payload_dir, name, manifest)
                if same is not None:  # nothing changed: keep the version id auditors know
                    shutil.rmtree(staging)
                    get_logger(profile=name).info("payload.unchanged", version=same.manifest_sha256)
                    return same
                sha = manifest.manifest_sha256
                target = pdir / VERSIONS_DIR / sha
                (pdir / IN_USE_DIR / f"{sha}.lock").touch(mode=0o644)
                if target.exists():  # the very same version (same files, same second)
                    shutil.rmtree(staging)
                else:
                    os.rename(staging, target)
                    published = target
                    fsync_dir(pdir / VERSIONS_DIR)
                _switch_current(pdir, sha)
            except BaseException:
                if published is not None:
                    shutil.rmtree(published, ignore_errors=True)
                    (pdir / IN_USE_DIR / f"{published.name}.lock").unlink(missing_ok=True)
                _forget_empty_profile(pdir)
                raise
    except BaseException:
        if made_payload_dir:
            with suppress(OSError):
                payload_dir.rmdir()
        raise
    get_logger(profile=name).info(
        "payload.imported",
        version=sha,
        files=len(manifest.files),
        bytes=manifest.total_bytes,
        directories=len(manifest.directories),
    )
    return manifest


# --- using a profile --------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """One pinned version of a profile.  ``root`` is the version directory; the payload
    tree is under ``files_root``.  Valid while its ``open_profile`` context is open."""

    name: str
    manifest_sha256: str
    root: Path
    manifest: Manifest

    @property
    def files_root(self) -> Path:
        return self.root / FILES_DIR

    def tree(self) -> Tree:
        """The payload as imaging takes it: every file (source = its absolute path in this
        version) and every directory, empty ones included."""
        root = self.files_root
        return Tree(
            files=tuple(FileEntry(f.path, f.size, root / f.path) for f in self.manifest.files),
            dirs=self.manifest.directories,
        )

    @property
    def total_bytes(self) -> int:
        return self.manifest.total_bytes

    @property
    def has_file_of_4gib_or_more(self) -> bool:
        return self.manifest.has_file_of_4gib_or_more


def _pin(payload_dir: Path, name: str, version: str | None) -> tuple[int, Profile]:
    check_profile_name(name)
    _check_payload_dir(payload_dir)
    if version is not None and not _SHA256_RE.fullmatch(version):
        raise PayloadError(f"{shown(version)!r} is not a version (64 hex digits)", profile=name)
    pdir = payload_dir / name
    missing = None
    for _ in range(100):
        sha = version or _resolve_current(payload_dir, name)
        vdir = pdir / VERSIONS_DIR / sha
        lock = pdir / IN_USE_DIR / f"{sha}.lock"
        if not vdir.is_dir():
            if version is None and sha != missing:
                missing = sha  # current moved on and the old version was pruned: resolve again
                continue
            if not (pdir / VERSIONS_DIR).is_dir():
                raise _no_such_profile(payload_dir, name)
            if version is None:
                raise PayloadError(
                    f"{pdir / CURRENT} points to version {sha}, which does not exist; "
                    f"import the profile again with `fdffctl payload add {name} DIR`",
                    profile=name,
                )
            raise PayloadError(f"profile has no version {sha} in {pdir}", profile=name)
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _same_file(fd, lock) and vdir.is_dir():
                manifest = load_manifest(vdir / MANIFEST_FILE, profile=name, expected_sha256=sha)
                return fd, Profile(name, sha, vdir.absolute(), manifest)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # pruned while we waited for the lock: try again
    raise PayloadError(f"could not pin a version of the profile in {pdir}", profile=name)


@contextmanager
def open_profile(payload_dir: Path, name: str, *, version: str | None = None) -> Iterator[Profile]:
    """Pin the current version of profile ``name`` (or ``version``) for as long as the
    context is open: a shared ``flock`` on ``in-use/<sha256>.lock`` keeps ``prune_profile``
    away; a re-import makes a new version and leaves this one as it is.

    Raises ``PayloadError`` when the profile does not exist or its manifest is malformed
    or was changed (naming the field)."""
    fd, profile = _pin(Path(payload_dir), name, version)
    try:
        yield profile
    finally:
        os.close(fd)


def check_before_job(profile: Profile) -> None:
    """Cheap check before imaging: every file exists, is a regular file, has its manifest
    size.  Full hashes are checked on the drive by the verify pass."""
    root = profile.files_root
    for f in profile.manifest.files:
        try:
            st = os.lstat(root / f.path)
        except OSError as err:
            what = "is missing" if err.errno == errno.ENOENT else f"cannot be read ({err.strerror})"
        else:
            if not stat.S_ISREG(st.st_mode):
                what = "is no longer a regular file"
            elif st.st_size != f.size:
                what = f"is {st.st_size} bytes, its manifest says {f.size}"
            else:
                continue
        raise PayloadError(
            f"file '{f.path}' of version {profile.manifest_sha256[:12]} {what}: the profile "
            f"was changed after it was imported ({root}); run `fdffctl payload verify "
            f"{profile.name}` and import it again with `fdffctl payload add {profile.name} DIR`",
            profile=profile.name,
        )


# --- prune ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneReport:
    profile: str
    current: str
    kept: tuple[str, ...]
    removed: tuple[str, ...]
    in_use: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "current": self.current,
            "kept": list(self.kept),
            "removed": list(self.removed),
            "in_use": list(self.in_use),
        }


def _version_time(vdir: Path) -> str:
    try:
        created = json.loads((vdir / MANIFEST_FILE).read_bytes())["created_at"]
        if isinstance(created, str):
            return created
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        mtime = vdir.stat().st_mtime
    except OSError:
        return ""
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _versions(pdir: Path) -> list[str]:
    """Version ids of a profile, newest first."""
    vroot = pdir / VERSIONS_DIR
    try:
        shas = [n for n in os.listdir(vroot) if _SHA256_RE.fullmatch(n)]
    except FileNotFoundError:
        return []
    return sorted(shas, key=lambda s: (_version_time(vroot / s), s), reverse=True)


def prune_profile(payload_dir: Path, name: str, keep: int = 1) -> PruneReport:
    """Delete old versions of ``name``: keep the current one and the ``keep - 1`` newest
    others, and never one a job has pinned (``open_profile``)."""
    payload_dir = Path(payload_dir)
    check_profile_name(name)
    _check_payload_dir(payload_dir)
    if keep < 1:
        raise PayloadError(
            "keep must be at least 1 (the current version is always kept)", profile=name
        )
    pdir = payload_dir / name
    if not (pdir / VERSIONS_DIR).is_dir():
        raise _no_such_profile(payload_dir, name)
    removed: list[str] = []
    in_use: list[str] = []
    with _exclusive(pdir, create=False):
        _clean_leftovers(pdir)
        current = _resolve_current(payload_dir, name)
        versions = _versions(pdir)
        others = [s for s in versions if s != current]
        kept = [current, *others[: keep - 1]]
        for sha in others[keep - 1 :]:
            lock = pdir / IN_USE_DIR / f"{sha}.lock"
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    in_use.append(sha)
                    kept.append(sha)
                    continue
                doomed = pdir / f"{_DOOMED_PREFIX}{sha}"
                os.rename(pdir / VERSIONS_DIR / sha, doomed)
                shutil.rmtree(doomed)
                lock.unlink()
                removed.append(sha)
            finally:
                os.close(fd)
        # lock files of versions that no longer exist (a crash between the two steps)
        existing = set(_versions(pdir))
        for entry in os.scandir(pdir / IN_USE_DIR):
            sha = entry.name.removesuffix(".lock")
            if sha in existing:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(entry.path)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    if removed:
        get_logger(profile=name).info("payload.pruned", removed=removed, in_use=in_use)
    return PruneReport(name, current, tuple(kept), tuple(removed), tuple(in_use))


# --- list -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileInfo:
    """One line of ``fdffctl payload list``.  ``error`` is set (and the numbers are 0)
    when the profile cannot be opened."""

    name: str
    manifest_sha256: str | None
    files: int
    bytes: int
    directories: int
    created_at: str | None
    versions: int
    needs_exfat: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "manifest_sha256": self.manifest_sha256,
            "files": self.files,
            "bytes": self.bytes,
            "directories": self.directories,
            "created_at": self.created_at,
            "versions": self.versions,
            "needs_exfat": self.needs_exfat,
            "error": self.error,
        }


def list_profiles(payload_dir: Path) -> list[ProfileInfo]:
    """Every profile in ``payload_dir``, by name (none when the directory is missing)."""
    payload_dir = Path(payload_dir)
    _check_payload_dir(payload_dir)
    out = []
    for name in _profile_names(payload_dir):
        count = len(_versions(payload_dir / name))
        try:
            with open_profile(payload_dir, name) as p:
                m = p.manifest
                out.append(
                    ProfileInfo(
                        name,
                        p.manifest_sha256,
                        len(m.files),
                        m.total_bytes,
                        len(m.directories),
                        m.created_at,
                        count,
                        m.has_file_of_4gib_or_more,
                    )
                )
        except PayloadError as err:
            out.append(
                ProfileInfo(
                    name, None, 0, 0, 0, None, count, error=str(err.fields.get("detail", err))
                )
            )
    return out


# --- verify -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Changed:
    path: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_profile`` found: ``ok`` when nothing differs from the manifest."""

    profile: str
    manifest_sha256: str
    root: Path
    files_checked: int
    bytes_checked: int
    changed: tuple[Changed, ...] = ()
    missing_files: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = ()
    missing_dirs: tuple[str, ...] = ()
    extra_dirs: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (
            self.changed
            or self.missing_files
            or self.extra_files
            or self.missing_dirs
            or self.extra_dirs
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "manifest_sha256": self.manifest_sha256,
            "root": str(self.root),
            "ok": self.ok,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "changed": [{"path": c.path, "detail": c.detail} for c in self.changed],
            "missing_files": list(self.missing_files),
            "extra_files": list(self.extra_files),
            "missing_dirs": list(self.missing_dirs),
            "extra_dirs": list(self.extra_dirs),
        }


def _walk(root: Path) -> tuple[set[str], set[str], set[str]]:
    """(files, dirs, others) under ``root`` as shown paths; symlinks are not followed."""
    files: set[str] = set()
    dirs: set[str] = set()
    others: set[str] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(root / rel if rel else root) as it:
                items = list(it)
        except OSError:
            continue
        for item in items:
            r = f"{rel}/{item.name}" if rel else item.name
            if item.is_dir(follow_symlinks=False):
                dirs.add(r)
                stack.append(r)
            elif item.is_file(follow_symlinks=False):
                files.add(r)
            else:
                others.add(r)
    return files, dirs, others


def verify_profile(payload_dir: Path, name: str, *, version: str | None = None) -> VerifyReport:
    """Re-hash every file of the current version (or ``version``) against its manifest;
    name every changed, missing or extra file and missing or extra directory."""
    with open_profile(Path(payload_dir), name, version=version) as p:
        root = p.files_root
        files, dirs, others = _walk(root)
        changed: list[Changed] = []
        missing: list[str] = []
        checked = nbytes = 0
        for f in p.manifest.files:
            if f.path not in files:
                missing.append(f.path)
                continue
            try:
                size, digest = hash_file(root / f.path)
            except OSError as err:
                changed.append(Changed(f.path, f"cannot be read: {err.strerror}"))
                continue
            checked += 1
            nbytes += size
            if size != f.size:
                changed.append(Changed(f.path, f"is {size} bytes, the manifest says {f.size}"))
            elif digest != f.sha256:
                changed.append(
                    Changed(
                        f.path,
                        f"content differs: SHA-256 {digest}, the manifest says {f.sha256}",
                    )
                )
        listed = {f.path for f in p.manifest.files}
        want_dirs = set(p.manifest.directories)
        return VerifyReport(
            profile=name,
            manifest_sha256=p.manifest_sha256,
            root=root,
            files_checked=checked,
            bytes_checked=nbytes,
            changed=tuple(changed),
            missing_files=tuple(missing),
            extra_files=tuple(sorted(shown(x) for x in (files - listed) | others)),
            missing_dirs=tuple(sorted(want_dirs - dirs)),
            extra_dirs=tuple(sorted(shown(x) for x in dirs - want_dirs)),
        )


# --- output for fdffctl -----------------------------------------------------------------


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """What ``fdffctl payload add --json`` prints (the manifest itself can be long)."""
    return {
        "profile": manifest.profile,
        "manifest_sha256": manifest.manifest_sha256,
        "files": len(manifest.files),
        "bytes": manifest.total_bytes,
        "directories": len(manifest.directories),
        "created_at": manifest.created_at,
        "needs_exfat": manifest.has_file_of_4gib_or_more,
    }


def format_added(manifest: Manifest) -> str:
    m = manifest
    lines = [
        f"imported profile '{m.profile}', version {m.manifest_sha256}",
        f"  {_count(len(m.files), 'file')}, {format_size(m.total_bytes)} "
        f"({m.total_bytes} bytes), {_count(len(m.directories), 'directory', 'directories')}",
    ]
    if m.has_file_of_4gib_or_more:
        lines.append('  holds a file of 4 GiB or more: drives get exFAT (filesystem = "auto")')
    return "\n".join(lines)


def format_list(infos: Sequence[ProfileInfo], payload_dir: Path | None = None) -> str:
    if not infos:
        where = f" in {payload_dir}" if payload_dir is not None else ""
        return f"no payload profiles{where}; import one with `fdffctl payload add NAME DIR`"
    rows = [("PROFILE", "VERSION", "FILES", "SIZE", "DIRS", "CREATED", "VERSIONS")]
    notes = []
    for i in infos:
        if i.error is not None:
            rows.append((i.name, "-", "-", "-", "-", "-", str(i.versions)))
            notes.append(f"{i.name}: {i.error}")
            continue
        rows.append(
            (
                i.name,
                (i.manifest_sha256 or "")[:12],
                str(i.files),
                format_size(i.bytes),
                str(i.directories),
                i.created_at or "-",
                str(i.versions),
            )
        )
        if i.needs_exfat:
            notes.append(f"{i.name}: holds a file of 4 GiB or more (exFAT only)")
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines + notes)


def format_verify(report: VerifyReport) -> str:
    r = report
    head = (
        f"profile '{r.profile}' version {r.manifest_sha256}: "
        f"{_count(r.files_checked, 'file')}, "
        f"{format_size(r.bytes_checked)} checked"
    )
    if r.ok:
        return f"{head}\nclean: every file and directory matches the manifest"
    lines = [head]
    lines += [f"  changed: {c.path}: {c.detail}" for c in r.changed]
    lines += [f"  missing file: {p}" for p in r.missing_files]
    lines += [f"  extra file: {p}" for p in r.extra_files]
    lines += [f"  missing directory: {p}" for p in r.missing_dirs]
    lines += [f"  extra directory: {p}" for p in r.extra_dirs]
    n = len(lines) - 1
    lines.append(
        f"{n} difference{'s' if n != 1 else ''}: the profile was changed after import; "
        f"import it again with `fdffctl payload add {r.profile} DIR`"
    )
    return "\n".join(lines)


def format_pruned(report: PruneReport) -> str:
    r = report
    lines = [f"profile '{r.profile}': current version {r.current[:12]}"]
    lines += [f"  removed {s[:12]}" for s in r.removed]
    lines += [f"  kept {s[:12]} (in use by a job)" for s in r.in_use]
    if not r.removed and not r.in_use:
        lines.append(f"  nothing to remove ({len(r.kept)} version(s) kept)")
    return "\n".join(lines)

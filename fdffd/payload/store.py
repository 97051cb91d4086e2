"""The profile store on disk: its layout, its locks, pinning a version, listing and pruning.

On disk (docs/payload.md)::

    <payload_dir>/<name>/
        current -> versions/<sha256>        symlink, switched atomically (rename)
        versions/<sha256>/manifest.json     canonical manifest; <sha256> is its SHA-256
        versions/<sha256>/signature.json    a curator's signature over the manifest (optional)
        versions/<sha256>/files/...         the payload tree (files 0644, dirs 0755)
        in-use/<sha256>.lock                a job holds a shared flock on it while imaging
        .lock                               serialises imports and prunes of this profile

A version is never modified after it is published (``fdffd.payload.importer`` makes them).
A job pins one version with ``open_profile`` (resolve ``current`` once, shared ``flock`` on
its lock file) and reads only that version's files, so a re-import during a job changes
nothing the job sees, and ``prune_profile`` skips pinned versions.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from fdffd.config import PayloadSection
from fdffd.errors import PayloadError, UsageError
from fdffd.fsutil import fsync_dir
from fdffd.imaging.types import FileEntry, Tree
from fdffd.log import get_logger
from fdffd.text import shown

from .manifest import PROFILE_NAME_PATTERN, Manifest, load_manifest
from .signing import Trust, check_version_signature

CURRENT = "current"
VERSIONS_DIR = "versions"
IN_USE_DIR = "in-use"
FILES_DIR = "files"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".import-"
_DOOMED_PREFIX = ".delete-"
_LINK_PREFIX = ".current-"

SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(PROFILE_NAME_PATTERN)


# --- names and places -------------------------------------------------------------------


def check_profile_name(name: str) -> None:
    """Raise ``PayloadError`` unless ``name`` is ``[A-Za-z0-9._-]+``, not starting with '.'."""
    if not _NAME_RE.match(name):
        raise PayloadError(
            f"{shown(name)!r} is not a valid profile name: use 1 to 64 of the characters "
            "A-Z a-z 0-9 . _ - and do not start with '.'",
            profile=shown(name),
        )


def check_payload_dir(payload_dir: Path) -> None:
    """Raise ``UsageError`` when ``station.payload_dir`` exists but is no directory."""
    if payload_dir.exists() and not payload_dir.is_dir():
        raise UsageError(
            f"station.payload_dir {shown(str(payload_dir))} is not a directory; fix the "
            "config, or move what is there"
        )


def make_parents(payload_dir: Path) -> None:
    """Create the missing directories above ``payload_dir`` with mode 0700: the first of
    them is often the station's state dir (``/var/lib/fdffd``), which stays private
    whoever creates it first.  ``UsageError`` naming the key when one cannot be made."""
    missing = []
    for parent in payload_dir.parents:
        if parent.is_dir():
            break
        missing.append(parent)
    for parent in reversed(missing):
        try:
            parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            raise UsageError(
                f"station.payload_dir {shown(str(payload_dir))}: cannot create "
                f"{shown(str(parent))}: {err.strerror}"
            ) from None


def _profile_names(payload_dir: Path) -> list[str]:
    try:
        names = sorted(os.listdir(payload_dir))
    except OSError:
        return []
    return [n for n in names if _NAME_RE.match(n) and (payload_dir / n / VERSIONS_DIR).is_dir()]


def no_such_profile(payload_dir: Path, name: str) -> PayloadError:
    """The error for a profile that is not there, naming the ones that are."""
    others = _profile_names(payload_dir)
    there = f" (profiles there: {', '.join(others)})" if others else ""
    return PayloadError(
        f"no payload profile '{name}' in {payload_dir}{there}; import one with "
        f"`fdffctl payload add {name} DIR`",
        profile=name,
    )


# --- locks and the current version ------------------------------------------------------


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


@contextmanager
def exclusive(pdir: Path, *, create: bool) -> Iterator[None]:
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


def clean_leftovers(pdir: Path) -> None:
    """Remove what an import or prune killed midway left (the caller holds ``.lock``)."""
    for entry in os.scandir(pdir):
        if entry.name.startswith((STAGING_PREFIX, _DOOMED_PREFIX)):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif entry.name.startswith(_LINK_PREFIX):
            os.unlink(entry.path)


def resolve_current(payload_dir: Path, name: str) -> str:
    """The version id ``current`` points to; ``PayloadError`` saying what is wrong."""
    pdir = payload_dir / name
    link = pdir / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        if not (pdir / VERSIONS_DIR).is_dir():
            raise no_such_profile(payload_dir, name) from None
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
    if head != VERSIONS_DIR or not SHA256_RE.fullmatch(sha):
        raise PayloadError(
            f"{link} points to {shown(target)!r}, not to versions/<sha256>; re-import the "
            f"profile with `fdffctl payload add {name} DIR`",
            profile=name,
        )
    return sha


def switch_current(pdir: Path, sha: str) -> None:
    """Point ``current`` at ``versions/<sha>`` atomically and durably: a new symlink beside
    it is renamed over it, then the directory is fsynced.  (A symlink, so not through
    ``atomic_write``, which writes regular files.)"""
    tmp = pdir / f"{_LINK_PREFIX}{secrets.token_hex(8)}"
    os.symlink(f"{VERSIONS_DIR}/{sha}", tmp)
    try:
        os.replace(tmp, pdir / CURRENT)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(pdir)


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
            priority=self.manifest.priority or (),
        )

    @property
    def total_bytes(self) -> int:
        return self.manifest.total_bytes

    @property
    def has_file_of_4gib_or_more(self) -> bool:
        return self.manifest.has_file_of_4gib_or_more


def _missing_version(
    pdir: Path, payload_dir: Path, name: str, sha: str, *, pinned: bool
) -> NoReturn:
    """Raise the error for a version directory that is not there."""
    if not (pdir / VERSIONS_DIR).is_dir():
        raise no_such_profile(payload_dir, name)
    if not pinned:
        raise PayloadError(
            f"{pdir / CURRENT} points to version {sha}, which does not exist; "
            f"import the profile again with `fdffctl payload add {name} DIR`",
            profile=name,
        )
    raise PayloadError(f"profile has no version {sha} in {pdir}", profile=name)


def _lock_shared(vdir: Path, lock: Path, name: str, sha: str) -> tuple[int, Profile] | None:
    """A shared ``flock`` on ``lock`` and the version it pins, or None when the version was
    pruned while this waited for the lock."""
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
    os.close(fd)
    return None


def _pin(payload_dir: Path, name: str, version: str | None) -> tuple[int, Profile]:
    check_profile_name(name)
    check_payload_dir(payload_dir)
    if version is not None and not SHA256_RE.fullmatch(version):
        raise PayloadError(f"{shown(version)!r} is not a version (64 hex digits)", profile=name)
    pdir = payload_dir / name
    missing = None
    for _ in range(100):
        sha = version or resolve_current(payload_dir, name)
        vdir = pdir / VERSIONS_DIR / sha
        if not vdir.is_dir():
            if version is None and sha != missing:
                missing = sha  # current moved on and the old version was pruned: resolve again
                continue
            _missing_version(pdir, payload_dir, name, sha, pinned=version is not None)
        pinned = _lock_shared(vdir, pdir / IN_USE_DIR / f"{sha}.lock", name, sha)
        if pinned is not None:
            return pinned
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


def check_before_job(profile: Profile, settings: PayloadSection | None = None) -> None:
    """Cheap check before imaging: every file exists, is a regular file, has its manifest
    size.  Full hashes are checked on the drive by the verify pass.  With ``settings``
    (the station's ``[payload]``) and ``require_signed``, the version's manifest must also
    carry a valid signature by a trusted curator key (``check_version_signature``)."""
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
    if settings is not None and settings.require_signed:
        check_version_signature(
            profile.root,
            profile.manifest_sha256,
            Trust.from_settings(settings),
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
        shas = [n for n in os.listdir(vroot) if SHA256_RE.fullmatch(n)]
    except FileNotFoundError:
        return []
    return sorted(shas, key=lambda s: (_version_time(vroot / s), s), reverse=True)


def _remove_unless_pinned(pdir: Path, sha: str) -> bool:
    """Delete version ``sha`` unless a job holds its lock; True when it was deleted."""
    lock = pdir / IN_USE_DIR / f"{sha}.lock"
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        doomed = pdir / f"{_DOOMED_PREFIX}{sha}"
        os.rename(pdir / VERSIONS_DIR / sha, doomed)
        shutil.rmtree(doomed)
        lock.unlink()
        return True
    finally:
        os.close(fd)


def _remove_stale_locks(pdir: Path) -> None:
    """Lock files of versions that no longer exist (a crash between the two steps)."""
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


def prune_profile(payload_dir: Path, name: str, keep: int = 1) -> PruneReport:
    """Delete old versions of ``name``: keep the current one and the ``keep - 1`` newest
    others, and never one a job has pinned (``open_profile``)."""
    payload_dir = Path(payload_dir)
    check_profile_name(name)
    check_payload_dir(payload_dir)
    if keep < 1:
        raise PayloadError(
            "keep must be at least 1 (the current version is always kept)", profile=name
        )
    pdir = payload_dir / name
    if not (pdir / VERSIONS_DIR).is_dir():
        raise no_such_profile(payload_dir, name)
    removed: list[str] = []
    in_use: list[str] = []
    with exclusive(pdir, create=False):
        clean_leftovers(pdir)
        current = resolve_current(payload_dir, name)
        others = [s for s in _versions(pdir) if s != current]
        kept = [current, *others[: keep - 1]]
        for sha in others[keep - 1 :]:
            if _remove_unless_pinned(pdir, sha):
                removed.append(sha)
            else:
                in_use.append(sha)
                kept.append(sha)
        _remove_stale_locks(pdir)
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
    check_payload_dir(payload_dir)
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

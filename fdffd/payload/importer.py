"""Importing a directory tree as a new version of a profile (``fdffctl payload add``).

``add_profile`` scans and plans (``fdffd.payload.source``), copies the plan into a staging
directory beside the versions, hashing each file in the same read (``fdffd.payload.digest``),
writes the manifest, renames the staging directory to ``versions/<sha256>`` and only then
switches ``current``.  A refusal or a failure at any step leaves nothing behind: the profile
as it was stays current and no half-copied version is kept.

Import refuses, with the path and the reason: names FAT or exFAT cannot hold
(``fdffd.imaging.names``), names that collide once normalised to NFC, symbolic links, special
files, unreadable files or directories, files the operating system leaves behind
(``.DS_Store``, ``Thumbs.db``, ...), a source without files, and on ``filesystem = "fat32"``
files of 4 GiB or more.  Names not in NFC are normalised to NFC (macOS writes Hangul
decomposed).  Every problem found is reported at once.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from fdffd.errors import PayloadError
from fdffd.fsutil import atomic_write, fsync_dir
from fdffd.log import get_logger
from fdffd.text import shown

from . import digest
from .manifest import FileRecord, Manifest, load_manifest
from .source import FILESYSTEMS, ImportPlan, SourceFile, path_problem, plan_import, scan_source
from .store import (
    FILES_DIR,
    IN_USE_DIR,
    MANIFEST_FILE,
    STAGING_PREFIX,
    VERSIONS_DIR,
    check_payload_dir,
    check_profile_name,
    clean_leftovers,
    exclusive,
    make_parents,
    resolve_current,
    switch_current,
)


def _copy_file(f: SourceFile, dest: Path, profile: str) -> tuple[str, str]:
    """Copy one planned file to ``dest`` (0644, fsynced); its (SHA-256, BLAKE3).  The file
    must still be what the scan saw, before and after the copy."""
    try:  # O_NONBLOCK: a FIFO swapped in since the scan must not hang the import
        fd = os.open(f.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise path_problem(profile, f.source, f"cannot read: {err.strerror}") from None
    try:
        before = os.fstat(fd)
        if (
            not stat.S_ISREG(before.st_mode)
            or before.st_size != f.size
            or before.st_mtime_ns != f.mtime_ns
        ):
            raise digest.SourceChanged("it changed after the source was scanned")
        try:
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise path_problem(profile, dest, f"cannot create: {err.strerror}") from None
        try:
            os.fchmod(out, 0o644)
            digests = digest.stream(fd, f.size, out)
            os.fsync(out)
        finally:
            os.close(out)
        after = os.fstat(fd)
        if after.st_size != f.size or after.st_mtime_ns != before.st_mtime_ns:
            raise digest.SourceChanged(
                f"its size or time changed while it was copied ({f.size} bytes before, "
                f"{after.st_size} after)"
            )
        return digests
    except digest.SourceChanged as why:
        raise path_problem(
            profile,
            f.source,
            f"the file changed while it was being imported ({why}); nothing was imported: "
            "import again once nothing writes to the source",
        ) from None
    except OSError as err:
        raise path_problem(profile, f.source, f"copy failed: {err.strerror}") from None
    finally:
        os.close(fd)


def _build_version(
    pdir: Path, plan: ImportPlan, *, profile: str, created_at: str
) -> tuple[Path, Manifest]:
    """Copy ``plan`` into a new staging directory; return it and its manifest (written)."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=pdir))
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
        atomic_write(staging / MANIFEST_FILE, manifest.canonical_bytes(), mode=0o644)
        for d in all_dirs:
            fsync_dir(d)
        return staging, manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _current_if_same(payload_dir: Path, name: str, manifest: Manifest) -> Manifest | None:
    """The current version's manifest when it lists exactly the same tree, else None."""
    try:
        sha = resolve_current(payload_dir, name)
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


def _publish(payload_dir: Path, name: str, plan: ImportPlan, created_at: str) -> Manifest:
    """Build the version and make it current (the caller holds the profile's lock); on a
    failure, undo whatever this did."""
    pdir = payload_dir / name
    published: Path | None = None
    try:
        clean_leftovers(pdir)
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
        switch_current(pdir, sha)
    except BaseException:
        if published is not None:
            shutil.rmtree(published, ignore_errors=True)
            (pdir / IN_USE_DIR / f"{published.name}.lock").unlink(missing_ok=True)
        _forget_empty_profile(pdir)
        raise
    get_logger(profile=name).info(
        "payload.imported",
        version=sha,
        files=len(manifest.files),
        bytes=manifest.total_bytes,
        directories=len(manifest.directories),
    )
    return manifest


def _check_source(payload_dir: Path, name: str, src: Path) -> None:
    """Refuse a source that is no directory, or that holds the payload directory."""
    if not src.is_dir():
        what = "does not exist" if not src.exists() else "is not a directory"
        raise path_problem(name, src, f"{what}; give the directory to import")
    real_src, real_payload = src.resolve(), payload_dir.resolve()
    if real_payload == real_src or real_src in real_payload.parents:
        raise path_problem(
            name,
            src,
            f"holds the payload directory {payload_dir}; import a directory outside it",
        )


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
    manifest is returned.  Directories missing above ``payload_dir`` are made 0700."""
    payload_dir = Path(payload_dir)
    src = Path(src)
    check_profile_name(name)
    check_payload_dir(payload_dir)
    if filesystem not in FILESYSTEMS:
        raise PayloadError(
            f"unknown filesystem {shown(filesystem)!r}; use one of {', '.join(FILESYSTEMS)}",
            profile=name,
        )
    _check_source(payload_dir, name, src)
    entries, problems = scan_source(src, profile=name)
    plan = plan_import(src, entries, profile=name, filesystem=filesystem, problems=problems)

    created_at = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    made_payload_dir = not payload_dir.exists()
    if made_payload_dir:
        make_parents(payload_dir)
    try:
        with exclusive(payload_dir / name, create=True):
            return _publish(payload_dir, name, plan, created_at)
    except BaseException:
        if made_payload_dir:
            with suppress(OSError):
                payload_dir.rmdir()
        raise

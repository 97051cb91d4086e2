"""Importing a directory tree as a new version of a profile (``fdffctl payload add``), and
the publishing a bundle import shares (``fdffd.payload.bundle``).

``import_directory`` (``add_profile`` returns just its manifest) scans and plans
(``fdffd.payload.source``), copies the plan into a staging directory beside the versions,
reading each file through a handle proved to be the scanned one (``SourceReader``) and
hashing it in the same read (``fdffd.payload.digest``), checks the staged files' metadata
(``fdffd.payload.metadata``), writes the manifest, renames the staging directory to
``versions/<sha256>`` and only then switches ``current``.  A refusal or a failure at any step
leaves nothing behind: the profile as it was stays current and no half-copied version is kept.

Import refuses, with the path and the reason: names FAT or exFAT cannot hold
(``fdffd.imaging.names``), names that collide once normalised to NFC, symbolic links, special
files, unreadable files or directories, files systems and programs leave behind
(``fdffd.payload.junk``), a source without files, on ``filesystem = "fat32"`` files of 4 GiB
or more, files whose metadata names people, places, devices or dates (by policy), a source
changed between the scan and the copy, and, on a station that requires signed content, any
directory.  Names not in NFC are normalised to NFC (macOS writes Hangul decomposed).  Every
problem the plan finds is reported at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fdffd.errors import PayloadError
from fdffd.fsutil import atomic_write, fsync_dir
from fdffd.log import get_logger
from fdffd.text import shown

from . import digest
from .manifest import FileRecord, Manifest, load_manifest
from .metadata import Finding, check_metadata
from .policy import ImportPolicy
from .signing import SIGNATURE_FILE, UNSIGNED, Signature, SignatureStatus
from .source import (
    FILESYSTEMS,
    SourceFile,
    SourceReader,
    open_source_root,
    path_problem,
    plan_import,
    scan_source,
)
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


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the version's ``manifest`` (its ``manifest_sha256`` is the
    version id), the metadata ``findings`` it imported anyway (``payload.metadata =
    "warn"``), its ``signature`` status, and ``unchanged`` when no new version was made."""

    manifest: Manifest
    findings: tuple[Finding, ...] = ()
    signature: SignatureStatus = UNSIGNED
    unchanged: bool = False


#: fills ``<staging>/files`` (which exists) and returns the manifest of what it put there
Fill = Callable[[Path], Manifest]


def _copy_file(reader: SourceReader, f: SourceFile, dest: Path, profile: str) -> tuple[str, str]:
    """Copy one planned file to ``dest`` (0644, fsynced); its (SHA-256, BLAKE3).  The file
    is opened through ``reader`` (proved to be the scanned one) and must not change while
    it is copied."""
    try:
        try:
            fd = reader.open(f)
        except OSError as err:
            raise path_problem(profile, f.source, f"cannot read: {err.strerror}") from None
    except digest.SourceChanged as why:
        raise _changed(profile, f, why) from None
    try:
        before = os.fstat(fd)
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
        raise _changed(profile, f, why) from None
    except OSError as err:
        raise path_problem(profile, f.source, f"copy failed: {err.strerror}") from None
    finally:
        os.close(fd)


def _changed(profile: str, f: SourceFile, why: Exception) -> PayloadError:
    return path_problem(
        profile,
        f.source,
        f"the file changed while it was being imported ({why}); nothing was imported: "
        "import again once nothing writes to the source",
    )


def make_dirs(root: Path, dirs: Iterable[str]) -> list[Path]:
    """Create ``root`` (if need be) and ``dirs`` below it, mode 0755; every one of them."""
    made = [root, *(root / d for d in dirs)]
    for d in made:
        d.mkdir(exist_ok=d == root)
        os.chmod(d, 0o755)
    return made


def _build_version(
    pdir: Path,
    fill: Fill,
    *,
    profile: str,
    policy: ImportPolicy,
    signature: Signature | None,
) -> tuple[Path, Manifest, list[Finding]]:
    """Fill a new staging directory, check its files' metadata, write the manifest (and
    the signature); return the staging directory, the manifest and the findings."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=pdir))
    try:
        os.chmod(staging, 0o755)
        root = staging / FILES_DIR
        root.mkdir(mode=0o755)
        manifest = fill(root)
        findings = check_metadata(
            root,
            [f.path for f in manifest.files],
            profile=profile,
            mode=policy.metadata,
            allow=policy.metadata_allow,
        )
        atomic_write(staging / MANIFEST_FILE, manifest.canonical_bytes(), mode=0o644)
        if signature is not None:
            atomic_write(staging / SIGNATURE_FILE, signature.canonical_bytes(), mode=0o644)
        for d in [root, *(root / d for d in manifest.directories)]:
            fsync_dir(d)
        return staging, manifest, findings
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


def publish_version(
    payload_dir: Path,
    name: str,
    fill: Fill,
    *,
    policy: ImportPolicy,
    signature: Signature | None = None,
    status: SignatureStatus = UNSIGNED,
    keep_same_tree: bool = False,
) -> ImportResult:
    """Build the version and make it current (the caller holds the profile's lock); on a
    failure, undo whatever this did.  With ``keep_same_tree`` a tree equal to the current
    version's (paths, sizes, hashes) keeps the current version."""
    pdir = payload_dir / name
    published: Path | None = None
    try:
        clean_leftovers(pdir)
        for sub in (VERSIONS_DIR, IN_USE_DIR):
            (pdir / sub).mkdir(mode=0o755, exist_ok=True)
        staging, manifest, findings = _build_version(
            pdir, fill, profile=name, policy=policy, signature=signature
        )
        same = _current_if_same(payload_dir, name, manifest) if keep_same_tree else None
        if same is not None:  # nothing changed: keep the version id auditors know
            shutil.rmtree(staging)
            get_logger(profile=name).info("payload.unchanged", version=same.manifest_sha256)
            return ImportResult(same, tuple(findings), status, unchanged=True)
        sha = manifest.manifest_sha256
        target = pdir / VERSIONS_DIR / sha
        (pdir / IN_USE_DIR / f"{sha}.lock").touch(mode=0o644)
        if target.exists():  # the very same version (same files, same second, same bundle)
            shutil.rmtree(staging)
            if signature is not None and not (target / SIGNATURE_FILE).exists():
                atomic_write(target / SIGNATURE_FILE, signature.canonical_bytes(), mode=0o644)
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
        signed_by=status.key,
        metadata_found=len(findings),
    )
    return ImportResult(manifest, tuple(findings), status)


def locked_publish(
    payload_dir: Path, name: str, publish: Callable[[], ImportResult]
) -> ImportResult:
    """Run ``publish`` holding the profile's lock, creating ``payload_dir`` (and the
    directories above it, 0700) first if need be, and removing it again on a failure."""
    made_payload_dir = not payload_dir.exists()
    if made_payload_dir:
        make_parents(payload_dir)
    try:
        with exclusive(payload_dir / name, create=True):
            return publish()
    except BaseException:
        if made_payload_dir:
            with suppress(OSError):
                payload_dir.rmdir()
        raise


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


def check_filesystem(filesystem: str, profile: str) -> None:
    if filesystem not in FILESYSTEMS:
        raise PayloadError(
            f"unknown filesystem {shown(filesystem)!r}; use one of {', '.join(FILESYSTEMS)}",
            profile=profile,
        )


def utc_stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def import_directory(
    payload_dir: Path,
    name: str,
    src: Path,
    *,
    filesystem: str = "auto",
    now: datetime | None = None,
    policy: ImportPolicy | None = None,
    priority: Sequence[str] = (),
) -> ImportResult:
    """Import the tree at ``src`` as a new version of profile ``name`` and make it current.

    ``filesystem`` is the station's ``job.filesystem``: with ``"fat32"`` a file of 4 GiB
    or more is refused (with ``"auto"`` it makes jobs use exFAT).  ``policy`` is the
    station's ``[payload]`` settings (default: metadata refused, unsigned content taken);
    a station that requires signed content imports only bundles.  The tree is scanned and
    read through one directory descriptor on ``src`` (``SourceReader``).  On any refusal
    or failure nothing is left in ``payload_dir``.  ``priority`` lists paths of the tree,
    most important first (the image puts them first).  When the tree is exactly the current
    version's (same paths, sizes, hashes), no new version is made.  Directories missing
    above ``payload_dir`` are made 0700."""
    payload_dir = Path(payload_dir)
    src = Path(src)
    policy = policy or ImportPolicy()
    check_profile_name(name)
    check_payload_dir(payload_dir)
    check_filesystem(filesystem, name)
    if policy.trust.require_signed:
        raise PayloadError(
            "this station takes only signed content (payload.require_signed = true), and a "
            "directory is not signed: import a curator's signed bundle with `fdffctl payload "
            "import BUNDLE`",
            profile=name,
        )
    _check_source(payload_dir, name, src)
    root_fd = open_source_root(src, profile=name)
    try:
        entries, problems = scan_source(src, profile=name, root_fd=root_fd)
        plan = plan_import(src, entries, profile=name, filesystem=filesystem, problems=problems)
        ranked = _check_priority(plan.dirs, [f.path for f in plan.files], priority, name)
        created_at = utc_stamp(now)

        def fill(root: Path) -> Manifest:
            make_dirs(root, plan.dirs)
            reader = SourceReader(src, root_fd, plan, profile=name)
            try:
                records = tuple(
                    FileRecord(path=f.path, size=f.size, sha256=sha, blake3=b3)
                    for f in plan.files
                    for sha, b3 in [_copy_file(reader, f, root / f.path, name)]
                )
            finally:
                reader.close()
            return Manifest(
                profile=name,
                created_at=created_at,
                directories=plan.dirs,
                files=records,
                priority=ranked,
            )

        return locked_publish(
            payload_dir,
            name,
            lambda: publish_version(payload_dir, name, fill, policy=policy, keep_same_tree=True),
        )
    finally:
        os.close(root_fd)


def add_profile(
    payload_dir: Path,
    name: str,
    src: Path,
    *,
    filesystem: str = "auto",
    now: datetime | None = None,
    policy: ImportPolicy | None = None,
    priority: Sequence[str] = (),
) -> Manifest:
    """``import_directory``, returning only the manifest of the (new or current) version."""
    return import_directory(
        payload_dir, name, src, filesystem=filesystem, now=now, policy=policy, priority=priority
    ).manifest


def _check_priority(
    dirs: Sequence[str], files: Sequence[str], priority: Sequence[str], name: str
) -> tuple[str, ...] | None:
    """``priority`` as the manifest keeps it (NFC, no trailing '/'), or a refusal naming a
    path the tree does not hold."""
    known = {*dirs, *files}
    ranked = [unicodedata.normalize("NFC", p.strip().strip("/")) for p in priority]
    for p in ranked:
        if p not in known:
            raise PayloadError(
                f"priority names {p!r}, which is neither a file nor a directory of the source",
                profile=name,
            )
    if len(set(ranked)) != len(ranked):
        raise PayloadError("priority lists a path twice", profile=name)
    return tuple(ranked) or None

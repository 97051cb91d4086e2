"""Bundles: one file that carries a profile version to other stations.

``fdffctl payload export NAME [--sign KEYFILE] OUT`` writes one; ``fdffctl payload import
BUNDLE`` imports one.  A bundle is a POSIX tar (pax format, UTF-8 names) holding, in order:

- ``manifest.json``: the version's manifest, byte for byte, so the version id (its SHA-256)
  is the same on every station that imports it;
- ``signature.json``: a curator's signature over it (``fdffd.payload.signing``); optional;
- ``files/<path>``: every file of the manifest, in the manifest's order.

Members are regular files with mode 0644, no owner and time 0 (a bundle says nothing of the
machine that wrote it); directories are the manifest's.  ``tar tvf`` lists one.

An import reads the bundle once, in that order: the manifest is validated and the signature
rule applied (``check_signature``) before anything is written; the names pass the rules of a
directory import (FAT/exFAT names, case clashes, junk names, on FAT32 the 4 GiB limit); each
file is copied into a staging directory and hashed in the same read, and must match the
manifest's size and hashes; any other member, a missing one, or anything after the last file
refuses the bundle.  The staged files' metadata is checked (``fdffd.payload.metadata``), and
only then is the version published.  A refused bundle leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fdffd.errors import PayloadError, UsageError
from fdffd.fsutil import fsync_dir
from fdffd.text import shown

from . import digest
from .importer import (
    ImportResult,
    check_filesystem,
    locked_publish,
    make_dirs,
    publish_version,
)
from .manifest import FileRecord, Manifest, parse_manifest
from .policy import ImportPolicy
from .signing import (
    SIGNATURE_FILE,
    Signature,
    SignatureStatus,
    check_signature,
    parse_signature,
    sign_manifest,
)
from .source import SourceEntry, plan_import
from .store import MANIFEST_FILE, check_payload_dir, open_profile

MANIFEST_MEMBER = "manifest.json"
SIGNATURE_MEMBER = "signature.json"
FILES_PREFIX = "files/"
_MAX_MANIFEST = 64 << 20
_MAX_SIGNATURE = 64 << 10
#: pax and GNU long-name headers are read into memory: a bundle's are short
_MAX_EXTENDED_HEADER = 1 << 20
_COPY_BUFFER = 1 << 20


# --- export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    path: Path
    profile: str
    manifest_sha256: str
    files: int
    bytes: int
    signature: SignatureStatus


class _Hashing(io.RawIOBase):
    """A file read once, hashed on the way into the tar."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = os.readv(self.fd, [b])
        self.sha.update(memoryview(b)[:n])
        return n


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.type = tarfile.REGTYPE
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, root: Path, rec: FileRecord, profile: str) -> None:
    """Add one stored file, checking on the way that it is what the manifest says."""
    problem = f"file '{rec.path}' of the stored version"
    try:
        fd = os.open(root / rec.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise PayloadError(f"{problem} cannot be read: {err.strerror}", profile=profile) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != rec.size:
            raise PayloadError(
                f"{problem} is not the {rec.size}-byte file its manifest lists; run "
                f"`fdffctl payload verify {profile}`",
                profile=profile,
            )
        reader = _Hashing(fd)
        tar.addfile(_member(FILES_PREFIX + rec.path, rec.size), io.BufferedReader(reader))
        if reader.sha.hexdigest() != rec.sha256:
            raise PayloadError(
                f"{problem} differs from its manifest (SHA-256); nothing was exported: run "
                f"`fdffctl payload verify {profile}` and import the profile again",
                profile=profile,
            )
    finally:
        os.close(fd)


def _stored_signature(root: Path, profile: str) -> Signature | None:
    path = root / SIGNATURE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_signature(raw, where=str(path), profile=profile)


def export_bundle(
    payload_dir: Path,
    name: str,
    out: Path,
    *,
    key: Ed25519PrivateKey | None = None,
    version: str | None = None,
) -> ExportResult:
    """Write the current version of ``name`` (or ``version``) to the bundle ``out``, signed
    with ``key`` when given, else carrying the signature it was imported with (if any).
    Every file is checked against the manifest as it is written.  ``out`` appears whole or
    not at all (written beside it, fsynced, renamed)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{shown(str(out))} is a directory; give the bundle's file name")
    with open_profile(Path(payload_dir), name, version=version) as p:
        manifest_bytes = (p.root / MANIFEST_FILE).read_bytes()
        if hashlib.sha256(manifest_bytes).hexdigest() != p.manifest_sha256:
            raise PayloadError(
                f"manifest {p.root / MANIFEST_FILE} changed while it was exported",
                profile=name,
            )
        signature = sign_manifest(manifest_bytes, key) if key else _stored_signature(p.root, name)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise UsageError(f"{shown(str(out))}: cannot create: {err.strerror}") from None
        try:
            with open(fd, "wb", buffering=_COPY_BUFFER) as raw:
                with tarfile.TarFile(
                    fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_BUFFER
                ) as tar:
                    _add_bytes(tar, MANIFEST_MEMBER, manifest_bytes)
                    if signature is not None:
                        _add_bytes(tar, SIGNATURE_MEMBER, signature.canonical_bytes())
                    for rec in p.manifest.files:
                        _add_file(tar, p.files_root, rec, name)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(out.parent)
        m = p.manifest
        status = SignatureStatus(signature.key if signature else None)
        return ExportResult(out, name, p.manifest_sha256, len(m.files), m.total_bytes, status)


# --- import -----------------------------------------------------------------------------


class _Reader:
    """The members of a bundle, in order, one header checked before tarfile reads it."""

    def __init__(self, f: BinaryIO, where: str) -> None:
        self.f = f
        self.where = where
        self._check_header(0)  # tarfile reads the first member as it opens
        # closed with ``f``, by ``_opened``
        self.tar = tarfile.open(fileobj=f, mode="r:", encoding="utf-8", errors="strict")  # noqa: SIM115
        self.pending: tarfile.TarInfo | None = None

    def refuse(self, detail: str, profile: str = "-") -> PayloadError:
        return PayloadError(f"{self.where}: {detail}", profile=profile)

    def _check_header(self, offset: int) -> None:
        """Refuse an extended header (pax, GNU long name) at ``offset`` too long to be a
        bundle's (tarfile would read it into memory whole)."""
        block = os.pread(self.f.fileno(), 512, offset)
        if len(block) < 512 or block[156:157] not in (b"x", b"g", b"L", b"K"):
            return
        try:
            size = int(block[124:136].rstrip(b"\0 ").decode("ascii") or "0", 8)
        except ValueError:
            size = _MAX_EXTENDED_HEADER + 1
        if size > _MAX_EXTENDED_HEADER:
            raise self.refuse(f"an extended tar header of {size} bytes; this is not a bundle")

    def next(self) -> tarfile.TarInfo | None:
        if self.pending is not None:
            member, self.pending = self.pending, None
            return member
        self._check_header(self.tar.offset)
        return self.tar.next()

    def regular(self, member: tarfile.TarInfo, profile: str = "-") -> tarfile.TarInfo:
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse:
            raise self.refuse(f"{shown(member.name)} is not a regular file", profile)
        return member

    def read_small(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if self.regular(member).size > limit:
            raise self.refuse(f"{member.name} is {member.size} bytes, more than {limit}")
        f = self.tar.extractfile(member)
        assert f is not None  # a regular member
        return f.read()


@contextmanager
def _opened(bundle: Path) -> Iterator[_Reader]:
    where = f"bundle {shown(str(bundle))}"
    try:
        f = open(bundle, "rb")  # noqa: SIM115 (closed below)
    except OSError as err:
        raise UsageError(f"{where}: cannot read: {err.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UsageError(f"{where} is not a regular file")
        try:
            yield _Reader(f, where)
        except (tarfile.TarError, EOFError, UnicodeError) as err:
            raise PayloadError(
                f"{where} is damaged or not a bundle (tar: {err})", profile="-"
            ) from None
    finally:
        f.close()


def _read_head(r: _Reader) -> tuple[bytes, Manifest, Signature | None]:
    """The manifest (bytes and model) and the signature, if any, at the bundle's start."""
    first = r.next()
    if first is None or first.name != MANIFEST_MEMBER:
        found = "nothing" if first is None else shown(first.name)
        raise r.refuse(f"starts with {found}, not {MANIFEST_MEMBER}; this is not a bundle")
    raw = r.read_small(first, _MAX_MANIFEST)
    manifest = parse_manifest(
        raw,
        profile="-",
        where=f"{r.where} ({MANIFEST_MEMBER})",
        advice="the bundle was damaged or changed after it was made",
    )
    second = r.next()
    if second is not None and second.name == SIGNATURE_MEMBER:
        data = r.read_small(second, _MAX_SIGNATURE)
        where = f"{r.where} ({SIGNATURE_MEMBER})"
        return raw, manifest, parse_signature(data, where=where, profile=manifest.profile)
    r.pending = second
    return raw, manifest, None


def _check_names(bundle: Path, manifest: Manifest, filesystem: str) -> None:
    """The rules of a directory import, applied to the manifest's paths (pure)."""
    entries = [SourceEntry(d, True) for d in manifest.directories]
    entries += [SourceEntry(f.path, False, f.size) for f in manifest.files]
    plan_import(bundle, entries, profile=manifest.profile, filesystem=filesystem)


def _copy_member(r: _Reader, member: tarfile.TarInfo, dest: Path) -> tuple[str, str]:
    f = r.tar.extractfile(member)
    assert f is not None  # a regular member
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(out, 0o644)
        digests = digest.copy_from(f, member.size, out)
        os.fsync(out)
        return digests
    finally:
        os.close(out)


def _fill(r: _Reader, manifest: Manifest, signed: bool, root: Path) -> Manifest:
    """Copy the bundle's files into ``root``, each checked against the manifest."""
    name = manifest.profile
    since = "after it was signed" if signed else "after it was exported"
    make_dirs(root, manifest.directories)
    for rec in manifest.files:
        want = FILES_PREFIX + rec.path
        member = r.next()
        if member is None:
            raise r.refuse(f"ends before {shown(want)}: it is truncated", name)
        if member.name != want:
            raise r.refuse(f"holds {shown(member.name)} where {shown(want)} should be", name)
        if r.regular(member, name).size != rec.size:
            raise r.refuse(
                f"{shown(want)} is {member.size} bytes, the manifest says {rec.size}: the "
                f"bundle was changed {since}",
                name,
            )
        try:
            sha, b3 = _copy_member(r, member, root / rec.path)
        except digest.SourceChanged as why:
            raise r.refuse(f"{shown(want)}: {why}: the bundle is truncated", name) from None
        if sha != rec.sha256 or (rec.blake3 is not None and b3 != rec.blake3):
            raise r.refuse(
                f"{shown(want)}: its content differs from the manifest (SHA-256 {sha[:16]}…, "
                f"the manifest says {rec.sha256[:16]}…): the bundle was changed {since}",
                name,
            )
    extra = r.next()
    if extra is not None:
        raise r.refuse(f"holds {shown(extra.name)} after the manifest's last file", name)
    return manifest


def import_bundle(
    payload_dir: Path,
    bundle: Path,
    *,
    filesystem: str = "auto",
    policy: ImportPolicy | None = None,
) -> ImportResult:
    """Import the bundle at ``bundle`` as a version of the profile its manifest names, and
    make it current.  ``policy`` is the station's ``[payload]`` settings (signature rule,
    metadata rule).  On any refusal or failure nothing is left in ``payload_dir``."""
    payload_dir = Path(payload_dir)
    bundle = Path(bundle)
    policy = policy or ImportPolicy()
    check_payload_dir(payload_dir)
    with _opened(bundle) as r:
        raw, manifest, signature = _read_head(r)
        name = manifest.profile
        check_filesystem(filesystem, name)
        status = check_signature(raw, signature, policy.trust, where=r.where, profile=name)
        _check_names(bundle, manifest, filesystem)
        return locked_publish(
            payload_dir,
            name,
            lambda: publish_version(
                payload_dir,
                name,
                lambda root: _fill(r, manifest, signature is not None, root),
                policy=policy,
                signature=signature,
                status=status,
            ),
        )

"""Verifying a stored version against its manifest (``fdffctl payload verify``).

Every file is re-hashed (SHA-256) and compared with the manifest; every changed, missing or
extra file and every missing or extra directory is named.  The signature, if any, is checked
against the manifest (and, with ``payload.require_signed``, must be by a trusted key).
Nothing is changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fdffd.errors import PayloadError
from fdffd.text import shown

from .digest import hash_file
from .signing import Trust, check_version_signature
from .store import open_profile


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
    #: "not signed", "signed by trusted key ...", or what is wrong with the signature
    signature: str = "not signed"
    signature_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.signature_ok and not (
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
            "signature": self.signature,
            "signature_ok": self.signature_ok,
        }


def _walk(root: Path) -> tuple[set[str], set[str], set[str]]:
    """(files, dirs, others) under ``root`` as relative paths; symlinks are not followed."""
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


def verify_profile(
    payload_dir: Path, name: str, *, version: str | None = None, trust: Trust | None = None
) -> VerifyReport:
    """Re-hash every file of the current version (or ``version``) against its manifest;
    name every changed, missing or extra file and missing or extra directory; check the
    signature under ``trust`` (the station's keys and ``require_signed``)."""
    with open_profile(Path(payload_dir), name, version=version) as p:
        try:
            status = check_version_signature(
                p.root, p.manifest_sha256, trust or Trust(), profile=name
            )
            signature, signature_ok = status.describe(), True
        except PayloadError as err:
            signature, signature_ok = str(err.fields["detail"]), False
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
            signature=signature,
            signature_ok=signature_ok,
        )

"""The manifest of one payload profile version: what it holds, and the hash that names it.

A manifest is a JSON object::

    {"schema": 1, "profile": "default", "created_at": "2026-03-01T12:00:00Z",
     "directories": ["영화", "영화/빈 폴더"],
     "files": [{"path": "영화/겨울연가 1화.mp4", "size": 734003200, "sha256": "…",
                "blake3": "…"}]}

- ``directories`` lists *every* directory of the tree (empty ones included, parents of
  files included), sorted; ``files`` lists every regular file, sorted by ``path``.
- Paths are relative, '/'-separated, in Unicode NFC, and pass the FAT/exFAT name rules
  of ``fdffd.imaging.names`` (``check_tree``).
- ``created_at`` is the station's UTC time of the import, to the second.  It never
  reaches a drive: only the files do.

The manifest is stored in its **canonical form**: keys sorted, no insignificant
whitespace, UTF-8 (non-ASCII characters as themselves), one trailing newline.  The
SHA-256 of those bytes (``Manifest.manifest_sha256``, also ``sha256sum manifest.json``)
identifies the profile version; it names the version directory and goes into every
job record.  Loading checks both: the bytes hash to the expected name, and they are
exactly the canonical form of what they say (so a model always re-hashes to the same
value).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fdffd.errors import NameNotAllowedError, PayloadError
from fdffd.imaging.names import check_tree

SCHEMA_VERSION: Literal[1] = 1
#: FAT32 cannot hold a file of this size or more (its size field is 32 bits).
FOUR_GIB = 4 << 30
#: ``[A-Za-z0-9._-]+``, not starting with '.', at most 64 characters.
PROFILE_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"
_SHA256_PATTERN = r"^[0-9a-f]{64}$"
_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"


class FileRecord(BaseModel):
    """One payload file: relative path, size in bytes, SHA-256 of its content (hex) and,
    from imports by fdffd 0.1 on, its BLAKE3 (hex, 32 bytes): the verify pass hashes the
    payload read off every drive with BLAKE3 (several times faster than SHA-256) when
    every file of the manifest has one, with SHA-256 otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    path: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256_PATTERN)
    blake3: str | None = Field(default=None, pattern=_SHA256_PATTERN)


class Manifest(BaseModel):
    """A profile version's manifest; see the module docstring for the format."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, alias="schema")
    profile: str = Field(pattern=PROFILE_NAME_PATTERN)
    created_at: str = Field(pattern=_TIME_PATTERN)
    directories: tuple[str, ...] = ()
    files: tuple[FileRecord, ...] = ()
    #: paths (files or directories), most important first: the image lists them first in
    #: their directory and writes them first on the drive (left out when not set)
    priority: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _priority_known(self) -> Manifest:
        known = {*self.directories, *(f.path for f in self.files)}
        for i, p in enumerate(self.priority or ()):
            if p not in known:
                raise ValueError(f"priority.{i}: {p!r} is neither a file nor a directory here")
        if self.priority and len(set(self.priority)) != len(self.priority):
            raise ValueError("priority: a path is listed twice")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        dirs = list(self.directories)
        paths = [f.path for f in self.files]
        if not paths:
            raise ValueError("files: a profile holds at least one file")
        for key, seq in (("directories", dirs), ("files", paths)):
            for i, p in enumerate(seq):
                _check_path_form(p, f"{key}.{i}")
            if seq != sorted(seq):
                raise ValueError(f"{key}: not sorted by path")
            if len(set(seq)) != len(seq):
                raise ValueError(f"{key}: a path is listed twice")
        dirset = set(dirs)
        for i, p in enumerate(paths):
            if p in dirset:
                raise ValueError(f"files.{i}: {p!r} is also listed as a directory")
            parent = posixpath.dirname(p)
            if parent and parent not in dirset:
                raise ValueError(f"files.{i}: parent directory {parent!r} is not in directories")
        for i, d in enumerate(dirs):
            parent = posixpath.dirname(d)
            if parent and parent not in dirset:
                raise ValueError(
                    f"directories.{i}: parent directory {parent!r} is not in directories"
                )
        try:
            check_tree([*dirs, *paths])
        except NameNotAllowedError as err:
            raise ValueError(f"{err.fields['path']!r}: {err.fields['detail']}") from None
        return self

    # --- derived values ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (the stored form)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def canonical_bytes(self) -> bytes:
        """The exact bytes stored as ``manifest.json`` (see the module docstring)."""
        return canonical_json(self.to_json())

    @property
    def manifest_sha256(self) -> str:
        """SHA-256 (hex) of the canonical bytes: the id of this profile version."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def largest_file_bytes(self) -> int:
        return max((f.size for f in self.files), default=0)

    @property
    def has_file_of_4gib_or_more(self) -> bool:
        """Whether FAT32 cannot hold this payload (``filesystem = "auto"`` then means exFAT)."""
        return self.largest_file_bytes >= FOUR_GIB


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, one trailing newline."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def _check_path_form(p: str, where: str) -> None:
    if p.startswith("/") or p.endswith("/"):
        raise ValueError(f"{where}: {p!r} must be relative, without a leading or trailing '/'")
    if any(part in ("", ".", "..") for part in p.split("/")):
        raise ValueError(f"{where}: {p!r} holds an empty, '.' or '..' component")
    if not unicodedata.is_normalized("NFC", p):
        raise ValueError(f"{where}: {p!r} is not in Unicode NFC")


def _describe(err: ValidationError) -> str:
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "missing field"
        out.append(f"{key}: {msg}" if key else msg)
    return "; ".join(out[:5]) + (f" (and {len(out) - 5} more)" if len(out) > 5 else "")


def parse_manifest(raw: bytes, *, profile: str, where: str, advice: str | None = None) -> Manifest:
    """Validate manifest bytes; raise ``PayloadError`` naming the field that is wrong, and
    ``advice`` (by default: import the profile again)."""
    advice = advice or f"re-import the profile with `fdffctl payload add {profile} DIR`"
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as err:
        raise PayloadError(
            f"manifest {where} is malformed: {_describe(err)}; {advice}",
            profile=profile,
        ) from None
    if manifest.canonical_bytes() != raw:
        raise PayloadError(
            f"manifest {where} is not in canonical form (was it edited by hand?); {advice}",
            profile=profile,
        )
    return manifest


def load_manifest(path: Path, *, profile: str, expected_sha256: str | None = None) -> Manifest:
    """Read and validate ``path``; when given, its SHA-256 must be ``expected_sha256``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PayloadError(f"manifest {path} is missing", profile=profile) from None
    except OSError as err:
        raise PayloadError(
            f"cannot read manifest {path}: {err.strerror}", profile=profile
        ) from None
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise PayloadError(
                f"manifest {path} was changed after import: its SHA-256 is {actual}, its "
                f"version directory says {expected_sha256}; re-import the profile with "
                f"`fdffctl payload add {profile} DIR`",
                profile=profile,
            )
    return parse_manifest(raw, profile=profile, where=str(path))

"""What ``fdffctl payload add|import|export|keygen|list|verify|prune`` print: plain text for
operators, and the short summary ``payload add --json`` prints instead of the whole
manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..payload import (
    ExportResult,
    ImportResult,
    Manifest,
    ProfileInfo,
    PruneReport,
    VerifyReport,
)
from ..payload.metadata import findings_message
from ..sizes import format_size


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


def import_summary(result: ImportResult) -> dict[str, Any]:
    """What ``payload add --json`` and ``payload import --json`` print."""
    return {
        **manifest_summary(result.manifest),
        "unchanged": result.unchanged,
        "signed_by": result.signature.key,
        "trusted": result.signature.trusted,
        "metadata_found": [{"path": f.path, "tag": f.tag, "kind": f.kind} for f in result.findings],
    }


def format_imported(result: ImportResult) -> str:
    lines = [format_added(result.manifest)]
    if result.unchanged:
        lines[0] = lines[0].replace("imported profile", "profile", 1) + " (unchanged: same files)"
    lines.append(f"  {result.signature.describe()}")
    if result.findings:
        lines.append("warning: " + findings_message(result.findings, refused=False))
    return "\n".join(lines)


def format_exported(result: ExportResult) -> str:
    r = result
    return "\n".join(
        [
            f"wrote bundle {r.path}: profile '{r.profile}', version {r.manifest_sha256}",
            f"  {_count(r.files, 'file')}, {format_size(r.bytes)}, "
            + (f"signed by key {r.signature.key}" if r.signature.key else "not signed"),
        ]
    )


def format_keygen(path: Path, public_key: str) -> str:
    return "\n".join(
        [
            f"wrote signing key {path} (keep it offline; anyone holding it can sign content)",
            f"and its public key {path}.pub",
            "stations that trust this curator list the key in their config:",
            "  [payload]",
            f'  trusted_keys = ["{public_key}"]',
        ]
    )


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
        return f"{head}, {r.signature}\nclean: every file and directory matches the manifest"
    lines = [head]
    if not r.signature_ok:
        lines.append(f"  signature: {r.signature}")
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

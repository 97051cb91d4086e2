"""Payload profiles and their manifests (``fdffctl payload add|list|verify|prune``).

Uses imaging's name rules; knows nothing of devices.  See docs/payload.md.  The rooms:

- ``manifest``: what a version holds, and the hash that names it;
- ``source``: scanning a source tree and the import plan (pure), and reading the planned
  files through handles proved to be the scanned ones;
- ``junk``: the names of files systems and programs leave behind (pure);
- ``metadata`` and ``exiftool``: file metadata naming people, places, devices or dates;
- ``digest``: SHA-256 and BLAKE3 in one read, holes hashed without reading them;
- ``store``: the layout on disk, locks, pinning a version for a job, list, prune;
- ``importer``: ``add_profile``, a new version built beside the others, then made current;
- ``signing``: curators' Ed25519 signatures over manifests, the keys a station trusts;
- ``bundle``: one file carrying a version to other stations (export, import);
- ``policy``: a station's ``[payload]`` settings, and its check at start;
- ``verify``: re-hashing a version against its manifest.

What ``fdffctl`` prints about them lives in ``fdffd.cli.payload_text``.
"""

from .bundle import ExportResult, export_bundle, import_bundle
from .digest import hash_file
from .importer import ImportResult, add_profile, import_directory
from .junk import junk_reason
from .manifest import FOUR_GIB, FileRecord, Manifest, load_manifest, parse_manifest
from .metadata import Finding, classify
from .policy import ImportPolicy, check_station_content
from .signing import Signature, SignatureStatus, Trust, generate_key, load_private_key
from .source import FAT32_MAX_FILE_BYTES, ImportPlan, SourceEntry, plan_import, scan_source
from .store import (
    Profile,
    ProfileInfo,
    PruneReport,
    check_before_job,
    check_profile_name,
    list_profiles,
    open_profile,
    prune_profile,
)
from .verify import Changed, VerifyReport, verify_profile

__all__ = [
    "FAT32_MAX_FILE_BYTES",
    "FOUR_GIB",
    "Changed",
    "ExportResult",
    "FileRecord",
    "Finding",
    "ImportPlan",
    "ImportPolicy",
    "ImportResult",
    "Manifest",
    "Profile",
    "ProfileInfo",
    "PruneReport",
    "Signature",
    "SignatureStatus",
    "SourceEntry",
    "Trust",
    "VerifyReport",
    "add_profile",
    "check_before_job",
    "check_profile_name",
    "check_station_content",
    "classify",
    "export_bundle",
    "generate_key",
    "hash_file",
    "import_bundle",
    "import_directory",
    "junk_reason",
    "list_profiles",
    "load_manifest",
    "load_private_key",
    "open_profile",
    "parse_manifest",
    "plan_import",
    "prune_profile",
    "scan_source",
    "verify_profile",
]

"""Payload profiles and their manifests (``fdffctl payload add|list|verify|prune``).

Uses imaging's name rules; knows nothing of devices.  See docs/payload.md.  The rooms:

- ``manifest``: what a version holds, and the hash that names it;
- ``source``: scanning a source tree and the import plan (pure);
- ``digest``: SHA-256 and BLAKE3 in one read, holes hashed without reading them;
- ``store``: the layout on disk, locks, pinning a version for a job, list, prune;
- ``importer``: ``add_profile``, a new version built beside the others, then made current;
- ``verify``: re-hashing a version against its manifest.

What ``fdffctl`` prints about them lives in ``fdffd.cli.payload_text``.
"""

from .digest import hash_file
from .importer import add_profile
from .manifest import FOUR_GIB, FileRecord, Manifest, load_manifest, parse_manifest
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
    "FileRecord",
    "ImportPlan",
    "Manifest",
    "Profile",
    "ProfileInfo",
    "PruneReport",
    "SourceEntry",
    "VerifyReport",
    "add_profile",
    "check_before_job",
    "check_profile_name",
    "hash_file",
    "list_profiles",
    "load_manifest",
    "open_profile",
    "parse_manifest",
    "plan_import",
    "prune_profile",
    "scan_source",
    "verify_profile",
]

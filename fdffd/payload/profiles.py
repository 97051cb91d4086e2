"""Where ``Profile``, ``open_profile``, ``add_profile`` and the other profile names used to
live; they are in the modules ``fdffd.payload`` lists now.  Kept so that existing imports
(``from fdffd.payload.profiles import open_profile``) keep working: new code imports from
``fdffd.payload``."""

from .digest import hash_file
from .importer import add_profile
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
    "Changed",
    "ImportPlan",
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
    "open_profile",
    "plan_import",
    "prune_profile",
    "scan_source",
    "verify_profile",
]

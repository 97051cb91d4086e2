"""fdffd.audit: the job record schema and the tamper-evident audit log (DESIGN.md, 7)."""

from fdffd.audit.keys import StationKeys, load_public_key
from fdffd.audit.log import (
    GENESIS,
    AuditLog,
    VerifyFailure,
    VerifyResult,
    iter_records,
    quarantine_torn_tail,
    verify,
)
from fdffd.audit.record import (
    Capacity,
    DeviceInfo,
    ErrorInfo,
    FilesystemInfo,
    JobRecord,
    PayloadInfo,
    Stage,
    Wipe,
    utc_now_iso,
)

__all__ = [
    "GENESIS",
    "AuditLog",
    "Capacity",
    "DeviceInfo",
    "ErrorInfo",
    "FilesystemInfo",
    "JobRecord",
    "PayloadInfo",
    "Stage",
    "StationKeys",
    "VerifyFailure",
    "VerifyResult",
    "Wipe",
    "iter_records",
    "load_public_key",
    "quarantine_torn_tail",
    "utc_now_iso",
    "verify",
]

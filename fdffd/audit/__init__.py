"""fdffd.audit: the record schema and the tamper-evident audit log (docs/record.md).

Imports are lazy: a command that only reads the record schema (``fdffctl status``) does not
load the key and log modules, nor the cryptography they need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fdffd.audit.keys import StationKeys, load_public_key
    from fdffd.audit.log import (
        GENESIS,
        AuditLog,
        VerifyFailure,
        VerifyResult,
        iter_log,
        iter_records,
        quarantine_torn_tail,
        verify,
    )
    from fdffd.audit.record import (
        VERDICTS,
        Capacity,
        DeviceInfo,
        ErrorInfo,
        FilesystemInfo,
        JobRecord,
        KeyRotationRecord,
        PayloadInfo,
        Sanitization,
        Stage,
        Verdict,
        Wipe,
        parse_record,
        utc_now_iso,
    )

_WHERE = {
    "AuditLog": "log",
    "Capacity": "record",
    "DeviceInfo": "record",
    "ErrorInfo": "record",
    "FilesystemInfo": "record",
    "GENESIS": "log",
    "JobRecord": "record",
    "KeyRotationRecord": "record",
    "PayloadInfo": "record",
    "Sanitization": "record",
    "Stage": "record",
    "StationKeys": "keys",
    "VERDICTS": "record",
    "Verdict": "record",
    "VerifyFailure": "log",
    "VerifyResult": "log",
    "Wipe": "record",
    "iter_log": "log",
    "iter_records": "log",
    "load_public_key": "keys",
    "parse_record": "record",
    "quarantine_torn_tail": "log",
    "utc_now_iso": "record",
    "verify": "log",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "GENESIS",
    "VERDICTS",
    "AuditLog",
    "Capacity",
    "DeviceInfo",
    "ErrorInfo",
    "FilesystemInfo",
    "JobRecord",
    "KeyRotationRecord",
    "PayloadInfo",
    "Sanitization",
    "Stage",
    "StationKeys",
    "Verdict",
    "VerifyFailure",
    "VerifyResult",
    "Wipe",
    "iter_log",
    "iter_records",
    "load_public_key",
    "parse_record",
    "quarantine_torn_tail",
    "utc_now_iso",
    "verify",
]

"""Error codes are a contract of signed records: literal, unique, pinned here."""

from __future__ import annotations

from enum import IntEnum

import fdffd.payload.exiftool  # noqa: F401  (its error class joins the tree)
from fdffd import errors
from fdffd.audit.record import VERDICTS
from fdffd.cli.ctl import Terminated
from fdffd.errors import DeviceIOError, ExitCode, FdffdError

#: every error class and the code its records carry; the codes of records written before
#: codes became literals (derived from class names then) are kept exactly, ``device-i-o``
#: included
PINNED = {
    "FdffdError": "fdffd",
    "UsageError": "usage",
    "ConfigError": "config",
    "RefusedError": "refused",
    "CounterfeitError": "counterfeit",
    "DefectiveError": "defective",
    "JobFailedError": "job-failed",
    "DeviceIOError": "device-i-o",
    "DriveRemovedError": "drive-removed",
    "TooSlowError": "too-slow",
    "PayloadTooLargeError": "payload-too-large",
    "PayloadChangedError": "payload-changed",
    "VolumeTooSmallError": "volume-too-small",
    "InterruptedJobError": "interrupted-job",
    "JobLostError": "interrupted",
    "JobCrashedError": "internal",
    "PayloadError": "payload",
    "NameNotAllowedError": "name-not-allowed",
    "FileTooLargeError": "file-too-large",
    "AuditError": "audit",
    "AuditVerifyError": "audit-verify",
    "Terminated": "terminated",
    "ExifToolMissing": "exiftool-missing",
}


def _tree() -> list[type[FdffdError]]:
    out: list[type[FdffdError]] = []
    todo: list[type[FdffdError]] = [FdffdError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in out if c.__module__.startswith("fdffd.")]


def test_every_error_class_has_its_own_literal_pinned_code() -> None:
    """Each class sets ``code`` itself (a plain string, not inherited, not computed), the
    codes are unique, and each is the pinned one."""
    assert Terminated in _tree()
    found = {}
    for cls in _tree():
        code = cls.__dict__.get("code")
        assert isinstance(code, str), f"{cls.__name__} does not set its own code"
        found[cls.__name__] = code
    assert found == PINNED
    assert len(set(found.values())) == len(found), "two error classes share a code"


def test_renaming_a_class_cannot_change_its_code() -> None:
    """A class under another name (what a rename does) keeps the code its records carry."""
    renamed = type("DiskTroubleError", (DeviceIOError,), {"__doc__": DeviceIOError.__doc__})
    err = renamed("Input/output error", device="/dev/sdb", stage="image", offset=0)
    assert err.code == "device-i-o" == DeviceIOError.code
    assert err.stage == "image" and err.rule is None


def test_every_error_verdict_is_a_record_verdict() -> None:
    """The verdict an error gives a job is one of the record's verdicts."""
    for cls in _tree():
        assert cls.verdict in VERDICTS, cls


def test_exit_codes_are_an_int_enum_with_the_signal_codes() -> None:
    """Exit codes: an IntEnum, with 130 (SIGINT) and 143 (SIGTERM); each error's is one."""
    assert issubclass(ExitCode, IntEnum)
    assert ExitCode.INTERRUPTED == 130 and ExitCode.TERMINATED == 143
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 130, 143]
    for cls in _tree():
        assert isinstance(cls.exit_code, ExitCode), cls
    assert Terminated.exit_code == ExitCode.TERMINATED
    assert errors.RefusedError("x", device="d", rule="mounted").rule == "mounted"

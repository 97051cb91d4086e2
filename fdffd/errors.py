"""One error tree for fdffd.

Every error carries a stable exit code (the contract of ``fdffctl process``), a stable
``code`` (what a job record's ``error.code`` says) and builds its message from structured
fields, so the CLI, the job record and the log all say the same thing.  The docstring of
each class is its message template, in the manner of borg's ``helpers/errors.py``.

``code`` is a literal on every class, never derived from the class name: records are signed,
so renaming a class must not change what they say.  tests/test_errors.py pins every code.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar


class ExitCode(IntEnum):
    """Exit codes of ``fdffctl`` and ``fdffd`` (docs/pipeline.md lists them by verdict)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    COUNTERFEIT = 3
    DEFECTIVE = 4
    FAILED = 5
    REFUSED = 6
    #: 128 + SIGINT: stopped by Ctrl-C
    INTERRUPTED = 130
    #: 128 + SIGTERM: stopped by ``kill`` or systemd
    TERMINATED = 143


class FdffdError(Exception):
    """{detail}"""

    #: the record's ``error.code``: stable, greppable, set on every class
    code: ClassVar[str] = "fdffd"
    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL
    #: verdict that a job ending with this error gets, when it is the job's end (one of
    #: ``fdffd.audit.record.VERDICTS``)
    verdict: ClassVar[str] = "failed"

    def __init__(self, detail: str = "", **fields: Any) -> None:
        self.fields: dict[str, Any] = {"detail": detail, **fields}
        super().__init__(self.message)

    @property
    def message(self) -> str:
        template = (self.__doc__ or "{detail}").strip().splitlines()[0]
        try:
            return template.format(**self.fields)
        except (KeyError, IndexError):
            return f"{template} {self.fields}"

    @property
    def stage(self) -> str | None:
        """The job stage the error happened in, when it names one."""
        stage = self.fields.get("stage")
        return None if stage is None else str(stage)

    @property
    def rule(self) -> str | None:
        """The safety gate's rule, for a refusal."""
        rule = self.fields.get("rule")
        return None if rule is None else str(rule)

    def __str__(self) -> str:
        return self.message


# --- usage and configuration (exit 2) ------------------------------------------------


class UsageError(FdffdError):
    """{detail}"""

    code = "usage"
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """{path}: {detail}"""

    code = "config"


# --- the safety gate (exit 6) --------------------------------------------------------


class RefusedError(FdffdError):
    """refused {device}: {detail} (rule: {rule})"""

    code = "refused"
    exit_code = ExitCode.REFUSED
    verdict = "refused"


# --- media verdicts ------------------------------------------------------------------


class CounterfeitError(FdffdError):
    """{device} is counterfeit: announces {announced}, holds {usable} ({detail})"""

    code = "counterfeit"
    exit_code = ExitCode.COUNTERFEIT
    verdict = "counterfeit"


class DefectiveError(FdffdError):
    """{device} is defective: {detail}"""

    code = "defective"
    exit_code = ExitCode.DEFECTIVE
    verdict = "defective"


# --- job failures (exit 5) -----------------------------------------------------------


class JobFailedError(FdffdError):
    """{device}: {detail}"""

    code = "job-failed"
    exit_code = ExitCode.FAILED
    verdict = "failed"


class DeviceIOError(JobFailedError):
    """{device}: I/O error during {stage} at byte {offset}: {detail}"""

    code = "device-i-o"


class DriveRemovedError(JobFailedError):
    """{device}: drive removed during {stage}"""

    code = "drive-removed"


class TooSlowError(JobFailedError):
    """{device}: too slow: {speed} below the minimum of {minimum} during {stage}"""

    code = "too-slow"


class PayloadTooLargeError(JobFailedError):
    """payload does not fit: it needs {needed} bytes, the drive holds {available}"""

    code = "payload-too-large"


class PayloadChangedError(JobFailedError):
    """payload file {path!r} changed since its manifest ({count} file(s) differ); run `fdffctl payload verify` and import the profile again"""

    code = "payload-changed"


class VolumeTooSmallError(JobFailedError):
    """the usable size, {available} bytes, is too small for a {filesystem} volume (needs {needed})"""

    code = "volume-too-small"


class InterruptedJobError(JobFailedError):
    """{device}: job interrupted during {stage} ({detail})"""

    code = "interrupted-job"
    verdict = "interrupted"


class JobLostError(JobFailedError):
    """the station stopped during this job (found in the job journal on restart); the drive was not finished: plug it in again"""

    code = "interrupted"
    verdict = "interrupted"


class JobCrashedError(JobFailedError):
    """{detail}"""

    code = "internal"


# --- payload and imaging (bad input) -------------------------------------------------


class PayloadError(FdffdError):
    """payload {profile}: {detail}"""

    code = "payload"
    exit_code = ExitCode.USAGE


class NameNotAllowedError(PayloadError):
    """{path}: {detail}"""

    code = "name-not-allowed"


class FileTooLargeError(PayloadError):
    """{path}: {size} bytes is too large for {filesystem} (limit {limit} bytes)"""

    code = "file-too-large"


# --- audit log -----------------------------------------------------------------------


class AuditError(FdffdError):
    """audit log {path}: {detail}"""

    code = "audit"
    exit_code = ExitCode.FAILED


class AuditVerifyError(AuditError):
    """audit log {path}, line {line}: {detail}"""

    code = "audit-verify"

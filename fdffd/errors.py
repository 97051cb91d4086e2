"""One error tree for fdffd.

Every error carries a stable exit code (the contract of ``fdffctl process``) and
builds its message from structured fields, so the CLI, the job record and the
log all say the same thing.  The docstring of each class is its message
template, in the manner of borg's ``helpers/errors.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ExitCode:
    """Exit codes of ``fdffctl`` (DESIGN.md, "Contracts")."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    COUNTERFEIT = 3
    DEFECTIVE = 4
    FAILED = 5
    REFUSED = 6


class FdffdError(Exception):
    """{detail}"""

    exit_code: ClassVar[int] = ExitCode.INTERNAL
    #: verdict that a job ending with this error gets, when it is the job's end
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
    def code(self) -> str:
        """A stable, greppable name for the error kind (``config-error``, ...)."""
        name = type(self).__name__.removesuffix("Error")
        out = []
        for i, ch in enumerate(name):
            if ch.isupper() and i:
                out.append("-")
            out.append(ch.lower())
        return "".join(out) or "error"

    def __str__(self) -> str:
        return self.message


# --- usage and configuration (exit 2) ------------------------------------------------


class UsageError(FdffdError):
    """{detail}"""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """{path}: {detail}"""


# --- the safety gate (exit 6) --------------------------------------------------------


class RefusedError(FdffdError):
    """refused {device}: {detail} (rule: {rule})"""

    exit_code = ExitCode.REFUSED
    verdict = "refused"


# --- media verdicts ------------------------------------------------------------------


class CounterfeitError(FdffdError):
    """{device} is counterfeit: announces {announced}, holds {usable} ({detail})"""

    exit_code = ExitCode.COUNTERFEIT
    verdict = "counterfeit"


class DefectiveError(FdffdError):
    """{device} is defective: {detail}"""

    exit_code = ExitCode.DEFECTIVE
    verdict = "defective"


# --- job failures (exit 5) -----------------------------------------------------------


class JobFailedError(FdffdError):
    """{device}: {detail}"""

    exit_code = ExitCode.FAILED
    verdict = "failed"


class DeviceIOError(JobFailedError):
    """{device}: I/O error during {stage} at byte {offset}: {detail}"""


class DriveRemovedError(JobFailedError):
    """{device}: drive removed during {stage}"""


class TooSlowError(JobFailedError):
    """{device}: too slow: {speed} below the minimum of {minimum} during {stage}"""


class PayloadTooLargeError(JobFailedError):
    """payload does not fit: it needs {needed} bytes, the drive holds {available}"""


class PayloadChangedError(JobFailedError):
    """payload file {path!r} changed since its manifest ({count} file(s) differ); run `fdffctl payload verify` and import the profile again"""


class VolumeTooSmallError(JobFailedError):
    """the usable size, {available} bytes, is too small for a {filesystem} volume (needs {needed})"""


class InterruptedJobError(JobFailedError):
    """{device}: job interrupted during {stage} ({detail})"""

    verdict = "interrupted"


# --- payload and imaging (bad input) -------------------------------------------------


class PayloadError(FdffdError):
    """payload {profile}: {detail}"""

    exit_code = ExitCode.USAGE


class NameNotAllowedError(PayloadError):
    """{path}: {detail}"""


class FileTooLargeError(PayloadError):
    """{path}: {size} bytes is too large for {filesystem} (limit {limit} bytes)"""


# --- audit log -----------------------------------------------------------------------


class AuditError(FdffdError):
    """audit log {path}: {detail}"""

    exit_code = ExitCode.FAILED


class AuditVerifyError(AuditError):
    """audit log {path}, line {line}: {detail}"""

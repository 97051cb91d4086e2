"""The verdict of a job: a pure function of what the job found.

The pipeline fills :class:`Findings` as it goes (the proven capacity, the bad ranges, what
the payload's read-back showed, a drive that turned read-only) and, when something
unexpected ends the job (an I/O error, the drive pulled, too slow, refused by the gate, a
cancellation), the error that ended it.  :func:`decide` turns them into the verdict and the
error the record and the exit code carry.  Expected outcomes (counterfeit, defective,
payload too large or changed) are findings, never exceptions: the drive is wiped and
verified first, and the verdict comes last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..audit.record import VERDICTS, Verdict
from ..errors import (
    CounterfeitError,
    DefectiveError,
    ExitCode,
    FdffdError,
    PayloadChangedError,
    PayloadTooLargeError,
)
from ..sizes import format_size

CounterfeitPolicy = Literal["reject", "rescue"]


@dataclass(frozen=True)
class GaveUp:
    """More than ``limit`` bytes failed I/O during ``stage``: the passes stopped there."""

    stage: str
    limit: int


@dataclass
class Findings:
    """What a job found about its drive.  Filled by the pipeline, read by :func:`decide`."""

    device: str
    announced_bytes: int = 0
    #: the real capacity the probe and the verify pass proved (what the job used)
    usable_bytes: int = 0
    #: how a counterfeit gave itself away (wraparound, dropped-zeros, ...)
    kind: str | None = None
    #: every pass ran over the whole usable capacity (and the verify pass, if asked for)
    surface_done: bool = False
    #: sectors that failed I/O or read back wrong, ``(offset, length)``
    bad_ranges: list[tuple[int, int]] = field(default_factory=list)
    gave_up: GaveUp | None = None
    #: the stage in which the drive stopped taking writes while still reading
    read_only: str | None = None
    #: ranges that still held the keyed pass's data after the image pass wrote zeros there:
    #: writes the drive dropped (the keyed read-back had proven those sectors hold data)
    dropped_writes: list[tuple[int, int]] = field(default_factory=list)
    #: ``(needed, available)`` bytes when the payload did not fit (the drive was wiped anyway)
    payload_too_large: tuple[int, int] | None = None
    #: the proven capacity is too small for the filesystem (the drive was wiped anyway):
    #: the failure that says so (``smallvol.volume_error``)
    volume_too_small: FdffdError | None = None
    #: why a counterfeit may not be rescued (a moving capacity, below ``drives.min_size``):
    #: it is rejected whatever the policy (``capacity.rescue_refusal``)
    no_rescue: str | None = None
    #: payload files read back as written but not as their manifest says (changed since)
    payload_changed: list[str] = field(default_factory=list)
    #: payload files the drive damaged
    payload_damaged: list[str] = field(default_factory=list)
    #: what ended the job early, when something unexpected did
    failure: FdffdError | None = None

    @property
    def counterfeit(self) -> bool:
        return self.usable_bytes < self.announced_bytes

    @property
    def wiped(self) -> bool:
        """The whole real capacity was overwritten (and read back, when verifying) without
        one bad sector, and the job finished."""
        return (
            self.surface_done
            and not self.bad_ranges
            and self.gave_up is None
            and self.read_only is None
            and self.failure is None
        )


def _size_text(n: int) -> str:
    return f"{format_size(n)} ({n} bytes)"


def _failure_verdict(err: FdffdError) -> Verdict:
    return err.verdict if err.verdict in VERDICTS else "failed"


def _drive_defect(f: Findings) -> FdffdError | None:
    """The drive itself is bad: it turned read-only, failed too much, or lost bytes."""
    if f.read_only is not None:
        return DefectiveError(
            f"it turned read-only during {f.read_only}: writes fail, reads still work (worn-out "
            "flash does this); it cannot be wiped, so it must not leave the station",
            device=f.device,
            stage=f.read_only,
        )
    if f.gave_up is not None:
        return DefectiveError(
            f"more than {f.gave_up.limit} bytes fail I/O; giving up on the drive",
            device=f.device,
            stage=f.gave_up.stage,
        )
    if f.dropped_writes:
        total = sum(n for _, n in f.dropped_writes)
        return DefectiveError(
            f"it dropped writes: {format_size(total)} in {len(f.dropped_writes)} range(s) "
            "still hold the keyed pass's data where the image wrote zeros (the drive had "
            "stored and read back that data, then ignored the writes over it)",
            device=f.device,
            stage="verify",
        )
    return None


def _payload_problem(f: Findings) -> FdffdError | None:
    if f.payload_changed:
        return PayloadChangedError(
            path=f.payload_changed[0], count=len(f.payload_changed), stage="verify"
        )
    if f.payload_damaged:
        return DefectiveError(
            f"{len(f.payload_damaged)} payload file(s) read back wrong, "
            f"e.g. {f.payload_damaged[0]!r}",
            device=f.device,
            stage="verify",
        )
    return None


def decide(f: Findings, policy: CounterfeitPolicy) -> tuple[Verdict, FdffdError | None]:
    """The verdict of a job that found ``f``, and the error its record carries (None for
    ``ok`` and ``rescued``).  ``policy`` is ``job.counterfeit``: reject a fake, or rescue it
    at its real size.

    In order: what ended the job early; a drive that turned read-only, failed too much or
    dropped writes;
    a payload file changed since its manifest, or damaged by the drive; bad flash; a
    counterfeit under ``reject`` (or one that may not be rescued: ``no_rescue``); a payload
    too large for the drive; a capacity too small for the filesystem; a rescued fake; ok."""
    if f.failure is not None:
        return _failure_verdict(f.failure), f.failure
    err = _drive_defect(f) or _payload_problem(f)
    if err is not None:
        return _failure_verdict(err), err
    if f.bad_ranges:
        total = sum(n for _, n in f.bad_ranges)
        return "defective", DefectiveError(
            f"{format_size(total)} of bad flash in {len(f.bad_ranges)} range(s) inside the "
            "real capacity",
            device=f.device,
            stage="verify",
        )
    if f.counterfeit and (policy == "reject" or f.no_rescue):
        why = f"; {f.no_rescue}" if f.no_rescue else ""
        return "counterfeit", CounterfeitError(
            f"{f.kind}; its real capacity was wiped and verified{why}",
            device=f.device,
            announced=_size_text(f.announced_bytes),
            usable=_size_text(f.usable_bytes),
            stage="verify",
        )
    if f.payload_too_large is not None:
        needed, available = f.payload_too_large
        return "failed", PayloadTooLargeError(needed=needed, available=available, stage="image")
    if f.volume_too_small is not None:
        return _failure_verdict(f.volume_too_small), f.volume_too_small
    return ("rescued" if f.counterfeit else "ok"), None


def exit_code_of(error: FdffdError | None) -> ExitCode:
    """The exit code of a job that ended with ``error`` (0 without one)."""
    return ExitCode.OK if error is None else error.exit_code

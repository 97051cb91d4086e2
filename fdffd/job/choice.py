"""The job's payload: the profiles its drive's audience may get, pinned, and the first
of them, largest first, whose image fits the drive's proven capacity.

Which profiles: the audience of the port the drive sits on (``[[ports]]`` and
``[audiences.NAME]``), or ``job.profile`` alone.  Which one: the first whose image
plan fits; the profiles passed over say why with a nominal size
(:func:`fdffd.payload.choose.nominal_size`), never exact bytes.  The choice is made
after the probe and again when the verify pass lowers the capacity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TypeVar

from ..audit.record import ProfileTried
from ..config import Config
from ..errors import JobFailedError, PayloadError, PayloadTooLargeError
from ..payload import Profile, check_before_job, open_profile
from ..payload.choose import Choice, Tried, nominal_size

T = TypeVar("T")


def open_payloads(
    config: Config, audience: str, stack: ExitStack, device: str
) -> tuple[Profile, ...]:
    """The candidate profiles, largest first, each pinned for the whole job and checked
    (a profile changed since its manifest fails the job before it touches the drive)."""
    profiles = []
    for name in config.profiles_for(audience):
        payload = stack.enter_context(open_profile(config.station.payload_dir, name))
        try:
            check_before_job(payload, config.payload)
        except PayloadError as err:
            raise JobFailedError(err.message, device=device, stage="admit") from None
        profiles.append(payload)
    return tuple(profiles)


def first_fitting(
    profiles: Sequence[Profile], plan_for: Callable[[Profile], T]
) -> tuple[Profile | None, T | None, Choice, PayloadTooLargeError | None]:
    """The first of ``profiles`` whose plan ``plan_for`` builds (it raises
    ``PayloadTooLargeError`` for one that does not fit), its plan, the choice as the
    record tells it, and the last too-large error when none fits."""
    tried: list[Tried] = []
    last: PayloadTooLargeError | None = None
    for profile in profiles:
        try:
            plan = plan_for(profile)
        except PayloadTooLargeError as err:
            needed = int(err.fields["needed"])
            reason = f"needs a {nominal_size(needed)} drive; this one proved smaller"
            tried.append(Tried(profile.name, False, reason))
            last = err
            continue
        tried.append(Tried(profile.name, True))
        return profile, plan, Choice(profile.name, tuple(tried)), None
    return None, None, Choice(None, tuple(tried)), last


def choice_record(choice: Choice) -> list[ProfileTried]:
    """``payload.choice`` of the record: the profiles tried, in order, and why not."""
    return [ProfileTried(profile=t.profile, fits=t.fits, reason=t.reason) for t in choice.tried]

"""One job, one drive: admit, identify, probe, wipe pass(es), image pass, verify, finish, record
(the passes, and the keyed pass under an image with zeros in its free space: ``passes.py``).

:func:`run_job` takes a drive that is already open (any :class:`~fdffd.devices.disk.Disk`:
a real block device, or the test kit's in-memory disk) and the facts gathered about it.
:func:`process_path` is the path-based job the station and ``fdffctl process`` run: it pins
the payload profile, gathers the facts, asks the safety gate, and only then opens the drive
read-write and calls the same job.

Whatever happens, a job returns exactly one typed :class:`~fdffd.audit.record.JobRecord`,
filled from the job's first line, and an exit code.  What the job finds goes into
:class:`~fdffd.job.verdict.Findings`; an unexpected failure (I/O error, drive pulled, too
slow, refused, cancelled) ends the job and becomes a finding too; the verdict is decided at
the end by the pure :func:`~fdffd.job.verdict.decide`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from pydantic import ValidationError

from .. import RELEASE_DATE, __version__
from ..audit.record import (
    Capacity,
    CapacityKind,
    DeviceInfo,
    ErrorInfo,
    FilesystemInfo,
    FilesystemType,
    JobRecord,
    PayloadInfo,
    Sanitization,
    SpeedProfile,
    Stage,
    Wipe,
    size_class,
    utc_now_iso,
)
from ..audit.seal import Sealer, seal_identifying
from ..config import Config
from ..devices.blockdev import BlockDevice
from ..devices.disk import Disk
from ..devices.facts import DeviceFacts, gather
from ..errors import (
    ExitCode,
    FdffdError,
    JobCrashedError,
    JobLostError,
    PayloadTooLargeError,
    RefusedError,
    UsageError,
)
from ..imaging import footprint as fp
from ..imaging.plan import ID_BYTES, ImagePlan, build_plan, draw_base_time
from ..log import get_logger
from ..pattern import PATTERN_NAME, Pattern, new_job_key
from ..payload import Profile
from ..payload.choose import Choice
from . import capacity
from .choice import choice_record, first_fitting, open_payloads
from .gate import evaluate
from .image import ImageSurface
from .passes import run_passes
from .probe import ProbeResult, probe_capacity
from .smallvol import volume_error
from .speed import RegionTimer, speed_profile
from .surface import FillPlan
from .verdict import Findings, decide, exit_code_of

#: a dead region at least this long is lost capacity (capacity.py decides)
TAIL_MIN = capacity.TAIL_MIN

StatusCallback = Callable[[str, int, int], None]  # stage, bytes done, bytes total


@dataclass
class JobOutcome:
    record: JobRecord  # the whole record, for this process only
    exit_code: int
    logged: JobRecord  # what the audit log keeps: identifying fields sealed


def new_record(config: Config, job_id: str, device: str, started: str) -> JobRecord:
    """The record of a job that has just begun: it ends ``failed`` unless the job says more."""
    return JobRecord(
        job_id=job_id,
        station=config.station.id,
        version=__version__,
        day=started[:10],
        started_at=started,
        finished_at=started,
        verdict="failed",
        wiped=False,
        device=DeviceInfo(path=device, port="", bus="", vendor="", model=""),
        capacity=Capacity(),
        wipe=Wipe(pattern=PATTERN_NAME, passes=config.job.passes),
    )


class _Job:
    """One job's state: its typed record and what it found so far."""

    def __init__(
        self, config: Config, device: str, status: StatusCallback | None, today: date | None
    ) -> None:
        self.config = config
        self.status = status
        #: the station's date, read once: the drive's dates are drawn from a window before it
        self.today = today or date.today()
        #: the kind of media (``footprint.MEDIA_KINDS``), from the drive's udev facts
        self.media = fp.DEFAULT_MEDIA
        self.job_id = uuid.uuid4().hex
        self.record = new_record(config, self.job_id, device, utc_now_iso())
        self.findings = Findings(device=device)
        #: the audience of the drive's mapped port ("" without one)
        self.audience = ""
        self.log: Any = get_logger(job_id=self.job_id, device=device)
        self.t0 = time.monotonic()
        self.serial: str | None = None

    def stage(self, name: str, seconds: float, nbytes: int) -> None:
        self.record.stages.append(Stage(name=name, seconds=round(seconds, 3), bytes=nbytes))

    def report(self, stage: str, done: int, total: int) -> None:
        if self.status is not None:
            self.status(stage, done, total)

    def progress(self, stage: str, total: int) -> Callable[[int], None] | None:
        if self.status is None:
            return None
        cb = self.status
        return lambda done: cb(stage, done, total)


# --- the two ways in --------------------------------------------------------------------


def run_job(
    config: Config,
    disk: Disk,
    facts: DeviceFacts,
    *,
    payload: Profile | Sequence[Profile] | None = None,
    sealer: Sealer | None = None,
    status: StatusCallback | None = None,
    on_start: Callable[[str], None] | None = None,
    today: date | None = None,
) -> JobOutcome:
    """Run one whole job on ``disk``, an opened drive that passed the gate, described by
    ``facts``; never raises for anything the drive does.

    ``payload`` is the profile to image (pinned and checked by the caller), or several,
    largest first, of which the first that fits is imaged, or None for a wipe only.
    ``status(stage, done, total)`` is called as the job goes; an exception it raises (a
    cancellation) ends the job with that exception's verdict.  ``on_start(job_id)`` is
    called before the job touches anything.  ``today`` is the station's date (default: the
    clock's); a date before :data:`fdffd.RELEASE_DATE` refuses the job."""
    job = _Job(config, disk.path, status, today)

    def body() -> None:
        _begin(job, on_start)
        _note_facts(job, facts)
        payloads = (
            () if payload is None else (payload,) if isinstance(payload, Profile) else payload
        )
        _run_disk(job, disk, facts, tuple(payloads))

    return _conclude(job, body, sealer)


def process_path(
    config: Config,
    device: str,
    *,
    sealer: Sealer | None = None,
    status: StatusCallback | None = None,
    on_start: Callable[[str], None] | None = None,
    today: date | None = None,
) -> JobOutcome:
    """Run one whole job on the drive at ``device`` (see :func:`run_job`): check the
    station's clock, pin and check the payload profile, gather the facts, ask the safety
    gate, and only then open the drive read-write (``O_EXCL``, held for the whole job)."""
    job = _Job(config, device, status, today)

    def body() -> None:
        _begin(job, on_start)
        cfg = job.config
        with ExitStack() as stack:
            facts = gather(
                device, state_dir=cfg.station.state_dir, payload_dir=cfg.station.payload_dir
            )
            _note_facts(job, facts)
            payload = open_payloads(cfg, job.audience, stack, device)
            refusal = evaluate(facts, cfg.drives, cfg.ports)
            if refusal:
                raise RefusedError(refusal.detail, device=device, rule=refusal.rule, stage="admit")
            dev = stack.enter_context(BlockDevice(device, stage="admit"))
            _run_disk(job, dev, facts, payload)

    return _conclude(job, body, sealer)


def interrupted_record(config: Config, entry: Mapping[str, Any]) -> JobRecord:
    """The record of a job found in the journal on restart: it was running when the
    daemon died, and nothing is known of how far it got."""
    job_id = str(entry.get("job_id") or uuid.uuid4().hex)
    device = str(entry.get("device") or "")
    try:
        rec = new_record(config, job_id, device, str(entry.get("started_at") or utc_now_iso()))
    except ValidationError:  # a journal entry with a broken time: the job still gets a record
        rec = new_record(config, job_id, device, utc_now_iso())
    rec.device.port = str(entry.get("port") or "")
    rec.verdict = "interrupted"
    rec.error = ErrorInfo.of(JobLostError())
    rec.finished_at = utc_now_iso()
    return seal_identifying(rec, None, None)  # only the day: nothing identifying is known


def unstarted_record(config: Config, entry: Mapping[str, Any], code: str, text: str) -> JobRecord:
    """The record of an insertion whose job never began (pulled while it waited for a
    worker): verdict ``failed`` in stage ``queued``; nothing was written to the drive."""
    rec = interrupted_record(config, {**entry, "started_at": entry.get("queued_at")})
    rec.verdict = "failed"
    rec.wiped = False
    rec.error = ErrorInfo(code=code, message=text, stage="queued")
    return rec


# --- the job's boundary ---------------------------------------------------------------


def _begin(job: _Job, on_start: Callable[[str], None] | None) -> None:
    if on_start is not None:
        on_start(job.job_id)
    job.t0 = time.monotonic()
    check_clock(job.today, job.record.device.path)


def check_clock(today: date, device: str) -> None:
    """Refuse a job (before the drive is touched) when the station's date is before this
    release: the clock is wrong (a board without a real-time clock starts in 1970 or 2000),
    and a drive's dates are drawn from a window that ends 30 days before it."""
    if today < RELEASE_DATE:
        raise RefusedError(
            f"the station's clock says {today.isoformat()}, before this version of fdffd was "
            f"released ({RELEASE_DATE.isoformat()}), so the clock is wrong and drives would "
            "be dated from it; set the date (timedatectl set-time 'YYYY-MM-DD HH:MM:SS', or "
            "let NTP set it) and plug the drive in again",
            device=device,
            rule="station-clock",
            stage="admit",
        )


def _conclude(job: _Job, body: Callable[[], None], sealer: Sealer | None) -> JobOutcome:
    """Run ``body``; whatever it raises becomes a finding; decide; finish the record."""
    rec = job.record
    job.log.info("job.started", station=job.config.station.id)
    try:
        body()
    except FdffdError as err:
        job.findings.failure = err
    except Exception as err:
        job.findings.failure = JobCrashedError(f"{type(err).__name__}: {err}")
        job.log.exception("job.crashed", port=rec.device.port)
    verdict, error = decide(job.findings, job.config.job.counterfeit)
    rec.verdict = verdict
    rec.wiped = job.findings.wiped
    rec.error = None if error is None else ErrorInfo.of(error)
    rec.finished_at = utc_now_iso()
    if error is not None and not isinstance(error, JobCrashedError):
        event = "gate.refused" if isinstance(error, RefusedError) else f"job.{verdict}"
        job.log.warning(event, error=error.message, port=rec.device.port)
    exit_code: ExitCode = exit_code_of(error)
    job.log.info("job.finished", verdict=verdict, exit_code=int(exit_code), port=rec.device.port)
    logged = seal_identifying(rec.model_copy(deep=True), sealer, job.serial)
    return JobOutcome(rec, int(exit_code), logged)


def _note_facts(job: _Job, facts: DeviceFacts) -> None:
    """What the gate saw, recorded before it decides (a refusal's record names the drive)."""
    dev = job.record.device
    dev.port = facts.port
    entry = job.config.port_entry(facts.port)
    dev.port_label = entry.label if entry else None
    job.audience = entry.audience if entry else ""
    dev.bus = facts.bus
    dev.vendor = facts.vendor
    dev.model = facts.model
    dev.announced_bytes = facts.size_bytes
    job.serial = facts.serial


def _run_disk(
    job: _Job,
    disk: Disk,
    facts: DeviceFacts,
    payload: tuple[Profile, ...],
) -> None:
    job.stage("admit", time.monotonic() - job.t0, 0)
    _identify(job, facts, disk)
    job.log = job.log.bind(port=facts.port)
    job.log.info(
        "job.identified",
        vendor=facts.vendor,
        model=facts.model,
        announced=size_class(disk.size),
        diskseq=facts.diskseq,
    )
    _process(job, disk, payload)


def _identify(job: _Job, facts: DeviceFacts, disk: Disk) -> None:
    rec = job.record
    job.media = fp.media_kind_from_udev(facts.udev)
    rec.device = DeviceInfo(
        path=rec.device.path,
        port=facts.port,
        port_label=rec.device.port_label,
        media=job.media,
        bus=facts.bus,
        vendor=facts.vendor,
        model=facts.model,
        announced_bytes=disk.size,
        logical_sector=disk.geometry.logical_sector,
    )
    rec.capacity = Capacity(
        announced_bytes=disk.size,
        announced_class=size_class(disk.size),
        usable_bytes=disk.size,
        usable_class=size_class(disk.size),
    )
    rec.sanitization = Sanitization(
        verification="full-read-back" if job.config.job.verify == "full" else "none",
        tool_version=__version__,
    )
    job.findings.announced_bytes = job.findings.usable_bytes = disk.size


# --- the stages -------------------------------------------------------------------------


def _process(job: _Job, disk: Disk, payload: tuple[Profile, ...]) -> None:
    cfg = job.config
    key = new_job_key()
    sector = disk.geometry.logical_sector
    chunk = max(sector, cfg.job.chunk - cfg.job.chunk % sector)
    probe, usable = _probe(job, disk, key, sector)
    image = _image_surface(job, () if _no_image(job) else payload, usable, key, sector)
    timers = (RegionTimer(0, usable), RegionTimer(0, usable))
    try:
        sweep = run_passes(job, disk, key, usable, chunk, image, first=0, timers=timers)
        written, dropped = sweep.written, list(sweep.dropped)
        lost = sweep.lost()
        real = capacity.capacity_from_verify(lost, sweep.aliases, usable) if sweep.done else None
        if real is not None:
            # The verify pass found capacity the probe missed (an alias onto an unprobed
            # spot, a cache larger than the probe's flush).  Every byte of real flash has
            # been overwritten already; write and verify the last pass again inside it.
            kind = capacity.verify_kind(lost, sweep.aliases, usable, probe.kind)
            job.log.warning("verify.capacity_loss", real=size_class(real), kind=kind)
            usable = real - real % sector
            _set_capacity(job, usable, kind, probe.seconds)
            _note_rescue(job, usable, probe.unstable, probe.boundaries)
            image.close()
            image = _image_surface(job, () if _no_image(job) else payload, usable, key, sector)
            # the record's read-back counts are the final surface's: the passes run again
            job.record.wipe.mismatched_bytes = 0
            sweep = run_passes(job, disk, key, usable, chunk, image, first=cfg.job.passes - 1)
            written += sweep.written
            dropped += sweep.dropped
    finally:
        image.close()
    _note_speed(job, *timers)
    job.record.wipe.bytes_written = written
    job.record.wipe.bad_ranges = list(sweep.bad)
    job.findings.bad_ranges = list(sweep.bad)
    job.findings.dropped_writes = dropped
    if dropped:
        job.log.warning("verify.dropped_writes", ranges=len(dropped), bytes=_total(dropped))
    if sweep.done:  # a drive that turned read-only or failed too much stops before this
        job.findings.surface_done = True
        _finish(job, disk, image)


def _total(ranges: list[tuple[int, int]]) -> int:
    return sum(n for _, n in ranges)


def _probe(job: _Job, disk: Disk, key: bytes, sector: int) -> tuple[ProbeResult, int]:
    disk.stage = "probe"
    job.report("probe", 0, disk.size)
    cfg = job.config
    # with a verify pass (the final word on capacity) the probe's top check stays small
    search = None if cfg.job.verify == "off" else cfg.job.probe_cache_flush
    probe = probe_capacity(disk, key, flush_bytes=cfg.job.probe_cache_flush, search_bytes=search)
    job.stage("probe", probe.seconds, probe.bytes_written + probe.bytes_read)
    usable = probe.usable_bytes - probe.usable_bytes % sector
    _set_capacity(job, usable, probe.kind, probe.seconds)
    if probe.counterfeit:
        job.log.warning("probe.counterfeit", usable=size_class(usable), kind=probe.kind)
    else:
        job.log.info("probe.done", usable=size_class(usable), seconds=round(probe.seconds, 2))
    _note_rescue(job, usable, probe.unstable, probe.boundaries)
    return probe, usable


def _note_rescue(job: _Job, usable: int, unstable: bool, boundaries: list[int]) -> None:
    """Whether a counterfeit of ``usable`` bytes may be rescued (a finding for decide())."""
    cfg = job.config
    job.findings.no_rescue = capacity.rescue_refusal(
        cfg.job.counterfeit, usable, cfg.drives.min_size, unstable=unstable, boundaries=boundaries
    )


def _no_image(job: _Job) -> bool:
    """A counterfeit that will be rejected gets keyed fill, not the payload."""
    f = job.findings
    return f.counterfeit and (job.config.job.counterfeit == "reject" or f.no_rescue is not None)


def _note_speed(job: _Job, write: RegionTimer, read: RegionTimer) -> None:
    """The record's ``speed`` block from what the whole-surface passes timed."""
    if not write.fed:
        return
    prof = speed_profile(write, read)
    job.record.speed = SpeedProfile(
        regions=prof.regions,
        write_bytes_per_second=[v * 1e6 for v in prof.write_mbps] or None,
        read_bytes_per_second=[v * 1e6 for v in prof.read_mbps] or None,
        cliff=prof.cliff,
    )
    if prof.cliff:
        job.log.warning("speed.cliff", at=prof.cliff_at, write_mbps=prof.write_mbps)


def _finish(job: _Job, disk: Disk, image: FillPlan) -> None:
    disk.stage = "finish"
    job.report("finish", 0, 0)
    t = time.monotonic()
    disk.flush()
    if isinstance(image, ImageSurface):
        disk.reread_partitions()
    job.stage("finish", time.monotonic() - t, 0)
    _payload_outcome(job, image)


def _image_surface(
    job: _Job, payloads: tuple[Profile, ...], usable: int, key: bytes, sector: int
) -> FillPlan:
    """What the last pass writes: the image of the payload, or keyed fill when there is
    none (no profile, a rejected counterfeit, or a payload that does not fit)."""
    fill = FillPlan(Pattern(key, "image"), granule=sector)
    rec = job.record
    rec.filesystem = None
    rec.payload = None
    rec.wipe.free_space = "keyed"
    cfg = job.config
    job.findings.volume_too_small = None
    try:
        payload, plan, choice, too_large = _plan_for(job, payloads, usable, sector)
    except UsageError as err:
        # a capacity the filesystem cannot hold: wiped and verified all the same, then exit 5
        job.findings.volume_too_small = volume_error(
            err, usable, cfg.job.filesystem, sector, job.record.device.path
        )
        job.log.warning("image.volume_too_small", error=job.findings.volume_too_small.message)
        return fill
    if too_large is not None:
        # the drive is still wiped and verified; the job fails at the end with both sizes
        sizes = too_large.fields
        job.findings.payload_too_large = (int(sizes["needed"]), int(sizes["available"]))
        job.log.warning("image.payload_too_large", error=too_large.message)
    if payload is None or plan is None:
        return fill
    rec.filesystem = FilesystemInfo(
        type=cast("FilesystemType", plan.fs_type),
        footprint=fp.NAME,
        label=plan.volume.label,
        volume_id=plan.volume_id_text,
        partition_offset=plan.partition.partition_offset,
        partition_bytes=plan.partition.partition_bytes,
    )
    rec.payload = PayloadInfo(
        profile=payload.name,
        manifest_sha256=payload.manifest_sha256,
        files=len(payload.manifest.files),
        bytes=payload.total_bytes,
        verified=False,
        audience=job.audience or None,
        choice=choice_record(choice) if len(payloads) > 1 else None,
    )
    rec.wipe.free_space = cfg.job.free_space
    job.log.info(
        "image.planned",
        filesystem=plan.fs_type,
        partition=size_class(plan.partition.partition_bytes),
        free_space=cfg.job.free_space,
        media=job.media,
    )
    return ImageSurface(plan, Pattern(key, "image"), payload.manifest.files, granule=sector)


def _plan_for(
    job: _Job, payloads: tuple[Profile, ...], usable: int, sector: int
) -> tuple[Profile | None, ImagePlan | None, Choice, PayloadTooLargeError | None]:
    """The first of ``payloads`` that fits ``usable`` bytes, and its plan (``first_fitting``);
    raises ``UsageError`` for a capacity the filesystem cannot hold."""
    cfg = job.config
    return first_fitting(
        payloads,
        lambda p: build_plan(
            usable,
            p.tree(),
            filesystem=cfg.job.filesystem,
            label=cfg.job.label,
            ids=os.urandom(ID_BYTES),
            base_time=draw_base_time(  # imaging never reads the clock
                job.today, window_days=cfg.job.date_window, min_age_days=cfg.job.date_min_age
            ),
            sector_bytes=sector,
            media=job.media,
            free_fill=cfg.job.free_space,
        ),
    )


def _payload_outcome(job: _Job, image: FillPlan) -> None:
    rec = job.record
    if not isinstance(image, ImageSurface) or rec.payload is None or not rec.wipe.verified_bytes:
        return  # without a verify pass nothing is proven: payload.verified stays false
    changed, damaged = image.split_damage(job.findings.bad_ranges)
    rec.payload.verified = not (changed or damaged)
    job.findings.payload_changed = changed
    job.findings.payload_damaged = damaged
    if rec.payload.verified:
        job.log.info("payload.verified", files=rec.payload.files)


# --- capacity ---------------------------------------------------------------------------


def lost_tail(bad: list[tuple[int, int]], end: int) -> int | None:
    """Start of the first dead region (capacity the drive does not have); capacity.py."""
    return capacity.lost_tail(bad, end)


def capacity_from_verify(
    bad: list[tuple[int, int]], aliases: list[tuple[int, int]], usable: int
) -> int | None:
    """The real capacity the verify pass proves, when it is below ``usable``; capacity.py."""
    return capacity.capacity_from_verify(bad, aliases, usable)


def _set_capacity(job: _Job, usable: int, kind: str | None, seconds: float) -> None:
    old = job.record.capacity
    announced = old.announced_bytes or 0
    counterfeit = usable < announced
    job.record.capacity = Capacity(
        announced_bytes=announced,
        announced_class=old.announced_class,
        usable_bytes=usable,
        usable_class=size_class(usable),
        counterfeit=counterfeit,
        kind=cast("CapacityKind | None", kind if counterfeit else None),
        probe_seconds=round(seconds, 3) if seconds else old.probe_seconds,
    )
    job.findings.usable_bytes = usable
    job.findings.kind = job.record.capacity.kind

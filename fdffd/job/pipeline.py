"""One job, one drive: admit, identify, probe, wipe pass(es), image pass, verify, finish, record.

Whatever happens, ``run_job`` returns exactly one job record; the caller hands it to
the audit log.  Every failure becomes a verdict and an ``error`` in the record.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..audit.record import utc_now_iso
from ..config import Config
from ..devices.blockdev import BlockDevice, aligned_buffer
from ..devices.facts import DeviceFacts, gather
from ..errors import (
    CounterfeitError,
    DefectiveError,
    DeviceIOError,
    FdffdError,
    JobFailedError,
    PayloadChangedError,
    PayloadError,
    PayloadTooLargeError,
    RefusedError,
    UsageError,
)
from ..imaging.plan import ID_BYTES, build_plan
from ..log import get_logger
from ..pattern import PATTERN_NAME, Pattern, new_job_key
from ..payload.profiles import Profile, check_before_job, open_profile
from ..sizes import format_size
from . import capacity
from .gate import evaluate
from .image import ImageSurface
from .probe import ProbeResult, probe_capacity
from .smallvol import volume_error
from .speed import RegionTimer, SpeedProfile, speed_profile
from .surface import Digests, FillPlan, PassResult, merge_ranges, verify_pass, write_pass

#: a dead region at least this long is lost capacity (capacity.py decides)
TAIL_MIN = capacity.TAIL_MIN

StatusCallback = Callable[[str, int, int], None]  # stage, bytes done, bytes total


@dataclass
class JobOutcome:
    record: dict[str, Any]
    exit_code: int


@dataclass
class _Job:
    config: Config
    device: str
    serial_hmac: Callable[[str], str] | None
    status: StatusCallback | None
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: an error that ends the job only after the drive has been wiped (payload too large)
    deferred: FdffdError | None = None
    #: why a counterfeit may not be rescued (moving capacity, below min_size), or None
    no_rescue: str | None = None
    #: write and read speed over the surface (for the record's ``speed`` block)
    speed: SpeedProfile | None = None

    def stage(self, name: str, seconds: float, nbytes: int) -> None:
        self.stages.append({"name": name, "seconds": round(seconds, 3), "bytes": nbytes})


def _base_record(job: _Job, started: str) -> dict[str, Any]:
    return {
        "schema": 1,
        "job_id": job.job_id,
        "station": job.config.station.id,
        "version": __version__,
        "started_at": started,
        "finished_at": started,
        "verdict": "failed",
        "device": {
            "path": job.device,
            "port": "",
            "bus": "",
            "vendor": "",
            "model": "",
            "serial_hmac": None,
            "announced_bytes": 0,
            "logical_sector": 512,
        },
        "capacity": {
            "announced_bytes": 0,
            "usable_bytes": 0,
            "counterfeit": False,
            "kind": None,
            "probe_seconds": 0.0,
        },
        "wipe": {
            "pattern": PATTERN_NAME,
            "passes": job.config.job.passes,
            "bytes_written": 0,
            "verified_bytes": 0,
            "mismatched_bytes": 0,
            "bad_ranges": [],
        },
        "filesystem": None,
        "payload": None,
        "stages": job.stages,
        "error": None,
    }


def _identify(
    rec: dict[str, Any],
    facts: DeviceFacts,
    dev: BlockDevice,
    serial_hmac: Callable[[str], str] | None,
) -> None:
    rec["device"].update(
        port=facts.port,
        bus=facts.bus,
        vendor=facts.vendor,
        model=facts.model,
        serial_hmac=serial_hmac(facts.serial) if (serial_hmac and facts.serial) else None,
        announced_bytes=dev.size,
        logical_sector=dev.geometry.logical_sector,
    )
    rec["capacity"]["announced_bytes"] = dev.size
    rec["capacity"]["usable_bytes"] = dev.size


def lost_tail(bad: list[tuple[int, int]], end: int) -> int | None:
    """Start of the first dead region (capacity the drive does not have); capacity.py."""
    return capacity.lost_tail(bad, end)


def run_job(
    config: Config,
    device: str,
    *,
    serial_hmac: Callable[[str], str] | None = None,
    status: StatusCallback | None = None,
    on_start: Callable[[str], None] | None = None,
) -> JobOutcome:
    """Run one whole job on ``device``; never raises for anything the drive does.

    ``status(stage, done, total)`` is called as the job goes; an exception it raises (a
    cancellation) ends the job with that exception's verdict.  ``on_start(job_id)`` is
    called before the job touches anything (the station journals the job there)."""
    job = _Job(config, device, serial_hmac, status)
    rec = _base_record(job, utc_now_iso())
    log = get_logger(job_id=job.job_id, device=device)
    log.info("job.started", station=config.station.id)
    exit_code = 0
    try:
        if on_start is not None:
            on_start(job.job_id)
        rec["verdict"] = _run(job, rec, log)
    except FdffdError as err:
        rec["verdict"] = err.verdict
        rec["error"] = {"code": err.code, "message": err.message, "stage": err.fields.get("stage")}
        exit_code = err.exit_code
        event = "gate.refused" if isinstance(err, RefusedError) else f"job.{err.verdict}"
        log.warning(event, error=err.message, port=rec["device"]["port"])
    except Exception as err:
        rec["verdict"] = "failed"
        rec["error"] = {
            "code": "internal",
            "message": f"{type(err).__name__}: {err}",
            "stage": None,
        }
        exit_code = JobFailedError.exit_code
        log.exception("job.crashed", port=rec["device"]["port"])
    rec["finished_at"] = utc_now_iso()
    log.info(
        "job.finished", verdict=rec["verdict"], exit_code=exit_code, port=rec["device"]["port"]
    )
    return JobOutcome(rec, exit_code)


def _run(job: _Job, rec: dict[str, Any], log: Any) -> str:
    cfg = job.config
    t0 = time.monotonic()
    with ExitStack() as stack:
        payload = None
        if cfg.job.profile:
            # the profile version is resolved once, and held, for the whole job
            payload = stack.enter_context(open_profile(cfg.station.payload_dir, cfg.job.profile))
            try:
                check_before_job(payload)
            except PayloadError as err:  # changed since its manifest: the job fails (exit 5)
                raise JobFailedError(err.message, device=job.device, stage="admit") from None
        facts = gather(
            job.device, state_dir=cfg.station.state_dir, payload_dir=cfg.station.payload_dir
        )
        refusal = evaluate(facts, cfg.drives)
        rec["device"].update(
            port=facts.port,
            bus=facts.bus,
            vendor=facts.vendor,
            model=facts.model,
            announced_bytes=facts.size_bytes,
        )
        if refusal:
            raise RefusedError(refusal.detail, device=job.device, rule=refusal.rule, stage="admit")
        dev = stack.enter_context(BlockDevice(job.device, stage="admit"))
        job.stage("admit", time.monotonic() - t0, 0)
        _identify(rec, facts, dev, job.serial_hmac)
        log = log.bind(port=facts.port)
        log.info(
            "job.identified",
            vendor=facts.vendor,
            model=facts.model,
            announced=dev.size,
            diskseq=facts.diskseq,
        )
        return _process(job, rec, dev, payload, log)


def _status(job: _Job, stage: str, done: int, total: int) -> None:
    if job.status is not None:
        job.status(stage, done, total)


def interrupted_record(config: Config, entry: dict[str, Any]) -> dict[str, Any]:
    """The record of a job found in the journal on restart: it was running when the
    daemon died, and nothing is known of how far it got."""
    job = _Job(
        config,
        str(entry.get("device") or ""),
        None,
        None,
        job_id=str(entry.get("job_id") or uuid.uuid4().hex),
    )
    rec = _base_record(job, str(entry.get("started_at") or utc_now_iso()))
    rec["device"]["port"] = str(entry.get("port") or "")
    rec["verdict"] = "interrupted"
    rec["finished_at"] = utc_now_iso()
    rec["error"] = {
        "code": "interrupted",
        "message": "the station stopped during this job (found in the job journal on "
        "restart); the drive was not finished: plug it in again",
        "stage": None,
    }
    return rec


def _report(job: _Job, stage: str, total: int) -> Callable[[int], None] | None:
    if job.status is None:
        return None
    cb = job.status
    return lambda done: cb(stage, done, total)


def _process(
    job: _Job, rec: dict[str, Any], dev: BlockDevice, payload: Profile | None, log: Any
) -> str:
    cfg = job.config
    key = new_job_key()
    sector = dev.geometry.logical_sector
    chunk = max(sector, cfg.job.chunk - cfg.job.chunk % sector)

    # probe -----------------------------------------------------------------------------
    dev.stage = "probe"
    _status(job, "probe", 0, dev.size)
    # with a verify pass (the final word on capacity) the probe's top check stays small
    search = None if cfg.job.verify == "off" else cfg.job.probe_cache_flush
    probe: ProbeResult = probe_capacity(
        dev, key, flush_bytes=cfg.job.probe_cache_flush, search_bytes=search
    )
    job.stage("probe", probe.seconds, probe.bytes_written + probe.bytes_read)
    usable = probe.usable_bytes - probe.usable_bytes % sector
    _set_capacity(rec, usable, probe.kind, probe.seconds)
    if probe.counterfeit:
        log.warning(
            "probe.counterfeit", announced=probe.announced_bytes, usable=usable, kind=probe.kind
        )
    else:
        log.info("probe.done", usable=usable, seconds=round(probe.seconds, 2))
    job.no_rescue = capacity.rescue_refusal(
        cfg.job.counterfeit,
        usable,
        cfg.drives.min_size,
        unstable=probe.unstable,
        boundaries=probe.boundaries,
    )
    image_it = payload is not None and not (
        probe.counterfeit and (cfg.job.counterfeit == "reject" or job.no_rescue)
    )

    # wipe passes, the image pass, verify -------------------------------------------------
    image = _image_surface(job, rec, payload if image_it else None, usable, key, sector, log)
    try:
        written, bad = _surface(job, rec, dev, key, usable, chunk, image, log, first=0)
        real = capacity_from_verify(bad, image.aliases, usable)
        if real is not None:
            # The verify pass found capacity the probe missed (an alias onto an unprobed
            # spot, a cache larger than the probe's flush).  Every byte of real flash has
            # been overwritten already; write and verify the last pass again inside it.
            kind = capacity.verify_kind(bad, image.aliases, usable, probe.kind)
            log.warning("verify.capacity_loss", usable=usable, real=real, kind=kind)
            usable = real - real % sector
            _set_capacity(rec, usable, kind, probe.seconds)
            job.no_rescue = capacity.rescue_refusal(
                cfg.job.counterfeit, usable, cfg.drives.min_size, unstable=probe.unstable
            )
            if cfg.job.counterfeit == "reject" or job.no_rescue:
                payload = None
            image.close()
            image = _image_surface(job, rec, payload, usable, key, sector, log)
            more, bad = _surface(
                job, rec, dev, key, usable, chunk, image, log, first=cfg.job.passes - 1
            )
            written += more
    finally:
        image.close()
    rec["wipe"]["bytes_written"] = written
    rec["wipe"]["bad_ranges"] = [[s, n] for s, n in bad]

    # finish ------------------------------------------------------------------------------
    dev.stage = "finish"
    _status(job, "finish", 0, 0)
    t = time.monotonic()
    dev.flush()
    if isinstance(image, ImageSurface):
        dev.reread_partitions()
    job.stage("finish", time.monotonic() - t, 0)
    _payload_outcome(rec, image, dev.path, log)
    return _verdict(job, rec, bad, dev.path)


def _image_surface(
    job: _Job,
    rec: dict[str, Any],
    payload: Profile | None,
    usable: int,
    key: bytes,
    sector: int,
    log: Any,
) -> FillPlan:
    """What the last pass writes: the image of the payload, or keyed fill when there is
    none (no profile, a rejected counterfeit, or a payload that does not fit)."""
    fill = FillPlan(Pattern(key, "image"), granule=sector)
    rec["filesystem"] = None
    rec["payload"] = None
    if payload is None:
        return fill
    cfg = job.config
    try:
        plan = build_plan(
            usable,
            payload.tree(),
            filesystem=cfg.job.filesystem,
            label=cfg.job.label,
            ids=os.urandom(ID_BYTES),
            sector_bytes=sector,
        )
    except PayloadTooLargeError as err:
        # the drive is still wiped and verified; the job fails at the end with both sizes
        job.deferred = err
        log.warning("image.payload_too_large", error=err.message)
        return fill
    except UsageError as err:
        # a capacity the filesystem cannot hold: wiped and verified all the same, then exit 5
        job.deferred = volume_error(err, usable, cfg.job.filesystem, sector, job.device)
        log.warning("image.volume_too_small", error=job.deferred.message)
        return fill
    rec["filesystem"] = {
        "type": plan.fs_type,
        "label": plan.volume.label,
        "volume_id": plan.volume_id_text,
        "partition_offset": plan.partition.partition_offset,
        "partition_bytes": plan.partition.partition_bytes,
    }
    rec["payload"] = {
        "profile": payload.name,
        "manifest_sha256": payload.manifest_sha256,
        "files": len(payload.manifest.files),
        "bytes": payload.total_bytes,
        "verified": False,
    }
    log.info(
        "image.planned", filesystem=plan.fs_type, partition_bytes=plan.partition.partition_bytes
    )
    return ImageSurface(plan, Pattern(key, "image"), payload.manifest.files, granule=sector)


def _payload_outcome(rec: dict[str, Any], image: FillPlan, path: str, log: Any) -> None:
    if not isinstance(image, ImageSurface) or not rec["wipe"]["verified_bytes"]:
        return  # without a verify pass nothing is proven: payload.verified stays false
    bad = [(s, n) for s, n in rec["wipe"]["bad_ranges"]]
    changed, damaged = image.split_damage(bad)
    rec["payload"]["verified"] = not (changed or damaged)
    if changed:
        raise PayloadChangedError(path=changed[0], count=len(changed), stage="verify")
    if damaged:
        raise DefectiveError(
            f"{len(damaged)} payload file(s) read back wrong, e.g. {damaged[0]!r}",
            device=path,
            stage="verify",
        )
    log.info("payload.verified", files=rec["payload"]["files"])


def _surface(
    job: _Job,
    rec: dict[str, Any],
    dev: BlockDevice,
    key: bytes,
    usable: int,
    chunk: int,
    image: FillPlan,
    log: Any,
    *,
    first: int,
) -> tuple[int, list[tuple[int, int]]]:
    """Passes ``first`` .. ``passes-1`` over ``[0, usable)`` (the last writes ``image``),
    then the verify pass."""
    cfg = job.config
    sector = dev.geometry.logical_sector
    passes = cfg.job.passes
    written = 0
    bad: list[tuple[int, int]] = []
    digests = Digests(0, usable, chunk)
    wtimer, rtimer = RegionTimer(0, usable), RegionTimer(0, usable)
    for i in range(first, passes):
        last = i == passes - 1
        name = "image" if last else f"wipe-{i + 1}"
        dev.stage = name
        _status(job, name, 0, usable)
        plan = image if last else FillPlan(Pattern(key, name), granule=sector)
        try:
            res = write_pass(
                dev,
                plan,
                0,
                usable,
                chunk=chunk,
                sector=sector,
                progress=_report(job, name, usable),
                digests=digests if last else None,
                timer=wtimer,
            )
        except DeviceIOError as err:
            offset = int(err.fields.get("offset") or 0)
            if _turned_read_only(dev, offset):
                raise DefectiveError(
                    f"it turned read-only during {name}: writes fail, reads still work (worn-out "
                    "flash does this); it cannot be wiped, so it must not leave the station",
                    device=dev.path,
                    stage=name,
                ) from None
            raise
        written += res.bytes_done
        bad.extend(res.bad_ranges)
        job.stage(name, res.seconds, res.bytes_done)
        log.info("pass.done", stage=name, seconds=round(res.seconds, 2), bad_bytes=res.bad_bytes)
    if cfg.job.verify == "full":
        dev.stage = "verify"
        _status(job, "verify", 0, usable)
        vres: PassResult = verify_pass(
            dev,
            image,
            0,
            usable,
            chunk=chunk,
            sector=sector,
            progress=_report(job, "verify", usable),
            digests=digests,
            timer=rtimer,
        )
        job.stage("verify", vres.seconds, vres.bytes_done)
        rec["wipe"]["verified_bytes"] = vres.bytes_done
        rec["wipe"]["mismatched_bytes"] = vres.bad_bytes
        bad.extend(vres.bad_ranges)
        log.info("verify.done", seconds=round(vres.seconds, 2), mismatched=vres.bad_bytes)
    job.speed = speed_profile(wtimer, rtimer)
    if job.speed.cliff:
        log.warning("speed.cliff", at=job.speed.cliff_at, write_mbps=job.speed.write_mbps)
    return written, merge_ranges(bad)


def _turned_read_only(dev: BlockDevice, offset: int) -> bool:
    """After writes stopped working at ``offset``: whether the drive still reads there and
    refuses to write back the very bytes it read (so nothing changes on it)."""
    sector = dev.geometry.logical_sector
    at = offset - offset % sector
    buf = memoryview(aligned_buffer(max(sector, 4096)))[:sector]
    try:
        dev.pread(buf, at)
    except FdffdError:
        return False
    try:
        dev.pwrite(buf, at)
    except FdffdError:
        return True
    return False


def capacity_from_verify(
    bad: list[tuple[int, int]], aliases: list[tuple[int, int]], usable: int
) -> int | None:
    """The real capacity the verify pass proves, when it is below ``usable``; capacity.py."""
    return capacity.capacity_from_verify(bad, aliases, usable)


def _set_capacity(rec: dict[str, Any], usable: int, kind: str | None, seconds: float) -> None:
    cap = rec["capacity"]
    cap["usable_bytes"] = usable
    cap["counterfeit"] = usable < cap["announced_bytes"]
    cap["kind"] = kind if cap["counterfeit"] else None
    if seconds:
        cap["probe_seconds"] = round(seconds, 3)


def _size_text(n: int) -> str:
    return f"{format_size(n)} ({n} bytes)"


def _verdict(job: _Job, rec: dict[str, Any], bad: list[tuple[int, int]], path: str) -> str:
    cap = rec["capacity"]
    if bad:
        total = sum(n for _, n in bad)
        raise DefectiveError(
            f"{format_size(total)} of bad flash in {len(bad)} range(s) inside the real capacity",
            device=path,
            stage="verify",
        )
    if cap["counterfeit"] and (job.config.job.counterfeit == "reject" or job.no_rescue):
        raise CounterfeitError(
            f"{cap['kind']}; its real capacity was wiped and verified"
            + (f"; {job.no_rescue}" if job.no_rescue else ""),
            device=path,
            announced=_size_text(cap["announced_bytes"]),
            usable=_size_text(cap["usable_bytes"]),
            stage="verify",
        )
    if job.deferred is not None:
        raise job.deferred
    if cap["counterfeit"]:
        return "rescued"
    return "ok"

"""The station: one job per inserted drive, up to ``job.workers`` at once, the rest queued.

- An insertion is keyed by the kernel's DISKSEQ (unique per medium per boot): the change
  events that a job's own writes cause carry the same DISKSEQ and start nothing; a drive
  pulled and plugged in again gets a new one and is a new insertion.  Which insertions have
  been handled is kept in the state dir (with the boot id), so a daemon restart does not
  start over on a finished drive that is still plugged in.
- Each job runs in its own thread and catches everything for itself (a job never
  raises for a drive); a failing or slow drive never holds the others back.
- A job's drive disappearing cancels it (verdict ``failed``, drive removed); a drive that
  stays below ``job.min_speed`` for ``job.slow_window`` seconds is failed as too slow;
  stopping the station cancels running jobs as ``interrupted``.  Every job ends with exactly
  one record, and its journal entry is removed only after the record is in the audit log.
- A record the audit log cannot take (the state dir's disk full, a torn last line) is not
  lost: it is kept in the job's journal entry and in memory (``unrecorded`` in the status), and
  appended, in order, as soon as the log takes it again (``retry_pending``, every few seconds
  from the daemon), or on the next start.
"""

from __future__ import annotations

import fnmatch
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import __version__
from ..audit import AuditLog, ErrorInfo, StationKeys, parse_record, utc_now_iso
from ..config import Config
from ..errors import (
    DriveRemovedError,
    FdffdError,
    InterruptedJobError,
    JobFailedError,
    TooSlowError,
)
from ..job.pipeline import interrupted_record, process_path
from ..log import get_logger
from ..sizes import format_size
from .hotplug import DiskEvent
from .journal import JobJournal
from .status import port_name

SEEN_FILE = "insertions.json"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def is_candidate(ev: DiskEvent, cfg: Config) -> bool:
    """Whether the station should take this disk at all (the job's gate decides the rest).

    Disks on buses the policy does not allow are ignored silently, so the system disk does
    not earn a refusal record at every start; a disk on an allowed bus always gets a job, so
    a refusal (mounted, write-protected, ...) is recorded and shown to the volunteer."""
    if ev.gone:
        return False
    policy = cfg.drives
    if ev.bus == "loop":
        if not policy.allow_loop:
            return False
    elif ev.bus not in policy.buses:
        return False
    return not (policy.ports and not any(fnmatch.fnmatchcase(ev.port, g) for g in policy.ports))


@dataclass
class Port:
    key: str  # ID_PATH, or the device name for drives without one (loop devices)
    device: str = ""
    drive: str = ""
    state: str = "idle"  # active | queued | idle
    stage: str | None = None
    percent: float | None = None
    speed_bps: float | None = None
    eta_seconds: float | None = None
    job_id: str | None = None
    last: dict[str, str] | None = None


@dataclass
class Insertion:
    ev: DiskEvent
    key: str  # the insertion key: "<name>:<diskseq>"
    port: Port


@dataclass
class _Running:
    insertion: Insertion
    thread: threading.Thread
    cancel: FdffdError | None = None
    stage: str = ""
    stage_started: float = field(default_factory=time.monotonic)
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=4096))
    started: float = field(default_factory=time.monotonic)
    job_id: str = ""
    entry: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Pending:
    """A finished job's record that the audit log has not taken yet."""

    job_id: str
    record: dict[str, Any]
    entry: dict[str, Any]
    on_disk: bool


class Station:
    def __init__(self, config: Config, keys: StationKeys) -> None:
        self.cfg = config
        self.keys = keys
        self.log = get_logger(component="station")
        self.lock = threading.RLock()
        self.audit = AuditLog(config.audit_log, keys)
        self.journal = JobJournal(config.station.state_dir)
        self.ports: dict[str, Port] = {}
        self.queue: deque[Insertion] = deque()
        self.running: dict[str, _Running] = {}  # by device name
        self.started_at = utc_now_iso()
        self.boot = boot_id()
        self.seen: set[str] = self._load_seen()
        self.done = 0
        self.by_verdict: dict[str, int] = {}
        self.bytes_written = 0
        self.stopping = False
        self.idle = threading.Condition(self.lock)
        #: records waiting for the audit log, oldest first; guarded by ``record_lock``
        self.pending: list[_Pending] = []
        self.record_lock = threading.Lock()
        self._retry_logged = 0.0

    # -- insertions already handled ------------------------------------------------------

    def _seen_path(self) -> Path:
        return self.cfg.station.state_dir / SEEN_FILE

    def _load_seen(self) -> set[str]:
        try:
            data = json.loads(self._seen_path().read_text())
        except (OSError, ValueError):
            return set()
        if not isinstance(data, dict) or data.get("boot_id") != self.boot:
            return set()  # DISKSEQ restarts with every boot
        return {str(k) for k in data.get("insertions", [])}

    def _save_seen(self) -> None:
        path = self._seen_path()
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"boot_id": self.boot, "insertions": sorted(self.seen)}))
            os.replace(tmp, path)
        except OSError as err:  # the in-memory set still holds; only a restart could repeat
            self.log.error("station.seen_not_saved", path=str(path), error=err.strerror)
            tmp.unlink(missing_ok=True)

    # -- records -------------------------------------------------------------------------

    def _record(self, job_id: str, rec: dict[str, Any], entry: dict[str, Any]) -> bool:
        """Append a finished job's record, or keep it for later; True when it is in the log.

        Records reach the log in the order their jobs ended: while older ones wait, a new
        one waits behind them."""
        rec = self._appendable(job_id, rec, entry)
        with self.record_lock:
            self._flush_pending()
            if not self.pending:
                try:
                    self.audit.append(rec)
                except Exception as err:
                    why = err.message if isinstance(err, FdffdError) else repr(err)
                else:
                    self._journal_end(job_id)
                    return True
            else:
                why = f"{len(self.pending)} older record(s) wait for the audit log"
            on_disk = self.journal.keep(job_id, entry, rec)
            self.pending.append(_Pending(job_id, rec, entry, on_disk))
            self._retry_logged = time.monotonic()
            self.log.error(
                "audit.record_kept",
                job_id=job_id,
                verdict=rec.get("verdict"),
                error=why,
                kept_in="journal" if on_disk else "memory only (the journal refused it too)",
                waiting=len(self.pending),
            )
            return False

    def _appendable(
        self, job_id: str, rec: dict[str, Any], entry: dict[str, Any]
    ) -> dict[str, Any]:
        """The record, or, when it does not validate (a bug), a valid ``failed`` record of the
        job saying so: waiting for the log, an invalid record would hold back all after it."""
        try:
            parse_record(rec)  # a record kept by an older version may be schema 1
        except (ValidationError, ValueError) as err:
            if isinstance(err, ValidationError):
                first = err.errors(include_url=False, include_input=False)[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                why = f"{where}: {first['msg']}"
            else:
                why = str(err)
            self.log.critical("audit.record_invalid", job_id=job_id, error=str(err), record=rec)
            fallback = interrupted_record(self.cfg, {**entry, "job_id": job_id})
            fallback.verdict = "failed"
            fallback.error = ErrorInfo(
                code="internal",
                message=f"the job's record did not validate ({why}); "
                "the daemon's log has it in full",
            )
            return fallback.to_json_dict()
        return rec

    def retry_pending(self) -> int:
        """Append the records that wait, in order, as far as the log takes them; how many wait.
        Also makes the journal's spare slots again, once there is room."""
        with self.record_lock:
            waiting = self._flush_pending()
            self.journal.replenish()
            return waiting

    def _flush_pending(self) -> int:
        while self.pending:
            p = self.pending[0]
            try:
                self.audit.append(p.record)
            except Exception as err:
                if time.monotonic() - self._retry_logged >= 60:
                    self._retry_logged = time.monotonic()
                    self.log.error(
                        "audit.records_waiting",
                        waiting=len(self.pending),
                        error=err.message if isinstance(err, FdffdError) else repr(err),
                    )
                if not p.on_disk:
                    p.on_disk = self.journal.keep(p.job_id, p.entry, p.record)
                break
            self.pending.pop(0)
            self._journal_end(p.job_id)
            self.log.info("audit.record_appended_late", job_id=p.job_id, waiting=len(self.pending))
        return len(self.pending)

    def _journal_end(self, job_id: str) -> None:
        try:
            self.journal.end(job_id)
        except OSError as err:  # the record is in the log; a stale entry would be recovered
            self.log.error("journal.end_failed", job_id=job_id, error=err.strerror)

    # -- recovery ------------------------------------------------------------------------

    def recover(self) -> int:
        """Record every job left in the journal: its kept record when it had finished (the
        audit log could not take it then), else an interrupted one (the daemon died mid-job).
        Never raises for the log: what it cannot take yet waits (``retry_pending``)."""
        count = 0
        for entry in self.journal.leftovers():
            job_id = str(entry["job_id"])
            kept = entry.get("record")
            if isinstance(kept, dict) and kept.get("job_id") == job_id:
                finished, rec = True, dict(kept)
            else:
                finished, rec = False, interrupted_record(self.cfg, entry).to_json_dict()
            entry = {k: v for k, v in entry.items() if k not in ("record", "job_id")}
            self._record(job_id, rec, entry)
            if entry.get("insertion") and entry.get("boot_id") == self.boot:
                self.seen.add(str(entry["insertion"]))
            port = self._port(str(entry.get("port") or ""), str(entry.get("device") or ""))
            port.last = _last(rec)
            self._count(rec)
            self.log.warning(
                "job.finished_before_restart" if finished else "job.interrupted",
                job_id=job_id,
                device=entry.get("device"),
                verdict=rec["verdict"],
                found="on restart",
            )
            count += 1
        if count:
            self._save_seen()
        return count

    # -- events --------------------------------------------------------------------------

    def _port(self, port: str, device: str) -> Port:
        # a loop device's port is its backing file; show it by device name instead
        key = os.path.basename(device) if port.startswith("loop:") else port
        key = key or os.path.basename(device) or "?"
        if key not in self.ports:
            self.ports[key] = Port(key=key)
        return self.ports[key]

    def on_event(self, ev: DiskEvent) -> None:
        with self.lock:
            if ev.gone:
                self._gone(ev)
                return
            if ev.name in self.running or any(i.ev.name == ev.name for i in self.queue):
                return  # our own writes' events, or a burst of events for one insertion
            if not is_candidate(ev, self.cfg):
                return
            key = f"{ev.name}:{ev.diskseq}"
            if key in self.seen:
                return
            self.seen.add(key)
            self._save_seen()
            port = self._port(ev.port, ev.device)
            port.device = ev.device
            port.drive = " ".join(x for x in (ev.vendor, ev.model, format_size(ev.size_bytes)) if x)
            port.state = "queued"
            port.last = None
            self.queue.append(Insertion(ev, key, port))
            self.log.info("drive.queued", device=ev.device, port=ev.port, diskseq=ev.diskseq)
            self._start_jobs()

    def _gone(self, ev: DiskEvent) -> None:
        # without DISKSEQ (kernels before 5.15) an insertion is known only by its name:
        # forget it when the medium goes, so the next one is new
        if f"{ev.name}:None" in self.seen:
            self.seen.discard(f"{ev.name}:None")
            self._save_seen()
        run = self.running.get(ev.name)
        if run is not None and run.cancel is None:
            run.cancel = DriveRemovedError(device=ev.device, stage=run.stage or "admit")
            self.log.warning("drive.removed", device=ev.device, job_id=run.job_id)
        for ins in list(self.queue):
            if ins.ev.name == ev.name:
                self.queue.remove(ins)
                ins.port.state = "idle"
                self.log.info("drive.removed_while_queued", device=ev.device)
        for port in self.ports.values():
            if port.device == ev.device and port.state == "idle":
                port.device = ""
                port.drive = ""

    def _start_jobs(self) -> None:
        while self.queue and len(self.running) < self.cfg.job.workers and not self.stopping:
            ins = self.queue.popleft()
            run = _Running(
                ins,
                threading.Thread(
                    target=self._job, args=(ins,), daemon=True, name=f"fdffd-job-{ins.ev.name}"
                ),
            )
            self.running[ins.ev.name] = run
            ins.port.state = "active"
            ins.port.stage = "admit"
            ins.port.percent = 0.0
            run.thread.start()

    # -- one job -------------------------------------------------------------------------

    def _job(self, ins: Insertion) -> None:
        run = self.running[ins.ev.name]
        outcome = None
        rec: dict[str, Any] | None = None
        try:
            outcome = process_path(
                self.cfg,
                ins.ev.device,
                serial_hmac=self.keys.serial_hmac,
                status=lambda stage, done, total: self._progress(run, stage, done, total),
                on_start=lambda job_id: self._begin(run, job_id),
            )
            rec = outcome.record.to_json_dict()
            self._record(outcome.record.job_id, rec, run.entry)
        finally:
            with self.lock:
                del self.running[ins.ev.name]
                port = ins.port
                port.state = "idle"
                port.stage = port.percent = port.speed_bps = port.eta_seconds = None
                port.job_id = None
                if rec is not None:
                    port.last = _last(rec)
                    self._count(rec)
                self._start_jobs()
                self.idle.notify_all()
        if (
            outcome is not None
            and self.cfg.job.power_off
            and outcome.record.verdict in ("ok", "rescued")
        ):
            self._power_off(ins.ev.device)

    def _begin(self, run: _Running, job_id: str) -> None:
        run.job_id = job_id
        run.insertion.port.job_id = job_id
        ev = run.insertion.ev
        run.entry = {
            "device": ev.device,
            "port": ev.port,
            "diskseq": ev.diskseq,
            "insertion": run.insertion.key,
            "boot_id": self.boot,
            "started_at": utc_now_iso(),
            "profile": self.cfg.job.profile,
        }
        try:
            self.journal.begin(job_id, run.entry)
        except OSError as err:  # without a journal entry a crash could lose the job's record
            raise JobFailedError(
                f"cannot write the job journal in {self.journal.dir} ({err.strerror}); "
                "the drive was not touched: free space in the state dir and plug it in again",
                device=ev.device,
                stage="admit",
            ) from None

    def _progress(self, run: _Running, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if run.cancel is not None:
            raise run.cancel
        if stage != run.stage:
            run.stage, run.stage_started = stage, now
            run.samples.clear()
        run.samples.append((now, done))
        port = run.insertion.port
        port.stage = stage
        port.percent = round(100.0 * done / total, 1) if total else None
        window = self.cfg.job.slow_window
        first_t, first_done = run.samples[0]
        while len(run.samples) > 2 and now - run.samples[1][0] >= window:
            run.samples.popleft()
            first_t, first_done = run.samples[0]
        span = now - first_t
        speed = (done - first_done) / span if span >= min(0.5, window / 2) else None
        port.speed_bps = speed
        if speed and total:
            port.eta_seconds = round((total - done) / speed, 1)
        if (
            self.cfg.job.min_speed
            and speed is not None
            and now - run.stage_started >= window
            and span >= window * 0.9
            and speed < self.cfg.job.min_speed
        ):
            raise TooSlowError(
                device=run.insertion.ev.device,
                stage=stage,
                speed=f"{format_size(int(speed))}/s",
                minimum=f"{format_size(self.cfg.job.min_speed)}/s",
            )

    def _power_off(self, device: str) -> None:
        try:
            from ..devices.power import POWERED_OFF, power_off

            result = power_off(device)
            event = (
                "drive.power_off" if result.startswith(POWERED_OFF) else "drive.power_off_skipped"
            )
            self.log.info(event, device=device, result=result)
        except Exception as err:  # powering off is a courtesy; the job is already recorded
            self.log.warning("drive.power_off_failed", device=device, error=str(err))

    def _count(self, rec: dict[str, Any]) -> None:
        self.done += 1
        self.by_verdict[rec["verdict"]] = self.by_verdict.get(rec["verdict"], 0) + 1
        self.bytes_written += int(rec.get("wipe", {}).get("bytes_written", 0) or 0)

    # -- stopping ------------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel running jobs (recorded ``interrupted``), drop the queue, wait for the jobs."""
        with self.lock:
            self.stopping = True
            self.queue.clear()
            for run in self.running.values():
                if run.cancel is None:
                    run.cancel = InterruptedJobError(
                        "the station is stopping",
                        device=run.insertion.ev.device,
                        stage=run.stage or "admit",
                    )
            deadline = time.monotonic() + timeout
            while self.running and time.monotonic() < deadline:
                self.idle.wait(timeout=0.5)
        if self.retry_pending():
            lost = [p.job_id for p in self.pending if not p.on_disk]
            self.log.error(
                "audit.records_waiting_at_stop",
                waiting=len(self.pending),
                kept_in_journal=len(self.pending) - len(lost),
                lost=lost,
            )

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs or waits (for tests and the demo)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while (self.running or self.queue) and time.monotonic() < deadline:
                self.idle.wait(timeout=0.2)
            return not (self.running or self.queue)

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self.lock:
            ports = []
            for p in self.ports.values():
                ports.append(
                    {
                        "port": p.key,
                        "name": port_name(p.key, p.device),
                        "device": p.device,
                        "drive": p.drive,
                        "state": p.state,
                        "stage": p.stage,
                        "percent": p.percent,
                        "speed_bps": p.speed_bps,
                        "eta_seconds": p.eta_seconds,
                        "job_id": p.job_id,
                        "last": p.last,
                    }
                )
            return {
                "station": self.cfg.station.id,
                "version": __version__,
                "now": utc_now_iso(),
                "started_at": self.started_at,
                "totals": {
                    "active": len(self.running),
                    "queued": len(self.queue),
                    "done": self.done,
                    "by_verdict": dict(self.by_verdict),
                    "bytes_written": self.bytes_written,
                    "unrecorded": len(self.pending),
                },
                "ports": ports,
            }


def _last(rec: dict[str, Any]) -> dict[str, str]:
    """The port's last job, for the view: the error's code and the gate's rule say what
    happened (no guessing from the message's words)."""
    err = rec.get("error") or {}
    return {
        "verdict": rec["verdict"],
        "message": str(err.get("message", "")),
        "code": str(err.get("code") or ""),
        "rule": str(err.get("rule") or ""),
        "finished_at": str(rec.get("finished_at") or ""),
        "job_id": rec["job_id"],
    }

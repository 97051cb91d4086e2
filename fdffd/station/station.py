"""The station's scheduler: one job per inserted drive, up to ``job.workers`` at once, the rest
queued.

The station is four small rooms; this module is the one that ties them together:

- the insertion ledger (``ledger.py``): which insertions were taken, durably, before anything
  is done with them;
- the record sink (``records.py``): every record into the audit log, or kept until it can be;
- the rate meter (``rate.py``): a job's speed, its stage's remaining time, too slow or not;
- the scheduler (here): the ports, the queue, the worker threads.

- Each job runs in its own thread and catches everything for itself (``run_job`` never raises
  for a drive); a failing or slow drive never holds the others back.
- A job's drive disappearing cancels it (verdict ``failed``, drive removed); a drive that stays
  below ``job.min_speed`` for ``job.slow_window`` seconds is failed as too slow; stopping the
  station cancels running jobs as ``interrupted``.  Every job ends with exactly one record.
- Every insertion ends in a record or in a job: a queued drive pulled before its job began is
  recorded ``failed`` (``drive-removed``, stage ``queued``, not wiped).  Drives still queued
  when the daemon stops (SIGTERM, kill -9, a power cut) stay in the job journal: on the next
  start each is shown queued again, processed when the hotplug watch finds it with the same
  DISKSEQ, and recorded as not wiped when it is gone.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .. import __version__
from ..audit import AuditLog, StationKeys, utc_now_iso
from ..config import Config
from ..devices.hotplug import DiskEvent
from ..errors import (
    DriveRemovedError,
    FdffdError,
    InterruptedJobError,
    JobFailedError,
    TooSlowError,
)
from ..job.pipeline import interrupted_record, process_path, unstarted_record
from ..log import get_logger
from ..sizes import format_size
from .journal import Entry, JobJournal
from .learn import learning
from .ledger import InsertionLedger, boot_id, insertion_key
from .ports import ordered_ports, port_key
from .rate import RateMeter
from .records import RecordSink
from .status import LastJob, PortStatus, StationStatus, Totals

#: error codes and messages of insertions whose job never began (stage ``queued``)
PULLED = (
    "drive-removed",
    "pulled while it waited for a worker, before its job began: nothing was written to it; "
    "plug it in again",
)
GONE_AT_RESTART = (
    "drive-removed",
    "it waited for a worker when the station stopped, and was gone (or plugged in again) when "
    "the station started again: nothing was written to it; plug it in again",
)
AFTER_REBOOT = (
    "not-started",
    "it waited for a worker when the station stopped, and the machine restarted since: "
    "nothing was written to it; if it is still plugged in, it is taken as a new drive",
)


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


def describe(ev: DiskEvent) -> str:
    """The drive as a volunteer reads it: vendor, model, size."""
    return " ".join(x for x in (ev.vendor, ev.model, format_size(ev.size_bytes)) if x)


@dataclass
class Insertion:
    name: str  # the kernel's name, sdb
    device: str
    key: str  # the insertion key, "<name>:<diskseq>"
    entry: Entry  # its queued entry in the journal
    port: PortStatus


@dataclass
class _Running:
    insertion: Insertion
    meter: RateMeter
    cancel: FdffdError | None = None
    stage: str = ""
    job_id: str = ""
    entry: Entry = field(default_factory=dict)
    #: the job is in the journal (the port shows it active)
    begun: bool = False
    #: the station stopped before the job began: the drive stays queued in the journal
    left_queued: bool = False


class Station:
    def __init__(self, config: Config, keys: StationKeys) -> None:
        self.cfg = config
        self.keys = keys
        self.log = get_logger(component="station")
        self.lock = threading.RLock()
        self.idle = threading.Condition(self.lock)
        self.boot = boot_id()
        self.journal = JobJournal(config.station.state_dir)
        self.ledger = InsertionLedger(config.station.state_dir, self.journal, self.boot)
        self.sink = RecordSink(
            config, AuditLog(config.audit_log, keys), self.journal, settled=self.ledger.unqueue
        )
        self.ports: dict[str, PortStatus] = {}
        self.queue: deque[Insertion] = deque()
        #: insertions queued before a restart, by key, until the hotplug watch finds them
        self.awaiting: dict[str, Insertion] = {}
        self.running: dict[str, _Running] = {}  # by device name
        #: the records of insertions that ended before a restart, by key, until seen again
        self.before_restart: dict[str, dict[str, Any]] = {}
        self.totals = Totals()
        self.started_at = utc_now_iso()
        self.stopping = False

    # -- recovery ------------------------------------------------------------------------

    def recover(self) -> int:
        """Account for everything the journal holds from the last run; how many it held.

        A job's entry gets its kept record when it had finished (the audit log could not take
        it then), else an ``interrupted`` one (the daemon died mid-job).  A queued insertion
        waits for the hotplug watch to find its drive (:meth:`on_enumerated`).  Never raises
        for the log: what it cannot take yet waits in the record sink."""
        begun: set[str] = set()
        count = 0
        leftovers = self.journal.leftovers()
        logged = self.sink.in_log({str(e["job_id"]) for e in leftovers if "record" not in e})
        for entry in leftovers:
            self._recover_job(entry, begun, logged.get(entry["job_id"]))
            count += 1
        for entry in self.ledger.queued():
            if entry["insertion"] in begun:  # its job's entry was written: that one counts
                self.ledger.unqueue(entry)
                continue
            self._recover_queued(entry)
            count += 1
        ended = {k: j for k, j in self.ledger.records.items() if k not in self.before_restart}
        found = self.sink.in_log(set(ended.values()))
        for key, job_id in ended.items():
            if job_id in found:
                self.before_restart[key] = found[job_id]
        return count

    def _recover_job(self, entry: Entry, begun: set[str], logged: dict[str, Any] | None) -> None:
        """A job's entry left behind: its record is in the log already (the daemon died
        between the append and the entry's end), kept in the entry, or ``interrupted``."""
        job_id = str(entry.pop("job_id"))
        kept = entry.pop("record", None)
        finished = logged is not None or (isinstance(kept, dict) and kept.get("job_id") == job_id)
        if logged is not None:
            rec = logged
            self.sink.settle(job_id, entry)
        else:
            if isinstance(kept, dict) and finished:
                rec = dict(kept)
            else:
                rec = interrupted_record(self.cfg, {**entry, "job_id": job_id}).to_json_dict()
            self.sink.add(rec, entry)
        insertion = entry.get("insertion")
        if isinstance(insertion, str):
            begun.add(insertion)
            if self.ledger.same_boot(entry):
                self.ledger.mark_seen(insertion)
                self.ledger.finished(insertion, job_id)
                self.before_restart[insertion] = rec
        port = self._port(str(entry.get("port") or ""), str(entry.get("device") or ""))
        with self.lock:
            self._finished(port, rec)
        self.log.warning(
            "job.finished_before_restart" if finished else "job.interrupted",
            job_id=job_id,
            device=entry.get("device"),
            verdict=rec["verdict"],
            found="on restart",
        )

    def _recover_queued(self, entry: Entry) -> None:
        device = str(entry.get("device") or "")
        port = self._port(str(entry.get("port") or ""), device)
        ins = Insertion(os.path.basename(device), device, entry["insertion"], entry, port)
        if not self.ledger.same_boot(entry):
            self._not_started(ins, AFTER_REBOOT)
            return
        self.ledger.mark_seen(ins.key)
        with self.lock:
            self.awaiting[ins.key] = ins
            port.device, port.drive, port.state = device, str(entry.get("drive") or ""), "queued"
        self.log.info("drive.queued_before_restart", device=device, insertion=ins.key)

    # -- events --------------------------------------------------------------------------

    def _port(self, port: str, device: str) -> PortStatus:
        key, empty = port_key(self.cfg, port, device)
        with self.lock:
            if key not in self.ports:
                self.ports[key] = empty
            return self.ports[key]

    def on_event(self, ev: DiskEvent) -> None:
        if ev.gone:
            for ins in self._gone(ev):
                self._not_started(ins, PULLED)
            return
        with self.lock:
            if ev.name in self.running or any(i.name == ev.name for i in self.queue):
                return  # our own writes' events, or a burst of events for one insertion
            if not is_candidate(ev, self.cfg):
                return
            if learning(self.cfg):  # `fdffctl ports learn` runs: its sticks get no job
                self.log.info("drive.ignored_ports_learn", device=ev.device, port=ev.port)
                return
            key = insertion_key(ev)
            taken = self.awaiting.pop(key, None)  # queued before a restart, and still here
            if taken is None:
                if self.ledger.is_seen(key):
                    self._show_again(key, ev)
                    return
                entry = self.ledger.take(ev, describe(ev))  # durable before it is seen
                taken = Insertion(ev.name, ev.device, key, entry, self._port(ev.port, ev.device))
            port = taken.port
            port.device, port.drive, port.state, port.last = ev.device, describe(ev), "queued", None
            self.queue.append(taken)
            self.log.info("drive.queued", device=ev.device, port=ev.port, diskseq=ev.diskseq)
            self._start_jobs()

    def _show_again(self, key: str, ev: DiskEvent) -> None:
        """A drive whose job ended before a restart, still plugged in: its port shows its
        record again (under the lock)."""
        rec = self.before_restart.pop(key, None)
        port = self._port(ev.port, ev.device) if rec is not None else None
        if rec is not None and port is not None and port.state == "idle":
            port.device, port.drive, port.last = ev.device, describe(ev), LastJob.of_record(rec)

    def on_enumerated(self) -> None:
        """The hotplug watch has seen every disk present: an insertion queued before a restart
        that it did not find is gone, and recorded as not wiped."""
        with self.lock:
            gone = list(self.awaiting.values())
            self.awaiting.clear()
        for ins in gone:
            self._not_started(ins, GONE_AT_RESTART)

    def _gone(self, ev: DiskEvent) -> list[Insertion]:
        """Cancel the job of a drive that went away; the queued insertions it takes along."""
        with self.lock:
            self.ledger.forget_unnumbered(ev.name)
            run = self.running.get(ev.name)
            if run is not None and run.cancel is None:
                run.cancel = DriveRemovedError(device=ev.device, stage=run.stage or "admit")
                self.log.warning("drive.removed", device=ev.device, job_id=run.job_id)
            pulled = [ins for ins in self.queue if ins.name == ev.name]
            for ins in pulled:
                self.queue.remove(ins)
                self.log.warning("drive.removed_while_queued", device=ev.device)
            for port in self.ports.values():
                if port.device == ev.device and port.state == "idle":
                    port.device = port.drive = ""
            return pulled

    def _not_started(self, ins: Insertion, why: tuple[str, str]) -> None:
        """Record an insertion whose job never began (stage ``queued``, nothing written)."""
        rec = unstarted_record(self.cfg, ins.entry, *why).to_json_dict()
        self.sink.add(rec, ins.entry)
        with self.lock:
            ins.port.state, ins.port.device = "idle", ""
            self._finished(ins.port, rec)
            self.idle.notify_all()
        self.log.warning(
            "drive.not_started", device=ins.device, code=why[0], job_id=rec["job_id"]
        )

    # -- jobs ----------------------------------------------------------------------------

    def _start_jobs(self) -> None:
        while self.queue and len(self.running) < self.cfg.job.workers and not self.stopping:
            ins = self.queue.popleft()
            run = _Running(ins, RateMeter(self.cfg.job.slow_window, self.cfg.job.min_speed))
            self.running[ins.name] = run
            threading.Thread(
                target=self._job, args=(run,), daemon=True, name=f"fdffd-job-{ins.name}"
            ).start()

    def _job(self, run: _Running) -> None:
        ins = run.insertion
        rec: dict[str, Any] | None = None
        try:
            outcome = process_path(
                self.cfg,
                ins.device,
                sealer=self.keys.sealer,
                status=partial(self._progress, run),
                on_start=partial(self._begin, run),
            )
            rec = outcome.record.to_json_dict()
            if run.left_queued:  # nothing was touched; the journal keeps it queued
                self.log.info("drive.left_queued", device=ins.device, insertion=ins.key)
            else:
                self.sink.add(outcome.logged.to_json_dict(), run.entry)
        finally:
            with self.lock:
                del self.running[ins.name]
                port = ins.port
                port.stage = port.percent = port.speed_bps = port.eta_seconds = None
                port.job_id = None
                if run.left_queued:
                    self.queue.appendleft(ins)
                else:
                    port.state = "idle"
                    if rec is not None:
                        self._finished(port, rec)
                        self.ledger.finished(ins.key, str(rec["job_id"]))
                self._start_jobs()
                self.idle.notify_all()
        if (
            rec is not None
            and not run.left_queued
            and self.cfg.job.power_off
            and rec["verdict"] in ("ok", "rescued")
        ):
            _power_off(self.log, ins.device)

    def _begin(self, run: _Running, job_id: str) -> None:
        """Journal the job before it touches the drive (``run_job``'s ``on_start``)."""
        ins = run.insertion
        with self.lock:
            if self.stopping:
                run.left_queued = True
                raise InterruptedJobError(
                    "the station is stopping; the drive was not touched and stays queued",
                    device=ins.device,
                    stage="admit",
                )
        run.job_id = job_id
        run.entry = {**ins.entry, "started_at": utc_now_iso(), "profile": self.cfg.job.profile}
        try:
            self.ledger.begin(job_id, run.entry)
        except OSError as err:  # without a journal entry a crash could lose the job's record
            raise JobFailedError(
                f"cannot write the job journal in {self.journal.dir} ({err.strerror}); "
                "the drive was not touched: free space in the state dir and plug it in again",
                device=ins.device,
                stage="admit",
            ) from None
        with self.lock:
            run.begun = True
            port = ins.port
            port.state, port.stage, port.percent, port.job_id = "active", "admit", 0.0, job_id

    def _progress(self, run: _Running, stage: str, done: int, total: int) -> None:
        """A job's progress (``run_job``'s ``status``); raises to cancel it."""
        if run.cancel is not None:
            raise run.cancel
        run.stage = stage
        rate = run.meter.sample(stage, done, total, time.monotonic())
        with self.lock:
            port = run.insertion.port
            port.stage, port.percent = stage, rate.percent
            port.speed_bps, port.eta_seconds = rate.speed_bps, rate.eta_seconds
        if rate.too_slow and rate.speed_bps is not None:
            raise TooSlowError(
                device=run.insertion.device,
                stage=stage,
                speed=f"{format_size(int(rate.speed_bps))}/s",
                minimum=f"{format_size(self.cfg.job.min_speed)}/s",
            )

    def _finished(self, port: PortStatus, rec: dict[str, Any]) -> None:
        """Show a record on its port and count it (under the lock)."""
        port.last = LastJob.of_record(rec)
        t = self.totals
        t.done += 1
        t.by_verdict[rec["verdict"]] = t.by_verdict.get(rec["verdict"], 0) + 1
        t.bytes_written += int(rec.get("wipe", {}).get("bytes_written", 0) or 0)

    # -- stopping ------------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel running jobs (recorded ``interrupted``) and wait for them; queued drives stay
        in the journal, for the next start."""
        with self.lock:
            self.stopping = True
            for run in self.running.values():
                if run.cancel is None:
                    run.cancel = InterruptedJobError(
                        "the station is stopping",
                        device=run.insertion.device,
                        stage=run.stage or "admit",
                    )
            deadline = time.monotonic() + timeout
            while self.running and time.monotonic() < deadline:
                self.idle.wait(timeout=0.5)
            left = [ins.device for ins in (*self.queue, *self.awaiting.values())]
        if left:
            self.log.warning(
                "station.queue_kept",
                drives=left,
                kept_in="the job journal: processed at the next start if still plugged in, "
                "else recorded as not wiped",
            )
        if self.sink.retry():
            lost = self.sink.only_in_memory()
            self.log.error(
                "audit.records_waiting_at_stop",
                waiting=self.sink.waiting,
                kept_in_journal=self.sink.waiting - len(lost),
                lost=lost,
            )

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs or waits (for tests and the demo)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self._busy() and time.monotonic() < deadline:
                self.idle.wait(timeout=0.2)
            return not self._busy()

    def _busy(self) -> bool:
        return bool(self.running or self.queue or self.awaiting)

    # -- status --------------------------------------------------------------------------

    def status(self) -> StationStatus:
        with self.lock:
            begun = sum(run.begun for run in self.running.values())
            starting = len(self.running) - begun
            totals = self.totals.model_copy(
                deep=True,
                update={
                    "active": begun,
                    "queued": len(self.queue) + len(self.awaiting) + starting,
                    "unrecorded": self.sink.waiting,
                },
            )
            ports = ordered_ports(self.cfg, self.ports)
        return StationStatus(
            station=self.cfg.station.id,
            version=__version__,
            now=utc_now_iso(),
            started_at=self.started_at,
            totals=totals,
            ports=ports,
        )


def _power_off(log: Any, device: str) -> None:
    try:
        from ..devices.power import POWERED_OFF, power_off

        result = power_off(device)
        event = "drive.power_off" if result.startswith(POWERED_OFF) else "drive.power_off_skipped"
        log.info(event, device=device, result=result)
    except Exception as err:  # powering off is a courtesy; the job is already recorded
        log.warning("drive.power_off_failed", device=device, error=str(err))

"""The insertion ledger: which insertions the station took, and how far each got, kept durably.

An insertion is keyed by the kernel's DISKSEQ (unique per medium per boot), ``<name>:<diskseq>``:
the change events that a job's own writes cause carry the same DISKSEQ and start nothing; a
drive pulled and plugged in again gets a new one and is a new insertion.

An insertion goes *seen and queued* -> *running* -> *done*, and every step is on disk before
the station acts on it, so that a crash (kill -9, a power cut) or a stop loses none:

1. :meth:`take`: its queued entry is written to the job journal (fsynced) *before* its key is
   added to the seen-set and the seen-set saved (``insertions.json``, with the boot id, by the
   one durable write).  A crash between the two leaves a queued entry that is not seen: the
   restart takes it from the journal.
2. :meth:`begin`: the job's entry is written (fsynced) before the job touches the drive, then
   the queued entry goes.  A crash between the two leaves both; the job's entry wins.
3. done: the record sink removes the job's entry once its record is in the audit log.

The seen-set also keeps, for each insertion whose job ended, the job id of its record
(:meth:`finished`): after a restart, a drive still plugged in with the same DISKSEQ is shown
with its last verdict, read from that record in the audit log.

On start, :meth:`queued` hands back the queued entries left behind (drives that waited for a
worker when the daemon stopped); the station processes those whose drive is still there with
the same DISKSEQ and records the others as not wiped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..audit import utc_now_iso
from ..devices.hotplug import DiskEvent
from ..fsutil import atomic_write
from ..log import get_logger
from .journal import Entry, JobJournal

SEEN_FILE = "insertions.json"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def insertion_key(ev: DiskEvent) -> str:
    return f"{ev.name}:{ev.diskseq}"


class InsertionLedger:
    """Not thread-safe by itself: the station calls it under its lock (``begin`` only touches
    the journal, and is called from the job's thread)."""

    def __init__(self, state_dir: Path, journal: JobJournal, boot: str) -> None:
        self.path = state_dir / SEEN_FILE
        self.journal = journal
        self.boot = boot
        self.log = get_logger(component="ledger")
        for stale in state_dir.glob(f".{SEEN_FILE}.*.tmp"):  # a save the daemon died in
            stale.unlink(missing_ok=True)
        #: the job id of the record each seen insertion ended with, by insertion key
        self.records: dict[str, str] = {}
        self.seen: set[str] = self._load()

    def _load(self) -> set[str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return set()
        if not isinstance(data, dict) or data.get("boot_id") != self.boot:
            return set()  # DISKSEQ restarts with every boot
        seen = {str(k) for k in data.get("insertions", [])}
        records = data.get("records")
        if isinstance(records, dict):
            self.records = {
                str(k): v for k, v in records.items() if k in seen and isinstance(v, str)
            }
        return seen

    def _save(self) -> None:
        data = json.dumps(
            {"boot_id": self.boot, "insertions": sorted(self.seen), "records": self.records},
            sort_keys=True,
        ).encode()
        try:
            atomic_write(self.path, data)
        except OSError as err:  # the in-memory set still holds; the queued entry is on disk
            self.log.error("station.seen_not_saved", path=str(self.path), error=err.strerror)

    def is_seen(self, key: str) -> bool:
        return key in self.seen

    def take(self, ev: DiskEvent, drive: str) -> Entry:
        """Journal a new insertion as queued, then mark it seen; its queued entry.

        When the journal cannot be written (the state disk full) the insertion is still taken
        in memory: its job then fails untouched for the same reason, and is recorded."""
        key = insertion_key(ev)
        entry: Entry = {
            "device": ev.device,
            "port": ev.port,
            "diskseq": ev.diskseq,
            "insertion": key,
            "boot_id": self.boot,
            "queued_at": utc_now_iso(),
            "drive": drive,
        }
        try:
            self.journal.queue(key, entry)
        except OSError as err:
            self.log.error("journal.queue_failed", insertion=key, error=err.strerror)
        self.mark_seen(key)
        return entry

    def mark_seen(self, *keys: str) -> None:
        new = set(keys) - self.seen
        if new:
            self.seen |= new
            self._save()

    def finished(self, key: str, job_id: str) -> None:
        """The insertion's job ended with the record ``job_id`` (shown again after a restart)."""
        if key in self.seen and self.records.get(key) != job_id:
            self.records[key] = job_id
            self._save()

    def forget_unnumbered(self, name: str) -> None:
        """Without DISKSEQ (kernels before 5.15) an insertion is known only by its name:
        forget it when the medium goes, so that the next one is new."""
        key = f"{name}:None"
        if key in self.seen:
            self.seen.discard(key)
            self.records.pop(key, None)
            self._save()

    def begin(self, job_id: str, entry: Entry) -> None:
        """Journal the job (raises OSError when it cannot), then drop its queued entry."""
        self.journal.begin(job_id, entry)
        self.unqueue(entry)

    def unqueue(self, entry: Entry) -> None:
        insertion = entry.get("insertion")
        if not isinstance(insertion, str):
            return
        try:
            self.journal.unqueue(insertion)
        except OSError as err:  # a stale queued entry beside the job's entry is dropped later
            self.log.error("journal.unqueue_failed", insertion=insertion, error=err.strerror)

    def queued(self) -> list[Entry]:
        """The queued entries left behind by the last run (see the module docstring)."""
        return self.journal.queued()

    def same_boot(self, entry: dict[str, Any]) -> bool:
        return entry.get("boot_id") == self.boot

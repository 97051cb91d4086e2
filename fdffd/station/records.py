"""The record sink: every finished job's record goes through here into the audit log.

:meth:`RecordSink.add` takes one record and the job's journal entry.  The record is appended to
the audit log; then the job's journal entry (and its insertion's queued entry) is removed.  A
record the audit log cannot take (the state dir's disk full, a torn last line) is not lost: it
is kept in the job's journal entry and in memory (``waiting``, the status's ``unrecorded``), and
appended, in order, as soon as the log takes it again (:meth:`retry`, every few seconds from
the daemon), or on the next start.  Records reach the log in the order their jobs ended: while
older ones wait, a new one waits behind them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..audit import AuditLog, ErrorInfo, parse_record
from ..config import Config
from ..errors import FdffdError
from ..job.pipeline import interrupted_record
from ..log import get_logger
from .journal import Entry, JobJournal

Record = dict[str, Any]

#: how far back from its end :meth:`RecordSink.in_log` reads the audit log
TAIL_BYTES = 4 << 20


@dataclass
class _Waiting:
    """A finished job's record that the audit log has not taken yet."""

    job_id: str
    record: Record
    entry: Entry
    on_disk: bool


class RecordSink:
    def __init__(
        self,
        config: Config,
        audit: AuditLog,
        journal: JobJournal,
        settled: Callable[[Entry], None] = lambda entry: None,
    ) -> None:
        """``settled(entry)`` is called once a job's record is safe on disk (in the log, or
        kept in the journal): the insertion ledger drops the insertion's queued entry then."""
        self.cfg = config
        self.audit = audit
        self.journal = journal
        self.settled = settled
        self.log = get_logger(component="records")
        self._lock = threading.Lock()
        #: records waiting for the audit log, oldest first
        self._waiting: list[_Waiting] = []
        self._complained = 0.0

    @property
    def waiting(self) -> int:
        """How many records wait for the audit log."""
        return len(self._waiting)

    def add(self, record: Record, entry: Entry) -> bool:
        """Append a finished job's record, or keep it for later.

        True when the record is safe on disk: in the log, or kept in the journal (False: it
        waits in memory only, because the journal refused it too)."""
        record = self._appendable(record, entry)
        job_id = str(record["job_id"])
        with self._lock:
            self._flush()
            if not self._waiting:
                try:
                    self.audit.append(record)
                except Exception as err:
                    why = err.message if isinstance(err, FdffdError) else repr(err)
                else:
                    self._done(job_id, entry)
                    return True
            else:
                why = f"{len(self._waiting)} older record(s) wait for the audit log"
            kept = self._keep(job_id, entry, record)
            self._waiting.append(kept)
            self._complained = time.monotonic()
            self.log.error(
                "audit.record_kept",
                job_id=job_id,
                verdict=record.get("verdict"),
                error=why,
                kept_in="journal" if kept.on_disk else "memory only (the journal refused it too)",
                waiting=len(self._waiting),
            )
            return kept.on_disk

    def retry(self) -> int:
        """Append the records that wait, in order, as far as the log takes them; how many wait.
        Also makes the journal's spare slots again, once there is room."""
        with self._lock:
            waiting = self._flush()
            self.journal.replenish()
            return waiting

    def in_log(self, job_ids: set[str]) -> dict[str, Record]:
        """The records of ``job_ids`` among the last lines of the audit log, by job id: a job
        whose daemon died between appending its record and ending its journal entry must
        not be recorded twice.  (Its record is at the end: the daemon appends in order and
        ends the entry at once.)"""
        if not job_ids:
            return {}
        try:
            with open(self.audit.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - TAIL_BYTES))
                tail = f.read()
        except OSError:
            return {}
        found = {}
        for line in tail.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the first, cut line of the tail, or a torn last one
            if isinstance(record, dict) and record.get("job_id") in job_ids:
                found[str(record["job_id"])] = record
        return found

    def only_in_memory(self) -> list[str]:
        """The job ids of waiting records that the journal refused too (a stop loses them)."""
        with self._lock:
            return [w.job_id for w in self._waiting if not w.on_disk]

    # -- inside the lock -------------------------------------------------------------------

    def _keep(self, job_id: str, entry: Entry, record: Record) -> _Waiting:
        on_disk = self.journal.keep(job_id, entry, record)
        if on_disk:  # the kept entry names the insertion now
            self.settled(entry)
        return _Waiting(job_id, record, entry, on_disk)

    def _flush(self) -> int:
        while self._waiting:
            w = self._waiting[0]
            try:
                self.audit.append(w.record)
            except Exception as err:
                if time.monotonic() - self._complained >= 60:
                    self._complained = time.monotonic()
                    self.log.error(
                        "audit.records_waiting",
                        waiting=len(self._waiting),
                        error=err.message if isinstance(err, FdffdError) else repr(err),
                    )
                if not w.on_disk:
                    self._waiting[0] = self._keep(w.job_id, w.entry, w.record)
                break
            self._waiting.pop(0)
            self._done(w.job_id, w.entry)
            self.log.info("audit.record_appended_late", job_id=w.job_id, waiting=self.waiting)
        return len(self._waiting)

    def settle(self, job_id: str, entry: Entry) -> None:
        """A job whose record is in the log already: its journal entries go."""
        with self._lock:
            self._done(job_id, entry)

    def _done(self, job_id: str, entry: Entry) -> None:
        """The record is in the log: the job's journal entries go."""
        try:
            self.journal.end(job_id)
        except OSError as err:  # the record is in the log; a stale entry would be recovered
            self.log.error("journal.end_failed", job_id=job_id, error=err.strerror)
        self.settled(entry)

    def _appendable(self, record: Record, entry: Entry) -> Record:
        """The record, or, when it does not validate (a bug), a valid ``failed`` record of the
        job saying so: waiting for the log, an invalid record would hold back all after it."""
        try:
            parse_record(record)  # a record kept by an older version may be schema 1
        except (ValidationError, ValueError) as err:
            if isinstance(err, ValidationError):
                first = err.errors(include_url=False, include_input=False)[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                why = f"{where}: {first['msg']}"
            else:
                why = str(err)
            job_id = str(record.get("job_id") or entry.get("job_id") or "")
            self.log.critical("audit.record_invalid", job_id=job_id, error=str(err), record=record)
            fallback = interrupted_record(self.cfg, {**entry, "job_id": job_id or None})
            fallback.verdict = "failed"
            fallback.error = ErrorInfo(
                code="internal",
                message=f"the job's record did not validate ({why}); "
                "the daemon's log has it in full",
            )
            return fallback.to_json_dict()
        return record

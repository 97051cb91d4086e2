"""The job journal: every insertion the station took and every job it runs, kept on disk so
that a crash cannot lose one.

Two kinds of entries live in ``<state_dir>/journal/``, each written with the one durable write
(:func:`fdffd.fsutil.atomic_write`: temp file, fsync, rename, fsync of the directory):

- a *queued* entry (``queued/<insertion>.json``) for each insertion taken, written before the
  insertion is marked seen, and removed once its job's own entry is written (or its record is
  in the audit log or kept).  On start, one left behind is a drive that was waiting for a
  worker when the daemon stopped: it is processed if it is still there (same DISKSEQ), or
  recorded as not wiped.
- a *job* entry (``<job_id>.json``), written before the job touches its drive and removed after
  its record is in the audit log.  On start, one left behind belongs to a job that was running
  when the daemon died: it gets an ``interrupted`` record.

A job that finished but whose record the audit log could not take (the disk under the state dir
full, a torn last line waiting for ``fdffctl audit repair``) keeps its real record in its entry
(``"record"``) until it is appended: by the running daemon once the log can take it, or on the
next start, never as ``interrupted``.  So that this works when the disk is full, ``begin`` also
writes a *slot* per job (``.<job_id>.slot``, :data:`SLOT_BYTES` of blanks, fsynced): ``keep``
overwrites those already allocated blocks with the entry and renames the slot over the entry,
which needs no free space.  A job whose own slot could not be made (the disk was full when it
began) uses one of :data:`SPARES` station-wide spare slots, made again when there is room.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write, fsync_dir, write_all

#: room kept per running job for its record (a record with thousands of bad ranges is larger;
#: it is then written as a new file, which needs free space)
SLOT_BYTES = 64 << 10
#: spare slots kept in the journal for jobs that could not make their own
SPARES = 4

Entry = dict[str, Any]


class JobJournal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "journal"
        self.queued_dir = self.dir / "queued"
        self.queued_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in [*self.dir.glob(".*.tmp"), *self.queued_dir.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)  # a write the daemon died in; its target is whole
        self.replenish()

    # -- insertions waiting for a worker -------------------------------------------------

    def _queued_path(self, insertion: str) -> Path:
        return self.queued_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", insertion) + ".json")

    def queue(self, insertion: str, entry: Entry) -> None:
        """Journal an insertion the station took; raises OSError when it cannot."""
        data = json.dumps({**entry, "insertion": insertion}, ensure_ascii=False).encode()
        atomic_write(self._queued_path(insertion), data)

    def unqueue(self, insertion: str) -> None:
        """Forget an insertion's queued entry (its job began, or it is recorded)."""
        try:
            self._queued_path(insertion).unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.queued_dir)

    def queued(self) -> list[Entry]:
        """The queued entries left behind, oldest first (unreadable ones are dropped: a queued
        entry is replaced whole, so one that does not read was never complete)."""
        out = []
        paths = sorted(self.queued_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for p in paths:
            try:
                entry = json.loads(p.read_text())
            except (OSError, ValueError):
                entry = None
            if isinstance(entry, dict) and isinstance(entry.get("insertion"), str):
                out.append(entry)
            else:
                p.unlink(missing_ok=True)
        return out

    # -- jobs ------------------------------------------------------------------------------

    def replenish(self) -> int:
        """Make the missing spare slots, as far as the disk allows; how many there are."""
        have = 0
        for i in range(SPARES):
            spare = self.dir / f".spare-{i}.slot"
            if not spare.exists():
                try:
                    atomic_write(spare, b" " * SLOT_BYTES)
                except OSError:
                    continue
            have += 1
        return have

    def _spare(self) -> Path | None:
        return next(iter(sorted(self.dir.glob(".spare-*.slot"))), None)

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def _slot(self, job_id: str) -> Path:
        return self.dir / f".{job_id}.slot"

    def begin(self, job_id: str, entry: Entry) -> None:
        """Journal a job before it touches its drive; raises OSError when it cannot."""
        atomic_write(self._slot(job_id), b" " * SLOT_BYTES)
        atomic_write(self._path(job_id), self._encode(job_id, entry))

    def keep(self, job_id: str, entry: Entry, record: dict[str, Any]) -> bool:
        """Store a finished job's record in its entry until the audit log takes it.

        Returns whether it is on disk (False: the disk refused, it lives in memory only)."""
        data = self._encode(job_id, {**entry, "record": record})
        own = self._slot(job_id)
        slot = own if own.exists() else self._spare()
        try:
            if slot is not None and len(data) <= SLOT_BYTES:
                fd = os.open(slot, os.O_WRONLY | os.O_CLOEXEC)
                try:  # overwrite allocated blocks; the blanks left after it are JSON whitespace
                    write_all(fd, data)
                finally:
                    os.close(fd)
                os.replace(slot, self._path(job_id))
                fsync_dir(self.dir)
            else:
                atomic_write(self._path(job_id), data)
        except OSError:
            return False
        return True

    def end(self, job_id: str) -> None:
        gone = False
        for p in (self._path(job_id), self._slot(job_id)):
            try:
                p.unlink()
                gone = True
            except FileNotFoundError:
                pass
        if gone:
            fsync_dir(self.dir)

    def leftovers(self) -> list[Entry]:
        """Entries of jobs that never ended (oldest first); unreadable ones are reported too."""
        out = []
        for p in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                out.append(dict(json.loads(p.read_text())))
            except (OSError, ValueError):
                out.append({"job_id": p.stem, "device": "", "corrupt": True})
        entries = {str(e.get("job_id")) for e in out}
        for slot in self.dir.glob(".*.slot"):  # the daemon died between a slot and its entry
            if slot.name.startswith(".spare-"):
                continue
            if slot.name[1:].removesuffix(".slot") not in entries:
                slot.unlink(missing_ok=True)
        return out

    @staticmethod
    def _encode(job_id: str, entry: Entry) -> bytes:
        return json.dumps({"job_id": job_id, **entry}, ensure_ascii=False).encode()

"""The job journal: which jobs are running, kept on disk so a crash cannot lose one.

A job's entry is written (and fsynced) before it touches the drive and removed after its record
is in the audit log.  On start, every entry left behind belongs to a job that was running when
the daemon died: it gets an ``interrupted`` record (DESIGN.md, decision 6).

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
from pathlib import Path
from typing import Any

from ..fsutil import fsync_dir, write_all

#: room kept per running job for its record (a record with thousands of bad ranges is larger;
#: it is then written as a new file, which needs free space)
SLOT_BYTES = 64 << 10
#: spare slots kept in the journal for jobs that could not make their own
SPARES = 4


class JobJournal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "journal"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.replenish()

    def replenish(self) -> int:
        """Make the missing spare slots, as far as the disk allows; how many there are."""
        have = 0
        for i in range(SPARES):
            spare = self.dir / f".spare-{i}.slot"
            if not spare.exists():
                try:
                    self._write_new(spare, b" " * SLOT_BYTES)
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

    def begin(self, job_id: str, entry: dict[str, Any]) -> None:
        """Journal a job before it touches its drive; raises OSError when it cannot."""
        self._write_new(self._slot(job_id), b" " * SLOT_BYTES)
        self._write_new(self._path(job_id), self._encode(job_id, entry))
        self._sync_dir()

    def keep(self, job_id: str, entry: dict[str, Any], record: dict[str, Any]) -> bool:
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
            else:
                self._write_new(self._path(job_id), data)
            self._sync_dir()
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
            self._sync_dir()

    def leftovers(self) -> list[dict[str, Any]]:
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
    def _encode(job_id: str, entry: dict[str, Any]) -> bytes:
        return json.dumps({"job_id": job_id, **entry}, ensure_ascii=False).encode()

    def _write_new(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)

    def _sync_dir(self) -> None:
        fsync_dir(self.dir)

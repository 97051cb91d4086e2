"""The job journal: which jobs are running, kept on disk so a crash cannot lose one.

A job's entry is written (and fsynced) before it touches the drive and removed after its record
is in the audit log.  On start, every entry left behind belongs to a job that was running when
the daemon died: it gets an ``interrupted`` record (DESIGN.md, decision 6).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..fsutil import fsync_dir, write_all


class JobJournal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "journal"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def begin(self, job_id: str, entry: dict[str, Any]) -> None:
        tmp = self.dir / f".{job_id}.tmp"
        data = json.dumps({"job_id": job_id, **entry}, ensure_ascii=False).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(job_id))
        self._sync_dir()

    def end(self, job_id: str) -> None:
        try:
            self._path(job_id).unlink()
        except FileNotFoundError:
            return
        self._sync_dir()

    def leftovers(self) -> list[dict[str, Any]]:
        """Entries of jobs that never ended (oldest first); unreadable ones are reported too."""
        out = []
        for p in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                out.append(dict(json.loads(p.read_text())))
            except (OSError, ValueError):
                out.append({"job_id": p.stem, "device": "", "corrupt": True})
        return out

    def _sync_dir(self) -> None:
        fsync_dir(self.dir)

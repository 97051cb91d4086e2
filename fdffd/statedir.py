"""The state dir's layout: every file fdffd keeps under ``station.state_dir``, named once.

::

    <state_dir>/
      audit.jsonl        the signed, hash-chained audit log (fdffd.audit.log)
      station.key        Ed25519 signing key, mode 0600 (fdffd.audit.keys)
      station.pub        its public key, for auditors
      audit-seal.pub     the program's audit public key (identifying fields are sealed to it)
      journal/           one file per running job, until its record is in the log
      insertions.json    the insertions already handled since boot (DISKSEQ bookkeeping)

The control socket is not here: it lives in ``/run`` (``station.control_socket``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUDIT_LOG = "audit.jsonl"
PRIVATE_KEY = "station.key"
PUBLIC_KEY = "station.pub"
SERIAL_SECRET = "serial.secret"  # schema-2 stations before sealing: remove on upgrade
AUDIT_SEAL_KEY = "audit-seal.pub"
JOURNAL_DIR = "journal"
INSERTIONS = "insertions.json"


@dataclass(frozen=True)
class StateDir:
    """The paths of the files under one state dir."""

    root: Path

    @property
    def audit_log(self) -> Path:
        return self.root / AUDIT_LOG

    @property
    def private_key(self) -> Path:
        return self.root / PRIVATE_KEY

    @property
    def public_key(self) -> Path:
        return self.root / PUBLIC_KEY

    @property
    def serial_secret(self) -> Path:
        return self.root / SERIAL_SECRET

    @property
    def audit_seal_key(self) -> Path:
        return self.root / AUDIT_SEAL_KEY

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL_DIR

    @property
    def insertions(self) -> Path:
        return self.root / INSERTIONS

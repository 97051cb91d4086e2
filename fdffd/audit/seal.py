"""Identifying fields sealed to the program's audit key (docs/record.md, "Sealed fields").

A station holds only the program's audit *public* key (an X25519 key, 32 bytes, stored as
base64 text).  Everything in a job record that could match a physical drive is moved out of
the clear into ``sealed``: a NaCl ``SealedBox`` (anonymous sender, X25519 + XSalsa20-Poly1305)
of a small JSON object.  Only the holder of the audit *private* key, kept off every station,
can open it.  What stays in clear is coarse: size classes, the day, verdict, codes, port.

Without an audit public key the identifying fields are dropped, never kept in clear.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from ..errors import AuditError
from .record import JobRecord, size_class

KEY_BYTES = 32
#: what ``sealed`` opens to: the version of this layout
SEALED_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_key_text(path: Path, data: bytes) -> bytes:
    """The 32 raw key bytes of a key file (base64 text, or 32 raw bytes)."""
    if len(data) == KEY_BYTES:
        return data
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuditError(path=path, detail=f"not a base64 audit key: {exc}") from exc
    if len(raw) != KEY_BYTES:
        raise AuditError(path=path, detail=f"holds {len(raw)} key bytes, expected {KEY_BYTES}")
    return raw


def read_key_file(path: Path) -> bytes:
    """Read an audit key file (public or private).  Raises :class:`AuditError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot read audit key: {exc.strerror}") from exc
    return parse_key_text(path, data)


def new_audit_keypair() -> tuple[str, str]:
    """A fresh audit key pair as base64 text: ``(private, public)``.  Run off station."""
    key = PrivateKey.generate()
    return _b64(bytes(key)), _b64(bytes(key.public_key))


def audit_key_fingerprint(public: bytes) -> str:
    """The audit public key as base64: what ``keys init`` prints for comparison."""
    return _b64(public)


class Sealer:
    """Seals records to the program's audit public key (32 raw bytes)."""

    def __init__(self, public_key: bytes) -> None:
        self._box = SealedBox(PublicKey(public_key))
        self.public_key = public_key

    def seal(self, fields: dict[str, Any]) -> str:
        data = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return _b64(self._box.encrypt(data))


def _take_identifying(record: JobRecord, serial: str | None) -> dict[str, Any]:
    """Collect the identifying fields of ``record`` and clear them in place."""
    dev, cap, wipe = record.device, record.capacity, record.wipe
    fs = record.filesystem
    out: dict[str, Any] = {
        "v": SEALED_VERSION,
        "serial": serial.strip().strip("\x00").strip() if serial else None,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "announced_bytes": cap.announced_bytes if cap.announced_bytes else dev.announced_bytes,
        "usable_bytes": cap.usable_bytes,
        "bytes_written": wipe.bytes_written,
        "verified_bytes": wipe.verified_bytes,
        "mismatched_bytes": wipe.mismatched_bytes,
        "bad_ranges": [list(r) for r in wipe.bad_ranges] if wipe.bad_ranges else [],
        "stage_bytes": {s.name: s.bytes for s in record.stages},
        "volume_id": fs.volume_id if fs else None,
        "partition_offset": fs.partition_offset if fs else None,
        "partition_bytes": fs.partition_bytes if fs else None,
        "speed": record.speed.model_dump(mode="json") if record.speed else None,
    }
    if cap.announced_bytes and not cap.announced_class:
        cap.announced_class = size_class(cap.announced_bytes)
    if cap.usable_bytes and not cap.usable_class:
        cap.usable_class = size_class(cap.usable_bytes)
    record.started_at = record.finished_at = None
    dev.serial_hmac = None
    dev.announced_bytes = None
    cap.announced_bytes = cap.usable_bytes = None
    wipe.bytes_written = wipe.verified_bytes = wipe.mismatched_bytes = None
    wipe.bad_ranges = None
    for stage in record.stages:
        stage.bytes = None
    if fs is not None:
        fs.volume_id = fs.partition_offset = fs.partition_bytes = None
    record.speed = None
    return out


def seal_identifying(record: JobRecord, sealer: Sealer | None, serial: str | None) -> JobRecord:
    """Move every field of ``record`` that could match a physical drive into ``sealed``
    (encrypted to the audit key), in place; without a ``sealer`` they are dropped.  The
    drive's ``serial`` (as the gate read it) is sealed too, never recorded in clear.
    Idempotent: a record already sealed is returned as it is."""
    if record.sealed is not None:
        return record
    fields = _take_identifying(record, serial)
    if sealer is not None:
        record.sealed = sealer.seal(fields)
    return record


class Opener:
    """Opens sealed fields with the audit private key (auditor side, off station)."""

    def __init__(self, private_key: bytes) -> None:
        self._box = SealedBox(PrivateKey(private_key))

    @classmethod
    def from_file(cls, path: Path) -> Opener:
        return cls(read_key_file(path))

    def open(self, sealed: str) -> dict[str, Any] | None:
        """The sealed fields, or None when they are not sealed to this key."""
        try:
            data = self._box.decrypt(base64.b64decode(sealed))
        except (CryptoError, binascii.Error, ValueError):
            return None
        value = json.loads(data)
        return value if isinstance(value, dict) else None


def normalise_volume_id(text: str) -> str:
    """``1234-ABCD``, ``1234abcd`` and ``0x1234ABCD`` all compare equal."""
    t = text.strip().lower()
    if t.startswith("0x"):
        t = t[2:]
    return t.replace("-", "").replace(":", "")

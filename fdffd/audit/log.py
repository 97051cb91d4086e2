"""The tamper-evident audit log: one signed, hash-chained JSON line per record.

Line format
-----------
Each line is the canonical serialisation of one record (:mod:`fdffd.audit.record`: a job
record or a key rotation, schema 2; lines of schema 1, :mod:`fdffd.audit.schema1`, written by
older versions, keep verifying)::

    json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

encoded as UTF-8, keys in schema order (``schema`` first, ``prev`` then ``sig`` last), and
terminated by one ``"\\n"``.  Nothing else is allowed: a line whose bytes differ from the
canonical re-serialisation of its own content (extra whitespace, reordered keys, ``1.0`` for
``1``, escaped non-ASCII...) fails :func:`verify`.

- ``prev`` is the SHA-256 (lowercase hex) of the previous line's exact bytes, without its
  newline.  The first line's ``prev`` is :data:`GENESIS` (64 zeros).
- ``sig`` is the Ed25519 signature (lowercase hex, 128 digits) by the station key of the
  *signing message*: the canonical serialisation of the same record with the ``sig`` key
  left out (``prev`` included).  Because ``sig`` is last, the signing message is the line
  with ``,"sig":"…"`` removed.

So a changed byte breaks the canonical form or the signature of its line; a removed,
inserted, duplicated or reordered line breaks the chain at the first line out of place.
Cutting whole lines off the *end* cannot be seen from the log alone: compare
:attr:`VerifyResult.head` and :attr:`VerifyResult.lines_checked` with values noted earlier.

Appends
-------
:meth:`AuditLog.append` holds an exclusive ``flock`` on the log file itself, reads the last
line backwards from the end, and writes the new line with one ``os.write`` on an
``O_APPEND`` descriptor, then ``fsync``.  A failed or short write (disk full) is rolled back
with ``ftruncate`` to the previous length, so the log never keeps a partial line.  A torn
last line (power cut in the middle of an append) makes ``append`` refuse; the operator
repairs it with :func:`quarantine_torn_tail`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from fdffd.audit.keys import StationKeys, load_public_key, verify_signature
from fdffd.audit.record import (
    JobRecord,
    KeyRotationRecord,
    LogRecord,
    NewRecord,
    RecordError,
    as_job,
    parse_record,
)
from fdffd.errors import AuditError, AuditVerifyError

from ..fsutil import fsync_dir, write_all

#: ``prev`` of the first line of a log
GENESIS = "0" * 64

_CHUNK = 64 * 1024
_LOG_MODE = 0o640

log = structlog.get_logger(__name__)


# --- the canonical form ---------------------------------------------------------------


def canonical_bytes(obj: Mapping[str, Any]) -> bytes:
    """The canonical serialisation of a JSON object (no newline), as UTF-8 bytes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def signing_message(record: Mapping[str, Any]) -> bytes:
    """The bytes the station signs: the canonical record without its ``sig`` key."""
    return canonical_bytes({k: v for k, v in record.items() if k != "sig"})


def line_hash(line: bytes) -> str:
    """SHA-256 hex of a line's bytes (without the newline): the next line's ``prev``."""
    return hashlib.sha256(line).hexdigest()


# --- appending ------------------------------------------------------------------------


class AuditLog:
    """Append-only access to ``path``, signing with ``keys``.  Safe across processes."""

    def __init__(self, path: Path, keys: StationKeys) -> None:
        self.path = Path(path)
        self.keys = keys

    def append(self, record: NewRecord | Mapping[str, Any]) -> dict[str, Any]:
        """Chain, sign and durably append one record; return it as written.

        A plain mapping is read by its ``schema``: a schema-1 job record (kept in a job's
        journal entry by an older version, before an upgrade) is appended as schema 1.

        Raises :class:`AuditError` when the record is invalid or already has ``prev``/``sig``,
        when the log's last line is torn or empty, or when the write fails (disk full under
        the state dir, I/O error).  On any failure the log is left as it was.
        """
        body = _validated(self.path, record)
        job_id = body.get("job_id")
        fd = _open_for_append(self.path)
        try:
            _lock(fd, fcntl.LOCK_EX, self.path)
            size = os.fstat(fd).st_size
            last = _last_line(fd, size, self.path)
            body["prev"] = GENESIS if last is None else line_hash(last)
            body["sig"] = self.keys.sign(signing_message(body))
            line = canonical_bytes(body) + b"\n"
            self._write_line(fd, line, size, job_id)
            if size == 0:
                _fsync_dir_quiet(self.path.parent)
        finally:
            os.close(fd)  # releases the lock
        log.debug("audit.appended", path=str(self.path), job_id=job_id, prev=body["prev"])
        return body

    def _write_line(self, fd: int, line: bytes, size: int, job_id: object) -> None:
        try:
            written = os.write(fd, line)
        except OSError as exc:
            self._rollback(fd, size, job_id)
            raise AuditError(
                path=self.path, detail=_write_failure(self.path, exc, job_id), job_id=job_id
            ) from exc
        if written != len(line):
            self._rollback(fd, size, job_id)
            raise AuditError(
                path=self.path,
                detail=f"short write ({written} of {len(line)} bytes): "
                + _disk_full(self.path, job_id),
                job_id=job_id,
            )
        try:
            os.fsync(fd)
        except OSError as exc:
            self._rollback(fd, size, job_id)
            raise AuditError(
                path=self.path, detail=_write_failure(self.path, exc, job_id), job_id=job_id
            ) from exc

    def _rollback(self, fd: int, size: int, job_id: object) -> None:
        """Cut the log back to ``size`` bytes after a failed append."""
        log.error("audit.append_failed", path=str(self.path), job_id=job_id, rollback_to=size)
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise AuditError(
                path=self.path,
                detail=f"append failed and the partial line could not be removed "
                f"({exc.strerror}); run quarantine_torn_tail once the disk is healthy",
                job_id=job_id,
            ) from exc
        try:
            os.fsync(fd)
        except OSError as exc:  # the cut is made; only its durability is in doubt
            log.warning("audit.rollback_fsync_failed", path=str(self.path), error=exc.strerror)


def _validated(path: Path, record: NewRecord | Mapping[str, Any]) -> dict[str, Any]:
    """The record as a plain dict in schema order, re-validated, without prev and sig."""
    raw = (
        record.to_json_dict() if isinstance(record, JobRecord | KeyRotationRecord) else dict(record)
    )
    try:
        model = parse_record(raw)
    except ValidationError as exc:
        raise AuditError(path=path, detail=f"invalid job record: {_first_error(exc)}") from exc
    except RecordError as exc:
        raise AuditError(path=path, detail=f"invalid record: {exc}") from exc
    if model.prev is not None or model.sig is not None:
        what = f"job record {raw.get('job_id')}" if "job_id" in raw else "the record"
        raise AuditError(
            path=path,
            detail=f"{what} already carries prev/sig: it was appended before (the log sets them)",
        )
    body = model.to_json_dict()
    del body["prev"], body["sig"]
    return body


def _open_for_append(path: Path) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags, _LOG_MODE)
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot open for appending: {exc.strerror}") from exc


def _lock(fd: int, operation: int, path: Path) -> None:
    try:
        fcntl.flock(fd, operation)
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot lock: {exc.strerror}") from exc


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            raise OSError(errno.EIO, "log shrank while it was being read")
        parts.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _last_newline_before(fd: int, end: int) -> int:
    """Offset of the last ``\\n`` in ``[0, end)``, or -1; reads backwards in chunks."""
    pos = end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        i = _pread_exact(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def _last_line(fd: int, size: int, path: Path) -> bytes | None:
    """The last complete line (without newline), None for an empty log; refuse a torn tail."""
    if size == 0:
        return None
    if _pread_exact(fd, 1, size - 1) != b"\n":
        raise AuditError(
            path=path,
            detail="the last line is torn (no trailing newline: an append was cut off, e.g. by "
            "a power cut); refusing to chain onto it. Repair with quarantine_torn_tail "
            "(fdffctl audit repair), which moves the torn bytes to a side file",
        )
    start = _last_newline_before(fd, size - 1) + 1
    line = _pread_exact(fd, size - 1 - start, start)
    if not line:
        raise AuditError(
            path=path,
            detail="the log ends with an empty line: it was altered; run fdffctl audit verify",
        )
    return line


def _disk_full(path: Path, job_id: object) -> str:
    return (
        f"the disk under the state dir {path.parent} is full; the record of job {job_id} was "
        "NOT written and the log was left intact. Free space there and retry"
    )


def _write_failure(path: Path, exc: OSError, job_id: object) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{exc.strerror}: " + _disk_full(path, job_id)
    return (
        f"write failed ({exc.strerror}); the record of job {job_id} was NOT written and the "
        "log was left intact"
    )


# --- repair ---------------------------------------------------------------------------


def quarantine_torn_tail(path: Path) -> Path | None:
    """Move a torn last line (bytes after the last newline) to a side file; cut it off.

    The explicit repair after a power cut in the middle of an append.  The torn bytes go to
    ``<log>.torn-<UTC time>-at-<offset>`` (written and fsynced before the log is cut), and
    the event ``audit.torn_tail_quarantined`` is logged.  Returns the side file, or None when
    the log is missing or not torn.  Raises :class:`AuditError` when it cannot do the repair.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot open for repair: {exc.strerror}") from exc
    try:
        _lock(fd, fcntl.LOCK_EX, path)
        try:
            size = os.fstat(fd).st_size
            if size == 0 or _pread_exact(fd, 1, size - 1) == b"\n":
                return None
            keep = _last_newline_before(fd, size) + 1
            torn = _pread_exact(fd, size - keep, keep)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            side = path.with_name(f"{path.name}.torn-{stamp}-at-{keep}")
            _write_new_file(side, torn)
            _fsync_dir_quiet(path.parent)
            os.ftruncate(fd, keep)
            os.fsync(fd)
        except OSError as exc:
            raise AuditError(path=path, detail=f"repair failed: {exc.strerror}") from exc
    finally:
        os.close(fd)
    log.warning(
        "audit.torn_tail_quarantined",
        path=str(path),
        side_file=str(side),
        offset=keep,
        bytes=len(torn),
    )
    return side


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


# --- verifying and reading ------------------------------------------------------------


@dataclass(frozen=True)
class VerifyFailure:
    """The first line that failed, 1-based, and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found."""

    path: Path
    #: lines that passed every check, before the failure if there is one
    lines_checked: int
    failure: VerifyFailure | None
    #: SHA-256 of the last good line (``GENESIS`` if none): note it to detect later truncation
    head: str
    #: the log file does not exist
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def empty(self) -> bool:
        return self.ok and self.lines_checked == 0

    def summary(self) -> str:
        """One line for an operator or auditor."""
        if self.failure is not None:
            return (
                f"{self.path}: FAILED at line {self.failure.line}: {self.failure.reason} "
                f"({self.lines_checked} lines before it verified)"
            )
        if self.missing:
            return f"{self.path}: no log yet (file missing): verifies as empty"
        if self.lines_checked == 0:
            return f"{self.path}: log is empty: verifies as empty"
        return f"{self.path}: OK, {self.lines_checked} lines verified, head {self.head}"

    def raise_for_failure(self) -> None:
        """Raise :class:`AuditVerifyError` naming the failing line, if there is one."""
        if self.failure is not None:
            raise AuditVerifyError(
                path=self.path, line=self.failure.line, detail=self.failure.reason
            )


class _LineError(Exception):
    pass


def verify(path: Path, public_key: Ed25519PublicKey | Path) -> VerifyResult:
    """Check every line of the log at ``path``: canonical bytes, signature, then chain.

    ``public_key`` is the station's public key, or the path of ``station.pub``.  Stops at
    the first failing line.  A missing or empty log verifies as empty.  Raises
    :class:`AuditError` only when the log (or key) cannot be read at all.
    """
    path = Path(path)
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return VerifyResult(path, 0, None, GENESIS, missing=True)
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot read: {exc.strerror}") from exc
    expected_prev = GENESIS
    number = 0
    with f:
        try:
            for number, line in enumerate(_complete_lines(f, path), start=1):
                key = _check_line(line, key, expected_prev, number)
                expected_prev = line_hash(line)
        except _LineError as exc:
            return VerifyResult(path, number - 1, VerifyFailure(number, str(exc)), expected_prev)
    return VerifyResult(path, number, None, expected_prev)


def _complete_lines(f: BinaryIO, path: Path) -> Iterator[bytes]:
    """Lines without their newline, up to the size seen under a shared lock; torn → error."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        size = os.fstat(f.fileno()).st_size
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError:
        size = os.fstat(f.fileno()).st_size
    remaining = size
    while remaining > 0:
        try:
            line = f.readline(remaining)
        except OSError as exc:
            raise AuditError(path=path, detail=f"cannot read: {exc.strerror}") from exc
        if not line:  # the file shrank under us: only a repair does that
            yield _Torn(b"")
            return
        remaining -= len(line)
        if not line.endswith(b"\n"):
            yield _Torn(line)
            return
        yield line[:-1]


class _Torn(bytes):
    """A last line without its newline."""


def _check_line(
    line: bytes, key: Ed25519PublicKey, expected_prev: str, number: int
) -> Ed25519PublicKey:
    """Check one line; the key that signs the next line (a key rotation changes it)."""
    if isinstance(line, _Torn):
        raise _LineError(
            "torn last line (no trailing newline: an append was cut off); "
            "repair with quarantine_torn_tail"
        )
    record = _parse_line(line)
    obj = record.to_json_dict()
    if canonical_bytes(obj) != line:
        raise _LineError(
            "not in canonical form: its bytes were changed (whitespace, key order, "
            "number or string encoding)"
        )
    if record.sig is None or record.prev is None:
        raise _LineError("no prev or no sig: not written by the audit log")
    if not verify_signature(key, record.sig, signing_message(obj)):
        raise _LineError(
            "bad signature: the line was changed, or was not signed by this station's key"
        )
    if record.prev != expected_prev:
        if number == 1:
            raise _LineError("prev is not the genesis value: lines before it were removed")
        raise _LineError(
            f"chain broken: prev is not the SHA-256 of line {number - 1} "
            "(a line was removed, inserted, duplicated or reordered)"
        )
    return _next_key(record, key)


def _next_key(record: LogRecord, key: Ed25519PublicKey) -> Ed25519PublicKey:
    """The key after ``record``: a key rotation, signed by the old key, names the new one."""
    if not isinstance(record, KeyRotationRecord):
        return key
    if record.old_key != hashlib.sha256(key.public_bytes_raw()).hexdigest():
        raise _LineError("key rotation: old_key is not the key that signed the lines before it")
    new_raw = bytes.fromhex(record.new_key)
    if record.new_key_fingerprint != hashlib.sha256(new_raw).hexdigest():
        raise _LineError("key rotation: new_key_fingerprint is not the SHA-256 of new_key")
    return Ed25519PublicKey.from_public_bytes(new_raw)


def _parse_line(line: bytes) -> LogRecord:
    if not line:
        raise _LineError("empty line")
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _LineError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise _LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise _LineError("not a JSON object")
    try:
        return parse_record(obj)
    except ValidationError as exc:
        raise _LineError(f"does not match the record schema: {_first_error(exc)}") from exc
    except RecordError as exc:
        raise _LineError(str(exc)) from exc


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def iter_records(path: Path) -> Iterator[JobRecord]:
    """The job records of the log at ``path``, in order, as schema 2 (schema-1 lines are
    upgraded, :func:`~fdffd.audit.record.upgrade_v1`; key rotations are skipped), without
    checking signatures or chain.

    For reporting; run :func:`verify` for proof.  A missing log yields nothing.  Raises
    :class:`AuditVerifyError` naming the line when a line is torn or not a valid record.
    """
    for record in iter_log(path):
        job = as_job(record)
        if job is not None:
            yield job


def iter_log(path: Path) -> Iterator[LogRecord]:
    """Every record of the log at ``path`` as it is stored (any schema, any type), in
    order, without checking signatures or chain; errors as :func:`iter_records`."""
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot read: {exc.strerror}") from exc
    with f:
        for number, line in enumerate(_complete_lines(f, path), start=1):
            try:
                if isinstance(line, _Torn):
                    raise _LineError("torn last line (no trailing newline)")
                record = _parse_line(line)
            except _LineError as exc:
                raise AuditVerifyError(path=path, line=number, detail=str(exc)) from exc
            yield record


def _fsync_dir_quiet(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_dir(directory)

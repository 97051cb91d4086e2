"""``fdffctl keys ...`` and ``fdffctl audit lookup``: the station's keys and the auditor's
lookup of sealed identifying fields (docs/auditor.md)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

from ..audit.checkpoint import Checkpoint, check_key, check_prefix
from ..audit.log import VerifyResult, iter_records
from ..audit.record import JobRecord
from ..audit.seal import Opener, new_audit_keypair, normalise_volume_id, read_key_file
from ..errors import ExitCode, UsageError
from ..fsutil import create_exclusive


def cmd_keys_audit_keygen(args: argparse.Namespace) -> int:
    """Create the program's audit key pair, OFF any station: PREFIX (private, 0600) and
    PREFIX.pub (public, give it to every station)."""
    private, public = new_audit_keypair()
    out = Path(args.prefix)
    pub = out.with_name(out.name + ".pub")
    for path, data, mode in ((out, private, 0o600), (pub, public, 0o644)):
        try:
            created = create_exclusive(path, (data + "\n").encode(), mode=mode)
        except OSError as exc:
            raise UsageError(f"{path}: cannot create: {exc.strerror}") from exc
        if not created:
            raise UsageError(f"{path} exists: refusing to replace a key (choose another name)")
    print(f"audit private key: {out} (keep it OFF every station)")
    print(f"audit public key:  {pub} (fdffctl keys init --audit-pubkey {pub} on each station)")
    print(f"public key: {public}")
    return ExitCode.OK


def _match(fields: dict[str, Any], serial: str | None, volume_id: str | None) -> bool:
    if serial is not None:
        return str(fields.get("serial") or "") == serial.strip().strip("\x00").strip()
    got = fields.get("volume_id")
    return bool(got) and normalise_volume_id(str(got)) == normalise_volume_id(volume_id or "")


def cmd_audit_lookup(args: argparse.Namespace, log_path: Path) -> int:
    """The jobs whose sealed fields hold this serial (or volume serial); needs the audit
    private key.  Reads the log only: creates no file."""
    if args.key is None and args.serial_secret is None:
        raise UsageError(
            "audit lookup needs the program's audit private key: --key FILE "
            "(stations cannot look drives up; see docs/auditor.md)"
        )
    if not log_path.is_file():
        raise UsageError(f"{log_path}: no audit log there (give --log FILE)")
    opener = Opener(read_key_file(Path(args.key))) if args.key else None
    serial = None if args.volume_id else args.serial
    digest = _old_hmac(Path(args.serial_secret), serial) if args.serial_secret and serial else None
    found: list[dict[str, Any]] = []
    sealed_jobs = opened = 0
    for record in iter_records(log_path):
        if digest is not None and record.device.serial_hmac == digest:
            found.append(_old_job(record))
        if record.sealed is None or opener is None:
            continue
        sealed_jobs += 1
        fields = opener.open(record.sealed)
        if fields is None:
            continue
        opened += 1
        if _match(fields, serial, args.serial if args.volume_id else None):
            found.append(
                {
                    "job_id": record.job_id,
                    "verdict": record.verdict,
                    "wiped": record.wiped,
                    "started_at": fields.get("started_at"),
                    "finished_at": fields.get("finished_at"),
                    "volume_id": fields.get("volume_id"),
                }
            )
    _print_found(args, found, sealed_jobs, opened)
    return ExitCode.OK if found else ExitCode.FAILED


def _print_found(
    args: argparse.Namespace, found: list[dict[str, Any]], sealed_jobs: int, opened: int
) -> None:
    if args.json:
        sys.stdout.write(json.dumps({"jobs": found, "sealed": sealed_jobs, "opened": opened}))
        sys.stdout.write("\n")
    else:
        what = "volume serial" if args.volume_id else "serial"
        print(
            f"{what} {args.serial}: {len(found)} job(s) ({opened} of {sealed_jobs} sealed "
            "records open with this key)"
        )
        for j in found:
            wiped = "wiped" if j["wiped"] else "NOT wiped"
            print(f"  {j['finished_at']}  {j['verdict']:<12} {wiped:<9} job {j['job_id']}")


def _old_hmac(path: Path, serial: str) -> str:
    """The serial HMAC of records written before sealing, under that station's archived
    ``serial.secret`` (32 raw bytes)."""
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the serial secret: {exc.strerror}") from exc
    normal = serial.strip().strip("\x00").strip().encode("utf-8", "surrogateescape")
    return hmac.new(secret, normal, hashlib.sha256).hexdigest()


def _old_job(record: JobRecord) -> dict[str, Any]:
    return {
        "job_id": record.job_id,
        "verdict": record.verdict,
        "wiped": record.wiped,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "volume_id": record.filesystem.volume_id if record.filesystem else None,
    }


# --- audit verify's trust checks, audit checkpoint -------------------------------------


def trust_failures(
    args: argparse.Namespace, log_path: Path, result: VerifyResult, fingerprint: str
) -> list[str]:
    """What ``audit verify``'s trust options find wrong beyond the chain and signatures."""
    why: list[str] = []
    if (result.missing or result.empty) and not args.allow_empty:
        state = "missing" if result.missing else "empty"
        why.append(f"the log is {state} (deleted or emptied?); --allow-empty if it may be")
    expect: list[Checkpoint] = []
    if args.expect_head or args.expect_lines is not None:
        if not args.expect_head or args.expect_lines is None:
            raise UsageError("--expect-head HASH and --expect-lines N go together")
        expect.append(Checkpoint(args.expect_lines, args.expect_head.strip().lower()))
    if args.checkpoint:
        expect.append(Checkpoint.read(Path(args.checkpoint)))
    for cp in expect:
        if cp.key and cp.key != "0" * 64 and (msg := check_key(fingerprint, cp.key)):
            why.append(msg)
        if result.ok and (msg := check_prefix(log_path, result, cp)):
            why.append(msg)
    if args.fingerprint and (msg := check_key(fingerprint, args.fingerprint)):
        why.append(msg)
    return why


def print_checkpoint(result: VerifyResult, fingerprint: str, *, qr: bool) -> Checkpoint:
    """The checkpoint of a verified log, as text and (on a terminal) a QR code of it."""
    from ..audit.record import utc_now_iso

    cp = Checkpoint(result.lines_checked, result.head, fingerprint, utc_now_iso())
    print(cp.to_text())
    print(f"lines {cp.lines}, head {cp.head}")
    print(f"station key {fingerprint}, at {cp.at}")
    if qr:
        import qrcode  # type: ignore[import-untyped]

        code = qrcode.QRCode(border=1)
        code.add_data(cp.to_text())
        code.print_ascii(out=sys.stdout, invert=True)
    return cp

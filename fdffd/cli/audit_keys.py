"""``fdffctl keys ...`` and ``fdffctl audit lookup``: the station's keys and the auditor's
lookup of sealed identifying fields (docs/auditor.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..audit.log import iter_records
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
    if args.key is None:
        raise UsageError(
            "audit lookup needs the program's audit private key: --key FILE "
            "(stations cannot look drives up; see docs/auditor.md)"
        )
    if not log_path.is_file():
        raise UsageError(f"{log_path}: no audit log there (give --log FILE)")
    opener = Opener(read_key_file(Path(args.key)))
    serial = None if args.volume_id else args.serial
    found: list[dict[str, Any]] = []
    sealed_jobs = opened = 0
    for record in iter_records(log_path):
        if record.sealed is None:
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
    return ExitCode.OK if found else ExitCode.FAILED


def add_lookup_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("serial", metavar="SERIAL", help="the drive's USB serial (or volume serial)")
    sp.add_argument("--key", metavar="FILE", help="the program's audit PRIVATE key")
    sp.add_argument(
        "--volume-id", action="store_true", help="SERIAL is the volume serial (e.g. 1234-ABCD)"
    )
    sp.add_argument("--log", metavar="FILE", help="audit log (default <state_dir>/audit.jsonl)")

"""``fdffctl``: the operator tool.  Parse, call, print, map errors to exit codes."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from .. import __version__, i18n
from ..errors import ExitCode, FdffdError, UsageError
from ..fsutil import make_state_dir
from .audit_args import add_lookup_args, add_verify_args
from .common import DEFAULT_CONFIG_PATH
from .common import config_of as _config
from .common import print_json as _print_json
from .payload_cmd import (
    cmd_payload_add,
    cmd_payload_export,
    cmd_payload_import,
    cmd_payload_keygen,
    cmd_payload_list,
    cmd_payload_prune,
    cmd_payload_verify,
)

# Quick commands stay quick: `fdffctl --help` imports none of pydantic, structlog, numpy or
# cryptography, and each command imports what it uses, in its function
# (tests/test_ctl_imports.py; the figures: bench/cli.py).


class Terminated(FdffdError):
    """terminated by signal {signum}"""

    code = "terminated"
    exit_code = ExitCode.TERMINATED


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum=signum)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} s: give 0.1 to 3600 seconds")
    return value


# --- process ---------------------------------------------------------------------------


def cmd_process(args: argparse.Namespace) -> int:
    from ..audit import AuditLog, StationKeys
    from ..job.pipeline import process_path

    cfg = _config(args)
    make_state_dir(cfg.station.state_dir)
    keys = StationKeys.load(cfg.station.state_dir)
    outcome = process_path(cfg, args.device, sealer=keys.sealer)
    record = outcome.record.to_json_dict()
    code = outcome.exit_code
    try:
        AuditLog(cfg.audit_log, keys).append(outcome.logged)  # sealed; the terminal sees all
    except FdffdError as err:
        print(f"fdffctl: the job ended but its record could not be logged: {err}", file=sys.stderr)
        code = code or err.exit_code
    if args.json:
        _print_json(record)
    else:
        _print_summary(record)
    return code


def _print_summary(rec: dict[str, Any]) -> None:
    from ..sizes import format_size

    cap = rec["capacity"]
    wipe = rec["wipe"]
    print(f"{rec['device']['path']}: {rec['verdict'].upper()}")
    if rec["error"]:
        print(f"  {rec['error']['message']}")
    if cap["announced_bytes"] and cap["usable_bytes"] is not None:
        announced, usable = format_size(cap["announced_bytes"]), format_size(cap["usable_bytes"])
        line = f"  capacity: announced {announced}, usable {usable}"
        if cap["counterfeit"]:
            line += f" (counterfeit: {cap['kind']})"
        print(line)
    if wipe["bytes_written"]:
        print(
            f"  wiped {format_size(wipe['bytes_written'])} in {wipe['passes']} pass(es), "
            f"verified {format_size(wipe['verified_bytes'] or 0)}, "
            f"mismatched {wipe['mismatched_bytes']} bytes"
        )
    for start, n in (wipe["bad_ranges"] or [])[:10]:
        print(f"  bad range: {start}+{n}")
    print(f"  job {rec['job_id']}")


# --- probe -----------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    from ..devices.blockdev import BlockDevice
    from ..devices.facts import gather
    from ..errors import RefusedError
    from ..job.gate import evaluate
    from ..job.probe import probe_capacity
    from ..pattern import new_job_key

    cfg = _config(args)
    facts = gather(
        args.device, state_dir=cfg.station.state_dir, payload_dir=cfg.station.payload_dir
    )
    refusal = evaluate(facts, cfg.drives)
    if refusal:
        raise RefusedError(refusal.detail, device=args.device, rule=refusal.rule)
    with BlockDevice(args.device, stage="probe") as dev:
        res = probe_capacity(dev, new_job_key(), flush_bytes=cfg.job.probe_cache_flush)
    out = {
        "device": args.device,
        "announced_bytes": res.announced_bytes,
        "usable_bytes": res.usable_bytes,
        "counterfeit": res.counterfeit,
        "kind": res.kind,
        "seconds": round(res.seconds, 3),
        "rounds": res.rounds,
        "bytes_written": res.bytes_written,
        "suspect_blocks": res.suspect_blocks,
    }
    if args.json:
        _print_json(out)
    else:
        verdict = f"COUNTERFEIT ({res.kind})" if res.counterfeit else "honest"
        print(
            f"{args.device}: {verdict}: announces {res.announced_bytes} bytes, "
            f"usable {res.usable_bytes} bytes ({res.seconds:.2f} s)"
        )
        print("  note: the probe overwrote data at the probed positions")
    return ExitCode.COUNTERFEIT if res.counterfeit else ExitCode.OK


# --- status and watch ------------------------------------------------------------------


def cmd_ports_learn(args: argparse.Namespace) -> int:
    from ..station.learn import learn

    learn(_config(args), sys.stdin, sys.stdout, timeout=args.timeout)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..station.control import request
    from ..station.view import render_status_text

    cfg = _config(args)
    status = request(cfg.station.control_socket, {"cmd": "status"})
    if args.json:
        _print_json(status)
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        print(render_status_text(status, color=sys.stdout.isatty(), width=width))
    return ExitCode.OK


def cmd_watch(args: argparse.Namespace) -> int:
    from ..station.control import request
    from ..station.watch import run_watch

    cfg = _config(args)
    return run_watch(
        lambda: request(cfg.station.control_socket, {"cmd": "status"}, timeout=0.9),
        interval=args.interval,
    )


# --- audit -----------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from ..audit import load_public_key, verify
    from ..audit.keys import public_key_hex
    from .audit_keys import print_checkpoint, trust_failures

    cfg = _config(args)
    pub = Path(args.pubkey) if args.pubkey else cfg.station.state_dir / "station.pub"
    log_path = Path(args.log) if args.log else cfg.audit_log
    if not pub.exists() and not args.pubkey and _no_records(log_path):
        return _no_record_yet(args, log_path, pub)
    if not pub.exists():
        raise UsageError(f"no public key at {pub}; pass --pubkey FILE")
    key = load_public_key(pub)
    fingerprint = public_key_hex(key)
    result = verify(log_path, key)
    if getattr(args, "checkpoint_out", False):
        if not result.ok:
            print(result.summary(), file=sys.stderr)
            return ExitCode.FAILED
        print_checkpoint(result, fingerprint, qr=not args.no_qr)
        return ExitCode.OK
    why = trust_failures(args, log_path, result, fingerprint)
    if args.json:
        _print_json(
            {
                "ok": result.ok and not why,
                "summary": result.summary(),
                "lines": result.lines_checked,
                "head": result.head,
                "key": fingerprint,
                "problems": why,
            }
            | (
                {"failure": {"line": result.failure.line, "reason": result.failure.reason}}
                if result.failure
                else {}
            )
        )
    else:
        print(result.summary())
        print(f"station key fingerprint: {fingerprint}")
        for w in why:
            print(f"FAILED: {w}")
    return ExitCode.OK if result.ok and not why else ExitCode.FAILED


def _no_records(log_path: Path) -> bool:
    try:
        return log_path.stat().st_size == 0
    except FileNotFoundError:
        return True


def _no_record_yet(args: argparse.Namespace, log_path: Path, pub: Path) -> int:
    """A new station: no log and no key yet.  Nothing to verify, which is not a failure."""
    from ..audit import GENESIS

    summary = (
        f"{log_path}: no record yet (a new station: fdffd makes the log and the key {pub} "
        "when it first runs); nothing to verify"
    )
    if args.json:
        _print_json({"ok": True, "summary": summary, "lines": 0, "head": GENESIS})
    else:
        print(summary)
    return ExitCode.OK


def cmd_audit_repair(args: argparse.Namespace) -> int:
    from ..audit import quarantine_torn_tail

    cfg = _config(args)
    log_path = Path(args.log) if args.log else cfg.audit_log
    moved = quarantine_torn_tail(log_path)
    if moved is None:
        print(f"{log_path}: no torn last line; nothing to repair")
    else:
        print(
            f"{log_path}: the torn last line was moved to {moved}; "
            "the log ends on a whole line again"
        )
    return ExitCode.OK


def cmd_audit_lookup(args: argparse.Namespace) -> int:
    from .audit_keys import cmd_audit_lookup as lookup

    return lookup(args, Path(args.log) if args.log else _config(args).audit_log)


def cmd_keys_init(args: argparse.Namespace) -> int:
    from ..audit import StationKeys
    from ..audit.seal import audit_key_fingerprint, read_key_file

    cfg = _config(args)
    make_state_dir(cfg.station.state_dir)
    audit_pub = read_key_file(Path(args.audit_pubkey)) if args.audit_pubkey else None
    keys = StationKeys.init(cfg.station.state_dir, audit_pub)
    print(f"station key fingerprint: {keys.fingerprint}")
    if keys.audit_public_key is None:
        print("no audit public key: identifying fields are dropped, not sealed")
    else:
        print(f"audit public key: {audit_key_fingerprint(keys.audit_public_key)}")
    return ExitCode.OK


def cmd_keys_audit_keygen(args: argparse.Namespace) -> int:
    from .audit_keys import cmd_keys_audit_keygen as keygen

    return keygen(args)


def cmd_audit_report(args: argparse.Namespace) -> int:
    from ..audit import iter_records
    from ..audit.report import build_report, render_text

    cfg = _config(args)
    log_path = Path(args.log) if args.log else cfg.audit_log
    report = build_report(iter_records(log_path) if log_path.exists() else [])
    if args.json:
        _print_json(report)
    else:
        print(render_text(report))
    return ExitCode.OK


# --- fingerprint -----------------------------------------------------------------------


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from ..inspect.command import run_fingerprint

    return run_fingerprint(args.a, args.b, args.reference or [], sys.stdout)


# --- demo ------------------------------------------------------------------------------


#: what ``fdffctl demo`` says on a station installed without the test kit
NO_TESTKIT = (
    "fdffctl demo: the simulated drives are not installed: they are in the test kit, a "
    "package of its own in fdffd's repository; install it with `pip install ./testkit` (with "
    "mfusepy and psutil) into this environment, or run scripts/demo in a checkout"
)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from fdffd_testkit.demo import run_demo
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "fdffd_testkit":
            print(NO_TESTKIT, file=sys.stderr)
        else:  # the kit is there, one of its dependencies is not
            print(
                f"fdffctl demo: the test kit needs the Python package {exc.name!r}: "
                "install the kit with its dependencies (`pip install ./testkit`)",
                file=sys.stderr,
            )
        return ExitCode.USAGE
    return int(run_demo(keep=args.keep, event_timeout=args.event_timeout))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH} if present)"
    )
    common.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log events at this level and above to stderr (default warning)",
    )
    reporting = argparse.ArgumentParser(add_help=False)
    reporting.add_argument("--json", action="store_true", help="print JSON")

    p = argparse.ArgumentParser(prog="fdffctl", description="Operate an fdffd drive station.")
    p.add_argument("--version", action="version", version=f"fdffctl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser(
        "process", parents=[common, reporting], help="run one whole job on DEVICE in the foreground"
    )
    sp.add_argument("device", metavar="DEVICE")
    sp.set_defaults(func=cmd_process)

    sp = sub.add_parser(
        "probe", parents=[common, reporting], help="fake-capacity probe (destructive)"
    )
    sp.add_argument("device", metavar="DEVICE")
    sp.set_defaults(func=cmd_probe)

    sp = sub.add_parser(
        "status", parents=[common, reporting], help="each port: drive, stage, progress"
    )
    sp.set_defaults(func=cmd_status)
    sp = sub.add_parser("watch", parents=[common], help="live full-screen view for volunteers")
    sp.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS")
    sp.set_defaults(func=cmd_watch)

    payload = sub.add_parser(
        "payload", help="import, export, list, verify or prune payload profiles"
    )
    psub = payload.add_subparsers(dest="payload_command", required=True, metavar="SUBCOMMAND")
    sp = psub.add_parser(
        "add", parents=[common, reporting], help="import SRC_DIR as a new version of profile NAME"
    )
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("src", metavar="SRC_DIR")
    sp.add_argument("--priority", metavar="FILE", help="paths, one a line, most important first")
    sp.set_defaults(func=cmd_payload_add)
    sp = psub.add_parser(
        "import", parents=[common, reporting], help="import a bundle (as payload export wrote it)"
    )
    sp.add_argument("bundle", metavar="BUNDLE")
    sp.set_defaults(func=cmd_payload_import)
    sp = psub.add_parser(
        "export", parents=[common], help="write profile NAME to one bundle file OUT"
    )
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("out", metavar="OUT")
    sp.add_argument("--sign", metavar="KEYFILE", help="sign with this curator key (PEM)")
    sp.add_argument("--version", metavar="SHA256", help="this version, not the current one")
    sp.set_defaults(func=cmd_payload_export)
    sp = psub.add_parser("keygen", help="make a curator signing key KEYFILE (and KEYFILE.pub)")
    sp.add_argument("keyfile", metavar="KEYFILE")
    sp.set_defaults(func=cmd_payload_keygen)
    sp = psub.add_parser(
        "list", parents=[common, reporting], help="every profile and its current version"
    )
    sp.set_defaults(func=cmd_payload_list)
    sp = psub.add_parser(
        "verify", parents=[common, reporting], help="re-hash profile NAME against its manifest"
    )
    sp.add_argument("name", metavar="NAME")
    sp.set_defaults(func=cmd_payload_verify)
    sp = psub.add_parser(
        "prune", parents=[common, reporting], help="remove old versions of NAME not in use"
    )
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--keep", type=int, default=1, metavar="N", help="versions to keep (default 1)")
    sp.set_defaults(func=cmd_payload_prune)

    ports = sub.add_parser("ports", help="the hub's port map")
    portsub = ports.add_subparsers(dest="ports_cmd", required=True)
    sp = portsub.add_parser(
        "learn",
        parents=[common],
        help="plug a stick into each port in turn; write station.ports_file",
    )
    sp.add_argument(
        "--timeout", type=_interval, default=300.0, help="seconds to wait for each stick"
    )
    sp.set_defaults(func=cmd_ports_learn)

    audit = sub.add_parser("audit", help="verify or summarise the audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    sp = asub.add_parser(
        "verify", parents=[common, reporting], help="check every line's chain and signature"
    )
    sp.add_argument(
        "--pubkey", metavar="FILE", help="station public key (default <state_dir>/station.pub)"
    )
    sp.add_argument("--log", metavar="FILE", help="audit log (default <state_dir>/audit.jsonl)")
    add_verify_args(sp)
    sp.set_defaults(func=cmd_audit_verify)
    sp = asub.add_parser(
        "checkpoint", parents=[common], help="verify, then print head, lines, key as text and QR"
    )
    sp.add_argument("--pubkey", metavar="FILE", help="station public key")
    sp.add_argument("--log", metavar="FILE", help="audit log (default <state_dir>/audit.jsonl)")
    sp.add_argument("--no-qr", action="store_true", help="text only")
    sp.set_defaults(func=cmd_audit_verify, checkpoint_out=True)
    sp = asub.add_parser(
        "repair",
        parents=[common],
        help="move a torn last line (power cut mid-append) to a side file",
    )
    sp.add_argument("--log", metavar="FILE", help="audit log (default <state_dir>/audit.jsonl)")
    sp.set_defaults(func=cmd_audit_repair)
    sp = asub.add_parser(
        "lookup",
        parents=[common, reporting],
        help="was the drive with this serial processed? (needs the audit private key)",
    )
    add_lookup_args(sp)
    sp.set_defaults(func=cmd_audit_lookup)
    sp = asub.add_parser(
        "report", parents=[common, reporting], help="drives by verdict, bytes, speeds"
    )
    sp.add_argument("--log", metavar="FILE", help="audit log (default <state_dir>/audit.jsonl)")
    sp.set_defaults(func=cmd_audit_report)

    keys = sub.add_parser("keys", help="the station's keys (created only here)")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    sp = ksub.add_parser("init", parents=[common], help="create the station keys (once)")
    sp.add_argument("--audit-pubkey", metavar="FILE", help="the program's audit public key")
    sp.set_defaults(func=cmd_keys_init)
    sp = ksub.add_parser("audit-keygen", help="make the program's audit key pair (OFF station)")
    sp.add_argument("prefix", metavar="PREFIX", help="private key file (PREFIX.pub: public)")
    sp.set_defaults(func=cmd_keys_audit_keygen)

    sp = sub.add_parser(
        "fingerprint", help="what two drives or images share that a real formatter would not"
    )
    sp.add_argument("a", metavar="DRIVE_OR_IMAGE")
    sp.add_argument("b", metavar="DRIVE_OR_IMAGE")
    sp.add_argument("--reference", action="append", metavar="DRIVE_OR_IMAGE")
    sp.set_defaults(func=cmd_fingerprint)

    sp = sub.add_parser(
        "demo", parents=[common], help="process simulated drives (loop devices, a counterfeit)"
    )
    sp.add_argument("--keep", action="store_true", help="keep the demo state dir")
    sp.add_argument(
        "--event-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="stop when udev sends no event this long after a drive is plugged in (default 30)",
    )
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return ExitCode.USAGE if exc.code else ExitCode.OK
    from ..log import configure

    configure(json=None, level=getattr(args, "log_level", "warning"))
    i18n.use(i18n.choose())  # the config's station.language, once it is read (_config)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return int(args.func(args))
    except FdffdError as err:
        print(f"fdffctl: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("fdffctl: " + i18n._("interrupted"), file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

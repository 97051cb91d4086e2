"""The arguments of the audit commands, apart from their code: building fdffctl's parser
(``fdffctl --help``) must not import the audit log, and with it cryptography."""

from __future__ import annotations

import argparse


def add_lookup_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("serial", metavar="SERIAL", help="the drive's USB serial (or volume serial)")
    sp.add_argument("--key", metavar="FILE", help="the program's audit PRIVATE key")
    sp.add_argument(
        "--serial-secret",
        metavar="FILE",
        help="an archived serial.secret: also finds records written before sealing",
    )
    sp.add_argument(
        "--volume-id", action="store_true", help="SERIAL is the volume serial (e.g. 1234-ABCD)"
    )
    sp.add_argument("--log", metavar="FILE", help="audit log (default <state_dir>/audit.jsonl)")


def add_verify_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--allow-empty", action="store_true", help="a missing or empty log is no failure"
    )
    sp.add_argument(
        "--fingerprint", metavar="HEX", help="the station key the log must be signed by"
    )
    sp.add_argument("--expect-head", metavar="HASH", help="a remembered head (with --expect-lines)")
    sp.add_argument("--expect-lines", type=int, metavar="N", help="its line count")
    sp.add_argument(
        "--checkpoint", metavar="FILE", help="a checkpoint (fdffctl audit checkpoint's text)"
    )

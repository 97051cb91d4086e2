"""``fdffctl payload ...``: import, export, list, verify and prune payload profiles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExitCode, UsageError
from ..fsutil import make_state_dir
from .common import config_of as _config
from .common import print_json as _print_json

if TYPE_CHECKING:
    from ..config import Config


def _payload_setup(cfg: Config) -> Any:
    """The station's import policy; the state dir made (0700) if the payloads are in it."""
    from ..payload import ImportPolicy

    payload_dir, state_dir = cfg.station.payload_dir, cfg.station.state_dir
    if state_dir == payload_dir or state_dir in payload_dir.parents:
        make_state_dir(state_dir)  # 0700, as the unit makes it, whoever is first
    return ImportPolicy.from_settings(cfg.payload)


def _print_imported(args: argparse.Namespace, result: Any) -> int:
    from .payload_text import format_imported, import_summary

    if args.json:
        _print_json(import_summary(result))
    else:
        print(format_imported(result))
    return ExitCode.OK


def cmd_payload_add(args: argparse.Namespace) -> int:
    from ..payload import import_directory

    cfg = _config(args)
    policy = _payload_setup(cfg)
    result = import_directory(
        cfg.station.payload_dir,
        args.name,
        Path(args.src),
        filesystem=cfg.job.filesystem,
        policy=policy,
        priority=_priority_list(args.priority),
    )
    return _print_imported(args, result)


def _priority_list(path: str | None) -> list[str]:
    if path is None:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--priority {path}: cannot read it as UTF-8 text ({err})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_payload_import(args: argparse.Namespace) -> int:
    from ..payload import import_bundle

    cfg = _config(args)
    policy = _payload_setup(cfg)
    result = import_bundle(
        cfg.station.payload_dir, Path(args.bundle), filesystem=cfg.job.filesystem, policy=policy
    )
    return _print_imported(args, result)


def cmd_payload_export(args: argparse.Namespace) -> int:
    from ..payload import export_bundle, load_private_key
    from .payload_text import format_exported

    cfg = _config(args)
    key = load_private_key(Path(args.sign)) if args.sign else None
    result = export_bundle(
        cfg.station.payload_dir, args.name, Path(args.out), key=key, version=args.version
    )
    print(format_exported(result))
    return ExitCode.OK


def cmd_payload_keygen(args: argparse.Namespace) -> int:
    from ..payload import generate_key
    from ..payload.signing import key_text
    from .payload_text import format_keygen

    public = generate_key(Path(args.keyfile))
    print(format_keygen(Path(args.keyfile), key_text(public)))
    return ExitCode.OK


def cmd_payload_list(args: argparse.Namespace) -> int:
    from ..payload import list_profiles
    from .payload_text import format_list

    cfg = _config(args)
    infos = list_profiles(cfg.station.payload_dir)
    if args.json:
        _print_json(
            {"payload_dir": str(cfg.station.payload_dir), "profiles": [i.to_json() for i in infos]}
        )
    else:
        print(format_list(infos, cfg.station.payload_dir))
    return ExitCode.OK


def cmd_payload_verify(args: argparse.Namespace) -> int:
    from ..payload import Trust, verify_profile
    from .payload_text import format_verify

    cfg = _config(args)
    trust = Trust.from_settings(cfg.payload)
    report = verify_profile(cfg.station.payload_dir, args.name, trust=trust)
    if args.json:
        _print_json(report.to_json())
    else:
        print(format_verify(report))
    return ExitCode.OK if report.ok else ExitCode.FAILED


def cmd_payload_prune(args: argparse.Namespace) -> int:
    from ..payload import prune_profile
    from .payload_text import format_pruned

    cfg = _config(args)
    report = prune_profile(cfg.station.payload_dir, args.name, keep=args.keep)
    if args.json:
        _print_json(report.to_json())
    else:
        print(format_pruned(report))
    return ExitCode.OK

"""``fdffd``: the station daemon.  Parse, load the config, run until SIGTERM."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH, load_config
from ..errors import ExitCode, FdffdError
from ..log import configure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fdffd", description="fdffd station daemon")
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"config file (default {DEFAULT_CONFIG_PATH} if present)",
    )
    p.add_argument("--check-config", action="store_true", help="validate the config and exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"fdffd {__version__}")
    args = p.parse_args(argv)
    path = args.config or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    try:
        config = load_config(path)
        # trusted curator keys load; with payload.require_signed, the profile is signed
        from ..payload.policy import check_station_content

        check_station_content(config)
    except FdffdError as err:
        print(f"fdffd: {err}", file=sys.stderr)
        return err.exit_code
    if args.check_config:
        print("fdffd: config ok")
        return ExitCode.OK
    configure(json=None, level=args.log_level)
    from ..station.daemon import Daemon

    try:
        return Daemon(config).run()
    except FdffdError as err:
        print(f"fdffd: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

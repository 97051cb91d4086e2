"""``fdffd``: the station daemon entry point.

The hotplug station (udev watch, worker pool, control socket) is issue 4 and is not
built yet.  Until then this entry point validates the config and says so plainly,
with a non-zero exit, instead of pretending to run a station.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH, load_config
from ..errors import ExitCode, FdffdError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fdffd", description="fdffd station daemon")
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"config file (default {DEFAULT_CONFIG_PATH} if present)",
    )
    p.add_argument("--check-config", action="store_true", help="validate the config and exit")
    p.add_argument("--version", action="version", version=f"fdffd {__version__}")
    args = p.parse_args(argv)
    path = args.config or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    try:
        load_config(path)
    except FdffdError as err:
        print(f"fdffd: {err}", file=sys.stderr)
        return err.exit_code
    if args.check_config:
        print("fdffd: config ok")
        return ExitCode.OK
    print(
        "fdffd: the hotplug station daemon is not available in this version; "
        "process drives one at a time with `fdffctl process DEVICE`",
        file=sys.stderr,
    )
    return ExitCode.USAGE


if __name__ == "__main__":
    sys.exit(main())

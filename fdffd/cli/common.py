"""What every fdffctl command shares: the config it reads, and JSON on standard output.

Nothing heavy is imported here (``fdffctl --help`` stays quick): the config module, and with
it pydantic, is loaded when a command reads its config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import i18n

if TYPE_CHECKING:
    from ..config import Config

#: config.DEFAULT_CONFIG_PATH, without importing pydantic (a test holds them equal)
DEFAULT_CONFIG_PATH = Path("/etc/fdffd/fdffd.toml")


def config_of(args: argparse.Namespace) -> Config:
    from ..config import load_config

    path = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    cfg = load_config(path)
    i18n.use(i18n.choose(cfg.station.language))
    return cfg


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=None) + "\n")

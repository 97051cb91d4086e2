"""Run ``fdffctl`` as operators do: a real process, its exit code and its JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

# the one config writer, shared with the stations of the test kit
from fdffd_testkit.station import write_config as write_config


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def record(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout.strip().splitlines()[-1]))


def fdffctl(*args: str, timeout: float = 600) -> Run:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run(
        [sys.executable, "-m", "fdffd.cli.ctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def device_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()

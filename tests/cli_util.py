"""Run ``fdffctl`` as operators do: a real process, its exit code and its JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def record(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout.strip().splitlines()[-1]))


def write_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """A config with its state under ``tmp_path``; loop devices allowed unless overridden."""
    body = {
        "station": {
            "id": "test-station",
            "state_dir": str(tmp_path / "state"),
            "payload_dir": str(tmp_path / "payloads"),
        },
        "drives": {"allow_loop": True},
        "job": {"profile": ""},  # wipe only, unless a test imports a payload profile
    }
    for name, values in sections.items():
        body.setdefault(name, {}).update(values)
    lines = []
    for name, values in body.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / "fdffd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


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

"""Running and timing commands, statistics, and the scratch config a benchmark job uses."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: generous bound on any one command: the bench must end even if something hangs
TIMEOUT = 900.0


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the table or the JSON."""
    print(f"bench: {msg}", file=sys.stderr, flush=True)


@dataclass
class Timed:
    """One command run: wall seconds, CPU seconds of the child (user, sys), exit code, output."""

    wall: float
    user: float
    sys: float
    rc: int
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def run_timed(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = TIMEOUT,
    stdout_to: Path | None = None,
    preexec: Callable[[], None] | None = None,
) -> Timed:
    """Run ``cmd`` and measure it.  CPU comes from ``RUSAGE_CHILDREN`` before and after, so it
    counts the child and everything it waited for (and nothing else: we run one at a time).
    ``preexec`` runs in the child before it execs (joining a throttled cgroup)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    if stdout_to is not None:
        with open(stdout_to, "wb") as out:
            proc = subprocess.run(
                list(cmd),
                stdout=out,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                timeout=timeout,
                check=False,
                preexec_fn=preexec,
            )
        text_out = ""
    else:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            env=env,
            cwd=cwd,
            timeout=timeout,
            check=False,
            preexec_fn=preexec,
        )
        text_out = proc.stdout.decode(errors="replace")
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Timed(
        wall,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        proc.returncode,
        text_out,
        proc.stderr.decode(errors="replace"),
    )


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and spread ((max-min)/median) of repeated measurements."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "spread": None, "n": 0, "runs": []}
    med = statistics.median(vals)
    return {
        "median": med,
        "min": min(vals),
        "max": max(vals),
        "spread": (max(vals) - min(vals)) / med if med else 0.0,
        "n": len(vals),
        "runs": [round(v, 4) for v in vals],
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def missing_tools(names: Sequence[str]) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def fdffctl_path() -> str:
    """``fdffctl`` from the venv this interpreter belongs to (scripts/bench: .venv)."""
    here = Path(sys.executable).parent / "fdffctl"
    if here.exists():
        return str(here)
    found = shutil.which("fdffctl")
    if found is None:
        raise SystemExit(
            "bench: fdffctl not found next to the interpreter or on PATH "
            "(run scripts/bench, which installs fdffd into .venv)"
        )
    return found


def write_config(
    workdir: Path,
    *,
    passes: int = 1,
    profile: str = "",
    extra_job: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """A config for loop devices with its own state and payload dirs under ``workdir``
    (written to ``workdir/name``, by default a name made of the passes and the profile).

    ``profile`` "" means no payload: the image pass is partition table, filesystem and fill."""
    state = workdir / "state"
    payloads = workdir / "payloads"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    payloads.mkdir(parents=True, exist_ok=True)
    job: dict[str, Any] = {"passes": passes, "profile": profile}  # "": no payload
    job.update(extra_job or {})
    lines = [
        "[station]",
        'id = "bench"',
        f'state_dir = "{state}"',
        f'payload_dir = "{payloads}"',
        "[drives]",
        "allow_loop = true",
        'min_size = "1MiB"',
        "[job]",
    ]
    for k, v in job.items():
        lines.append(f"{k} = {v!r}" if isinstance(v, int) else f'{k} = "{v}"')
    path = workdir / (name or f"fdffd-p{passes}{'-' + profile if profile else ''}.toml")
    path.write_text("\n".join(lines) + "\n")
    return path


def fdffd_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LC_ALL", "C.UTF-8")
    return env

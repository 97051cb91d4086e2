"""What the benchmark ran on: CPU, cores, kernel, Python, fdffd version, load."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    """Read-only git queries (never anything that changes the repository)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict[str, Any]:
    import fdffd

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fdffd": fdffd.__version__,
        "commit": commit + ("+dirty" if dirty else "") if commit else "",
        "interpreter": sys.executable,
        "load_start": loadavg(),
    }


def one_line(m: dict[str, Any]) -> str:
    parts = [
        f"{m['cpu']} ({m['cores']} cores, {m['arch']}, {m['memory']})",
        f"Linux {m['kernel']}",
        f"Python {m['python']}",
        f"fdffd {m['fdffd']}" + (f" @ {m['commit']}" if m.get("commit") else ""),
        m["date"],
    ]
    load = f"load {m['load_start']}"
    if m.get("load_end"):
        load += f" -> {m['load_end']}"
    return "; ".join(parts) + f"; {load}"

"""The quick commands: how long `fdffctl --help` and `fdffctl status` (no daemon) take.

Wall time of the whole command, interpreter start-up included, median of ``runs`` runs; the
reference is the same interpreter doing nothing (``python -c pass``).  Also which heavy
modules each command imports (none of numpy, cryptography, pydantic for ``--help``).
``python -m bench.cli`` prints the figures alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from .runner import fdffd_env, log, run_timed, summary

RUNS = 20
HEAVY = ("numpy", "cryptography", "pydantic", "structlog", "pyudev", "blake3", "xxhash")
_PROBE = (
    "import sys\n"
    "from fdffd.cli.ctl import main\n"
    "code = main(sys.argv[1:])\n"
    "print('heavy:' + ','.join(m for m in {heavy!r} if m in sys.modules))\n"
)


def _heavy_imports(python: str, args: list[str]) -> list[str]:
    """The heavy modules ``fdffctl ARGS`` has imported when it returns (a real process)."""
    proc = subprocess.run(
        [python, "-c", _PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        env=fdffd_env(),
        check=False,
    )
    marks = [line for line in proc.stdout.splitlines() if line.startswith("heavy:")]
    return [m for m in marks[-1].removeprefix("heavy:").split(",") if m] if marks else ["?"]


def measure(fdffctl: str, workdir: Path, runs: int = RUNS) -> dict[str, Any]:
    """``fdffctl --help`` and ``fdffctl status`` with no daemon (a config whose control socket
    does not exist: the "not running" answer, exit 2), ``runs`` times each."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "cli.toml"
    config.write_text(f'[station]\ncontrol_socket = "{workdir / "no-daemon.sock"}"\n')
    python = str(Path(fdffctl).parent / "python")
    if not Path(python).exists():
        python = sys.executable
    cases = {
        "fdffctl --help": ["--help"],
        "fdffctl status (no daemon)": ["status", "--config", str(config)],
    }
    env = fdffd_env()
    baseline = [run_timed([python, "-c", "pass"], env=env).wall for _ in range(runs)]
    out: dict[str, Any] = {"runs": runs, "python_s": summary(baseline), "cases": []}
    for name, args in cases.items():
        walls, rcs = [], set()
        for _ in range(runs):
            t = run_timed([fdffctl, *args], env=env)
            walls.append(t.wall)
            rcs.add(t.rc)
        s = summary(walls)
        log(f"cli: {name}: median {s['median']:.3f} s over {runs} runs")
        out["cases"].append(
            {
                "case": name,
                "wall_s": s,
                "exit": sorted(rcs),
                "heavy_imports": _heavy_imports(python, args),
            }
        )
    return out


def main() -> int:
    import tempfile

    from .report import cli_rows
    from .runner import fdffctl_path

    with tempfile.TemporaryDirectory(prefix="fdffd-bench-cli-") as tmp:
        result = measure(fdffctl_path(), Path(tmp))
    for row in cli_rows(result):
        print("  ".join(row).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

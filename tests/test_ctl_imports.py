"""Quick commands stay quick: what `fdffctl --help` and `fdffctl status` import.

Checked in a real interpreter (a subprocess: this one has imported everything already), by the
modules present in ``sys.modules`` once the command has returned, not by timing (the figures
are bench/cli.py's, in docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fdffd.cli import ctl
from fdffd.config import DEFAULT_CONFIG_PATH

HEAVY = ("numpy", "cryptography", "pydantic", "pydantic_core", "structlog", "pyudev")
PROBE = (
    "import sys\n"
    "from fdffd.cli.ctl import main\n"
    "code = main(sys.argv[1:])\n"
    f"print('loaded:', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    "sys.exit(code)\n"
)


def _run(*args: str) -> tuple[int, str, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False
    )
    marks = [line for line in proc.stdout.splitlines() if line.startswith("loaded:")]
    assert marks, proc.stdout + proc.stderr
    loaded = {m for m in marks[-1].removeprefix("loaded:").strip().split(",") if m}
    return proc.returncode, proc.stdout + proc.stderr, loaded


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["status", "--help"],
        ["audit", "verify", "--help"],
        ["payload", "add", "--help"],
        ["no-such-command"],
    ],
    ids=" ".join,
)
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    code, out, loaded = _run(*args)
    assert code == (2 if args == ["no-such-command"] else 0), out
    assert not loaded, f"fdffctl {' '.join(args)} imported {sorted(loaded)}"
    if args == ["--help"]:
        assert "Operate an fdffd drive station." in out and "status" in out


def test_status_without_daemon_imports_no_numpy_nor_cryptography(tmp_path: Path) -> None:
    """`status` loads the config (pydantic) and the control client, nothing of the job."""
    config = tmp_path / "fdffd.toml"
    config.write_text(f'[station]\ncontrol_socket = "{tmp_path / "none.sock"}"\n')
    code, out, loaded = _run("status", "--config", str(config))
    assert code == 2 and "fdffd is not running" in out, out
    assert not loaded & {"numpy", "cryptography", "pyudev"}, sorted(loaded)
    assert "pydantic" in loaded  # the config is validated: the probe sees real imports


def test_ctl_default_config_path_is_the_config_modules() -> None:
    assert ctl.DEFAULT_CONFIG_PATH == DEFAULT_CONFIG_PATH

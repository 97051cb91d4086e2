"""``pip install .`` ships the station only: the wheel holds no simulation code and requires no
test-only package, and a station installed from it without the test kit answers
``fdffctl demo`` with exit 2 and what to install.

The wheel is built from a copy of the checkout (the build leaves ``build/`` behind), with the
setuptools of the test environment (no build isolation: no download)."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: packages only the tests, the demo or the benchmark need: never a station's requirement
TEST_ONLY = {
    "fdffd-testkit",
    "mfusepy",
    "psutil",
    "pytest",
    "hypothesis",
    "ruff",
    "mypy",
    "matplotlib",
    "setuptools",
}
SIMULATION = ("sim/", "fdffd_testkit", "fakedrive", "loopdev", "memdisk", "markers", "udevd")


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement (``Foo_Bar>=1; extra == "x"``)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert m, requirement
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


@cache
def _wheel(workdir: Path) -> Path:
    src = workdir / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    out = workdir / "wheels"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("fdffd-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_the_station_and_no_simulation(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"fdffd", next(t for t in tops if t.endswith(".dist-info"))}, sorted(tops)
    code = [n for n in names if n.endswith(".py")]
    assert {"fdffd/cli/ctl.py", "fdffd/cli/daemon.py", "fdffd/devices/hotplug.py"} <= set(code)
    assert [n for n in code if any(s in n for s in SIMULATION)] == []
    # every module of the station's source tree is in it
    tree = {str(p.relative_to(ROOT)) for p in (ROOT / "fdffd").rglob("*.py")}
    assert tree == set(code)
    # and the translations, compiled (scripts/catalogs)
    catalogs = {str(p.relative_to(ROOT)) for p in (ROOT / "fdffd/locale").rglob("*.mo")}
    assert catalogs and catalogs <= set(names), sorted(catalogs)


def test_the_wheel_requires_no_test_only_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    runtime = {_name(r) for r in requires if "extra ==" not in r}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert runtime == {_name(r) for r in declared}
    assert runtime == {
        "pyudev",
        "pydantic",
        "structlog",
        "cryptography",
        "numpy",
        "xxhash",
        "blake3",
        "pynacl",
        "qrcode",
    }, requires
    assert runtime.isdisjoint(TEST_ONLY)
    # the simulation's own dependencies are the kit's (testkit/pyproject.toml)
    kit = tomllib.loads((ROOT / "testkit" / "pyproject.toml").read_text())["project"]
    assert {"fdffd", "mfusepy", "psutil"} == {_name(r) for r in kit["dependencies"]}


def _station_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv holding the wheel, and its dependencies from this test environment's
    site-packages (a path in a .pth file: the .pth files there, such as the test kit's
    editable install, are not run), but not the test kit.  Returns its bin directory."""
    venv = tmp_path / "station-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    py = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "test-env-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_fdffctl_demo_without_the_kit_says_what_to_install(tmp_path: Path, wheel: Path) -> None:
    bindir = _station_venv(tmp_path, wheel)
    probe = subprocess.run(
        [
            str(bindir / "python"),
            "-c",
            "import fdffd.cli.ctl, fdffd.cli.daemon, fdffd.devices.hotplug, fdffd\n"
            "print(fdffd.__file__)\n"
            "try:\n import fdffd_testkit\nexcept ModuleNotFoundError:\n print('no kit')",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr  # the station's dependencies are all there
    where, kit = probe.stdout.split()[0], probe.stdout.strip().splitlines()[-1]
    assert where.startswith(str(tmp_path)) and kit == "no kit", probe.stdout
    run = subprocess.run(
        [str(bindir / "fdffctl"), "demo"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    assert "simulated drives are not installed" in run.stderr
    assert "pip install ./testkit" in run.stderr and "scripts/demo" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_installed_station_speaks_korean(tmp_path: Path, wheel: Path) -> None:
    """The wheel's compiled catalog is found where pip installed it: ``LANGUAGE=ko fdffctl
    status`` with no daemon says so in Korean."""
    bindir = _station_venv(tmp_path, wheel)
    config = tmp_path / "fdffd.toml"
    config.write_text(f'[station]\ncontrol_socket = "{tmp_path / "none.sock"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    run = subprocess.run(
        [str(bindir / "fdffctl"), "status", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
        env={**env, "LANGUAGE": "ko", "LANG": "C.UTF-8"},
    )
    assert run.returncode != 0 and "fdffd가 실행 중이 아니에요" in run.stderr, run.stderr

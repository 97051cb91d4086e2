"""The house stays in order: small rooms, imports pointing down, devices touched in one place.

- no function in ``fdffd/`` above cyclomatic complexity 20 (radon's measure);
- no module in ``fdffd/`` above 600 lines;
- imports point down the house: cli -> station -> job -> payload -> imaging -> the ground
  floor (the import-linter contracts in pyproject.toml, run here);
- only ``fdffd/devices`` touches devices: reads ``/sys``, names ``/dev`` nodes, calls
  ``ioctl`` (pyudev is import-linter's contract "udev").

Each check lists every offender, so one run shows all that is left to do.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class, Function

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fdffd"
MAX_COMPLEXITY = 20
MAX_LINES = 600

#: string constants outside fdffd/devices that look like device paths but are not device
#: access, each with the reason
NOT_DEVICE_ACCESS = {
    "/dev/shm": "a tmpfs for simulated drives' backing files, not a device",
}
#: modules whose device paths are data, never opened, each with the reason
DEVICE_NAMES_AS_DATA = {
    "fdffd/station/status.py": "a sample status for the renderers' tests and docs",
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _functions(blocks: Iterable[Function | Class]) -> Iterator[Function]:
    """Every function radon found: top-level ones, methods, and functions nested in them."""
    for block in blocks:
        if isinstance(block, Class):
            yield from _functions(block.methods)
            yield from _functions(block.inner_classes)
        else:
            yield block
            yield from _functions(block.closures)


def test_no_function_is_too_complex() -> None:
    """No function in fdffd/ has a cyclomatic complexity above 20 (radon)."""
    offenders = [
        f"{_name(path)}:{fn.lineno} {fn.fullname} has complexity {fn.complexity}"
        for path in _modules()
        for fn in _functions(cc_visit(path.read_text(encoding="utf-8")))
        if fn.complexity > MAX_COMPLEXITY
    ]
    assert not offenders, "split these into named steps:\n" + "\n".join(offenders)


def test_no_module_is_too_long() -> None:
    """No module in fdffd/ has more than 600 lines."""
    offenders = [
        f"{_name(path)} has {n} lines"
        for path in _modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not offenders, "split these by responsibility:\n" + "\n".join(offenders)


def test_imports_point_down_the_house() -> None:
    """The import-linter contracts of pyproject.toml hold: floors import only floors below,
    only fdffd.devices imports pyudev, and imaging stays pure."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[run.stdout.find("Contracts") :] + run.stderr


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or other bare string statements."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _device_access(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "ioctl":
            yield f"{_name(path)}:{node.lineno} calls ioctl"
        elif isinstance(node, ast.ImportFrom) and any(a.name == "ioctl" for a in node.names):
            yield f"{_name(path)}:{node.lineno} imports ioctl"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and (node.value == "/sys" or node.value.startswith(("/sys/", "/dev/")))
            and not node.value.startswith(tuple(NOT_DEVICE_ACCESS))
        ):
            yield f"{_name(path)}:{node.lineno} names {node.value!r}"


def test_only_devices_touch_devices() -> None:
    """Outside fdffd/devices no module reads /sys, names a /dev node or calls ioctl."""
    offenders = [
        line
        for path in _modules()
        if PACKAGE / "devices" not in path.parents and _name(path) not in DEVICE_NAMES_AS_DATA
        for line in _device_access(path)
    ]
    assert not offenders, "move these into fdffd/devices:\n" + "\n".join(offenders)

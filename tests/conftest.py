"""Shared fixtures: real loop devices and FUSE-simulated fake drives, removed after each test.

``loop(size)`` gives a LoopDevice over a sparse tmpfs file; ``fake(FakeSpec(...))`` gives a
FakeDrive (counterfeit, failing or honest) behind a loop device; ``station(**job)`` gives a real
daemon under a real udevd (``udevd``), confined to its own loop devices. Both skip the test with the
reason when the machine cannot provide them (not root, no /dev/fuse, no losetup).

Under ``CI=true`` a test that cannot run fails instead, naming what is missing: CI must not
pass on a machine where half the checks never ran (``scripts/bootstrap`` installs everything
the suite needs).  Heavy checks (marker ``heavy``: the package install from PyPI, and the like)
are deselected unless ``--heavy`` or a ``-m`` expression asks for them; deselected is not
skipped, so CI stays green without them and says how many were left out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from fdffd_testkit.fakedrive import FakeDrive, FakeSpec, fake_drive
from fdffd_testkit.loopdev import LoopDevice, live_devices, loop_device
from fdffd_testkit.station import Station, station_factory
from fdffd_testkit.udevd import UDEVD, running_udevd

from .unprivileged import Nobody, nobody_python, unavailable

#: ``CI=true`` (GitHub Actions, GitLab, most CI systems set it): a skip is a failure
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--heavy",
        action="store_true",
        help="also run the heavy checks (marker heavy), deselected by default",
    )


#: markers of checks deselected by default (never skipped): run with --heavy or -m MARKER
HEAVY_MARKERS = ("heavy", "package")


def _is_heavy(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) is not None for m in HEAVY_MARKERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--heavy") or config.option.markexpr:
        return  # asked for them, or chose by marker explicitly
    heavy = [item for item in items if _is_heavy(item)]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if not _is_heavy(item)]


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: cannot run here: {_skip_reason(report.longrepr)}. Under CI a test that "
            "cannot run fails (scripts/bootstrap installs what the suite needs; -k or "
            "--deselect leaves a test out explicitly)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: {collector.nodeid} cannot be collected on this machine "
            f"({_skip_reason(report.longrepr)}); under CI that fails"
        )


def _loop_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "device tests need root (loop devices)"
    if shutil.which("losetup") is None:
        return "device tests need losetup (util-linux)"
    if not Path("/dev/loop-control").exists():
        return "device tests need /dev/loop-control (loop module)"
    return None


def _fuse_unavailable() -> str | None:
    if (why := _loop_unavailable()) is not None:
        return why
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "fake-drive tests need /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "fake-drive tests need fusermount3 (fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"fake-drive tests need mfusepy and libfuse3: {exc}"
    return None


@pytest.fixture(scope="session")
def loop_support(request: pytest.FixtureRequest) -> None:
    """Skip the requesting test unless loop devices can be created here; keep a udevd running
    for them (the safety gate refuses a device udev has no record of)."""
    if (why := _loop_unavailable()) is not None:
        pytest.skip(why)
    request.getfixturevalue("udevd")


@pytest.fixture(scope="session")
def fuse_support(loop_support: None) -> None:
    """Skip the requesting test unless FUSE fake drives can be created here."""
    if (why := _fuse_unavailable()) is not None:
        pytest.skip(why)


@pytest.fixture
def loop(loop_support: None) -> Iterator[Callable[..., LoopDevice]]:
    """Factory: ``loop(size, **kw)`` -> LoopDevice; all of them detached after the test."""
    with ExitStack() as stack:

        def make(size: int | None = None, **kw: object) -> LoopDevice:
            return stack.enter_context(loop_device(size, **kw))  # type: ignore[arg-type]

        yield make


@pytest.fixture
def fake(fuse_support: None) -> Iterator[Callable[..., FakeDrive]]:
    """Factory: ``fake(FakeSpec(...), **kw)`` -> FakeDrive; all torn down after the test."""
    with ExitStack() as stack:

        def make(spec: FakeSpec, **kw: object) -> FakeDrive:
            return stack.enter_context(fake_drive(spec, **kw))  # type: ignore[arg-type]

        yield make


@pytest.fixture(scope="session")
def udevd() -> Iterator[None]:
    """A systemd-udevd answering for the session (started, and stopped, if none answers)."""
    if not os.path.exists(UDEVD):
        pytest.skip(f"{UDEVD} not installed (Debian package udev)")
    with running_udevd():
        yield


@pytest.fixture
def station(udevd: None, tmp_path: Path, fuse_support: None) -> Iterator[Callable[..., Station]]:
    """Factory: ``station(**job)`` -> a Station (fdffd_testkit.station), killed after the test."""
    with station_factory(tmp_path) as make:
        yield make


@pytest.fixture(scope="session")
def nobody() -> Iterator[Nobody]:
    """``nobody.python(*args)``: Python as the user nobody, with fdffd importable wherever the
    checkout is (tests/unprivileged.py builds a world-readable copy once a session)."""
    if (why := unavailable()) is not None:
        pytest.skip(why)
    with nobody_python() as nb:
        yield nb


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = live_devices()
    if leaked:
        print(f"\nWARNING: test rig left loop devices attached: {', '.join(leaked)}")

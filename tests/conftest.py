"""Shared fixtures: real loop devices and FUSE-simulated fake drives, removed after each test.

``loop(size)`` gives a LoopDevice over a sparse tmpfs file; ``fake(FakeSpec(...))`` gives a
FakeDrive (counterfeit, failing or honest) behind a loop device; ``station(**job)`` gives a real
daemon under a real udevd (``udevd``), confined to its own loop devices. Both skip the test with the
reason when the machine cannot provide them (not root, no /dev/fuse, no losetup).
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = live_devices()
    if leaked:
        print(f"\nWARNING: test rig left loop devices attached: {', '.join(leaked)}")

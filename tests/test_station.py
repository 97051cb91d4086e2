"""The station daemon under a real systemd-udevd: hotplug, parallel jobs, status, recovery.

Each test confines its daemon to the loop devices it creates itself (``drives.ports`` globs
over the backing file's path), so the daemon never touches another device on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from fdffd.sim.fakedrive import FakeSpec, fake_drive
from fdffd.sim.loopdev import loop_device
from fdffd.sim.udevd import UDEVD, running_udevd

from .cli_util import fdffctl, write_config

MiB = 1 << 20


@pytest.fixture(scope="session")
def udevd() -> Iterator[None]:
    """A running systemd-udevd for the session (started, and stopped, if none runs)."""
    if not os.path.exists(UDEVD):
        pytest.skip(f"{UDEVD} not installed (Debian package udev)")
    with running_udevd():
        yield


class Station:
    """A daemon process of our own, with its config and state under ``root``."""

    def __init__(self, root: Path, shm: Path, **job: Any) -> None:
        self.root = root
        self.shm = shm
        self.config = write_config(
            root,
            station={"control_socket": str(root / "control.sock")},
            drives={"allow_loop": True, "ports": [f"loop:{shm}/*"]},
            job={"workers": 8, **job},
        )
        self.proc: subprocess.Popen[str] | None = None
        self.log = root / "daemon.log"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fdffd.cli.daemon", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (self.root / "control.sock").exists() and self.status_or_none() is not None:
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError("the daemon did not come up: " + self.log.read_text())

    def status_or_none(self) -> dict[str, Any] | None:
        run = fdffctl("status", "--json", "--config", str(self.config), timeout=10)
        return run.record if run.code == 0 else None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)

    def records(self) -> list[dict[str, Any]]:
        log = self.root / "state" / "audit.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def wait_records(self, n: int, timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.records()
            if len(recs) >= n:
                return recs
            time.sleep(0.2)
        raise AssertionError(
            f"{len(self.records())} of {n} records; log:\n{self.log.read_text()[-3000:]}"
        )


@pytest.fixture
def station(udevd: None, tmp_path: Path, fuse_support: None) -> Iterator[Callable[..., Station]]:
    shm = Path(tempfile.mkdtemp(prefix="fdffd-station-", dir="/dev/shm"))
    made: list[Station] = []

    def make(**job: Any) -> Station:
        st = Station(tmp_path, shm, **job)
        made.append(st)
        return st

    try:
        yield make
    finally:
        for st in made:
            if st.proc and st.proc.poll() is None:
                st.stop(signal.SIGKILL)
        shutil.rmtree(shm, ignore_errors=True)


@contextmanager
def _drives(shm: Path, specs: list[int | FakeSpec]) -> Iterator[list[str]]:
    with ExitStack() as stack:
        paths = []
        for spec in specs:
            if isinstance(spec, FakeSpec):
                paths.append(stack.enter_context(fake_drive(spec, directory=str(shm))).path)
            else:
                paths.append(stack.enter_context(loop_device(spec, directory=shm)).path)
        yield paths


def test_eight_drives_at_once_each_processed_once(station: Callable[..., Station]) -> None:
    """8 drives attached within a second: processed concurrently, exactly one record each,
    the counterfeit among them found, progress visible in status, and the log verifies."""
    st = station()
    st.start()
    fake = FakeSpec(announced=256 * MiB, real=64 * MiB, kind="wraparound")
    t0 = time.monotonic()
    with _drives(st.shm, [192 * MiB] * 7 + [fake]) as paths:
        attach_seconds = time.monotonic() - t0
        seen_active: dict[str, float] = {}
        max_active = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(st.records()) < 8:
            status = st.status_or_none()
            if status:
                active = [p for p in status["ports"] if p["state"] == "active"]
                max_active = max(max_active, len(active))
                for p in active:
                    if p["percent"] is not None:
                        seen_active[p["device"]] = p["percent"]
            time.sleep(0.05)
        recs = st.wait_records(8)
        time.sleep(2)  # events caused by the jobs' own writes must start nothing more
        assert len(st.records()) == 8
    assert attach_seconds < 5
    by_device = {r["device"]["path"]: r for r in recs}
    assert sorted(by_device) == sorted(paths), "one record per drive"
    fake_rec = by_device[paths[-1]]
    assert fake_rec["verdict"] == "counterfeit"
    assert all(by_device[p]["verdict"] == "ok" for p in paths[:-1])
    assert max_active >= 2, "jobs ran concurrently"
    assert seen_active, "status showed active drives with their progress"
    assert fdffctl("audit", "verify", "--config", str(st.config)).code == 0
    assert st.stop() == 0


def test_drive_dying_mid_wipe_fails_alone(station: Callable[..., Station]) -> None:
    """A drive that dies mid-wipe gets a failed record; the others finish ok."""
    st = station()
    st.start()
    with _drives(st.shm, [FakeSpec.honest(256 * MiB), 192 * MiB, 192 * MiB]) as paths:
        with fake_drive(FakeSpec.honest(256 * MiB), directory=str(st.shm)) as dying:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = st.status_or_none() or {"ports": []}
                port = next((p for p in status["ports"] if p["device"] == dying.path), None)
                if port and port["stage"] in ("image", "verify"):
                    break
                time.sleep(0.02)
            dying.kill_server()
            recs = st.wait_records(4)
        by_device = {r["device"]["path"]: r for r in recs}
        assert by_device[dying.path]["verdict"] == "failed"
        assert all(by_device[p]["verdict"] == "ok" for p in paths)
    st.stop()


def test_kill_9_then_restart_records_the_running_job_interrupted(
    station: Callable[..., Station],
) -> None:
    """After kill -9 mid-job and a restart, the running job has an interrupted record, the
    drive is not started over, and the audit log verifies."""
    st = station()
    st.start()
    with _drives(st.shm, [FakeSpec.honest(384 * MiB)]) as (path,):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = st.status_or_none() or {"ports": []}
            if any(p["device"] == path and p["state"] == "active" for p in status["ports"]):
                break
            time.sleep(0.02)
        st.stop(signal.SIGKILL)
        assert st.records() == []
        st.start()
        (rec,) = st.wait_records(1)
        assert rec["verdict"] == "interrupted" and rec["device"]["path"] == path
        time.sleep(2)
        assert len(st.records()) == 1, "the drive was not started over"
    assert fdffctl("audit", "verify", "--config", str(st.config)).code == 0
    st.stop()


def test_sigterm_records_running_jobs_interrupted(station: Callable[..., Station]) -> None:
    """SIGTERM stops cleanly: running jobs are recorded interrupted, exit 0, log intact."""
    st = station()
    st.start()
    with _drives(st.shm, [FakeSpec.honest(384 * MiB)]) as (path,):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = st.status_or_none() or {"ports": []}
            if any(
                p["device"] == path and p["stage"] in ("image", "verify") for p in status["ports"]
            ):
                break
            time.sleep(0.02)
        assert st.stop() == 0
    (rec,) = st.records()
    assert rec["verdict"] == "interrupted"
    assert fdffctl("audit", "verify", "--config", str(st.config)).code == 0


def test_too_slow_drive_is_failed(station: Callable[..., Station]) -> None:
    """A drive below job.min_speed for job.slow_window is failed as too slow."""
    st = station(min_speed="1TB", slow_window=0.3)
    st.start()
    with _drives(st.shm, [FakeSpec.honest(512 * MiB)]):
        (rec,) = st.wait_records(1)
    assert rec["verdict"] == "failed"
    assert "too slow" in rec["error"]["message"]
    st.stop()


def test_status_needs_the_daemon(tmp_path: Path) -> None:
    """fdffctl status without a daemon says it is not running, exit 2."""
    cfg = write_config(tmp_path, station={"control_socket": str(tmp_path / "none.sock")})
    run = fdffctl("status", "--config", str(cfg))
    assert run.code == 2
    assert "not running" in run.stderr


def test_hotplug_monitor_is_recreated_after_it_dies(
    udevd: None, monkeypatch: pytest.MonkeyPatch, loop_support: None
) -> None:
    """When pyudev's monitor raises (as on socket overflow), the watch recreates it,
    enumerates the disks again, and goes on seeing new drives."""
    import pyudev

    from fdffd.devices.facts import _disk_of_devnum
    from fdffd.station.hotplug import DiskEvent, HotplugWatch

    real_poll = pyudev.Monitor.poll
    failures = [OSError(105, "No buffer space available")]

    def flaky_poll(self: pyudev.Monitor, timeout: float | None = None) -> object:
        if failures:
            raise failures.pop()
        return real_poll(self, timeout)

    monkeypatch.setattr(pyudev.Monitor, "poll", flaky_poll)
    events: list[DiskEvent] = []
    watch = HotplugWatch(events.append)
    watch.start()
    try:
        deadline = time.monotonic() + 10
        while watch.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch.restarts == 1
        st = os.stat("/")
        root_disk = _disk_of_devnum((os.major(st.st_dev), os.minor(st.st_dev)))
        if root_disk:  # the disk under / is there both times: it is enumerated twice

            def enumerated() -> int:
                return sum(e.action == "add" and e.name == root_disk for e in events)

            deadline = time.monotonic() + 10
            while enumerated() < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert enumerated() == 2
        with loop_device(64 * MiB) as dev:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if any(e.device == dev.path and e.size_bytes == 64 * MiB for e in events):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the recreated monitor saw no event for the new drive")
    finally:
        watch.stop()

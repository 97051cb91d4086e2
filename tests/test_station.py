"""The station daemon under a real systemd-udevd: hotplug, parallel jobs, status, recovery.

Each test confines its daemon to the loop devices it creates itself (``drives.ports`` globs
over the backing file's path), so the daemon never touches another device on the machine.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fdffd_testkit.fakedrive import FakeSpec, fake_drive
from fdffd_testkit.loopdev import loop_device
from fdffd_testkit.station import Station, drives

from .cli_util import fdffctl, write_config

MiB = 1 << 20


def test_eight_drives_at_once_each_processed_once(station: Callable[..., Station]) -> None:
    """8 drives attached within a second: processed concurrently, exactly one record each,
    the counterfeit among them found, progress visible in status, and the log verifies."""
    st = station()
    st.start()
    fake = FakeSpec(announced=256 * MiB, real=64 * MiB, kind="wraparound")
    t0 = time.monotonic()
    with drives(st.shm, [192 * MiB] * 7 + [fake]) as paths:
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
    with drives(st.shm, [FakeSpec.honest(256 * MiB), 192 * MiB, 192 * MiB]) as paths:
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
    with drives(st.shm, [FakeSpec.honest(384 * MiB, delay=0.005)]) as (path,):
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
    with drives(st.shm, [FakeSpec.honest(384 * MiB, delay=0.005)]) as (path,):
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
    with drives(st.shm, [FakeSpec.honest(512 * MiB)]):
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

    from fdffd.devices.sysfs import disk_of_devnum
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
        root_disk = disk_of_devnum((os.major(st.st_dev), os.minor(st.st_dev)))
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

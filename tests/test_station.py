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
from typing import Any

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
        port = _port_with_verdict(st, path)
        assert port["last"]["verdict"] == "interrupted" and port["last"]["wiped"] is False
        assert port["last"]["job_id"] == rec["job_id"]
        shown = fdffctl("status", "--config", str(st.config)).stdout
        assert "INTERRUPTED - plug it in again" in shown and "not wiped" in shown, shown
    assert fdffctl("audit", "verify", "--config", str(st.config)).code == 0
    st.stop()


def _port_with_verdict(st: Station, device: str, timeout: float = 30) -> dict[str, Any]:
    """The status of ``device``'s port once it shows a finished job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = st.port(device)
        if port is not None and port["state"] == "idle" and port["last"]:
            return port
        time.sleep(0.1)
    raise AssertionError(f"{device} shows no verdict: {st.status_or_none()}")


def test_a_restart_shows_the_finished_drives_still_plugged_in(
    station: Callable[..., Station],
) -> None:
    """Three drives DONE, the daemon restarted: its status shows the three ports again, each
    with the verdict of its own record, and nothing is processed again."""
    st = station()
    st.start()
    with drives(st.shm, [64 * MiB, 64 * MiB, 64 * MiB]) as paths:
        recs = st.wait_records(3)
        st.wait_idle()
        assert st.stop() == 0
        st.start()
        by_device = {r["device"]["path"]: r for r in recs}
        for path in paths:
            port = _port_with_verdict(st, path)
            assert port["last"]["verdict"] == "ok" and port["last"]["wiped"] is True
            assert port["last"]["job_id"] == by_device[path]["job_id"]
            assert port["drive"], "the drive is described again"
        status = st.status_or_none() or {"totals": {}}
        assert status["totals"]["active"] == status["totals"]["queued"] == 0
        time.sleep(1)
        assert len(st.records()) == 3, "no drive was processed again"
    assert st.stop() == 0


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

    from fdffd.devices.hotplug import DiskEvent, HotplugWatch
    from fdffd.devices.sysfs import disk_of_devnum

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


def test_a_queued_drive_pulled_before_its_job_is_recorded_not_wiped(
    station: Callable[..., Station],
) -> None:
    """workers = 1: a drive waiting for the worker and pulled is recorded at once (failed,
    drive-removed, stage queued, nothing written), and the status shows it as pulled and not
    wiped; the running drive goes on."""
    st = station(workers=1)
    st.start()
    with fake_drive(FakeSpec.honest(192 * MiB, delay=0.01), directory=str(st.shm)) as slow:
        st.wait_stage(slow.path, ["admit", "probe"], timeout=60)
        with loop_device(96 * MiB, directory=st.shm) as waiting:
            deadline = time.monotonic() + 30
            while (st.port(waiting.path) or {}).get("state") != "queued":
                assert time.monotonic() < deadline, st.log_tail()
                time.sleep(0.02)
            pulled = waiting.path
        (rec,) = st.wait_records(1, timeout=30)
        assert rec["device"]["path"] == pulled and rec["verdict"] == "failed"
        assert (rec["error"]["code"], rec["error"]["stage"]) == ("drive-removed", "queued")
        assert "nothing was written" in rec["error"]["message"]
        status = st.status_or_none()
        assert status is not None
        (port,) = [p for p in status["ports"] if p["port"] == os.path.basename(pulled)]
        assert port["state"] == "idle" and port["device"] == ""
        assert port["last"]["code"] == "drive-removed" and port["last"]["wiped"] is False
        shown = fdffctl("status", "--config", str(st.config))
        assert "PULLED - plug it back in" in shown.stdout and "not wiped" in shown.stdout
        assert st.port(slow.path)["state"] == "active", "the running job goes on"  # type: ignore[index]
    assert st.stop() == 0
    assert fdffctl("audit", "verify", "--config", str(st.config)).code == 0


def test_rate_meter_measures_over_its_window_and_finds_a_slow_stage() -> None:
    """The meter shows no speed in a stage's first instants, then the speed over its window
    and the stage's remaining time; a stage below the minimum for a whole window is too slow,
    and a new stage starts a new measurement."""
    from fdffd.station.rate import RateMeter

    meter = RateMeter(window=2.0, min_speed=10 * MiB)
    first = meter.sample("wipe-1", 0, 100 * MiB, now=100.0)
    assert (first.speed_bps, first.eta_seconds, first.too_slow) == (None, None, False)
    rate = meter.sample("wipe-1", 20 * MiB, 100 * MiB, now=101.0)
    assert rate.speed_bps == 20 * MiB and rate.eta_seconds == 4.0 and rate.percent == 20.0
    assert not rate.too_slow
    meter.sample("wipe-1", 21 * MiB, 100 * MiB, now=102.0)
    slow = meter.sample("wipe-1", 22 * MiB, 100 * MiB, now=103.0)
    assert slow.speed_bps is not None and slow.speed_bps < 10 * MiB and slow.too_slow
    fresh = meter.sample("verify", 0, 100 * MiB, now=103.1)
    assert (fresh.speed_bps, fresh.too_slow) == (None, False), "a new stage, a new measurement"
    assert not RateMeter(window=2.0, min_speed=0).sample("probe", 0, 0, now=0.0).too_slow


def _core(tmp_path: Path) -> Any:
    """An in-process station core on a state dir of its own (no devices, no udev)."""
    from fdffd.audit import StationKeys
    from fdffd.config import load_config
    from fdffd.station.station import Station as Core

    cfg = load_config(write_config(tmp_path))
    cfg.station.state_dir.mkdir(parents=True, exist_ok=True)
    return Core(cfg, StationKeys.init(cfg.station.state_dir))


def _queued_entry(core: Any, name: str, **kw: Any) -> dict[str, Any]:
    entry = {
        "device": f"/dev/{name}",
        "port": f"pci-0000:00:14.0-usb-0:{name[-1]}:1.0-scsi-0:0:0:0",
        "diskseq": 9000,
        "insertion": f"{name}:9000",
        "boot_id": core.boot,
        "queued_at": "2026-12-03T10:00:00.000Z",
        "drive": "Kingston 8.0 GiB",
        **kw,
    }
    core.journal.queue(entry["insertion"], entry)
    return entry


def test_insertions_queued_before_a_restart_are_shown_then_recorded_when_gone(
    tmp_path: Path,
) -> None:
    """A queued insertion left in the journal shows as queued after a restart until the
    hotplug watch has seen every disk; not found, it is recorded failed (drive-removed, stage
    queued, not wiped).  One from another boot is recorded at once (not-started).  One whose
    job had begun counts once, by its job."""
    import json as _json

    first = _core(tmp_path)
    _queued_entry(first, "sdx")
    _queued_entry(first, "sdy", boot_id="another-boot")
    begun = _queued_entry(first, "sdz")
    first.journal.begin("c" * 32, {**begun, "started_at": "2026-12-03T10:00:01.000Z"})
    core = _core(tmp_path)
    assert core.recover() == 3
    status = core.status()
    assert status.totals.queued == 1
    (waiting,) = [p for p in status.ports if p.state == "queued"]
    assert (waiting.device, waiting.drive) == ("/dev/sdx", "Kingston 8.0 GiB")
    core.on_enumerated()
    recs = [_json.loads(line) for line in core.sink.audit.path.read_text().splitlines()]
    by_device = {r["device"]["path"]: r for r in recs}
    assert sorted(by_device) == ["/dev/sdx", "/dev/sdy", "/dev/sdz"]
    assert by_device["/dev/sdz"]["verdict"] == "interrupted"
    assert by_device["/dev/sdy"]["error"]["code"] == "not-started"
    gone = by_device["/dev/sdx"]
    assert (gone["verdict"], gone["error"]["code"], gone["error"]["stage"]) == (
        "failed",
        "drive-removed",
        "queued",
    )
    status = core.status()
    assert status.totals.queued == 0 and status.totals.done == 3
    assert [p.last.wiped for p in status.ports if p.device == "" and p.last] == [False] * 3
    assert not list((core.journal.queued_dir).glob("*.json")), "every queued entry settled"
    assert not list(core.journal.dir.glob("*.json")), "every job entry settled"
    assert _core(tmp_path).recover() == 0, "nothing is recorded twice"


def test_a_job_recorded_just_before_a_crash_is_not_recorded_again(tmp_path: Path) -> None:
    """The daemon died after appending a job's record and before ending its journal entry:
    on restart the record found at the end of the log settles the entry, no second record."""
    import json as _json

    from fdffd.job.pipeline import interrupted_record

    first = _core(tmp_path)
    entry = _queued_entry(first, "sdw")
    first.journal.begin("d" * 32, {**entry, "started_at": "2026-12-03T10:00:01.000Z"})
    rec = interrupted_record(first.cfg, {**entry, "job_id": "d" * 32})
    rec.verdict, rec.error = "ok", None
    first.sink.audit.append(rec)  # ... and the daemon dies here
    core = _core(tmp_path)
    assert core.recover() == 1
    lines = core.sink.audit.path.read_text().splitlines()
    assert [_json.loads(line)["verdict"] for line in lines] == ["ok"]
    assert not list(core.journal.dir.glob("*.json")) and not core.ledger.queued()
    (port,) = core.status().ports
    assert port.last is not None and port.last.verdict == "ok"

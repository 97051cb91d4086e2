"""Crash windows: the daemon killed (or stopped) at every point where an insertion could be lost.

Each case runs a real daemon under real udevd on loop devices and FUSE fakes of its own, kills
it (``kill -9``) or stops it (SIGTERM) in one window, starts it again, and ends with *every
insertion accounted for*: exactly one record per drive plugged in, whether the drive was running
(``interrupted``), waiting for a worker (processed after the restart, or recorded as not wiped
when it is gone), finished but not yet recorded, or recorded but waiting for the audit log.

The windows:

- kill -9 while drives are queued (``workers = 1``: one running, two waiting);
- SIGTERM while drives are queued;
- kill -9 while a drive is queued, and the drive pulled before the restart;
- kill -9 at a random instant just after drives are plugged in: between the queue and the start
  of their jobs (the insertion journaled or not, seen or not, the job begun or not);
- kill -9 between the last verify and the record (the audit log locked by the test, so the
  daemon is held inside the append);
- kill -9 while a finished job's record waits for the audit log (a torn last line).

The fast run (part of the default test run) runs each window once; the full run
(``FDFFD_RELIABILITY=full``, ``scripts/reliability``) runs each :data:`ROUNDS` times (50,
or ``FDFFD_CRASH_ROUNDS``), so that a race shows up as a figure: insertions lost, of how many.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from fdffd_testkit.fakedrive import FakeDrive, FakeSpec, fake_drive
from fdffd_testkit.loopdev import loop_device
from fdffd_testkit.station import Station

from ..cli_util import fdffctl
from .rig import MiB, log_verifies
from .support import FULL, Tally

ROUNDS = int(os.environ.get("FDFFD_CRASH_ROUNDS") or (50 if FULL else 1))
RUNS = list(range(ROUNDS))
#: small drives: the test is about the daemon's bookkeeping, not the bytes
DRIVES = {"min_size": "16MiB"}
SIZE = 32 * MiB
#: the drive that is kept running: its FUSE requests take SLOW seconds once its job began
SLOW_SIZE = 256 * MiB
SLOW = 0.01


def _accounted(
    st: Station, devices: list[str], tally: Tally, window: str
) -> dict[str, dict[str, Any]]:
    """Every insertion (one per device) has exactly one record, none more: counted, then
    asserted, so that the tally's figure is a measurement and the test still fails."""
    per_device = Counter(r["device"]["path"] for r in st.records())
    lost = [d for d in devices if per_device[d] == 0]
    doubled = [d for d in devices if per_device[d] > 1]
    tally.count("crash", "insertions", len(devices))
    tally.count("crash", "insertions lost", len(lost))
    tally.count("crash", f"insertions lost ({window})", len(lost))
    tally.count("crash", "insertions recorded twice", len(doubled))
    assert not lost, f"{window}: no record for {lost}; daemon log:\n{st.log_tail()}"
    assert not doubled, f"{window}: more than one record for {doubled}"
    assert set(per_device) <= set(devices), f"records of other devices: {dict(per_device)}"
    return {r["device"]["path"]: r for r in st.records()}


def _run_passed(tally: Tally, window: str, outcome: str, run: int) -> None:
    tally.count("crash", "runs")
    tally.count("crash", "runs passed")
    tally.count("crash", f"runs passed ({window})")
    if run == 0:
        tally.case("crash", window, outcome)


def _wait(cond: Callable[[], bool], what: str, st: Station, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        assert st.alive(), f"the daemon died waiting for {what}:\n{st.log_tail()}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; daemon log:\n{st.log_tail()}")


def _states(st: Station, devices: list[str]) -> dict[str, str | None]:
    """Each device's port state in the daemon's status (None: no port shows it)."""
    status = st.status_or_none() or {"ports": []}
    by_device = {p["device"]: p["state"] for p in status["ports"] if p["device"]}
    return {d: by_device.get(d) for d in devices}


@contextmanager
def _one_running_two_queued(
    st: Station, stack: ExitStack
) -> Iterator[tuple[FakeDrive, list[FakeDrive], list[ExitStack]]]:
    """A slow drive running (its job begun) and two drives waiting for the one worker (FUSE
    fakes at full speed, which a test can slow down); each waiting drive's own ExitStack
    detaches it early (pulls it)."""
    # full speed until its job has begun (udev probes it at full speed), then slow
    slow = stack.enter_context(fake_drive(FakeSpec.honest(SLOW_SIZE), directory=str(st.shm)))
    _wait(lambda: _states(st, [slow.path])[slow.path] == "active", "the first job", st)
    slow.set_delay(SLOW)
    plugs = [stack.enter_context(ExitStack()) for _ in range(2)]
    queued = [
        p.enter_context(fake_drive(FakeSpec.honest(SIZE), directory=str(st.shm))) for p in plugs
    ]
    paths = [d.path for d in queued]
    want = {slow.path: "active", **dict.fromkeys(paths, "queued")}
    _wait(lambda: _states(st, [slow.path, *paths]) == want, "one active and two queued", st)
    yield slow, queued, plugs


def _port_of(st: Station, device: str) -> dict[str, Any]:
    """The status port of a loop device, found by its name (it shows no device once pulled)."""
    status = st.status_or_none() or {"ports": []}
    name = os.path.basename(device)
    port = next((p for p in status["ports"] if p["port"] == name), None)
    assert port is not None, status
    return dict(port)


def _after_restart_queued_are_shown(st: Station, queued: list[FakeDrive]) -> None:
    """Right after a restart, the drives that waited show as waiting, or running (the one
    worker took the first); slowed by the caller, so that neither is done yet."""
    paths = [d.path for d in queued]
    states = _states(st, paths)
    assert sorted(map(str, states.values())) in (["active", "queued"], ["queued", "queued"]), (
        states
    )
    shown = fdffctl("status", "--config", str(st.config)).stdout.splitlines()
    for path in paths:  # fdffctl status has a row for each: queued, or running by now
        row = [line for line in shown if line.startswith(os.path.basename(path) + " ")]
        stages = ("queued", "admit", "probe", "wipe-1", "image", "verify", "finish")
        assert row and any(f" {s} " in row[0] for s in stages), shown
    for d in queued:
        d.set_delay(0)


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_queued_drives_survive_a_crash_or_stop(
    sig: int, run: int, station: Callable[..., Station], tally: Tally
) -> None:
    """workers = 1, one drive running and two waiting; the daemon killed (or stopped): after
    the restart the running one is ``interrupted`` and the two waiting are processed."""
    window = f"{signal.Signals(sig).name} with one drive running and two queued"
    st = station(workers=1, drives=DRIVES)
    st.start()
    with ExitStack() as stack, _one_running_two_queued(st, stack) as (slow, drives, _):
        queued = [d.path for d in drives]
        code = st.stop(sig)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), st.log_tail()
        if sig == signal.SIGTERM:
            # the running job is recorded interrupted (or, when it was stuck in the kernel
            # past the stop's wait, at the next start); the queue is not emptied into records
            recs = st.records()
            assert [(r["device"]["path"], r["verdict"]) for r in recs] in (
                [(slow.path, "interrupted")],
                [],
            ), recs
            kept = list((st.state_dir / "journal" / "queued").glob("*.json"))
            assert len(kept) == 2, "the queued drives stay in the journal"
        for d in drives:  # slow until the status after the restart has been read
            d.set_delay(SLOW)
        st.start()
        _after_restart_queued_are_shown(st, drives)
        st.wait_records(3)
        st.wait_idle()
        time.sleep(1.0)  # nothing more starts: the interrupted drive is not started over
        by_device = _accounted(st, [slow.path, *queued], tally, window)
    assert by_device[slow.path]["verdict"] == "interrupted"
    assert all(by_device[d]["verdict"] == "ok" for d in queued), by_device
    log_verifies(st)
    assert st.stop() == 0
    _run_passed(tally, window, "running: interrupted; queued: processed after restart", run)


@pytest.mark.parametrize("run", RUNS)
def test_a_queued_drive_pulled_while_the_daemon_is_down_is_recorded_not_wiped(
    run: int, station: Callable[..., Station], tally: Tally
) -> None:
    """kill -9 with two drives waiting; one of them pulled before the restart: it is recorded
    ``failed`` (``drive-removed``, stage ``queued``) and shown as not wiped; the other is
    processed."""
    window = "kill -9 with two queued, one pulled before the restart"
    st = station(workers=1, drives=DRIVES)
    st.start()
    with ExitStack() as stack, _one_running_two_queued(st, stack) as (slow, drives, plugs):
        queued = [d.path for d in drives]
        st.stop(signal.SIGKILL)
        plugs[0].close()  # pulled while the daemon is down
        st.start()
        st.wait_records(3)
        st.wait_idle()
        time.sleep(1.0)
        by_device = _accounted(st, [slow.path, *queued], tally, window)
        pulled = by_device[queued[0]]
        assert pulled["verdict"] == "failed", pulled
        assert (pulled["error"]["code"], pulled["error"]["stage"]) == ("drive-removed", "queued")
        assert "nothing was written" in pulled["error"]["message"]
        assert pulled["wiped"] is False  # exact byte counts are sealed or left out
        assert not pulled["wipe"]["bytes_written"]
        last = _port_of(st, queued[0])["last"]
        assert (last["verdict"], last["code"], last["wiped"]) == ("failed", "drive-removed", False)
        shown = fdffctl("status", "--config", str(st.config))
        assert "PULLED - plug it back in" in shown.stdout and "not wiped" in shown.stdout, (
            shown.stdout + shown.stderr
        )
        assert by_device[slow.path]["verdict"] == "interrupted"
        assert by_device[queued[1]]["verdict"] == "ok"
    log_verifies(st)
    assert st.stop() == 0
    _run_passed(tally, window, "pulled: failed drive-removed (queued), shown not wiped", run)


@pytest.mark.parametrize("run", RUNS)
def test_kill_9_right_after_plugging_in(
    run: int, station: Callable[..., Station], tally: Tally
) -> None:
    """kill -9 at a random instant within half a second of plugging in four drives (two
    workers): between the queue and the start of their jobs.  After the restart every drive
    has exactly one record: ``interrupted`` if its job had begun, ``ok`` if it was processed
    (before the kill, or after the restart)."""
    window = "kill -9 between queue and start"
    rng = random.Random(run)
    st = station(workers=2, drives=DRIVES)
    st.start()
    with ExitStack() as stack:
        devices = [stack.enter_context(loop_device(SIZE, directory=st.shm)).path for _ in range(4)]
        time.sleep(rng.uniform(0.0, 0.5))
        st.stop(signal.SIGKILL)
        st.start()
        st.wait_records(4)
        st.wait_idle()
        time.sleep(1.0)
        by_device = _accounted(st, devices, tally, window)
    verdicts = Counter(r["verdict"] for r in by_device.values())
    assert set(verdicts) <= {"ok", "interrupted"}, by_device
    log_verifies(st)
    assert st.stop() == 0
    _run_passed(tally, window, "each drive: interrupted if begun, else processed", run)


def _finished(st: Station, device: str) -> bool:
    """Whether the daemon logged ``job.finished`` for ``device`` (its record comes next)."""
    for line in st.log.read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "job.finished" and ev.get("device") == device:
            return True
    return False


@contextmanager
def _audit_locked(st: Station) -> Iterator[None]:
    """Hold an exclusive lock on the audit log: the daemon's next append waits for it."""
    st.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(st.audit_log, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.mark.parametrize("run", RUNS)
def test_kill_9_between_the_last_verify_and_the_record(
    run: int, station: Callable[..., Station], tally: Tally
) -> None:
    """The job has verified its drive and is appending its record when the daemon is killed
    (held inside the append by a lock the test takes on the audit log): after the restart the
    job is recorded ``interrupted`` from its journal entry, and its drive is not started over."""
    window = "kill -9 between the last verify and the record"
    st = station(drives=DRIVES)
    st.start()
    with ExitStack() as stack:
        with _audit_locked(st):
            dev = stack.enter_context(loop_device(SIZE, directory=st.shm)).path
            _wait(lambda: _finished(st, dev), "the job to finish its verify", st)
            port = st.port(dev)
            assert port is not None and port["state"] == "active", "held before its record"
            st.stop(signal.SIGKILL)
        assert st.records() == []
        st.start()
        st.wait_records(1)
        st.wait_idle()
        time.sleep(1.0)
        by_device = _accounted(st, [dev], tally, window)
    assert by_device[dev]["verdict"] == "interrupted"
    log_verifies(st)
    assert st.stop() == 0
    _run_passed(tally, window, "interrupted (from the journal), not started over", run)


@pytest.mark.parametrize("run", RUNS)
def test_kill_9_while_a_record_waits_for_the_log(
    run: int, station: Callable[..., Station], tally: Tally
) -> None:
    """A finished job's record waits for the audit log (its last line torn); kill -9 with a
    drive running and one queued: after the restart the waiting record is still kept, the
    queued drive is processed, and ``fdffctl audit repair`` lets every record into the log."""
    window = "kill -9 while a record waits for the log"
    st = station(workers=1, drives=DRIVES)
    st.start()
    with ExitStack() as stack:
        first = stack.enter_context(loop_device(SIZE, directory=st.shm)).path
        (one,) = st.wait_records(1)
        torn = b'{"schema": 1, "job_id": "torn'
        with st.audit_log.open("ab") as f:
            f.write(torn)
        done = stack.enter_context(loop_device(SIZE, directory=st.shm)).path
        _wait(
            lambda: (st.status_or_none() or {"totals": {}})["totals"].get("unrecorded") == 1,
            "the record to wait",
            st,
        )
        with _one_running_two_queued(st, stack) as (slow, drives, _):
            queued = [d.path for d in drives]
            st.stop(signal.SIGKILL)
            st.start()
            status = st.status_or_none()
            assert status is not None and status["totals"]["unrecorded"] >= 1, status
            repair = fdffctl("audit", "repair", "--config", str(st.config))
            assert repair.code == 0, repair.stderr
            st.wait_records(5)
            st.wait_idle()
            time.sleep(1.0)
            by_device = _accounted(st, [first, done, slow.path, *queued], tally, window)
    assert one["device"]["path"] == first
    assert by_device[done]["verdict"] == "ok", "the kept record, not an interrupted one"
    assert by_device[slow.path]["verdict"] == "interrupted"
    assert all(by_device[d]["verdict"] == "ok" for d in queued)
    log_verifies(st)
    assert st.stop() == 0
    _run_passed(tally, window, "kept record appended after repair; queued processed", run)

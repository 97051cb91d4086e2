"""Faults injected into a running station, in each stage of a job, with a healthy drive alongside.

Each case runs a real daemon under real udevd with ``job.passes = 2`` (probe, wipe-1, image,
verify) and two FUSE fake drives that run at the same pace: the *victim* and its healthy
*neighbour*.  The drives are slowed (``FakeSpec.delay``) so that every stage lasts seconds; the
test polls the daemon's status until the victim's job is in the stage, injects the fault, then
lets both drives run at full speed.  Every case must end with the right verdict, exactly one
record per drive, the neighbour unharmed, the daemon alive (or restarted cleanly), and
``fdffctl audit verify`` passing.

The fast run (part of the default test run) injects each fault once, in rotating stages; the
full run (``FDFFD_RELIABILITY=full``, ``scripts/reliability``) injects every fault in every stage.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from fdffd_testkit.fakedrive import FakeDrive, FakeSpec, fake_drive
from fdffd_testkit.loopdev import loop_device
from fdffd_testkit.station import Station

from ..cli_util import fdffctl
from .rig import MiB, audit_verify, fill_disk, log_verifies, one_record_each, small_ext4
from .support import FULL, Tally

STAGES = ["probe", "wipe-1", "image", "verify"]
FAULTS = [
    "drive removed",
    "drive fails every I/O",
    "drive turns read-only",
    "daemon killed (SIGKILL) and restarted",
    "daemon stopped (SIGTERM)",
    "state disk full",
    "payload file changed",
]
#: the fast run: each fault once, the stages rotating
FAST = {
    "drive removed": "image",
    "drive fails every I/O": "probe",
    "drive turns read-only": "wipe-1",
    "daemon killed (SIGKILL) and restarted": "verify",
    "daemon stopped (SIGTERM)": "probe",
    "state disk full": "verify",
    "payload file changed": "wipe-1",
}
CASES = [(f, s) for f in FAULTS for s in STAGES] if FULL else list(FAST.items())

SIZE = 96 * MiB
#: seconds per FUSE request: about 40 MB/s, so each stage of SIZE lasts a few seconds
DELAY = 0.012

#: a small payload: the image pass reads it from the profile while it writes the drive
PAYLOAD = {"films/one.mp4": 3 * MiB + 4321, "films/two.mp4": 2 * MiB, "README.TXT": 99}


def _payload_profile(tmp_path: Path, config: Path) -> Path:
    """Import the payload as profile "default"; return the big file inside the profile."""
    src = tmp_path / "src"
    for rel, size in PAYLOAD.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    run = fdffctl("payload", "add", "default", str(src), "--config", str(config))
    assert run.code == 0, run.stderr
    return next((tmp_path / "payloads" / "default" / "versions").rglob("one.mp4"))


def _change_in_place(path: Path) -> None:
    """Flip bytes in the middle of a payload file: same size, different content."""
    os.chmod(path, 0o644)
    fd = os.open(path, os.O_RDWR)
    try:
        mid = os.fstat(fd).st_size // 2
        old = os.pread(fd, 4096, mid)
        os.pwrite(fd, bytes(b ^ 0xFF for b in old), mid)
        os.fsync(fd)
    finally:
        os.close(fd)


def _journal_records(st: Station) -> list[dict[str, Any]]:
    out = []
    for p in (st.state_dir / "journal").glob("*.json"):
        entry = json.loads(p.read_text())
        if "record" in entry:
            out.append(entry["record"])
    return out


def _wait(cond: Callable[[], bool], what: str, st: Station, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; daemon log:\n{st.log_tail()}")


def _expect_victim(fault: str, stage: str) -> set[str]:
    if fault in ("drive removed", "drive fails every I/O"):
        return {"failed"}
    if fault == "drive turns read-only":
        # worn-out flash does this: it cannot be wiped any more (defective); in verify all was
        # written already: the drive holds what it must, and reads
        return {"ok"} if stage == "verify" else {"defective"}
    if fault.startswith("daemon"):
        return {"interrupted"}
    if fault == "payload file changed":
        # before the image pass the changed bytes go onto the drive and verify catches them;
        # during it, the file may already be written; after it, the drive holds the right bytes
        return {"failed"} if stage in ("probe", "wipe-1") else {"ok", "failed"}
    return {"ok"}


@pytest.mark.parametrize(("fault", "stage"), CASES, ids=[f"{f} during {s}" for f, s in CASES])
def test_fault_during_stage(
    fault: str,
    stage: str,
    station: Callable[..., Station],
    tmp_path: Path,
    tally: Tally,
) -> None:
    with ExitStack() as stack:
        kw: dict[str, Any] = {"passes": 2}
        mnt = None
        if fault == "state disk full":
            mnt = stack.enter_context(small_ext4())
            kw["state_dir"] = mnt / "state"
        st = station(**kw)
        victim_file = None
        if fault == "payload file changed":
            victim_file = _payload_profile(tmp_path, st.config)
            st = station(**kw, profile="default")
        st.start()
        spec = FakeSpec.honest(SIZE, delay=DELAY)
        victim = stack.enter_context(fake_drive(spec, directory=str(st.shm)))
        neighbour = stack.enter_context(fake_drive(spec, directory=str(st.shm)))
        devices = [victim.path, neighbour.path]
        st.wait_stage(neighbour.path, ["admit", "probe"], timeout=60)
        st.wait_stage(victim.path, [stage])
        n_port = st.port(neighbour.path)
        assert n_port is not None and n_port["state"] == "active", "the neighbour runs too"

        _inject(fault, stage, st, victim, neighbour, victim_file, mnt, devices, stack)

        by_device = one_record_each(st, devices)
        v, n = by_device[victim.path], by_device[neighbour.path]
        assert v["verdict"] in _expect_victim(fault, stage), v
        if v["verdict"] not in ("ok", "rescued"):
            assert v["error"]["message"], v
        if v["verdict"] == "defective":
            assert "turned read-only" in v["error"]["message"], v
        if fault.startswith("daemon"):
            assert n["verdict"] == "interrupted", n
        elif fault == "payload file changed":
            assert n["verdict"] == "ok" or n["error"]["code"] == "payload-changed", n
        else:
            assert n["verdict"] == "ok", n
        if v["verdict"] == "ok" and v["payload"] is not None:
            assert v["payload"]["verified"] is True
        time.sleep(1.0)  # events from the jobs' own writes, a restart: nothing starts again
        one_record_each(st, devices)
        assert st.alive() and st.status_or_none() is not None, st.log_tail()
        log_verifies(st)
        assert st.stop() == 0
    tally.count("faults", "injected")
    tally.count("faults", "survived")
    tally.case(
        "faults", f"{fault} during {stage}", f"victim {v['verdict']}, neighbour {n['verdict']}"
    )


def _inject(
    fault: str,
    stage: str,
    st: Station,
    victim: FakeDrive,
    neighbour: FakeDrive,
    victim_file: Path | None,
    mnt: Path | None,
    devices: list[str],
    stack: ExitStack,
) -> None:
    """Inject ``fault`` now, and wait for its consequences (the records)."""
    if fault == "drive removed":
        victim.kill_server()
    elif fault == "drive fails every I/O":
        victim.set_mode("fail")
    elif fault == "drive turns read-only":
        victim.set_mode("readonly")
    elif fault == "daemon killed (SIGKILL) and restarted":
        st.stop(signal.SIGKILL)
        assert st.records() == []
        st.start()
    elif fault == "daemon stopped (SIGTERM)":
        assert st.stop() == 0, st.log_tail()
        assert len(st.records()) == 2, "both running jobs recorded at stop"
        st.start()  # the drives are still plugged in: they must not start over
    elif fault == "payload file changed":
        assert victim_file is not None
        _change_in_place(victim_file)
    if fault != "drive removed":
        victim.set_delay(0)
    neighbour.set_delay(0)
    if fault == "state disk full":
        assert mnt is not None
        _disk_full(stage, st, mnt, devices, stack)
        return
    st.wait_records(2)


def _disk_full(stage: str, st: Station, mnt: Path, devices: list[str], stack: ExitStack) -> None:
    """Fill the state disk mid-job: the records wait in the journal, none is lost; a drive
    inserted meanwhile is failed untouched; once there is room they reach the log, in place or
    on restart."""
    filler = fill_disk(mnt)

    def waiting() -> int:
        status = st.status_or_none()
        return int(status["totals"]["unrecorded"]) if status else -1

    def done() -> int:
        status = st.status_or_none()
        return int(status["totals"]["done"]) if status else -1

    _wait(lambda: done() == 2, "both jobs to end", st)
    # keeping a record frees the entry it replaces, which may let the log take one: fine, as
    # long as each record is in the log or waiting in the journal, once
    kept = {r["device"]["path"]: r["verdict"] for r in _journal_records(st)}
    logged = {r["device"]["path"]: r["verdict"] for r in st.records()}
    # (read one after the other: a record may move from the journal to the log in between)
    assert {**kept, **logged} == dict.fromkeys(devices, "ok"), (kept, logged)
    third = stack.enter_context(loop_device(96 * MiB, directory=st.shm))
    devices.append(third.path)
    _wait(lambda: done() == 3, "the third drive's job to end", st)
    # what its failed journal write gave back may let the log take a record or two: fine, as
    # long as each is in the log or waiting, once
    assert len(st.records()) + waiting() == 3
    with open(third.path, "rb") as f:
        assert f.read(96 * MiB) == bytes(96 * MiB), "the third drive was touched"
    if STAGES.index(stage) % 2:  # a crash while the disk is full: the journal has them
        st.stop(signal.SIGKILL)
        filler.unlink()
        st.start()
    else:
        filler.unlink()
    recs = st.wait_records(3, timeout=60)
    third_rec = next(r for r in recs if r["device"]["path"] == third.path)
    assert third_rec["verdict"] == "failed" and "journal" in third_rec["error"]["message"]


def test_torn_last_line_is_reported_and_never_built_on(
    station: Callable[..., Station], tally: Tally
) -> None:
    """A power cut mid-append leaves a torn last line: audit verify fails naming it, the
    daemon does not append after it (the next record waits in the journal, and survives a
    crash and restart on the torn log), and after ``fdffctl audit repair`` the waiting record
    is appended and the log verifies."""
    st = station()
    st.start()
    with loop_device(96 * MiB, directory=st.shm) as first:
        (rec,) = st.wait_records(1)
        assert rec["verdict"] == "ok" and rec["device"]["path"] == first.path
    whole = st.audit_log.read_bytes()
    torn = whole[: len(whole) // 2]  # the first half of a line, as a cut-off write leaves it
    with open(st.audit_log, "ab") as f:
        f.write(torn)
    run = audit_verify(st)
    assert run.code == 5 and "torn" in run.record["failure"]["reason"]
    assert run.record["failure"]["line"] == 2
    with loop_device(96 * MiB, directory=st.shm) as second:
        _wait(
            lambda: (st.status_or_none() or {"totals": {}})["totals"].get("unrecorded") == 1,
            "the second record to wait",
            st,
        )
        assert st.audit_log.read_bytes() == whole + torn, "nothing appended after a torn line"
        (kept,) = _journal_records(st)
        assert kept["verdict"] == "ok" and kept["device"]["path"] == second.path
        st.stop(signal.SIGKILL)  # a crash now: the daemon must come up on the torn log
        st.start()
        status = st.status_or_none()
        assert status is not None and status["totals"]["unrecorded"] == 1
        assert st.audit_log.read_bytes() == whole + torn
        repair = fdffctl("audit", "repair", "--config", str(st.config))
        assert repair.code == 0, repair.stderr
        (side,) = st.state_dir.glob("audit.jsonl.torn-*")
        assert side.read_bytes() == torn
        recs = st.wait_records(2, timeout=60)
        assert [r["device"]["path"] for r in recs] == [first.path, second.path]
        assert recs[1]["job_id"] == kept["job_id"] and recs[1]["verdict"] == "ok"
    assert log_verifies(st)["lines"] == 2
    assert st.stop() == 0
    tally.count("faults", "injected")
    tally.count("faults", "survived")
    tally.case("faults", "torn last line (power cut mid-append)", "reported; repaired; 0 lost")


def test_a_record_that_does_not_validate_holds_back_no_other(tmp_path: Path, tally: Tally) -> None:
    """A job record the schema rejects (a bug) becomes a valid ``failed`` record saying so;
    it neither disappears nor keeps the records after it from the log."""
    from fdffd.audit import AuditLog, StationKeys, verify
    from fdffd.config import load_config
    from fdffd.job.pipeline import interrupted_record
    from fdffd.station.journal import JobJournal
    from fdffd.station.records import RecordSink

    from ..cli_util import write_config

    cfg = load_config(write_config(tmp_path))  # the station's keys made, as keys init does
    keys = StationKeys.load(cfg.station.state_dir)
    audit = AuditLog(cfg.audit_log, keys)
    sink = RecordSink(cfg, audit, JobJournal(cfg.station.state_dir))
    entry = {"device": "/dev/loop-none", "port": "", "started_at": "2026-12-02T00:00:00.000Z"}
    bad = {"job_id": "a" * 32, "verdict": "ok", "no such field": 1}
    assert sink.add(bad, entry)
    after = interrupted_record(cfg, {**entry, "job_id": "b" * 32})
    assert sink.add(after.to_json_dict(), entry)
    assert sink.retry() == 0
    recs = [json.loads(line) for line in audit.path.read_text().splitlines()]
    assert [r["job_id"] for r in recs] == ["a" * 32, "b" * 32]
    assert recs[0]["verdict"] == "failed" and "did not validate" in recs[0]["error"]["message"]
    assert verify(audit.path, keys.public_key).ok
    assert list((cfg.station.state_dir / "journal").glob("*.json")) == []
    tally.count("faults", "injected")
    tally.count("faults", "survived")
    tally.case("faults", "a job record that does not validate", "recorded failed, log intact")

"""Load: many drives at once, many jobs in a row, slow drives and drives that come back.

A real daemon under real udevd, plain loop devices on tmpfs (fast, so the daemon is what is
measured) and FUSE fakes where a drive must misbehave.  Every job must be recorded exactly once,
every insertion (DISKSEQ) queued once, and the daemon's open descriptors, threads and memory
must stay flat over a long run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fdffd_testkit.fakedrive import FakeSpec, fake_drive
from fdffd_testkit.loopdev import loop_device
from fdffd_testkit.station import Station, drives

from .rig import MiB, log_verifies, one_record_each
from .support import FULL, Tally

#: small drives: the test is about the daemon, not the bytes
DRIVES = {"min_size": "16MiB"}
IN_A_ROW = 200 if FULL else 16
WARM_UP = 20 if FULL else 4


def _queued(st: Station) -> list[dict[str, Any]]:
    """The daemon's ``drive.queued`` log events (one per insertion it took)."""
    out = []
    for line in st.log.read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "drive.queued":
            out.append(ev)
    return out


def _one_job_per_insertion(st: Station, n: int) -> None:
    seqs = Counter((ev["device"], ev["diskseq"]) for ev in _queued(st))
    assert len(seqs) == n and max(seqs.values()) == 1, f"insertions queued: {seqs}"


def _recorded(tally: Tally, n: int) -> None:
    """Count ``n`` drives processed under load, each with its one record, none lost."""
    tally.count("load", "drives processed", n)
    tally.count("load", "records", n)
    tally.count("load", "records lost", 0)


def test_sixteen_drives_at_once(station: Callable[..., Station], tally: Tally) -> None:
    """16 drives plugged in together: all run at once, each recorded once, the log verifies."""
    st = station(workers=16, drives=DRIVES)
    st.start()
    with drives(st.shm, [48 * MiB] * 16) as paths:
        max_active = 0
        deadline = time.monotonic() + 300
        while len(st.records()) < 16 and time.monotonic() < deadline:
            status = st.status_or_none()
            if status:
                max_active = max(max_active, status["totals"]["active"])
            time.sleep(0.05)
        st.wait_records(16)
        time.sleep(1.0)  # the jobs' own change events start nothing
        by_device = one_record_each(st, paths)
    assert all(r["verdict"] == "ok" for r in by_device.values())
    assert max_active >= 4, f"at most {max_active} jobs ran at once"
    _one_job_per_insertion(st, 16)
    log_verifies(st)
    assert st.stop() == 0
    _recorded(tally, 16)
    tally.case("load", "16 drives at once", f"16 ok, up to {max_active} at once")


def test_jobs_in_a_row_leave_descriptors_and_memory_flat(
    station: Callable[..., Station], tally: Tally
) -> None:
    """Drive after drive through one daemon: one record each, and no descriptor, thread or
    memory left behind per job (compared after a warm-up and at the end)."""
    st = station(drives=DRIVES)
    st.start()
    paths: list[str] = []
    warm: dict[str, int] = {}
    for i in range(IN_A_ROW):
        with loop_device(32 * MiB, directory=st.shm) as dev:
            st.wait_records(i + 1)
            paths.append(dev.path)
        st.wait_idle()
        if i + 1 == WARM_UP:
            warm = {"fds": st.open_fds(), "threads": st.threads(), "rss": st.rss()}
    time.sleep(0.5)
    end = {"fds": st.open_fds(), "threads": st.threads(), "rss": st.rss()}
    recs = st.records()
    assert len(recs) == IN_A_ROW and len({r["job_id"] for r in recs}) == IN_A_ROW
    assert [r["device"]["path"] for r in recs] == paths
    assert all(r["verdict"] == "ok" for r in recs)
    _one_job_per_insertion(st, IN_A_ROW)
    assert end["fds"] <= warm["fds"] + 2, (warm, end)
    assert end["threads"] <= warm["threads"] + 2, (warm, end)
    assert end["rss"] <= warm["rss"] + 24 * MiB, (warm, end)
    log_verifies(st)
    assert st.stop() == 0
    _recorded(tally, IN_A_ROW)
    grew = (end["rss"] - warm["rss"]) / MiB
    tally.case(
        "load",
        f"{IN_A_ROW} jobs in a row",
        f"fds {warm['fds']}->{end['fds']}, threads {warm['threads']}->{end['threads']}, "
        f"RSS {warm['rss'] // MiB}->{end['rss'] // MiB} MiB ({grew:+.1f})",
    )


def test_slow_drive_fails_as_too_slow_without_slowing_the_others(
    station: Callable[..., Station], tally: Tally
) -> None:
    """A drive that slows to a crawl mid-job is failed as too slow; two drives beside it run
    at full speed and finish ok."""
    st = station(min_speed="8MB", slow_window=3.0, drives=DRIVES)
    st.start()
    with fake_drive(FakeSpec.honest(128 * MiB, delay=0.005), directory=str(st.shm)) as slow:
        st.wait_stage(slow.path, ["image"])
        slow.set_delay(0.3)  # ~1.7 MB/s, a dying drive's pace
        t0 = time.monotonic()
        with drives(st.shm, [96 * MiB, 96 * MiB]) as others:
            recs = st.wait_records(3, timeout=120)
            waited = time.monotonic() - t0
            by_device = one_record_each(st, [slow.path, *others])
        rec = by_device[slow.path]
        assert rec["verdict"] == "failed" and "too slow" in rec["error"]["message"], rec
        assert rec["error"]["stage"] == "image"
        for p in others:
            assert by_device[p]["verdict"] == "ok"
            seconds = sum(s["seconds"] for s in by_device[p]["stages"])
            assert seconds < 30, f"a neighbour took {seconds:.1f} s"
        order = [r["device"]["path"] for r in recs]
        assert order.index(slow.path) == 2, "the fast drives finished first"
    log_verifies(st)
    assert st.stop() == 0
    tally.count("faults", "injected")
    tally.count("faults", "survived")
    tally.case("faults", "drive slows to a crawl", f"failed as too slow after {waited:.0f} s")


def test_drive_that_comes_back_is_a_new_insertion(
    station: Callable[..., Station], tally: Tally, tmp_path: Path
) -> None:
    """The same drive pulled and plugged in again (a new DISKSEQ) gets a new job and a new
    record; while it stays plugged in, its own events start nothing."""
    st = station(drives=DRIVES)
    st.start()
    backing = st.shm / "returning.img"
    with open(backing, "wb") as f:
        f.truncate(48 * MiB)
    paths = []
    for i in range(3):
        with loop_device(backing=backing) as dev:
            st.wait_records(i + 1)
            paths.append(dev.path)
            time.sleep(0.5)
        assert len(st.records()) == i + 1
    recs = st.records()
    assert [r["device"]["path"] for r in recs] == paths
    assert all(r["verdict"] == "ok" for r in recs)
    assert len({r["job_id"] for r in recs}) == 3
    ports = {r["device"]["port"] for r in recs}
    assert ports == {f"loop:{backing}"}, ports
    _one_job_per_insertion(st, 3)
    log_verifies(st)
    assert st.stop() == 0
    _recorded(tally, 3)
    tally.case("load", "a drive plugged in 3 times", "3 insertions, 3 jobs, 3 records")

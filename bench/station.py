"""The real station daemon under a real systemd-udevd: parallel scaling, and memory over time.

``fdffd --config FILE`` runs as the station does, confined to loop devices over files in a
directory of ours (``drives.ports = ["loop:<dir>/*"]``, ``allow_loop = true``), so it never
touches another device.  The backing files have fixed names (``port-00.img`` ...), like the
fixed ports of a USB hub: a drive inserted again in the same "port" shows up as the same port.

- ``scaling``: N drives (1, 2, 4, 8, 16) at USB-stick speed (cgroup v1 blkio throttle on each
  loop device, the daemon in that cgroup), attached at once; the time from the first attach to
  the Nth record, the aggregate throughput against N times one drive alone (efficiency), the
  daemon's CPU (``cpu_times`` delta) and its peak RSS (sampled every 50 ms), as the test kit's
  ``Daemon`` reports them.
The caller keeps one ``systemd-udevd`` answering around both (``fdffd_testkit.udevd``): one
stopped and another started right after can race, and the second daemon then sees no events.

- ``memory``: many consecutive small unthrottled jobs, a few drives at a time; the daemon's RSS
  after each record: does it stay flat?
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from fdffd_testkit.loopdev import LoopDevice, loop_device
from fdffd_testkit.station import Daemon as KitDaemon
from fdffd_testkit.station import write_config
from fdffd_testkit.udevd import UDEVD, running_udevd, udevd_answers

from . import throttle
from .runner import fdffd_env, log

MiB = 1 << 20
GB = 1e9
EFFICIENCY_TARGET = 0.90
RSS_PER_DRIVE_TARGET = 64 * MiB
#: RSS may grow by at most this much from the first to the last jobs of the memory run
GROWTH_TARGET = 0.10


#: a loop device being attached: its context manager (exit = pull the drive)
_Plug = contextlib.AbstractContextManager[LoopDevice]


def available() -> str | None:
    if not os.path.exists(UDEVD):
        return f"no {UDEVD} (Debian package udev; run scripts/bootstrap)"
    return None


class UdevKeeper:
    """Keeps a systemd-udevd running for as long as the bench needs one.

    The machine may be shared with test sessions that start a udevd of their own and stop it
    when they end, in the middle of our run; without one the daemon sees no more insertions.
    ``check()`` starts our own when none answers (``udevadm control --ping``); ours are
    stopped again by pid at the end."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self.restarts = 0

    def __enter__(self) -> UdevKeeper:
        self._stack.enter_context(running_udevd())
        return self

    def check(self) -> None:
        if not udevd_answers():
            log(
                "no systemd-udevd answers any more (another session stopped its own?): "
                "starting ours"
            )
            self.restarts += 1
            self._stack.enter_context(running_udevd())

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


_KEEPER: UdevKeeper | None = None


def keep_udevd(keeper: UdevKeeper | None) -> None:
    global _KEEPER
    _KEEPER = keeper


def _check_udevd() -> None:
    if _KEEPER is not None:
        _KEEPER.check()


class RssSampler:
    """Samples the daemon's RSS (with its children, if any) every ``interval`` seconds."""

    def __init__(self, daemon: KitDaemon, interval: float = 0.05) -> None:
        self.daemon = daemon
        self.interval = interval
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        return self.daemon.rss(children=True)

    def reset(self) -> None:
        self.peak = self.rss()

    def _run(self) -> None:
        while not self._stop.is_set():
            r = self.rss()
            self.peak = max(self.peak, r)
            self.samples.append((time.monotonic(), r))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Daemon(KitDaemon):
    """The bench's station: state under ``root``, confined to loop devices over files in
    ``ports_dir``, no payload profile."""

    def __init__(self, root: Path, ports_dir: Path, *, workers: int, passes: int = 1) -> None:
        (root / "payloads").mkdir(parents=True, exist_ok=True)
        sock = root / "control.sock"
        config = write_config(
            root,
            station={"id": "bench", "control_socket": str(sock)},
            drives={"allow_loop": True, "ports": [f"loop:{ports_dir}/*"], "min_size": "1MiB"},
            job={"workers": workers, "passes": passes, "profile": ""},
        )
        super().__init__(
            config, socket=sock, state_dir=root / "state", log=root / "daemon.log", env=fdffd_env()
        )
        self.root = root

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        return super().stop(sig, timeout) if self.alive() else 0


@contextlib.contextmanager
def running_daemon(root: Path, ports_dir: Path, **kw: Any) -> Iterator[Daemon]:
    d = Daemon(root, ports_dir, **kw)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def _backing(ports_dir: Path, i: int, size: int) -> Path:
    path = ports_dir / f"port-{i:02d}.img"
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _surface(rec: dict[str, Any]) -> int:
    w = rec.get("wipe") or {}
    return int(w.get("bytes_written", 0)) + int(w.get("verified_bytes", 0))


def _wait_records(
    daemon: Daemon, want: set[str], timeout: float, poll_status: bool
) -> tuple[dict[str, tuple[float, dict[str, Any]]], int]:
    """Wait for one record per device path in ``want``; (path -> (time seen, record)), and the
    most drives the status showed active at once."""
    got: dict[str, tuple[float, dict[str, Any]]] = {}
    max_active = 0
    deadline = time.monotonic() + timeout
    next_status = 0.0
    while len(got) < len(want) and time.monotonic() < deadline:
        now = time.monotonic()
        for rec in daemon.new_records():
            path = (rec.get("device") or {}).get("path")
            if path in want and path not in got:
                got[path] = (now, rec)
        if poll_status and now >= next_status:
            st = daemon.status()
            if st:
                max_active = max(max_active, int(st["totals"]["active"]))
            next_status = now + 0.5
        if not daemon.alive():
            raise RuntimeError(f"the daemon died: {daemon.tail()}")
        _check_udevd()
        time.sleep(0.05)
    if len(got) < len(want):
        raise RuntimeError(
            f"{len(got)} of {len(want)} records after {timeout:.0f} s; daemon log: "
            + daemon.tail(1500)
        )
    return got, max_active


def scaling(
    workdir: Path,
    directory: str,
    counts: list[int],
    size: int,
    write_bps: int,
    read_bps: int,
) -> dict[str, Any]:
    """N throttled drives at once, for each N in ``counts``, processed by one daemon."""
    why = available() or throttle.available()
    if why:
        return {"skipped": why}
    ports = Path(directory) / f"fdffd-bench-ports-{os.getpid()}"
    other = Path(directory) / f"fdffd-bench-check-{os.getpid()}"
    ports.mkdir()
    other.mkdir()
    out: dict[str, Any] = {
        "size": size,
        "write_bps": write_bps,
        "read_bps": read_bps,
        "counts": counts,
        "runs": [],
    }
    try:
        with throttle.Throttle(write_bps, read_bps) as thr:
            # the throttle must bite: dd in the cgroup, on a device the daemon does not watch
            with loop_device(64 * MiB, directory=other) as dev:
                thr.limit(dev)
                out["check"] = thr.check(dev, mib=32)
                thr.unlimit(dev)
            log(
                "throttle check: dd in the cgroup writes {:.1f} MB/s, reads {:.1f} MB/s".format(
                    out["check"]["write_bps"] / 1e6, out["check"]["read_bps"] / 1e6
                )
            )
            backing = [_backing(ports, i, size) for i in range(max(counts))]
            with running_daemon(workdir / "scaling", ports, workers=max(counts)) as daemon:
                thr.add(daemon.pid)
                time.sleep(0.5)
                out["idle_rss"] = RssSampler(daemon).rss()
                for n in counts:
                    out["runs"].append(_scaling_run(daemon, thr, backing[:n], size))
                    r = out["runs"][-1]
                    log(
                        f"scaling N={n}: {r['seconds']:.1f} s, "
                        f"{r['throughput_bps'] / 1e6:.1f} MB/s aggregate, "
                        f"peak RSS {r['peak_rss'] / MiB:.0f} MiB, max active {r['max_active']}, "
                        f"verdicts {r['verdicts']}"
                    )
                    time.sleep(1.0)
    finally:
        shutil.rmtree(ports, ignore_errors=True)
        shutil.rmtree(other, ignore_errors=True)
    runs = out["runs"]
    one = next((r for r in runs if r["n"] == 1), None)
    for r in runs:
        if one:
            r["efficiency"] = r["throughput_bps"] / (r["n"] * one["throughput_bps"])
            # the same, from the jobs' own times only (leaves out attaching N drives in a row)
            r["job_efficiency"] = one["job_s_median"] / r["job_s_max"]
        r["rss_per_drive"] = r["peak_rss"] / r["n"]
        r["rss_per_drive_above_idle"] = max(0, r["peak_rss"] - out["idle_rss"]) / r["n"]
    top = max(runs, key=lambda r: r["n"]) if runs else None
    if top:
        out["top_n"] = top["n"]
        out["efficiency_met"] = (
            top.get("efficiency") is not None and top["efficiency"] >= EFFICIENCY_TARGET
        )
        out["rss_met"] = top["rss_per_drive"] <= RSS_PER_DRIVE_TARGET
    out["efficiency_target"] = EFFICIENCY_TARGET
    out["rss_per_drive_target"] = RSS_PER_DRIVE_TARGET
    return out


def _scaling_run(
    daemon: Daemon,
    thr: throttle.Throttle,
    backing: list[Path],
    size: int,
) -> dict[str, Any]:
    n = len(backing)
    daemon.new_records()  # skip anything older
    cpu0 = daemon.cpu_seconds()
    with RssSampler(daemon) as rss, ExitStack() as stack:
        t0 = time.monotonic()
        devs: list[LoopDevice] = []
        for path in backing:
            dev = stack.enter_context(loop_device(backing=path))
            thr.limit(dev)  # right after the attach: before udev and the daemon get to it
            devs.append(dev)
        attach_s = time.monotonic() - t0
        got, max_active = _wait_records(
            daemon, {d.path for d in devs}, timeout=120 + 30 * size / 1e7, poll_status=True
        )
        t_end = max(t for t, _ in got.values())
        cpu1 = daemon.cpu_seconds()
        for dev in devs:
            thr.unlimit(dev)
    recs = [rec for _, rec in got.values()]
    surface = sum(_surface(r) for r in recs)
    seconds = t_end - t0
    job_s = [sum(st["seconds"] for st in r.get("stages", [])) for r in recs]
    names: list[str] = []
    for r in recs:
        names += [st["name"] for st in r.get("stages", []) if st["name"] not in names]
    stages = {
        name: statistics.median(
            [sum(st["seconds"] for st in r.get("stages", []) if st["name"] == name) for r in recs]
        )
        for name in names
    }
    return {
        "n": n,
        "seconds": seconds,
        "attach_s": attach_s,
        "surface_bytes": surface,
        "throughput_bps": surface / seconds,
        "job_s_median": statistics.median(job_s),
        "job_s_max": max(job_s),
        "stages_s_median": stages,
        "daemon_cpu_s": cpu1 - cpu0,
        "daemon_cpu_s_per_gb": (cpu1 - cpu0) / (surface / GB) if surface else None,
        "peak_rss": rss.peak,
        "max_active": max_active,
        "verdicts": dict(
            sorted(
                {
                    v: sum(r["verdict"] == v for r in recs) for v in {r["verdict"] for r in recs}
                }.items()
            )
        ),
    }


def memory(
    workdir: Path,
    directory: str,
    jobs: int,
    size: int,
    in_flight: int = 1,
    stall: float = 20.0,
) -> dict[str, Any]:
    """``jobs`` consecutive unthrottled jobs on small drives, ``in_flight`` at a time, each
    drive re-inserted into the same port after its record; RSS after each record."""
    why = available()
    if why:
        return {"skipped": why}
    ports = Path(directory) / f"fdffd-bench-mem-{os.getpid()}"
    ports.mkdir()
    rss_after: list[int] = []
    verdicts: dict[str, int] = {}
    missed: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        backing = [_backing(ports, i, size) for i in range(in_flight)]
        with running_daemon(workdir / "memory", ports, workers=max(8, in_flight)) as daemon:
            sampler = RssSampler(daemon)
            time.sleep(0.5)
            idle = sampler.rss()
            attached: dict[
                str, tuple[contextlib.AbstractContextManager[LoopDevice], int, float]
            ] = {}
            started = 0
            free = list(range(in_flight))
            deadline = time.monotonic() + 60 + jobs * 10
            try:
                while len(rss_after) < jobs:
                    while free and started < jobs:
                        slot = free.pop(0)
                        cm = loop_device(backing=backing[slot])
                        dev = cm.__enter__()
                        attached[dev.path] = (cm, slot, time.monotonic())
                        started += 1
                    for rec in daemon.new_records():
                        path = (rec.get("device") or {}).get("path")
                        if path not in attached:
                            continue
                        rss_after.append(sampler.rss())
                        verdicts[rec["verdict"]] = verdicts.get(rec["verdict"], 0) + 1
                        cm, slot, _ = attached.pop(path)
                        cm.__exit__(None, None, None)
                        free.append(slot)
                        if len(rss_after) % 50 == 0:
                            log(
                                f"memory: {len(rss_after)}/{jobs} jobs, "
                                f"RSS {rss_after[-1] / MiB:.1f} MiB"
                            )
                    now = time.monotonic()
                    for path, (cm, slot, since) in list(attached.items()):
                        if now - since > stall:
                            # no record: the insertion was missed; pull the drive, insert again
                            log(f"memory: no record for {path} after {stall:.0f} s: re-inserting")
                            missed.append({"after_jobs": len(rss_after), "device": path})
                            attached.pop(path)
                            cm.__exit__(None, None, None)
                            free.append(slot)
                            started -= 1
                    if not daemon.alive():
                        raise RuntimeError(f"the daemon died: {daemon.tail()}")
                    if now > deadline or len(missed) > 10:
                        raise RuntimeError(
                            f"memory run: {len(rss_after)} of {jobs} records in time "
                            f"({len(missed)} insertions missed); " + daemon.tail(1500)
                        )
                    _check_udevd()
                    time.sleep(0.02)
            finally:
                for cm, _, _ in attached.values():
                    cm.__exit__(None, None, None)
                if missed:
                    keep = Path(f"/tmp/fdffd-bench-{os.getpid()}-memory-daemon.log")
                    shutil.copy(daemon.log, keep)
                    log(f"memory: daemon log kept in {keep}")
    finally:
        shutil.rmtree(ports, ignore_errors=True)
    k = min(50, max(1, len(rss_after) // 4))
    first = statistics.median(rss_after[:k])
    last = statistics.median(rss_after[-k:])
    growth = (last - first) / first if first else 0.0
    return {
        "jobs": jobs,
        "size": size,
        "in_flight": in_flight,
        "seconds": time.monotonic() - t0,
        "idle_rss": idle,
        "rss_after_each": rss_after,
        "window": k,
        "first_median": first,
        "last_median": last,
        "growth_bytes": last - first,
        "growth": growth,
        "growth_target": GROWTH_TARGET,
        "met": growth <= GROWTH_TARGET,
        "verdicts": verdicts,
        "missed_insertions": missed,
    }

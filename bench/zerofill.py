"""Zeros in free space against keyed fill: what the keyed pass under a zero-filled image costs.

A drive whose free space and slack read as zeros needs a keyed pass and its read-back under
the image (``fdffd/job/passes.py``) wherever the image leaves zeros; keyed free space needs
neither.  On one loop device over a pre-filled tmpfs file, and on the same at USB-stick speed
(the blkio throttle of ``bench.throttle``: the job and ``dd`` run in the throttled cgroup),
with a payload filling most of the drive and with a small one, each round runs the job with
``job.free_space = "keyed"`` and with ``"zeros"``.  Each is set against:

- the **raw bound**: ``dd`` with ``O_DIRECT`` writing the whole device once and reading it
  once (what keyed free space needs at least, with one pass);
- its **own minimum**: the bytes the job wrote and read (from its record's stages) at ``dd``'s
  speeds, i.e. for zeros ``(keyed + image) / write speed + (keyed-verify + verify) / read
  speed``; the naive design, a keyed pass and an image pass over the whole surface with two
  full read-backs, would be twice the raw bound.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import payload, throttle
from .rawio import dd_read, dd_write, prepared_loop, run_job
from .runner import Timed, fdffctl_path, fdffd_env, log, median, run_timed, summary, write_config

MiB = 1 << 20
MODES = ("keyed", "zeros")
#: payload sizes as a share of the drive: most of it, and a little
PAYLOADS = {"large": 0.85, "small": 0.05}
READ_STAGES = ("keyed-verify", "verify")
WRITE_STAGES = ("wipe-1", "keyed", "image")


def _bytes(rec: dict[str, Any], names: tuple[str, ...]) -> int:
    return sum(int(s.get("bytes") or 0) for s in rec.get("stages", []) if s["name"] in names)


def _mode_row(
    jobs: list[tuple[Timed, dict[str, Any]]], w_bps: float, r_bps: float, bound: float
) -> dict[str, Any]:
    rec = jobs[-1][1]
    written = _bytes(rec, WRITE_STAGES)
    read = _bytes(rec, READ_STAGES)
    own = written / w_bps + read / r_bps
    job_s = median([t.wall for t, _ in jobs])
    stages: dict[str, list[float]] = {}
    for _, r in jobs:
        for st in r.get("stages", []):
            stages.setdefault(st["name"], []).append(st["seconds"])
    return {
        "job_s": summary([t.wall for t, _ in jobs]),
        "stages_s": {k: median(v) for k, v in stages.items()},
        "written": written,
        "read": read,
        "keyed_bytes": _bytes(rec, ("keyed",)),
        "own_min_s": own,
        "ratio_bound": job_s / bound,
        "ratio_own": job_s / own if own else None,
        "verdicts": sorted({r["verdict"] for _, r in jobs}),
        "free_space": (rec.get("wipe") or {}).get("free_space"),
        "filesystem": (rec.get("filesystem") or {}).get("type"),
    }


def _import(workdir: Path, name: str, total: int) -> dict[str, Any]:
    src = workdir / f"src-{name}"
    shutil.rmtree(src, ignore_errors=True)
    tree = payload.generate(src, total)
    cfg = write_config(workdir, profile=name, name=f"import-{name}.toml")
    add = run_timed(
        [fdffctl_path(), "payload", "add", name, str(src), "--config", str(cfg)], env=fdffd_env()
    )
    shutil.rmtree(src, ignore_errors=True)
    if add.rc:
        raise RuntimeError(f"payload add {name} failed: {add.stderr.strip()[-400:]}")
    return {"files": tree["files"], "bytes": tree["bytes"]}


def _device(
    label: str,
    size: int,
    directory: str,
    workdir: Path,
    repeat: int,
    thr: throttle.Throttle | None,
) -> list[dict[str, Any]]:
    preexec: Callable[[], None] | None = thr.preexec if thr else None
    rows = []
    with prepared_loop(size, directory) as dev:
        if thr:
            thr.limit(dev)
        try:
            trees = {
                kind: _import(workdir, f"zf-{label}-{kind}", int(size * share) // MiB * MiB)
                for kind, share in PAYLOADS.items()
            }
            dd_w: list[Timed] = []
            dd_r: list[Timed] = []
            jobs: dict[tuple[str, str], list[tuple[Timed, dict[str, Any]]]] = {}
            fdffctl = fdffctl_path()
            for i in range(repeat):
                dd_w.append(dd_write(dev, preexec))
                dd_r.append(dd_read(dev, preexec))
                for kind in PAYLOADS:
                    for mode in MODES:
                        cfg = write_config(
                            workdir,
                            profile=f"zf-{label}-{kind}",
                            extra_job={"free_space": mode},
                            name=f"zf-{label}-{kind}-{mode}.toml",
                        )
                        t, rec = run_job(fdffctl, dev, cfg, preexec)
                        if t.rc:
                            log(f"zerofill {label} {kind} {mode}: exit {t.rc}, {rec.get('error')}")
                        jobs.setdefault((kind, mode), []).append((t, rec))
                log(
                    f"zerofill {label} round {i + 1}/{repeat}: dd w {dd_w[-1].wall:.2f}s "
                    f"r {dd_r[-1].wall:.2f}s, "
                    + ", ".join(f"{k}/{m} {v[-1][0].wall:.2f}s" for (k, m), v in jobs.items())
                )
        finally:
            if thr:
                thr.unlimit(dev)
        w = median([t.wall for t in dd_w])
        r = median([t.wall for t in dd_r])
        for kind in PAYLOADS:
            modes = {m: _mode_row(jobs[(kind, m)], size / w, size / r, w + r) for m in MODES}
            rows.append(
                {
                    "device": label,
                    "size": size,
                    "payload": kind,
                    "payload_files": trees[kind]["files"],
                    "payload_bytes": trees[kind]["bytes"],
                    "dd_write_s": summary([t.wall for t in dd_w]),
                    "dd_read_s": summary([t.wall for t in dd_r]),
                    "bound_s": w + r,
                    "naive_s": 2 * (w + r),
                    "modes": modes,
                    "zeros_over_keyed": modes["zeros"]["job_s"]["median"]
                    / modes["keyed"]["job_s"]["median"],
                }
            )
    return rows


def measure(
    workdir: Path,
    directory: str,
    tmpfs_size: int,
    usb_size: int,
    write_bps: int,
    read_bps: int,
    repeat: int,
) -> dict[str, Any]:
    """Both modes on a tmpfs device and a throttled one, each with a large and a small
    payload (the throttled device once: its speed is the throttle's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"rows": [], "write_bps": write_bps, "read_bps": read_bps}
    out["rows"] += _device("tmpfs", tmpfs_size, directory, workdir / "tmpfs", repeat, None)
    why = throttle.available()
    if why:
        out["usb_skipped"] = why
        return out
    with throttle.Throttle(write_bps, read_bps, name=f"fdffd-bench-zf-{os.getpid()}") as thr:
        out["rows"] += _device("usb", usb_size, directory, workdir / "usb", 1, thr)
    return out


def report_rows(z: dict[str, Any], size: Callable[[int], str]) -> list[tuple[str, ...]]:
    """The section's rows for ``bench.report`` (six columns)."""
    rows: list[tuple[str, ...]] = []
    for row in z["rows"]:
        dev = (
            "tmpfs"
            if row["device"] == "tmpfs"
            else (f"USB {z['write_bps'] / 1e6:g}/{z['read_bps'] / 1e6:g} MB/s")
        )
        rows.append(
            (
                "zerofill" if not rows else "",
                f"{dev} {size(row['size'])}, {row['payload']} payload",
                f"{size(row['payload_bytes'])} in {row['payload_files']} files",
                f"dd 1×{row['dd_write_s']['median']:.2f} s w + {row['dd_read_s']['median']:.2f} s r"
                f" = {row['bound_s']:.2f} s (naive 2W+2R: {row['naive_s']:.2f} s)",
                "",
                f"zeros / keyed: {row['zeros_over_keyed']:.2f}x",
            )
        )
        for mode in MODES:
            m = row["modes"][mode]
            keyed = m["keyed_bytes"]
            rows.append(
                (
                    "",
                    f"  {mode}",
                    f"{m['job_s']['median']:.2f} s" + _spread(m["job_s"]),
                    f"own minimum {m['own_min_s']:.2f} s ({m['ratio_own']:.2f}x): wrote "
                    f"{m['written'] / MiB:.0f} MiB, read {m['read'] / MiB:.0f} MiB"
                    + (f", keyed pass {keyed / row['size']:.0%} of the drive" if keyed else ""),
                    f"{m['ratio_bound']:.2f}x",
                    f"{','.join(m['verdicts'])}; "
                    + " · ".join(f"{k} {v:.2f}" for k, v in m["stages_s"].items()),
                )
            )
    if z.get("usb_skipped"):
        rows.append(("", "USB speed", "skipped", "", "", z["usb_skipped"]))
    return rows


def _spread(s: dict[str, Any]) -> str:
    return f" (±{s['spread'] * 50:.0f}%)" if s.get("n", 0) > 1 else ""

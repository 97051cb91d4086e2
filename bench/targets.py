"""Issue 5's targets, graded from the figures: one row per target, met or MISSED.

- job <= 1.10x the raw bound (passes x dd write + dd read), for every size and pass count
- a job with a payload <= 0.5x the usual chain (f3probe, nwipe, mkfs.fat, mcopy, read back)
- the probe right on every simulated fake, and faster than f3probe on each
- CPU <= 0.5 s per GB of surface (user + system, written + verified), jobs without payload
- >= 90% parallel efficiency at 16 drives
- <= 64 MiB RSS per active drive (the daemon's peak RSS with 16 drives / 16)
- RSS flat over 200 consecutive jobs (median of the last 50 within 10% of the first 50)
"""

from __future__ import annotations

import math
from typing import Any

MiB = 1 << 20
CPU_PER_GB_TARGET = 0.5


def _row(section: str, target: str, value: str, met: bool | None, note: str = "") -> dict[str, Any]:
    return {"section": section, "target": target, "value": value, "met": met, "note": note}


def _size(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / MiB:g} MiB"


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for job in results.get("job", []):
        rows.append(
            _row(
                "job",
                f"{_size(job['size'])}, passes={job['passes']}: job ≤ "
                f"{job['target_ratio']:.2f}x raw bound",
                f"{job['ratio']:.2f}x",
                bool(job["met"]),
            )
        )
    cpus = [
        (f"{_size(j['size'])} p={j['passes']}", j["cpu_s_per_gb"])
        for j in results.get("job", [])
        if j.get("cpu_s_per_gb") is not None
    ]
    pay = results.get("payload") or {}
    if pay and "skipped" not in pay and "ratio_to_usual" in pay:
        rows.append(
            _row(
                "payload",
                f"job with payload ≤ {pay['usual_target']:.1f}x the usual chain",
                f"{pay['ratio_to_usual']:.2f}x",
                bool(pay["usual_met"]),
                "f3probe + nwipe + mkfs.fat + mcopy in/out + sha256sum",
            )
        )
    probes = results.get("probe") or []
    if probes:
        right = [p for p in probes if p["fdffd"]["right"] == p["fdffd"]["runs"]]
        wrong = [p["case"] for p in probes if p not in right]
        rows.append(
            _row(
                "probe",
                "probe right on every fake",
                f"{len(right)}/{len(probes)} right",
                len(right) == len(probes),
                ("wrong: " + ", ".join(wrong)) if wrong else "",
            )
        )
        with_f3 = [p for p in probes if p.get("f3probe") and p["f3probe"]["own_s"]["median"]]
        if with_f3:
            f3_wrong_all = {
                p["case"] for p in with_f3 if p["f3probe"]["right"] < p["f3probe"]["runs"]
            }
            slower = [
                p["case"]
                for p in with_f3
                if (p["fdffd"]["own_s"]["median"] or math.inf) >= p["f3probe"]["own_s"]["median"]
            ]
            rows.append(
                _row(
                    "probe",
                    "probe faster than f3probe on each fake",
                    f"faster on {len(with_f3) - len(slower)}/{len(with_f3)}",
                    not slower,
                    (
                        "slower: "
                        + ", ".join(slower)
                        + (
                            f" (f3probe wrong on {len(f3_wrong)} of those)"
                            if (f3_wrong := [c for c in slower if c in f3_wrong_all])
                            else ""
                        )
                    )
                    if slower
                    else "",
                )
            )
    if cpus:
        worst_name, worst = max(cpus, key=lambda c: c[1])
        note = f"worst: {worst_name}"
        pc = pay.get("cpu_s_per_gb") if pay else None
        if pc is not None and not math.isnan(pc):
            note += f"; with the payload (every file hashed from the drive) {pc:.2f} s/GB"
        nw = (pay.get("usual") or {}).get("nwipe_cpu_s_per_gb") if pay else None
        if nw is not None:
            note += f"; nwipe {nw:.2f} s/GB"
        rows.append(
            _row(
                "cpu",
                f"CPU ≤ {CPU_PER_GB_TARGET} s/GB of surface",
                f"{worst:.2f} s/GB",
                worst <= CPU_PER_GB_TARGET,
                note,
            )
        )
    sc = results.get("scaling") or {}
    if sc and "skipped" not in sc and sc.get("runs"):
        top = max(sc["runs"], key=lambda r: r["n"])
        eff = top.get("efficiency")
        rows.append(
            _row(
                "scaling",
                f"≥ {sc['efficiency_target']:.0%} parallel efficiency at {top['n']} drives",
                f"{eff:.0%}" if eff is not None else "?",
                bool(sc.get("efficiency_met")),
                (
                    f"from the jobs' own times only: {top['job_efficiency']:.0%}"
                    if top.get("job_efficiency") is not None
                    else ""
                )
                + ("" if top["n"] >= 16 else "; fewer than 16 drives in this run"),
            )
        )
        rows.append(
            _row(
                "scaling",
                f"≤ {sc['rss_per_drive_target'] / MiB:.0f} MiB RSS per active drive "
                f"({top['n']} drives)",
                f"{top['rss_per_drive'] / MiB:.1f} MiB",
                bool(sc.get("rss_met")),
                f"peak {top['peak_rss'] / MiB:.0f} MiB / {top['n']}; "
                f"above idle: {top['rss_per_drive_above_idle'] / MiB:.1f} MiB per drive",
            )
        )
    mem = results.get("memory") or {}
    if mem and "skipped" not in mem:
        rows.append(
            _row(
                "memory",
                f"RSS flat over {mem['jobs']} jobs (last {mem['window']} ≤ first "
                f"{mem['window']} + {mem['growth_target']:.0%})",
                f"{mem['growth']:+.1%}",
                bool(mem["met"]),
                f"{mem['first_median'] / MiB:.1f} → {mem['last_median'] / MiB:.1f} MiB",
            )
        )
    return rows

"""The results as one text table (and the machine it ran on)."""

from __future__ import annotations

from typing import Any

from . import zerofill
from .machine import one_line

MiB = 1 << 20
GiB = 1 << 30
HEADER = ("section", "case", "fdffd", "reference", "ratio", "note")


def size(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= GiB and n % (GiB // 4) == 0:
        return f"{n / GiB:g} GiB"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB".replace(".0 MiB", " MiB")
    return f"{n} B"


def secs(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.3f} s" if x < 1 else f"{x:.2f} s"


def spread(s: dict[str, Any]) -> str:
    if not s or s.get("n", 0) < 2:
        return ""
    return f" (±{s['spread'] * 50:.0f}%)"


def _job_rows(row: dict[str, Any]) -> list[tuple[str, ...]]:
    p = row["passes"]
    ratio = row["ratio"]
    ref = (
        f"dd {p}×{secs(row['dd_write_s']['median'])} w + {secs(row['dd_read_s']['median'])} r"
        f" = {secs(row['bound_s'])}"
    )
    verdict = ",".join(row["verdicts"])
    note = f"target ≤{row['target_ratio']:.2f}x: {'met' if row['met'] else 'MISSED'}"
    if verdict != "ok":
        note += f"; verdict {verdict}"
    stages = " · ".join(f"{k} {v:.2f}" for k, v in row["stages_s"].items())
    stages += f" · outside stages {row['outside_stages_s']:.2f}"
    if row.get("cli_wall_s"):
        stages += f" · (one-off fdffctl process: {row['cli_wall_s']:.2f} s wall)"
    cpu = row["cpu_s_per_gb"]
    return [
        (
            "job",
            f"{size(row['size'])}, passes={p}",
            secs(row["job_s"]["median"]) + spread(row["job_s"]),
            ref
            + (
                f" (w ±{row['dd_write_s']['spread'] * 50:.0f}%, "
                f"r ±{row['dd_read_s']['spread'] * 50:.0f}%)"
                if row["dd_write_s"]["n"] > 1
                else ""
            ),
            f"{ratio:.2f}x",
            note,
        ),
        (
            "",
            "  stages (s)",
            stages,
            "",
            f"{row['ratio_in_stages']:.2f}x",
            "inside the stages only",
        ),
        (
            "",
            "  CPU per GB",
            f"{cpu:.2f} s/GB" if cpu is not None else "?",
            f"dd {row['dd_cpu_s_per_gb']:.2f} s/GB",
            "",
            f"user {row['cpu_user_s']:.2f} + sys {row['cpu_sys_s']:.2f} s over "
            f"{row['surface_bytes'] / 1e9:.2f} GB written+verified",
        ),
    ]


def _payload_rows(p: dict[str, Any]) -> list[tuple[str, ...]]:
    if "skipped" in p:
        return [("payload", "", "skipped", "", "", p["skipped"])]
    case = f"{size(p['size'])}, {size(p['payload_bytes'])} in {p['payload_files']} files"
    note = f"target ≤{p['target_ratio']:.2f}x: {'met' if p['met'] else 'MISSED'}"
    note += f"; {','.join(p['verdicts'])}, {p.get('filesystem')}"
    note += f", payload verified={p.get('payload_verified')}"
    stages = " · ".join(f"{k} {v:.2f}" for k, v in p["stages_s"].items())
    stages += f" · outside stages {p['outside_stages_s']:.2f}"
    rows = [
        (
            "payload",
            case,
            secs(p["job_s"]["median"]) + spread(p["job_s"]),
            f"dd bound {secs(p['bound_s'])}",
            f"{p['ratio']:.2f}x",
            note,
        ),
        ("", "  stages (s)", stages, "", "", f"import (payload add) {secs(p['import_s'])}"),
    ]
    u = p["usual"]
    if "skipped" in u:
        rows.append(("", "  usual way", "", "skipped", "", u["skipped"]))
    else:
        chain = " + ".join(f"{k} {v:.2f}" for k, v in u["steps_s"].items())
        rows.append(
            (
                "",
                "  usual way",
                secs(p["job_s"]["median"]),
                f"{chain} = {secs(u['total_s']['median'])}{spread(u['total_s'])}",
                f"{p['ratio_to_usual']:.2f}x",
                f"job / chain; target ≤{p['usual_target']:.1f}x: "
                + ("met" if p["usual_met"] else "MISSED"),
            )
        )
        rows.append(
            (
                "",
                "  CPU per GB",
                f"{p['cpu_s_per_gb']:.2f} s/GB" if p.get("cpu_s_per_gb") is not None else "?",
                f"nwipe {u['nwipe_cpu_s_per_gb']:.2f} s/GB",
                "",
                f"nwipe: user {u['nwipe_user_s']:.2f} + sys {u['nwipe_sys_s']:.2f} s over "
                f"{u['nwipe_surface_bytes'] / 1e9:.2f} GB written+verified (child rusage)"
                + (
                    f"; nwipe's fixed cost (8 MiB device) {u['nwipe_fixed_s']:.1f} s"
                    if u.get("nwipe_fixed_s") is not None
                    else ""
                ),
            )
        )
    return rows


def _scaling_rows(sc: dict[str, Any]) -> list[tuple[str, ...]]:
    if "skipped" in sc:
        return [("scaling", "", "skipped", "", "", sc["skipped"])]
    chk = sc.get("check", {})
    rows: list[tuple[str, ...]] = []
    for i, r in enumerate(sc["runs"]):
        eff = r.get("efficiency")
        verdicts = ",".join(f"{k} {v}" for k, v in r["verdicts"].items())
        rows.append(
            (
                "scaling" if i == 0 else "",
                f"{r['n']} × {size(sc['size'])}",
                f"{r['seconds']:.1f} s, {r['throughput_bps'] / 1e6:.1f} MB/s",
                f"{r['n']} × one drive alone",
                f"{eff:.0%}" if eff is not None else "?",
                f"attach {r['attach_s']:.1f} s; job median {r['job_s_median']:.1f} s "
                f"(max {r['job_s_max']:.1f}); "
                f"CPU {r['daemon_cpu_s']:.2f} s = {r['daemon_cpu_s_per_gb'] or 0:.2f} s/GB; "
                f"peak RSS {r['peak_rss'] / MiB:.0f} MiB ({r['rss_per_drive'] / MiB:.1f}/drive); "
                f"max active {r['max_active']}; {verdicts}",
            )
        )
        if r.get("stages_s_median"):
            rows.append(
                (
                    "",
                    "    stages (s)",
                    " · ".join(f"{k} {v:.2f}" for k, v in r["stages_s_median"].items()),
                    "",
                    "",
                    "medians over the N jobs",
                )
            )
    rows.append(
        (
            "",
            "  throttle",
            f"{sc['write_bps'] / 1e6:g} MB/s w, {sc['read_bps'] / 1e6:g} MB/s r",
            f"dd in the cgroup: {chk.get('write_bps', 0) / 1e6:.1f} w, "
            f"{chk.get('read_bps', 0) / 1e6:.1f} r MB/s",
            "",
            f"blkio cgroup v1; daemon idle RSS {sc['idle_rss'] / MiB:.0f} MiB",
        )
    )
    return rows


def _memory_rows(m: dict[str, Any]) -> list[tuple[str, ...]]:
    if "skipped" in m:
        return [("memory", "", "skipped", "", "", m["skipped"])]
    series = m["rss_after_each"]
    verdicts = ",".join(f"{k} {v}" for k, v in sorted(m["verdicts"].items()))
    return [
        (
            "memory",
            f"{m['jobs']} jobs × {size(m['size'])}, {m['in_flight']} at a time",
            f"RSS {m['first_median'] / MiB:.1f} → {m['last_median'] / MiB:.1f} MiB "
            f"({m['growth']:+.1%})",
            f"first {m['window']} vs last {m['window']} median",
            "",
            f"min {min(series) / MiB:.1f}, max {max(series) / MiB:.1f} MiB; idle "
            f"{m['idle_rss'] / MiB:.1f} MiB; {m['seconds']:.0f} s; {verdicts}"
            + (
                f"; {len(m['missed_insertions'])} insertion(s) missed, re-inserted"
                if m.get("missed_insertions")
                else ""
            ),
        )
    ]


def cli_rows(c: dict[str, Any]) -> list[tuple[str, ...]]:
    """The quick commands (bench/cli.py): wall time against the bare interpreter."""
    base = c["python_s"]["median"]
    rows: list[tuple[str, ...]] = []
    for i, case in enumerate(c["cases"]):
        med = case["wall_s"]["median"]
        heavy = ", ".join(case["heavy_imports"]) or "none"
        rows.append(
            (
                "cli" if i == 0 else "",
                case["case"],
                secs(med) + spread(case["wall_s"]),
                f"python -c pass {secs(base)}",
                f"{med / base:.1f}×" if base else "",
                f"median of {c['runs']}; exit {'/'.join(map(str, case['exit']))}; "
                f"heavy modules imported: {heavy}",
            )
        )
    return rows


def _targets_table(targets: list[dict[str, Any]]) -> list[str]:
    if not targets:
        return []
    head = ("target", "value", "", "note")
    rows = [
        (
            t["target"],
            t["value"],
            "met" if t["met"] else ("MISSED" if t["met"] is False else "?"),
            t["note"],
        )
        for t in targets
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    out = ["targets (issue 5):"]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    met = sum(1 for t in targets if t["met"])
    out.append(f"{met} of {len(targets)} targets met")
    return out


def _probe_cell(t: dict[str, Any] | None) -> str:
    if t is None:
        return "not run"
    verdict = "/".join(t["verdicts"])
    mark = (
        "right"
        if t["right"] == t["runs"]
        else ("WRONG" if t["right"] == 0 else f"{t['right']}/{t['runs']} right")
    )
    own = t["own_s"]["median"]
    return f"{verdict}, {size(t['usable'])}, {secs(own)}{spread(t['own_s'])}: {mark}"


def _probe_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for i, r in enumerate(rows):
        fd, f3 = r["fdffd"], r["f3probe"]
        ratio = ""
        if f3 and fd["own_s"]["median"] and f3["own_s"]["median"]:
            ratio = f"{fd['own_s']['median'] / f3['own_s']['median']:.2f}x"
        why = "; ".join(
            f"{name}: {w}"
            for name, t in (("fdffd", fd), ("f3probe", f3))
            if t
            for w in t["why_wrong"]
        )
        out.append(
            ("probe" if i == 0 else "", r["case"], _probe_cell(fd), _probe_cell(f3), ratio, why)
        )
        f3_10 = r.get("f3probe-10")
        if f3_10:
            ratio = ""
            if fd["own_s"]["median"] and f3_10["own_s"]["median"]:
                ratio = f"{fd['own_s']['median'] / f3_10['own_s']['median']:.2f}x"
            why = "; ".join(f"f3probe 10.0: {w}" for w in f3_10["why_wrong"])
            out.append(("", "  against f3 10.0", "", _probe_cell(f3_10), ratio, why))
    return out


def render(results: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = []
    for row in results.get("job", []):
        rows += _job_rows(row)
    if "payload" in results:
        rows += _payload_rows(results["payload"])
    if "zerofill" in results:
        rows += zerofill.report_rows(results["zerofill"], size)
    rows += _probe_rows(results.get("probe", []))
    if "scaling" in results:
        rows += _scaling_rows(results["scaling"])
    if "memory" in results:
        rows += _memory_rows(results["memory"])
    if "cli" in results:
        rows += cli_rows(results["cli"])
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    sep = "  "

    def line(r: tuple[str, ...]) -> str:
        return sep.join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    out = [f"machine: {one_line(results['machine'])}", ""]
    out.append(line(HEADER))
    out.append(sep.join("-" * w for w in widths))
    prev = None
    for r in rows:
        if r[0] and prev is not None:
            out.append("")
        out.append(line(r))
        prev = r
    out.append("")
    tt = _targets_table(results.get("targets", []))
    if tt:
        out += [*tt, ""]
    out += [f"note: {n}" for n in results.get("notes", [])]
    return "\n".join(out) + "\n"

"""The benchmark's figures as one PNG (docs/benchmarks.png), the machine line in its title.

Three panels: each job case's time over its raw bound (and the payload job over the usual chain)
against the targets; parallel efficiency (and peak RSS per drive) against the number of drives;
the daemon's RSS after each of the consecutive jobs of the memory run.  Needs matplotlib (the
``bench`` optional dependencies, which ``scripts/bench`` installs).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .machine import one_line

MiB = 1 << 20


def _case(j: dict[str, Any]) -> str:
    s = j["size"]
    size = f"{s / (1 << 30):g}G" if s >= 1 << 30 else f"{s / MiB:g}M"
    return f"{size} p{j['passes']}"


def write(results: dict[str, Any], path: Path) -> str | None:
    """Write the plot; None on success, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'; scripts/bench does)"

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    fig.suptitle(
        "\n".join(textwrap.wrap("fdffd benchmark — " + one_line(results["machine"]), 150)),
        fontsize=8,
    )

    ax = axes[0]
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for j in results.get("job", []):
        labels.append(_case(j))
        values.append(j["ratio"])
        colors.append("tab:green" if j["met"] else "tab:red")
    pay = results.get("payload") or {}
    if pay.get("ratio_to_usual") is not None:
        labels.append("payload /\nusual chain")
        values.append(pay["ratio_to_usual"])
        colors.append("tab:green" if pay.get("usual_met") else "tab:red")
    if values:
        ax.bar(range(len(values)), values, color=colors)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=8)
        if results.get("job"):
            ax.axhline(
                results["job"][0]["target_ratio"], color="k", ls="--", lw=1, label="job target"
            )
        if pay.get("usual_target") is not None:
            ax.axhline(pay["usual_target"], color="grey", ls=":", lw=1, label="vs chain target")
        ax.set_ylim(0, max(values) * 1.18)
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title("job time / raw I/O bound (dd O_DIRECT)", fontsize=9)
    ax.set_ylabel("ratio")

    ax = axes[1]
    sc = results.get("scaling") or {}
    runs = sc.get("runs") or []
    if runs:
        ns = [r["n"] for r in runs]
        eff = [100 * (r.get("efficiency") or 0) for r in runs]
        ax.plot(ns, eff, "o-", color="tab:blue", label="efficiency")
        ax.axhline(100 * sc["efficiency_target"], color="tab:blue", ls="--", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_ylim(0, 110)
        ax.set_xlabel("drives at once")
        ax.set_ylabel("aggregate / (N × one drive), %", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(
            ns, [r["rss_per_drive"] / MiB for r in runs], "s-", color="tab:orange", label="RSS"
        )
        ax2.axhline(sc["rss_per_drive_target"] / MiB, color="tab:orange", ls="--", lw=1)
        ax2.set_ylabel("peak RSS / drive, MiB", color="tab:orange")
        ax2.set_ylim(bottom=0)
        lines = ax.get_lines()[:1] + ax2.get_lines()[:1]
        ax.legend(lines, ["efficiency", "peak RSS / drive"], fontsize=7, loc="lower left")
        ax.set_title(
            f"parallel scaling: {sc['size'] / MiB:g} MiB drives at "
            f"{sc['write_bps'] / 1e6:g}/{sc['read_bps'] / 1e6:g} MB/s",
            fontsize=9,
        )
    else:
        ax.set_title("parallel scaling: not run", fontsize=9)

    ax = axes[2]
    mem = results.get("memory") or {}
    series = mem.get("rss_after_each") or []
    if series:
        ax.plot(range(1, len(series) + 1), [r / MiB for r in series], color="tab:purple", lw=1)
        k = mem["window"]
        ax.hlines(mem["first_median"] / MiB, 1, k, color="k", lw=2, label=f"median first {k}")
        ax.hlines(
            mem["last_median"] / MiB,
            len(series) - k + 1,
            len(series),
            color="tab:red",
            lw=2,
            label=f"median last {k}",
        )
        ax.set_xlabel("job")
        ax.set_ylabel("daemon RSS after the record, MiB")
        ax.set_ylim(0, max(series) / MiB * 1.2)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"memory: {len(series)} consecutive jobs ({mem['growth']:+.1%})", fontsize=9)
    else:
        ax.set_title("memory: not run", fontsize=9)

    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None

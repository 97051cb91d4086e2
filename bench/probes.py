"""The counterfeit probe next to ``f3probe --destructive`` on each simulated fake.

Every run gets a fresh fake (a FUSE-simulated drive behind a loop device, from the test kit
``fdffd_testkit``), so neither tool sees what the other, or an earlier run, wrote.  The real
size is known, so each answer is graded: right means "counterfeit" with a usable size at most
the real size and within 1% of it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fdffd_testkit.fakedrive import FakeSpec, fake_drive

from .runner import fdffd_env, log, median, run_timed, summary, write_config

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Case:
    kind: str
    announced: int
    real: int
    cache: int = 0

    @property
    def name(self) -> str:
        s = f"{self.kind} {_size(self.announced)}/{_size(self.real)}"
        return s + (f" +{_size(self.cache)} cache" if self.cache else "")

    def spec(self) -> FakeSpec:
        return FakeSpec(
            announced=self.announced, real=self.real, kind=self.kind, cache_bytes=self.cache
        )


def _size(n: int) -> str:
    for unit, div in (("G", GiB), ("M", MiB)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n / MiB:.1f}M"


KINDS = ("wraparound", "drop-zeros", "drop-ff", "ioerror")


def cases(quick: bool) -> list[Case]:
    sizes = [(256 * MiB, 64 * MiB)] if quick else [(GiB, 256 * MiB), (4 * GiB, GiB)]
    out = []
    for announced, real in sizes:
        out += [Case(k, announced, real) for k in KINDS]
        out.append(Case("drop-zeros", announced, real, cache=4 * MiB))
    return out


def grade(case: Case, counterfeit: bool | None, usable: int | None) -> tuple[bool, str]:
    """Whether an answer is right, and why not."""
    if counterfeit is None or usable is None:
        return False, "no answer"
    if not counterfeit:
        return False, "missed: called it genuine"
    if usable > case.real:
        return False, f"usable {_size(usable)} > real {_size(case.real)}"
    if usable < case.real * 0.99:
        return False, f"usable {usable / MiB:.1f} MiB, real {_size(case.real)}"
    return True, ""


# --------------------------------------------------------------------------- fdffd


def run_fdffd(fdffctl: str, dev: str, config: Path) -> dict[str, Any]:
    t = run_timed(
        [fdffctl, "probe", dev, "--config", str(config), "--json"], env=fdffd_env(), timeout=600
    )
    try:
        out = json.loads(t.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {
            "wall": t.wall,
            "cpu": t.cpu,
            "rc": t.rc,
            "error": t.stderr.strip()[-400:],
            "counterfeit": None,
            "usable": None,
            "seconds": None,
            "verdict": f"error (exit {t.rc})",
        }
    verdict = f"counterfeit ({out.get('kind')})" if out["counterfeit"] else "genuine"
    return {
        "wall": t.wall,
        "cpu": t.cpu,
        "rc": t.rc,
        "counterfeit": bool(out["counterfeit"]),
        "usable": int(out["usable_bytes"]),
        "seconds": float(out["seconds"]),
        "verdict": verdict,
    }


# --------------------------------------------------------------------------- f3probe

_VERDICT = re.compile(
    r"(Good|Bad) news: The device .* (is the real thing|is damaged|"
    r"is a counterfeit of type (\w+))"
)
_USABLE = re.compile(r"\*Usable\* size: .*\((\d+) blocks\)")
_BLOCK = re.compile(r"Physical block size: .*\(2\^(\d+) Bytes\)")
_TIME = re.compile(r"Probe time: ([\d.]+)\s*(us|ms|s|min)\b")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


def parse_f3probe(text: str) -> dict[str, Any]:
    """Verdict, usable bytes and its own probe time from ``f3probe`` output."""
    out: dict[str, Any] = {"counterfeit": None, "usable": None, "seconds": None, "verdict": "?"}
    m = _VERDICT.search(text)
    if m:
        if m.group(2) == "is the real thing":
            out["counterfeit"], out["verdict"] = False, "genuine"
        elif m.group(2) == "is damaged":
            out["counterfeit"], out["verdict"] = True, "damaged"
        else:
            out["counterfeit"], out["verdict"] = True, f"counterfeit ({m.group(3)})"
    blocks = _USABLE.search(text)
    shift = _BLOCK.search(text)
    if blocks and shift:
        out["usable"] = int(blocks.group(1)) << int(shift.group(1))
    t = _TIME.search(text)
    if t:
        out["seconds"] = float(t.group(1)) * _UNITS[t.group(2)]
    return out


def run_f3probe(dev: str) -> dict[str, Any]:
    try:
        t = run_timed(["f3probe", "--destructive", "--time-ops", dev], timeout=600)
    except subprocess.TimeoutExpired:
        return {
            "wall": 600.0,
            "cpu": None,
            "rc": None,
            "counterfeit": None,
            "usable": None,
            "seconds": None,
            "verdict": "timeout (600 s)",
        }
    out = parse_f3probe(t.stdout)
    out.update(wall=t.wall, cpu=t.cpu, rc=t.rc)
    if out["verdict"] == "?":
        out["error"] = (t.stderr or t.stdout).strip()[-400:]
    return out


# --------------------------------------------------------------------------- the section


def _tool_row(case: Case, runs: list[dict[str, Any]]) -> dict[str, Any]:
    grades = [grade(case, r["counterfeit"], r["usable"]) for r in runs]
    right = sum(ok for ok, _ in grades)
    usables = [r["usable"] for r in runs if r["usable"] is not None]
    return {
        "verdicts": sorted({r["verdict"] for r in runs}),
        "usable": int(median(usables)) if usables else None,
        "usable_all": usables,
        "right": right,
        "runs": len(runs),
        "why_wrong": sorted({why for ok, why in grades if not ok}),
        "wall_s": summary([r["wall"] for r in runs]),
        "own_s": summary([r["seconds"] for r in runs if r["seconds"] is not None]),
        "errors": [r["error"] for r in runs if r.get("error")][:2],
    }


def measure(
    fdffctl: str, workdir: Path, repeat: int, quick: bool, directory: str, have_f3: bool
) -> list[dict[str, Any]]:
    config = write_config(workdir / "probe")
    rows = []
    for case in cases(quick):
        fd_runs: list[dict[str, Any]] = []
        f3_runs: list[dict[str, Any]] = []
        for _ in range(repeat):
            with fake_drive(case.spec(), directory=directory) as drive:
                fd_runs.append(run_fdffd(fdffctl, drive.path, config))
            if have_f3:
                with fake_drive(case.spec(), directory=directory) as drive:
                    f3_runs.append(run_f3probe(drive.path))
        row = {
            "case": case.name,
            "kind": case.kind,
            "announced": case.announced,
            "real": case.real,
            "cache": case.cache,
            "fdffd": _tool_row(case, fd_runs),
            "f3probe": _tool_row(case, f3_runs) if have_f3 else None,
        }
        f3 = row["f3probe"]
        log(
            f"probe {case.name}: fdffd {row['fdffd']['verdicts']} "
            f"{row['fdffd']['own_s']['median']}s"
            + (f"; f3probe {f3['verdicts']} {f3['own_s']['median']}s" if f3 else "")
        )
        rows.append(row)
    return rows

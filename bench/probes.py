"""The counterfeit probe next to ``f3probe --destructive`` on each simulated fake.

Every run gets a fresh fake (a FUSE-simulated drive behind a loop device, from the test kit
``fdffd_testkit``), so neither tool sees what the other, or an earlier run, wrote.  The real
size is known, so each answer is graded: right means "counterfeit" with a usable size at most
the real size and within 1% of it.

The fakes: the classic kinds (wraparound, writes dropped as zeros or 0xFF, I/O errors past the
real flash, a small cache) at each size, and at the first size the behaviours seen in the wild
(a cache of the last writes past the flash, below and far above the probe's flush; a large
write-back cache; stale reads; a capacity that moves at each cache flush; real flash smaller
than the probe's flush).  The reference is Debian's ``f3probe`` (f3 8.0); with ``--f3-10
PATH`` also f3 10.0's, from a built ``f3probe`` or from its source (a tarball or directory,
built into a temporary directory: needs make, a C compiler and libudev-dev).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
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
    tail_cache: int = 0
    stale: str = ""
    moving: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        s = f"{self.kind} {_size(self.announced)}/{_size(self.real)}"
        if self.cache:
            s += f" +{_size(self.cache)} cache"
        if self.tail_cache:
            s += f" +{_size(self.tail_cache)} tail cache"
        if self.stale:
            s += f" stale {self.stale}"
        if self.moving:
            s += " moving " + ",".join(_size(m) for m in self.moving)
        return s

    def spec(self) -> FakeSpec:
        return FakeSpec(
            announced=self.announced,
            real=self.real,
            kind=self.kind,
            cache_bytes=self.cache,
            tail_cache_bytes=self.tail_cache,
            stale=self.stale,
            moving=self.moving,
        )


def _size(n: int) -> str:
    for unit, div in (("G", GiB), ("M", MiB)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n / MiB:.1f}M"


KINDS = ("wraparound", "drop-zeros", "drop-ff", "ioerror")


def wild(announced: int, real: int) -> list[Case]:
    """The behaviours seen in the wild, on one size (``announced`` = 4 x ``real``)."""
    z = "drop-zeros"
    return [
        Case(z, announced, real, tail_cache=8 * MiB),
        Case("drop-ff", announced, real, tail_cache=real),  # far above the probe's flush
        Case(z, announced, real, cache=real),
        Case(z, announced, real, stale="donor"),
        Case(z, announced, real, stale="previous"),
        Case("drop-ff", announced, real, stale="other-block"),
        Case(z, announced, real, moving=(real, real * 3 // 2, real * 5 // 2)),
        Case(z, announced, 3 * MiB),
    ]


def cases(quick: bool) -> list[Case]:
    sizes = [(256 * MiB, 64 * MiB)] if quick else [(GiB, 256 * MiB), (4 * GiB, GiB)]
    out = []
    for announced, real in sizes:
        out += [Case(k, announced, real) for k in KINDS]
        out.append(Case("drop-zeros", announced, real, cache=4 * MiB))
    return out + wild(*sizes[0])


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


def run_f3probe(dev: str, exe: str = "f3probe") -> dict[str, Any]:
    try:
        t = run_timed([exe, "--destructive", "--time-ops", dev], timeout=600)
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


def prepare_f3_10(path: str, workdir: Path) -> tuple[str | None, str]:
    """An f3 10.0 ``f3probe`` from ``path``: the binary itself, or a source tarball or
    directory built into ``workdir`` (``make build/f3probe``).  Returns (binary or None,
    a note saying what happened)."""
    src = Path(path)
    if src.is_file() and os.access(src, os.X_OK) and not tarfile.is_tarfile(src):
        return str(src), f"f3 10.0: {src}"
    build = workdir / "f3-10"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    try:
        if src.is_file():
            with tarfile.open(src) as tar:
                tar.extractall(build, filter="data")
        elif src.is_dir():
            shutil.copytree(src, build / src.name)
        else:
            return None, f"f3 10.0: {path} is neither f3probe nor its source"
        makefiles = sorted(build.glob("*/Makefile")) or sorted(build.glob("Makefile"))
        if not makefiles:
            return None, f"f3 10.0: no Makefile in {path}"
        top = makefiles[0].parent
        t = run_timed(["make", "-C", str(top), "build/f3probe"], timeout=600)
    except (OSError, tarfile.TarError, subprocess.TimeoutExpired) as exc:
        return None, f"f3 10.0: could not unpack or build {path}: {exc}"
    exe = top / "build" / "f3probe"
    if t.rc or not exe.exists():
        why = (t.stderr or t.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"f3 10.0: build failed (needs make, cc, libudev-dev): {why[0][:200]}"
    return str(exe), f"f3 10.0: built from {path}"


def measure(
    fdffctl: str,
    workdir: Path,
    repeat: int,
    quick: bool,
    directory: str,
    have_f3: bool,
    f3_10: str | None = None,
) -> list[dict[str, Any]]:
    config = write_config(workdir / "probe")
    rows = []
    refs = ([("f3probe", "f3probe")] if have_f3 else []) + (
        [("f3probe-10", f3_10)] if f3_10 else []
    )
    for case in cases(quick):
        fd_runs: list[dict[str, Any]] = []
        ref_runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in refs}
        for _ in range(repeat):
            with fake_drive(case.spec(), directory=directory) as drive:
                fd_runs.append(run_fdffd(fdffctl, drive.path, config))
            for name, exe in refs:
                with fake_drive(case.spec(), directory=directory) as drive:
                    ref_runs[name].append(run_f3probe(drive.path, exe))
        row: dict[str, Any] = {
            "case": case.name,
            "kind": case.kind,
            "announced": case.announced,
            "real": case.real,
            "cache": case.cache,
            "tail_cache": case.tail_cache,
            "fdffd": _tool_row(case, fd_runs),
            "f3probe": None,
        }
        for name, runs in ref_runs.items():
            row[name] = _tool_row(case, runs)
        log(
            f"probe {case.name}: fdffd {row['fdffd']['verdicts']} "
            f"{row['fdffd']['own_s']['median']}s"
            + "".join(
                f"; {name} {row[name]['verdicts']} {row[name]['own_s']['median']}s"
                for name, _ in refs
            )
        )
        rows.append(row)
    return rows

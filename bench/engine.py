"""``scripts/bench``: fdffd against its anchors on this machine; prints one table (or JSON).

    python -m bench.engine [--quick] [--passes 1,3] [--size 1GiB] [--repeat 3]
                           [--only job,payload,probe] [--json] [--out FILE]

1. job:     a whole ``fdffctl process`` on a tmpfs loop device next to ``dd`` with ``O_DIRECT``
            writing and reading the same device in the same run (target: job <= 1.15x of
            passes x write + 1 x read), per-stage seconds, CPU seconds per GB of surface.
2. payload: the same with a generated payload profile (when ``fdffctl payload add`` exists),
            next to mkfs.fat + mcopy + read back + sha256sum.
3. probe:   ``fdffctl probe`` next to ``f3probe --destructive`` on each simulated fake.

Needs root (loop devices, FUSE).  Touches only devices it creates through ``fdffd.sim``.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fdffd.sizes import parse_size

from . import machine, payload, probes, rawio, report
from .runner import fdffctl_path, log, missing_tools

SECTIONS = ("job", "payload", "probe")


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not vals or any(not 1 <= v <= 8 for v in vals):
        raise argparse.ArgumentTypeError("pass counts are 1..8")
    return vals


def _size_list(text: str) -> list[int]:
    try:
        vals = [parse_size(x.strip()) for x in text.split(",") if x.strip()]
    except Exception as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    for v in vals:
        if v < 64 << 20 or v % rawio.BS:
            raise argparse.ArgumentTypeError(
                f"{v}: sizes must be at least 64 MiB and a multiple of 4 MiB"
            )
    return vals


def _sections(text: str) -> list[str]:
    vals = [x.strip() for x in text.split(",") if x.strip()]
    bad = [v for v in vals if v not in SECTIONS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}"
        )
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (256 MiB device, 64 MiB fakes), one repetition: under a minute",
    )
    p.add_argument(
        "--passes",
        type=_int_list,
        default=[1],
        metavar="N[,N...]",
        help="job.passes values to measure (default 1)",
    )
    p.add_argument(
        "--size",
        type=_size_list,
        default=None,
        metavar="SIZE[,SIZE...]",
        help="loop device size(s) for the job section (default 1GiB; --quick 256MiB)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="R",
        help="repetitions; medians are reported (default 3; --quick 1)",
    )
    p.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        metavar="SECTIONS",
        help="comma-separated subset of: job, payload, probe",
    )
    p.add_argument(
        "--payload-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="generated payload size (default 600MiB on 1 GiB; ~60%% of the device)",
    )
    p.add_argument(
        "--dir",
        default="/dev/shm",
        metavar="DIR",
        help="where backing files and scratch go (default /dev/shm: tmpfs)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of the table"
    )
    p.add_argument(
        "--out", metavar="FILE", help="also write the output (table, or JSON with --json) to FILE"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print(
            "bench: run as root (it creates loop devices and FUSE-simulated drives)",
            file=sys.stderr,
        )
        return 2
    repeat = args.repeat or (1 if args.quick else 3)
    sizes = args.size or [(256 << 20) if args.quick else (1 << 30)]
    need = ["dd", "losetup", "fusermount3"]
    miss = missing_tools(need)
    if miss:
        print(f"bench: missing {', '.join(miss)} (run scripts/bootstrap)", file=sys.stderr)
        return 2
    fdffctl = fdffctl_path()
    results: dict[str, Any] = {
        "machine": machine.describe(),
        "settings": {
            "quick": args.quick,
            "repeat": repeat,
            "sizes": sizes,
            "passes": args.passes,
            "sections": args.only,
            "dir": args.dir,
            "fdffctl": fdffctl,
        },
        "notes": [],
    }
    notes: list[str] = results["notes"]
    workdir = Path(tempfile.mkdtemp(prefix="fdffd-bench-", dir=args.dir))
    t0 = time.monotonic()
    try:
        if "job" in args.only or "payload" in args.only:
            results["job"] = []
            for i, size in enumerate(sizes):
                with rawio.prepared_loop(size, args.dir) as dev:
                    log(f"{dev.path}: {report.size(size)} over {dev.backing} (pre-filled)")
                    passes = args.passes if "job" in args.only else [1]
                    rows, dd_w, dd_r = rawio.measure(
                        dev,
                        passes,
                        repeat,
                        workdir / f"job{i}",
                        fdffctl,
                        label=f"{report.size(size)} ",
                    )
                    if "job" in args.only:
                        results["job"] += rows
                    if "payload" in args.only and i == 0:
                        pbytes = args.payload_size or payload.default_payload_bytes(size)
                        try:
                            results["payload"] = payload.measure(
                                dev, dd_w, dd_r, repeat, workdir / "payload", pbytes
                            )
                        finally:
                            payload.cleanup(workdir / "payload")
        if "probe" in args.only:
            have_f3 = shutil.which("f3probe") is not None
            if not have_f3:
                notes.append("f3probe not found (Debian package f3): the reference column is empty")
            results["probe"] = probes.measure(
                fdffctl, workdir / "probe", repeat, args.quick, args.dir, have_f3
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_end"] = machine.loadavg()
    results["seconds"] = round(time.monotonic() - t0, 1)
    notes.append(
        f"medians of {repeat} run(s); (±x%) is half the max-min spread over the median; "
        f"bench took {results['seconds']} s"
    )
    notes.append(
        "job times and CPU are measured inside the job, in a process that has imported fdffd "
        "already, as the station daemon runs it; 'outside stages' is opening the drive, the "
        "gate and the job's bookkeeping. A one-off `fdffctl process` adds Python start-up "
        "(about 0.5 s of imports) and the record's signing on top; probe times are the wall "
        "clock of `fdffctl probe`, start-up included"
    )
    text = (
        json.dumps(results, indent=2, ensure_ascii=False) + "\n"
        if args.json
        else report.render(results)
    )
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

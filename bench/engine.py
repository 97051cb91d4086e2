"""``scripts/bench``: fdffd against its anchors on this machine; prints one table (or JSON).

    python -m bench.engine [--quick] [--passes 1,3] [--size 1GiB,4GiB] [--repeat 3]
                           [--only job,payload,zerofill,probe,scaling,memory,cli] [--json]
                           [--out FILE]
                           [--plot FILE]

1. job:     a whole job on a tmpfs loop device next to ``dd`` with ``O_DIRECT`` writing and
            reading the same device in the same run (target: job <= 1.10x of passes x write +
            1 x read), per-stage seconds, CPU seconds per GB of surface.
2. payload: the same with a generated payload profile, next to the usual chain for the same
            assurance: f3probe + nwipe + mkfs.fat + mcopy + read back + sha256sum (target
            <= 0.5x); nwipe's CPU per GB.
   zerofill: zero free space (the keyed pass under the image) against keyed free space, with
            a large and a small payload, on tmpfs and at USB speed, next to the dd bound and
            each mode's own minimum (its bytes written and read at dd's speed).
3. probe:   ``fdffctl probe`` next to ``f3probe --destructive`` on each simulated fake.
4. scaling: the real daemon under udevd, 1..16 drives at USB-stick speed (blkio throttle):
            efficiency against N x one drive (target >= 90% at 16), CPU, peak RSS per drive.
5. memory:  the daemon's RSS over 200 consecutive small jobs: does it stay flat?
6. cli:     ``fdffctl --help`` and ``fdffctl status`` (no daemon), start-up included, median
            of 20 runs each, against ``python -c pass`` (bench/cli.py).

Needs root (loop devices, FUSE, cgroups).  Touches only devices it creates through
``fdffd_testkit`` (testkit/).  See docs/benchmarks.md.
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

from . import cli, machine, payload, plot, probes, rawio, report, station, targets, zerofill
from .runner import fdffctl_path, log, missing_tools

SECTIONS = ("job", "payload", "zerofill", "probe", "scaling", "memory", "cli")


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


def _drive_counts(text: str) -> list[int]:
    try:
        vals = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of drive counts: {text!r}") from None
    if not vals or any(not 1 <= v <= 64 for v in vals):
        raise argparse.ArgumentTypeError("drive counts are 1..64")
    return vals


def _throttle(text: str) -> tuple[int, int]:
    try:
        w, r = (parse_size(x.strip()) for x in text.split(","))
    except Exception:
        raise argparse.ArgumentTypeError(
            f"give WRITE,READ bytes per second, e.g. 20MB,35MB: {text!r}"
        ) from None
    if w <= 0 or r <= 0:
        raise argparse.ArgumentTypeError("throttle speeds must be positive")
    return w, r


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
        help="small sizes (256 MiB device, 64 MiB fakes and drives, 1 and 4 drives, 40 jobs "
        "for memory), one repetition: about a minute",
    )
    p.add_argument(
        "--passes",
        type=_int_list,
        default=[1, 3],
        metavar="N[,N...]",
        help="job.passes values to measure (default 1,3)",
    )
    p.add_argument(
        "--size",
        type=_size_list,
        default=None,
        metavar="SIZE[,SIZE...]",
        help="loop device size(s) for the job section (default 1GiB,4GiB; --quick 256MiB)",
    )
    p.add_argument(
        "--drives",
        type=_drive_counts,
        default=None,
        metavar="N[,N...]",
        help="drive counts for the scaling section (default 1,2,4,8,16; --quick 1,4)",
    )
    p.add_argument(
        "--drive-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="size of each throttled drive (default 128MiB; --quick 64MiB)",
    )
    p.add_argument(
        "--throttle",
        type=_throttle,
        default=(20_000_000, 35_000_000),
        metavar="W,R",
        help="USB-stick speed for the scaling section, bytes/s (default 20MB,35MB)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="consecutive jobs for the memory section (default 200; --quick 40)",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        default=1,
        metavar="K",
        help="drives at once in the memory section (default 1: RSS sampled between jobs)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="write the plot (PNG) here (default docs/benchmarks.png for a full run with every "
        "section, else none; 'none' for none)",
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
        help="comma-separated subset of: " + ", ".join(SECTIONS),
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
        "--f3-10",
        metavar="PATH",
        default=None,
        help="also compare the probe with f3 10.0's f3probe: the binary, or its source "
        "(tarball or directory), built into a temporary directory (needs make, cc, "
        "libudev-dev); the bench runs without it",
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
    sizes = args.size or ([256 << 20] if args.quick else [1 << 30, 4 << 30])
    counts = args.drives or ([1, 4] if args.quick else [1, 2, 4, 8, 16])
    drive_size = args.drive_size or ((64 << 20) if args.quick else (128 << 20))
    jobs = args.jobs or (40 if args.quick else 200)
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
            "drives": counts,
            "drive_size": drive_size,
            "throttle_bps": list(args.throttle),
            "memory_jobs": jobs,
            "dir": args.dir,
            "fdffctl": fdffctl,
        },
        "notes": [],
    }
    notes: list[str] = results["notes"]
    workdir = Path(tempfile.mkdtemp(prefix="fdffd-bench-", dir=args.dir))
    t0 = time.monotonic()
    # a udevd for the whole run: the gate refuses a drive udev has no record of (no-udev-data)
    keeper = station.UdevKeeper().__enter__()
    station.keep_udevd(keeper)
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
                                dev, dd_w, dd_r, repeat, workdir / "payload", pbytes, args.dir
                            )
                        finally:
                            payload.cleanup(workdir / "payload")
        if "zerofill" in args.only:
            w, r = args.throttle
            log(
                f"zerofill: keyed against zero free space on {report.size(sizes[0])} (tmpfs) and "
                f"{report.size(drive_size)} at {w / 1e6:g}/{r / 1e6:g} MB/s"
            )
            results["zerofill"] = zerofill.measure(
                workdir / "zerofill", args.dir, sizes[0], drive_size, w, r, repeat
            )
        if "probe" in args.only:
            have_f3 = shutil.which("f3probe") is not None
            if not have_f3:
                notes.append("f3probe not found (Debian package f3): the reference column is empty")
            f3_10 = None
            if args.f3_10:
                f3_10, note = probes.prepare_f3_10(args.f3_10, workdir)
                notes.append(note)
            results["probe"] = probes.measure(
                fdffctl, workdir / "probe", repeat, args.quick, args.dir, have_f3, f3_10
            )
        if "scaling" in args.only or "memory" in args.only:
            if "scaling" in args.only:
                w, r = args.throttle
                log(
                    f"scaling: {counts} drives of {report.size(drive_size)} at "
                    f"{w / 1e6:g} MB/s write, {r / 1e6:g} MB/s read"
                )
                results["scaling"] = station.scaling(workdir, args.dir, counts, drive_size, w, r)
            if "memory" in args.only:
                log(f"memory: {jobs} consecutive jobs on 64 MiB drives, {args.in_flight} at a time")
                results["memory"] = station.memory(
                    workdir, args.dir, jobs, 64 << 20, in_flight=args.in_flight
                )
            if keeper.restarts:
                notes.append(
                    f"systemd-udevd went away {keeper.restarts} time(s) during the run "
                    "(another session stopped its own); the bench started its own"
                )
        if "cli" in args.only:
            results["cli"] = cli.measure(fdffctl, workdir / "cli")
    finally:
        station.keep_udevd(None)
        keeper.__exit__(None, None, None)
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_end"] = machine.loadavg()
    results["seconds"] = round(time.monotonic() - t0, 1)
    results["targets"] = targets.evaluate(results)
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
    plot_to = args.plot
    if plot_to is None and not args.quick and set(args.only) == set(SECTIONS):
        plot_to = str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.png")
    if plot_to and plot_to != "none":
        why = plot.write(results, Path(plot_to))
        results["plot"] = None if why else plot_to
        log(f"plot: {why or plot_to}")
        if why:
            notes.append(f"no plot: {why}")
    text = (
        json.dumps(results, indent=2, ensure_ascii=False) + "\n"
        if args.json
        else report.render(results)
    )
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


def _run() -> None:
    """Run ``main`` and exit with its code.  Every device and cgroup is released by then (the
    ``with`` blocks have run); ``os._exit`` makes sure a stray non-daemon thread of some
    library can never keep a finished bench from exiting."""
    import traceback

    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except BaseException as err:
        if isinstance(err, SystemExit):
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 2)
            if err.code is not None and not isinstance(err.code, int):
                print(err.code, file=sys.stderr)
        else:
            traceback.print_exc()
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _run()

"""A whole job with a payload profile, next to the same work done the usual way.

The payload is generated: a few large files and many small ones, under Korean names (the
people it is for read Korean).  fdffd imports it as a profile (``fdffctl payload add``) and a
job images it.  The usual way, for the same assurance, chains the well-known tools on the same
device: ``f3probe --destructive`` (counterfeit check), ``nwipe --method=random --verify=last
--noblank`` (one keyed-random pass, read back and checked), ``mkfs.fat``, ``mcopy -s`` of the
tree, then every file read back with ``mcopy`` and checked with ``sha256sum -c``.  Even so the
chain does a little less: nothing checks the free space after the copy.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from fdffd_testkit.loopdev import LoopDevice, loop_device

from . import nwipe
from .probes import parse_f3probe
from .rawio import TARGET_RATIO, ensure_ours, run_job
from .runner import Timed, fdffctl_path, fdffd_env, log, median, run_timed, summary, write_config

MiB = 1 << 20
PROFILE = "bench"
TOOLS = ("f3probe", "nwipe", "mkfs.fat", "mcopy", "sha256sum", "blockdev")
#: issue 5: a whole job with a payload takes at most half the usual chain's time
USUAL_TARGET = 0.5
GB = 1e9


def payload_command_exists(fdffctl: str) -> bool:
    """Whether this fdffd has ``fdffctl payload add`` (the imaging work lands concurrently)."""
    proc = subprocess.run(
        [fdffctl, "payload", "add", "--help"], capture_output=True, check=False, timeout=60
    )
    return proc.returncode == 0


def generate(root: Path, total: int, seed: int = 20240601) -> dict[str, Any]:
    """A payload tree of about ``total`` bytes: ~3/4 in four large files, the rest in many small
    ones (log-uniform, 512 B .. 1 MiB), an empty file and an empty directory; Korean names.
    Returns the file count, bytes and a ``SHA256SUMS`` text with relative paths."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    sums: list[str] = []
    files = 0
    written = 0

    def put(rel: str, n: int) -> None:
        nonlocal files, written
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = n
            while left:
                chunk = rng.bytes(min(left, 16 * MiB))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        sums.append(f"{h.hexdigest()}  {rel}")
        files += 1
        written += n

    large = total * 3 // 4
    for i, share in enumerate((0.4, 0.27, 0.2, 0.13)):
        put(f"영화/겨울연가 {i + 1}화.mp4", int(large * share) // 512 * 512 + 1000 * i)
    dirs = [
        "드라마/사랑의 불시착",
        "다큐멘터리/자연",
        "책/한국어 교재",
        "경제 뉴스/2024년",
        "영어 강좌/초급",
    ]
    exts = [".mp4", ".srt", ".pdf", ".txt", ".mp3"]
    i = 0
    while written < total:
        n = int(np.exp(rng.uniform(np.log(512), np.log(MiB))))
        n = min(n, total - written)
        d = dirs[i % len(dirs)]
        put(f"{d}/자료 {i:04d} 파일{exts[i % len(exts)]}", n)
        i += 1
    put("읽어 주세요.txt", 0)
    (root / "빈 폴더").mkdir()
    return {
        "files": files,
        "bytes": written,
        "sums": "\n".join(sums) + "\n",
        "top": sorted(p.name for p in root.iterdir()),
    }


def _check(t: Timed, what: str) -> Timed:
    if t.rc:
        raise RuntimeError(f"{what} failed (exit {t.rc}): {t.stderr.strip()[-600:]}")
    return t


def usual_way(dev: LoopDevice, src: Path, tree: dict[str, Any], outdir: Path) -> dict[str, Timed]:
    """f3probe, nwipe, mkfs.fat, mcopy the tree in, drop the device's cache, mcopy it all out,
    sha256sum -c."""
    env = fdffd_env()
    env["MTOOLS_SKIP_CHECK"] = "1"
    ensure_ours(dev)
    steps: dict[str, Timed] = {}
    f3 = run_timed(["f3probe", "--destructive", "--time-ops", dev.path], env=env)
    verdict = parse_f3probe(f3.stdout)
    if f3.rc or verdict["counterfeit"] is not False:
        raise RuntimeError(
            f"f3probe on {dev.path} (a genuine loop device) said {verdict['verdict']} "
            f"(exit {f3.rc}): {(f3.stderr or f3.stdout).strip()[-400:]}"
        )
    steps["f3probe"] = f3
    ensure_ours(dev)
    steps["nwipe"], _ = nwipe.run(dev)
    ensure_ours(dev)
    _check(run_timed(["blockdev", "--flushbufs", dev.path], env=env), "blockdev --flushbufs")
    ensure_ours(dev)
    steps["mkfs.fat"] = _check(
        run_timed(["mkfs.fat", "-F", "32", "-I", dev.path], env=env), "mkfs.fat"
    )
    ensure_ours(dev)
    copy = _check(
        run_timed(
            ["mcopy", "-s", "-i", dev.path, *[str(src / n) for n in tree["top"]], "::/"], env=env
        ),
        "mcopy in",
    )
    flush = _check(
        run_timed(["blockdev", "--flushbufs", dev.path], env=env), "blockdev --flushbufs"
    )
    steps["mcopy in"] = Timed(
        copy.wall + flush.wall, copy.user + flush.user, copy.sys + flush.sys, 0, "", ""
    )
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    steps["mcopy out"] = _check(
        run_timed(
            ["mcopy", "-s", "-n", "-i", dev.path, *[f"::/{n}" for n in tree["top"]], str(outdir)],
            env=env,
        ),
        "mcopy out",
    )
    (outdir.parent / "SHA256SUMS").write_text(tree["sums"], encoding="utf-8")
    steps["sha256sum"] = _check(
        run_timed(
            ["sha256sum", "-c", "--quiet", str(outdir.parent / "SHA256SUMS")], env=env, cwd=outdir
        ),
        "sha256sum -c",
    )
    shutil.rmtree(outdir, ignore_errors=True)
    return steps


def measure(
    dev: LoopDevice,
    dd_w: list[Timed],
    dd_r: list[Timed],
    repeat: int,
    workdir: Path,
    payload_bytes: int,
    directory: str = "/dev/shm",
) -> dict[str, Any]:
    fdffctl = fdffctl_path()
    if not payload_command_exists(fdffctl):
        return {"skipped": "`fdffctl payload add` does not exist in this fdffd yet"}
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if nwipe.available():
        missing.append("nwipe (or unshare, mknod, mount)")
    src = workdir / "payload-src"
    shutil.rmtree(src, ignore_errors=True)
    log(f"generating a {payload_bytes / MiB:.0f} MiB payload in {src}")
    tree = generate(src, payload_bytes)
    config = write_config(workdir, passes=1, profile=PROFILE)
    add = run_timed(
        [fdffctl, "payload", "add", PROFILE, str(src), "--config", str(config)], env=fdffd_env()
    )
    if add.rc:
        return {
            "skipped": f"`fdffctl payload add` failed (exit {add.rc}): {add.stderr.strip()[-400:]}"
        }
    jobs: list[tuple[Timed, dict[str, Any]]] = []
    chains: list[dict[str, Timed]] = []
    for i in range(repeat):
        t, rec = run_job(fdffctl, dev, config)
        if t.rc:
            log(
                f"payload job exited {t.rc}: {rec.get('verdict')} "
                f"{(rec.get('error') or {}).get('message')}"
            )
        jobs.append((t, rec))
        if not missing:
            chains.append(usual_way(dev, src, tree, workdir / "readback" / "out"))
        log(
            f"payload round {i + 1}/{repeat}: job {t.wall:.2f}s"
            + (f", usual way {sum(s.wall for s in chains[-1].values()):.2f}s" if chains else "")
        )
    w = median([t.wall for t in dd_w])
    r = median([t.wall for t in dd_r])
    bound = w + r
    job_s = median([t.wall for t, _ in jobs])
    rec0 = jobs[-1][1]
    stages = {}
    for _, rec in jobs:
        for st in rec.get("stages", []):
            stages.setdefault(st["name"], []).append(st["seconds"])
    out: dict[str, Any] = {
        "size": dev.size,
        "payload_files": tree["files"],
        "payload_bytes": tree["bytes"],
        "import_s": add.wall,
        "bound_s": bound,
        "job_s": summary([t.wall for t, _ in jobs]),
        "ratio": job_s / bound,
        "target_ratio": TARGET_RATIO,
        "met": job_s / bound <= TARGET_RATIO,
        "stages_s": {k: median(v) for k, v in stages.items()},
        "outside_stages_s": median(
            [t.wall - sum(st["seconds"] for st in rec.get("stages", [])) for t, rec in jobs]
        ),
        "cpu_s": median([t.cpu for t, _ in jobs]),
        "cpu_s_per_gb": median(
            [t.cpu / (_surface(rec) / GB) for t, rec in jobs if _surface(rec)] or [float("nan")]
        ),
        "verdicts": sorted({rec["verdict"] for _, rec in jobs}),
        "filesystem": (rec0.get("filesystem") or {}).get("type"),
        "payload_verified": (rec0.get("payload") or {}).get("verified"),
    }
    if chains:
        total = [sum(s.wall for s in c.values()) for c in chains]
        out["usual"] = {
            "steps_s": {k: median([c[k].wall for c in chains]) for k in chains[0]},
            "total_s": summary(total),
            "cpu_s": median([sum(s.cpu for s in c.values()) for c in chains]),
            "nwipe_cpu_s": median([c["nwipe"].cpu for c in chains]),
            "nwipe_user_s": median([c["nwipe"].user for c in chains]),
            "nwipe_sys_s": median([c["nwipe"].sys for c in chains]),
            # nwipe writes the surface once and reads it back once
            "nwipe_surface_bytes": 2 * dev.size,
            "nwipe_cpu_s_per_gb": median([c["nwipe"].cpu for c in chains]) / (2 * dev.size / GB),
            "nwipe_fixed_s": nwipe_fixed_s(directory),
        }
        out["ratio_to_usual"] = job_s / median(total)
        out["usual_target"] = USUAL_TARGET
        out["usual_met"] = out["ratio_to_usual"] <= USUAL_TARGET
    else:
        out["usual"] = {"skipped": f"missing tools: {', '.join(missing)}"}
    return out


def nwipe_fixed_s(directory: str) -> float | None:
    """nwipe's wall time on an 8 MiB loop device: its fixed cost (start-up, device scan, the
    waits at the end), which its time on any device includes."""
    try:
        with loop_device(8 * MiB, directory=directory) as tiny:
            t, _ = nwipe.run(tiny)
        return t.wall
    except Exception as err:
        log(f"nwipe on a tiny device failed: {err}")
        return None


def _surface(rec: dict[str, Any]) -> int:
    w = rec.get("wipe") or {}
    return int(w.get("bytes_written", 0)) + int(w.get("verified_bytes", 0))


def default_payload_bytes(size: int) -> int:
    """600 MiB on a 1 GiB device (150 MiB on the --quick 256 MiB one): about 59% of it."""
    return max(8 * MiB, size * 600 // 1024 // MiB * MiB)


def cleanup(workdir: Path) -> None:
    for name in ("payload-src", "readback"):
        shutil.rmtree(workdir / name, ignore_errors=True)

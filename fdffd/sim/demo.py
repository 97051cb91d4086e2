"""``fdffctl demo``: fdffd on simulated drives, start to finish, on any Debian machine (as root).

It imports a small payload profile (Korean names, as the real ones have), then processes a few
simulated drives one after another: honest loop drives of two sizes, a wraparound counterfeit
(rejected), the same kind of fake under the rescue policy, and a write-protected drive (refused).
Each job's outcome is printed as it ends, then the audit log is verified and summarised.  Every
device it creates is removed at the end; it touches no other device.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, config_from_dict
from ..errors import ExitCode
from ..sizes import format_size

MiB = 1 << 20


@dataclass(frozen=True)
class DemoDrive:
    label: str
    size: int
    real: int | None = None  # a counterfeit when set
    kind: str = "honest"
    read_only: bool = False
    policy: str = "reject"


DRIVES = (
    DemoDrive("honest stick, 256 MiB", 256 * MiB),
    DemoDrive(
        "counterfeit (wraps at 128 MiB of 512 MiB)", 512 * MiB, real=128 * MiB, kind="wraparound"
    ),
    DemoDrive("honest stick, 384 MiB, exFAT forced", 384 * MiB),
    DemoDrive(
        "counterfeit, rescue policy (drops writes past 96 MiB)",
        384 * MiB,
        real=96 * MiB,
        kind="drop-zeros",
        policy="rescue",
    ),
    DemoDrive("write-protected stick", 128 * MiB, read_only=True),
)

PAYLOAD = {
    "영화/겨울연가 1화.mp4": 9 * MiB,
    "영화/겨울연가 2화.mp4": 8 * MiB,
    "다큐멘터리/세계의 도시.mkv": 12 * MiB,
    "책/영어 회화 입문.pdf": 2 * MiB,
    "뉴스/경제 소식 2026.txt": 40_000,
    "음악/아리랑.mp3": 3 * MiB,
}


def _make_payload(root: Path) -> Path:
    src = root / "payload-source"
    for rel, size in PAYLOAD.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    (src / "빈 폴더").mkdir()
    return src


def _config(root: Path, drive: DemoDrive) -> Config:
    return config_from_dict(
        {
            "station": {
                "id": "demo-station",
                "state_dir": str(root / "state"),
                "payload_dir": str(root / "payloads"),
            },
            "drives": {"allow_loop": True},
            "job": {
                "profile": "demo",
                "counterfeit": drive.policy,
                "filesystem": "exfat" if "exFAT" in drive.label else "auto",
            },
        }
    )


@contextmanager
def _attach(drive: DemoDrive) -> Iterator[str]:
    from .fakedrive import FakeSpec, fake_drive
    from .loopdev import loop_device

    if drive.real is not None:
        spec = FakeSpec(announced=drive.size, real=drive.real, kind=drive.kind)
        with fake_drive(spec) as fake:
            yield fake.path
    else:
        with loop_device(drive.size, read_only=drive.read_only) as loop:
            yield loop.path


class _Progress:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        pct = 100 * done // max(total, 1)
        bar = "#" * (pct // 4)
        self.stream.write(f"\r    {stage:<8} [{bar:<25}] {pct:3d}%")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 60 + "\r")


def _outcome_line(rec: dict[str, Any]) -> str:
    verdict = rec["verdict"].upper()
    cap = rec["capacity"]
    parts = [f"{verdict:<12}"]
    if cap["announced_bytes"]:
        parts.append(
            f"announced {format_size(cap['announced_bytes'])}, "
            f"usable {format_size(cap['usable_bytes'])}"
        )
    if rec.get("filesystem"):
        fs = rec["filesystem"]
        parts.append(f"{fs['type']} serial {fs['volume_id']}")
    if rec.get("payload"):
        parts.append("payload verified" if rec["payload"]["verified"] else "payload NOT verified")
    if rec["error"]:
        parts.append(rec["error"]["message"])
    return "  ".join(parts)


def run_demo(*, keep: bool = False, out: Any = None) -> int:
    from ..audit import AuditLog, StationKeys, iter_records, load_public_key, verify
    from ..audit.report import build_report, render_text
    from ..job.pipeline import run_job
    from ..log import configure
    from ..payload.profiles import add_profile

    out = out or sys.stdout
    if os.geteuid() != 0:
        print(
            "fdffctl demo: run as root (it creates loop devices and FUSE mounts)", file=sys.stderr
        )
        return ExitCode.USAGE
    configure(json=False, level="error")
    root = Path(tempfile.mkdtemp(prefix="fdffd-demo-", dir="/var/tmp"))
    started = time.monotonic()
    try:
        print(f"fdffd demo: state in {root}", file=out)
        manifest = add_profile(root / "payloads", "demo", _make_payload(root))
        print(
            f"imported payload profile 'demo': {len(manifest.files)} files, "
            f"{format_size(manifest.total_bytes)}, manifest {manifest.manifest_sha256[:12]}…\n",
            file=out,
        )
        keys = StationKeys.load_or_create(root / "state")
        progress = _Progress(out)
        for i, drive in enumerate(DRIVES, 1):
            cfg = _config(root, drive)
            with ExitStack() as stack:
                path = stack.enter_context(_attach(drive))
                print(f"[{i}/{len(DRIVES)}] {drive.label} on {path}", file=out)
                t = time.monotonic()
                outcome = run_job(cfg, path, serial_hmac=keys.serial_hmac, status=progress)
                progress.clear()
                AuditLog(cfg.audit_log, keys).append(outcome.record)
                print(
                    f"    {_outcome_line(outcome.record)}  "
                    f"({time.monotonic() - t:.1f} s, exit {outcome.exit_code})",
                    file=out,
                )
        log = root / "state" / "audit.jsonl"
        result = verify(log, load_public_key(root / "state" / "station.pub"))
        print(f"\naudit log: {result.summary()}", file=out)
        print(render_text(build_report(iter_records(log))), file=out)
        print(f"demo finished in {time.monotonic() - started:.0f} s", file=out)
        return ExitCode.OK if result.ok else ExitCode.FAILED
    finally:
        if keep:
            print(f"kept {root}", file=out)
        else:
            shutil.rmtree(root, ignore_errors=True)

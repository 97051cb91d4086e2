"""``fdffctl demo``: a live fdffd station on simulated drives, on any Debian machine (as root).

It imports a small payload profile (Korean names, as the real ones have), starts the station
daemon (and ``systemd-udevd`` when none runs, stopped again at the end), then plugs simulated
drives in one after another while the live view shows them: honest loop drives of several
sizes, a wraparound counterfeit (rejected), a fake under the rescue policy, a write-protected
drive (refused).  When every drive has its record it stops the daemon, verifies the audit log
and prints the report.  The daemon is confined to the demo's own loop devices (``drives.ports``
globs over their backing files); every device the demo creates is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExitCode
from ..sizes import format_size
from .udevd import running_udevd

MiB = 1 << 20


@dataclass(frozen=True)
class DemoDrive:
    label: str
    size: int
    real: int | None = None  # a counterfeit when set
    kind: str = "honest"
    read_only: bool = False


DRIVES = (
    DemoDrive("honest stick, 1 GiB", 1024 * MiB),
    DemoDrive(
        "counterfeit: says 1 GiB, wraps at 256 MiB", 1024 * MiB, real=256 * MiB, kind="wraparound"
    ),
    DemoDrive("honest stick, 768 MiB", 768 * MiB),
    DemoDrive(
        "counterfeit: says 768 MiB, drops writes past 192 MiB",
        768 * MiB,
        real=192 * MiB,
        kind="drop-zeros",
    ),
    DemoDrive("write-protected stick", 256 * MiB, read_only=True),
    DemoDrive("honest stick, 512 MiB", 512 * MiB),
)
PLUG_EVERY = 1.5  # seconds between two drives

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


def _write_config(root: Path, shm: Path) -> Path:
    """The demo station's config: its state under ``root``, only its own loop devices."""
    cfg = root / "fdffd.toml"
    cfg.write_text(
        "[station]\n"
        'id = "demo-station"\n'
        f"state_dir = {json.dumps(str(root / 'state'))}\n"
        f"payload_dir = {json.dumps(str(root / 'payloads'))}\n"
        f"control_socket = {json.dumps(str(root / 'control.sock'))}\n"
        "[drives]\n"
        "allow_loop = true\n"
        f"ports = [{json.dumps(f'loop:{shm}/*')}]\n"
        "[job]\n"
        'profile = "demo"\n'
        'counterfeit = "reject"\n'
        "workers = 4\n"
    )
    return cfg


@contextmanager
def _attach(drive: DemoDrive, shm: Path) -> Iterator[str]:
    from .fakedrive import FakeSpec, fake_drive
    from .loopdev import loop_device

    if drive.real is not None:
        spec = FakeSpec(announced=drive.size, real=drive.real, kind=drive.kind)
        with fake_drive(spec, directory=str(shm)) as fake:
            yield fake.path
    else:
        with loop_device(drive.size, read_only=drive.read_only, directory=shm) as loop:
            yield loop.path


def _records(root: Path) -> list[dict[str, Any]]:
    log = root / "state" / "audit.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


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
    from ..audit import iter_records, load_public_key, verify
    from ..audit.report import build_report, render_text
    from ..payload.profiles import add_profile
    from ..station.control import request
    from ..station.watch import run_watch

    out = out or sys.stdout
    if os.geteuid() != 0:
        print(
            "fdffctl demo: run as root (it creates loop devices and FUSE mounts)", file=sys.stderr
        )
        return ExitCode.USAGE
    root = Path(tempfile.mkdtemp(prefix="fdffd-demo-", dir="/var/tmp"))
    shm = Path(tempfile.mkdtemp(prefix="fdffd-demo-", dir="/dev/shm"))
    started = time.monotonic()
    try:
        print(f"fdffd demo: a live station on simulated drives (state in {root})", file=out)
        manifest = add_profile(root / "payloads", "demo", _make_payload(root))
        print(
            f"imported payload profile 'demo': {len(manifest.files)} files, "
            f"{format_size(manifest.total_bytes)}",
            file=out,
        )
        cfg = _write_config(root, shm)
        with ExitStack() as stack:
            stack.enter_context(running_udevd())
            daemon = subprocess.Popen(
                [sys.executable, "-m", "fdffd.cli.daemon", "--config", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(root / "daemon.log").open("w"),
            )
            stack.callback(_stop_daemon, daemon)
            sock = root / "control.sock"
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            plugging = threading.Thread(target=_plug_all, args=(stack, shm), daemon=True)
            plugging.start()
            print(
                f"station running; plugging in {len(DRIVES)} drives, one every "
                f"{PLUG_EVERY:g} s (press q to leave the view early)\n",
                file=out,
            )
            run_watch(
                lambda: request(sock, {"cmd": "status"}, timeout=0.9),
                interval=0.5,
                until=lambda: len(_records(root)) >= len(DRIVES),
            )
            plugging.join()
            deadline = time.monotonic() + 300
            while len(_records(root)) < len(DRIVES) and time.monotonic() < deadline:
                time.sleep(0.2)
        for rec in _records(root):
            print(f"{rec['device']['path']:<12} {_outcome_line(rec)}", file=out)
        log = root / "state" / "audit.jsonl"
        result = verify(log, load_public_key(root / "state" / "station.pub"))
        print(f"\naudit log: {result.summary()}", file=out)
        print(render_text(build_report(iter_records(log))), file=out)
        print(f"demo finished in {time.monotonic() - started:.0f} s", file=out)
        return ExitCode.OK if result.ok and len(_records(root)) == len(DRIVES) else ExitCode.FAILED
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        if keep:
            print(f"kept {root}", file=out)
        else:
            shutil.rmtree(root, ignore_errors=True)


def _plug_all(stack: ExitStack, shm: Path) -> None:
    for i, drive in enumerate(DRIVES):
        if i:
            time.sleep(PLUG_EVERY)
        stack.enter_context(_attach(drive, shm))


def _stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

"""``fdffctl demo``: a live fdffd station on simulated drives, on any Debian machine (as root).

It imports a small payload profile (Korean names, as the real ones have), starts the station
daemon (and a ``systemd-udevd`` when none answers for this root, stopped again at the end),
then plugs simulated drives in one after another while the live view shows them: honest loop
drives of several sizes, a wraparound counterfeit (rejected), a fake under the rescue policy,
a write-protected drive (refused).  When every drive has its record it stops the daemon,
verifies the audit log and prints the report.  The daemon is confined to the demo's own loop
devices (``drives.ports`` globs over their backing files).

The demo always ends on its own: when no udev event arrives for a drive it plugged in (no
udevd serves this root, or its events do not reach this network namespace), it says so and
stops.  Either way it leaves nothing behind: every loop device, FUSE mount, process and
directory it made is removed (and a udevd it started is stopped by its pid).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fdffd.errors import ExitCode
from fdffd.sizes import format_size

from .station import Daemon, StationError, write_config
from .udevd import CONTROL, BlockEvents, UdevdError, running_udevd, udevd_answers

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
#: seconds to wait for udev's event about a drive just plugged in before giving up
EVENT_TIMEOUT = 30.0
#: seconds to wait, after the last drive is in, for every drive's record
RECORDS_TIMEOUT = 300.0

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
    return write_config(
        root,
        station={"id": "demo-station", "control_socket": str(root / "control.sock")},
        drives={"ports": [f"loop:{shm}/*"]},
        job={"profile": "demo", "counterfeit": "reject", "workers": 4},
    )


@contextmanager
def _attach(drive: DemoDrive, shm: Path) -> Iterator[str]:
    from .fakedrive import FakeSpec, fake_drive  # mfusepy: only where a fake is plugged
    from .loopdev import loop_device

    if drive.real is not None:
        spec = FakeSpec(announced=drive.size, real=drive.real, kind=drive.kind)
        with fake_drive(spec, directory=str(shm)) as fake:
            yield fake.path
    else:
        with loop_device(drive.size, read_only=drive.read_only, directory=shm) as loop:
            yield loop.path


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


class Plugger:
    """Plugs the demo's drives in one after another (a thread of its own, so the live view
    runs meanwhile) and waits for udev's event about each: a drive without an event would
    never reach the station.  ``failure`` says why it stopped early; ``close()`` stops it and
    pulls every drive it plugged in."""

    def __init__(self, shm: Path, events: BlockEvents, event_timeout: float) -> None:
        self.shm = shm
        self.events = events
        self.event_timeout = event_timeout
        self.failure: str | None = None
        self._drives = ExitStack()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-plug", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._drives.close()

    def _run(self) -> None:
        try:
            for i, drive in enumerate(DRIVES):
                if i and self._stop.wait(PLUG_EVERY):
                    return
                since = time.monotonic()
                path = self._drives.enter_context(_attach(drive, self.shm))
                if not self.events.wait_for(path, since, self.event_timeout, self._stop):
                    if not self._stop.is_set():
                        self.failure = _no_event(path, drive, self.event_timeout)
                    return
        except Exception as exc:  # a drive that cannot be made ends the demo, said plainly
            self.failure = f"could not plug in a simulated drive: {exc}"


def _no_event(path: str, drive: DemoDrive, timeout: float) -> str:
    if udevd_answers():
        why = (
            f"a systemd-udevd answers on {CONTROL}, but its events do not reach this process "
            "(is it serving another network namespace or container?)"
        )
    else:
        why = f"no systemd-udevd answers on {CONTROL} any more (was it stopped?)"
    return (
        f"no udev event for {path} ({drive.label}) within {timeout:g} s of plugging it in: "
        f"{why}. The station sees a drive only through udev's events"
    )


def run_demo(
    *, keep: bool = False, out: TextIO | None = None, event_timeout: float = EVENT_TIMEOUT
) -> int:
    """The whole demo; its exit code (0 when every drive got its record and the log
    verifies).  Everything it made is removed before it returns, whatever happened."""
    stream = out or sys.stdout
    if os.geteuid() != 0:
        _fail("run as root (it creates loop devices and FUSE mounts)")
        return ExitCode.USAGE
    tag = f"fdffd-demo-{os.getpid()}-"  # names everything the demo makes (tests look for it)
    root = Path(tempfile.mkdtemp(prefix=tag, dir="/var/tmp"))
    shm = Path(tempfile.mkdtemp(prefix=tag, dir="/dev/shm"))
    try:
        return _run(root, shm, stream, event_timeout)
    except (UdevdError, StationError) as exc:
        _fail(str(exc))
        return ExitCode.FAILED
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        if keep:
            print(f"kept {root}", file=stream)
        else:
            shutil.rmtree(root, ignore_errors=True)


def _fail(message: str) -> None:
    print(f"fdffctl demo: {message}", file=sys.stderr)


def _run(root: Path, shm: Path, out: TextIO, event_timeout: float) -> int:
    from fdffd.audit import iter_records, load_public_key, verify
    from fdffd.audit.report import build_report, render_text
    from fdffd.payload import add_profile
    from fdffd.station.control import request
    from fdffd.station.watch import run_watch

    started = time.monotonic()
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
        events = stack.enter_context(BlockEvents())
        daemon = Daemon(
            cfg, socket=root / "control.sock", state_dir=root / "state", log=root / "daemon.log"
        )
        stack.callback(_stop_daemon, daemon)
        daemon.start()
        plugger = Plugger(shm, events, event_timeout)
        stack.callback(plugger.close)  # first out: the drives are pulled, then the daemon stops
        plugger.start()
        print(
            f"station running; plugging in {len(DRIVES)} drives, one every "
            f"{PLUG_EVERY:g} s (press q to leave the view early)\n",
            file=out,
        )
        run_watch(
            lambda: request(daemon.socket, {"cmd": "status"}, timeout=0.9),
            interval=0.5,
            until=lambda: plugger.failure is not None or len(daemon.records()) >= len(DRIVES),
        )
        plugger.join()
        if plugger.failure is not None:
            _fail(f"{plugger.failure}. The demo stops and removes every drive it plugged in.")
            return ExitCode.FAILED
        if not _wait_records(daemon):
            _fail(
                f"{len(daemon.records())} of {len(DRIVES)} drives have a record after "
                f"{RECORDS_TIMEOUT:g} s; the daemon's log ends:\n{daemon.tail(2000)}"
            )
            return ExitCode.FAILED
    for rec in daemon.records():
        print(f"{rec['device']['path']:<12} {_outcome_line(rec)}", file=out)
    log = root / "state" / "audit.jsonl"
    result = verify(log, load_public_key(root / "state" / "station.pub"))
    print(f"\naudit log: {result.summary()}", file=out)
    print(render_text(build_report(iter_records(log))), file=out)
    print(f"demo finished in {time.monotonic() - started:.0f} s", file=out)
    return ExitCode.OK if result.ok and len(daemon.records()) == len(DRIVES) else ExitCode.FAILED


def _wait_records(daemon: Daemon) -> bool:
    deadline = time.monotonic() + RECORDS_TIMEOUT
    while len(daemon.records()) < len(DRIVES):
        if time.monotonic() > deadline or not daemon.alive():
            return False
        time.sleep(0.2)
    return True


def _stop_daemon(daemon: Daemon) -> None:
    if daemon.alive():
        try:
            daemon.stop(timeout=60)
        except (StationError, subprocess.TimeoutExpired) as exc:
            _fail(f"stopping the station: {exc}")

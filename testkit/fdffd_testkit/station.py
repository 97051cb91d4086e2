"""A real station daemon for tests: its own config, state and loop devices, under real udevd.

``Station`` runs ``python -m fdffd.cli.daemon`` as a process of its own, confined by
``drives.ports = ["loop:<its tmpfs dir>/*"]`` to the loop devices the test creates in that
directory, so it never touches another device on the machine.  The ``udevd`` and ``station``
fixtures (tests/conftest.py) hand these out; ``drives()`` attaches the test's drives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from fdffd.errors import UsageError
from fdffd.sim.fakedrive import FakeDrive, FakeSpec, fake_drive
from fdffd.sim.loopdev import LoopDevice, backing_file_of, loop_device
from fdffd.sim.udevd import ensure_udevd, udevd_pids
from fdffd.station.control import request

from .cli_util import Run, fdffctl, write_config

MiB = 1 << 20


class Station:
    """A daemon process of our own, with its config and state under ``root``."""

    def __init__(
        self,
        root: Path,
        shm: Path,
        *,
        state_dir: Path | None = None,
        drives: dict[str, Any] | None = None,
        **job: Any,
    ) -> None:
        self.root = root
        self.shm = shm
        self.state_dir = state_dir or root / "state"
        self.socket = root / "control.sock"
        self.config = write_config(
            root,
            station={"control_socket": str(self.socket), "state_dir": str(self.state_dir)},
            drives={"allow_loop": True, "ports": [f"loop:{shm}/*"], **(drives or {})},
            job={"workers": 8, **job},
        )
        self.proc: subprocess.Popen[str] | None = None
        self.log = root / "daemon.log"
        self._udevd: set[int] = set()
        self._udevd_checked = 0.0

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.jsonl"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def keep_udev_events(self) -> None:
        """Other test sessions on the machine start and stop udevds: when the one running is
        not the one seen before, events for our drives may have been lost in between; start
        one if none runs, and replay a change event for each of our loop devices (the daemon
        takes a change like an add, and ignores insertions it has seen)."""
        now = time.monotonic()
        if now - self._udevd_checked < 0.5:
            return
        self._udevd_checked = now
        pids = udevd_pids()
        if pids and pids == self._udevd:
            return
        ensure_udevd()
        self._udevd = udevd_pids()
        for entry in Path("/sys/block").glob("loop*"):
            backing = backing_file_of(entry.name)
            if backing and backing.startswith(f"{self.shm}/"):
                subprocess.run(
                    ["udevadm", "trigger", "--action=change", f"/dev/{entry.name}"],
                    check=False,
                    capture_output=True,
                )

    def start(self) -> None:
        ensure_udevd()  # another session on the machine may have stopped the one we used
        self._udevd = udevd_pids()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fdffd.cli.daemon", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.socket.exists() and self.status_or_none() is not None:
                return
            assert self.proc.poll() is None, self.log_tail()
            time.sleep(0.1)
        raise AssertionError("the daemon did not come up: " + self.log_tail())

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def status_or_none(self) -> dict[str, Any] | None:
        """The daemon's status over its control socket (what ``fdffctl status --json`` prints)."""
        self.keep_udev_events()
        try:
            return request(self.socket, {"cmd": "status"}, timeout=10)
        except (UsageError, OSError, ValueError):
            return None

    def port(self, device: str) -> dict[str, Any] | None:
        status = self.status_or_none() or {"ports": []}
        return next((p for p in status["ports"] if p["device"] == device), None)

    def wait_stage(self, device: str, stages: Iterable[str], timeout: float = 120) -> str:
        """Poll until ``device``'s job is in one of ``stages``; return that stage."""
        want = set(stages)
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            port = self.port(device)
            stage = port["stage"] if port and port["state"] == "active" else None
            if stage and (not seen or seen[-1] != stage):
                seen.append(stage)
            if stage in want:
                return str(stage)
            assert self.alive(), self.log_tail()
            time.sleep(0.02)
        udevd = "a udevd runs" if udevd_pids() else "NO udevd runs (no events)"
        raise AssertionError(f"{device} never reached {sorted(want)}; saw {seen}; {udevd}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)

    def records(self) -> list[dict[str, Any]]:
        self.keep_udev_events()
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def wait_records(self, n: int, timeout: float = 180) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.records()
            if len(recs) >= n:
                return recs
            time.sleep(0.2)
        raise AssertionError(f"{len(self.records())} of {n} records; log:\n{self.log_tail()}")

    def wait_idle(self, timeout: float = 180) -> dict[str, Any]:
        """Poll until no job runs or waits; return that status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status_or_none()
            if status and not status["totals"]["active"] and not status["totals"]["queued"]:
                return status
            time.sleep(0.1)
        raise AssertionError("the station did not become idle: " + self.log_tail())

    def audit_verify(self) -> Run:
        return fdffctl("audit", "verify", "--json", "--config", str(self.config), timeout=60)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))


@contextmanager
def station_factory(root: Path) -> Iterator[Callable[..., Station]]:
    """``make(**job)`` -> a Station confined to a tmpfs dir of its own; all killed at the end."""
    shm = Path(tempfile.mkdtemp(prefix="fdffd-station-", dir="/dev/shm"))
    made: list[Station] = []

    def make(**kw: Any) -> Station:
        st = Station(root, shm, **kw)
        made.append(st)
        return st

    try:
        yield make
    finally:
        for st in made:
            if st.alive():
                st.stop(signal.SIGKILL)
        shutil.rmtree(shm, ignore_errors=True)


@contextmanager
def drives(shm: Path, specs: list[int | FakeSpec]) -> Iterator[list[str]]:
    """Attach loop devices (an int: plain, of that size) and fake drives in ``shm``."""
    with attached(shm, specs) as devs:
        yield [d.path for d in devs]


@contextmanager
def attached(shm: Path, specs: list[int | FakeSpec]) -> Iterator[list[LoopDevice | FakeDrive]]:
    with ExitStack() as stack:
        devs: list[LoopDevice | FakeDrive] = []
        for spec in specs:
            if isinstance(spec, FakeSpec):
                devs.append(stack.enter_context(fake_drive(spec, directory=str(shm))))
            else:
                devs.append(stack.enter_context(loop_device(spec, directory=shm)))
        yield devs

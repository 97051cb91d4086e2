"""A real station daemon, started and waited for: the one harness of the tests, the benchmark
and the demo.

``Daemon`` runs ``python -m fdffd.cli.daemon --config FILE`` as a process of its own, waits until
its control socket answers a status request, reads its audit log, reports its figures (open
descriptors, threads, memory, CPU) and stops it.  ``Station`` is the tests' daemon: its config
and state under a directory of its own, confined by ``drives.ports = ["loop:<its tmpfs dir>/*"]``
to the loop devices a test creates in that directory, so it never touches another device on
the machine.  ``station_factory`` hands them out, ``drives()`` attaches a test's drives.
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

import psutil

from fdffd.errors import AuditError, UsageError
from fdffd.station.control import request

from .fakedrive import FakeDrive, FakeSpec, fake_drive
from .loopdev import LoopDevice, backing_file_of, loop_device
from .udevd import ensure_udevd, udevd_answers, udevd_identity

MiB = 1 << 20


class StationError(RuntimeError):
    """The daemon did not come up, died, or did not get where it was awaited in time."""


def write_config(root: Path, *, keys: bool = True, **sections: dict[str, Any]) -> Path:
    """``root/fdffd.toml``: a station with its state under ``root`` (loop devices allowed, no
    payload profile), each section updated with what the caller passes; unless ``keys`` is
    false, its keys made as ``fdffctl keys init`` makes them (:func:`init_keys`)."""
    body: dict[str, dict[str, Any]] = {
        "station": {
            "id": "test-station",
            "state_dir": str(root / "state"),
            "payload_dir": str(root / "payloads"),
        },
        "drives": {"allow_loop": True},
        "job": {"profile": ""},  # wipe only, unless a payload profile is imported
    }
    for name, values in sections.items():
        body.setdefault(name, {}).update(values)
    lines = []
    for name, values in body.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = root / "fdffd.toml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    try:
        if keys:
            init_keys(root, Path(body["station"]["state_dir"]))
    except (AuditError, UsageError):  # a broken state dir under test: the daemon names it
        pass
    return path


def init_keys(root: Path, state_dir: Path) -> None:
    """What ``fdffctl keys init --audit-pubkey`` does for a test station: the program's audit
    key pair under ``root`` (``audit-seal.key``, ``audit-seal.key.pub``: the private half is
    kept for tests that look drives up, as an auditor would), then the station's keys."""
    from fdffd.audit import StationKeys
    from fdffd.audit.seal import new_audit_keypair, read_key_file
    from fdffd.fsutil import make_state_dir

    private, pub = root / "audit-seal.key", root / "audit-seal.key.pub"
    if not private.exists():
        priv_text, pub_text = new_audit_keypair()
        private.write_text(priv_text + "\n")
        private.chmod(0o600)
        pub.write_text(pub_text + "\n")
    make_state_dir(state_dir)
    StationKeys.init(state_dir, read_key_file(pub))


class Daemon:
    """``python -m fdffd.cli.daemon --config FILE``: started, awaited, asked, stopped."""

    def __init__(
        self,
        config: Path,
        *,
        socket: Path,
        state_dir: Path,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.socket = socket
        self.state_dir = state_dir
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.jsonl"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StationError("the daemon was never started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30) -> None:
        """Start the daemon and return once its control socket answers a status request."""
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fdffd.cli.daemon", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=dict(self.env or os.environ, PYTHONUNBUFFERED="1"),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StationError(f"the daemon exited {self.proc.returncode}: {self.tail()}")
            if self.socket.exists() and self.status() is not None:
                return
            time.sleep(0.1)
        raise StationError(f"the daemon did not come up in {timeout:g} s: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        """The end of the daemon's stderr."""
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def status(self, timeout: float = 10) -> dict[str, Any] | None:
        """The daemon's status over its control socket (``fdffctl status --json``), or None."""
        try:
            return request(self.socket, {"cmd": "status"}, timeout=timeout)
        except (UsageError, OSError, ValueError):
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        """Signal the daemon and wait for it; killed if it is still there after ``timeout``."""
        if self.proc is None:
            raise StationError("the daemon was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise StationError(f"the daemon ignored signal {sig} for {timeout:g} s") from None

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the audit log."""
        try:
            data = self.audit_log.read_bytes()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]

    def new_records(self) -> list[dict[str, Any]]:
        """Records appended to the audit log since the last call (complete lines only)."""
        try:
            with self.audit_log.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]

    # --- figures ----------------------------------------------------------------------------

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def rss(self, *, children: bool = False) -> int:
        """Resident memory of the daemon (and of its child processes); 0 once it is gone."""
        try:
            proc = psutil.Process(self.pid)
            total = int(proc.memory_info().rss)
            for child in proc.children(recursive=True) if children else []:
                try:
                    total += int(child.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            return 0
        return total

    def cpu_seconds(self) -> float:
        """CPU time of the daemon so far, user and system, with its reaped children's."""
        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)


class Station(Daemon):
    """The tests' daemon: config and state under ``root``, confined to loop devices over files
    in ``shm``; it keeps udev events coming while a test polls it."""

    def __init__(
        self,
        root: Path,
        shm: Path,
        *,
        state_dir: Path | None = None,
        drives: dict[str, Any] | None = None,
        **job: Any,
    ) -> None:
        state_dir = state_dir or root / "state"
        socket = root / "control.sock"
        config = write_config(
            root,
            station={"control_socket": str(socket), "state_dir": str(state_dir)},
            drives={"allow_loop": True, "ports": [f"loop:{shm}/*"], **(drives or {})},
            job={"workers": 8, **job},
        )
        super().__init__(config, socket=socket, state_dir=state_dir, log=root / "daemon.log")
        self.root = root
        self.shm = shm
        self._udevd: tuple[int, int] | None = None
        self._udevd_checked = 0.0

    def keep_udev_events(self) -> None:
        """Other test sessions on the machine start and stop udevds: when the udevd answering
        is not the one seen before, events for our drives may have been lost in between; start
        one if none answers, and replay a change event for each of our loop devices (the
        daemon takes a change like an add, and ignores insertions it has seen)."""
        now = time.monotonic()
        if now - self._udevd_checked < 0.5:
            return
        self._udevd_checked = now
        seen = udevd_identity()
        if seen is not None and seen == self._udevd:
            return
        ensure_udevd()
        self._udevd = udevd_identity()
        for entry in Path("/sys/block").glob("loop*"):
            backing = backing_file_of(entry.name)
            if backing and backing.startswith(f"{self.shm}/"):
                subprocess.run(
                    ["udevadm", "trigger", "--action=change", f"/dev/{entry.name}"],
                    check=False,
                    capture_output=True,
                )

    def start(self, timeout: float = 30) -> None:
        ensure_udevd()  # another session on the machine may have stopped the one we used
        self._udevd = udevd_identity()
        super().start(timeout)

    def log_tail(self, n: int = 4000) -> str:
        return self.tail(n)

    def status_or_none(self) -> dict[str, Any] | None:
        """The daemon's status (``fdffctl status --json``), or None if it does not answer."""
        self.keep_udev_events()
        return self.status()

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
            if not self.alive():
                raise StationError(f"the daemon died: {self.tail()}")
            time.sleep(0.02)
        udevd = "a udevd answers" if udevd_answers() else "NO udevd answers (no events)"
        raise StationError(f"{device} never reached {sorted(want)}; saw {seen}; {udevd}")

    def records(self) -> list[dict[str, Any]]:
        self.keep_udev_events()
        return super().records()

    def wait_records(self, n: int, timeout: float = 180) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.records()
            if len(recs) >= n:
                return recs
            time.sleep(0.2)
        raise StationError(f"{len(self.records())} of {n} records; log:\n{self.tail()}")

    def wait_idle(self, timeout: float = 180) -> dict[str, Any]:
        """Poll until no job runs or waits; return that status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status_or_none()
            if status and not status["totals"]["active"] and not status["totals"]["queued"]:
                return status
            time.sleep(0.1)
        raise StationError("the station did not become idle: " + self.tail())


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

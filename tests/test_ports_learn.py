"""``fdffctl ports learn`` end to end under the real udevd: a volunteer (stdin) names
each port and plugs a stick (a loop device attached over a file in that port's
directory); the map is written to ``station.ports_file``; meanwhile the station takes no
job on a drive that appears."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fdffd.audit import StationKeys
from fdffd.config import load_config
from fdffd.devices.hotplug import DiskEvent
from fdffd.station.learn import learning, port_glob
from fdffd.station.station import Station
from fdffd_testkit.loopdev import LoopDevice

MiB = 1 << 20


class Volunteer:
    """The learn command in a subprocess, answered line by line."""

    def __init__(self, cfg: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fdffd.cli.ctl",
                "ports",
                "learn",
                "--config",
                str(cfg),
                "--timeout",
                "30",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.seen: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def expect(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"never saw {needle!r}; output:\n{''.join(self.seen)}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def answer(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()


@pytest.fixture
def port_dirs() -> Iterator[dict[str, Path]]:
    base = Path(tempfile.mkdtemp(prefix="fdffd-learn-", dir="/dev/shm"))
    dirs = {name: base / name for name in ("A", "B")}
    for d in dirs.values():
        d.mkdir()
    yield dirs
    shutil.rmtree(base, ignore_errors=True)


def test_ports_learn_writes_the_map_and_holds_jobs_off(
    tmp_path: Path, port_dirs: dict[str, Path], loop: Callable[..., LoopDevice]
) -> None:
    ports_file = tmp_path / "ports.toml"
    cfg_path = tmp_path / "fdffd.toml"
    cfg_path.write_text(
        f'[station]\nstate_dir = "{tmp_path / "state"}"\npayload_dir = "{tmp_path / "p"}"\n'
        f'ports_file = "{ports_file}"\n[drives]\nallow_loop = true\n[job]\nprofile = ""\n'
        '[audiences.youth]\nprofiles = ["youth"]\n'
    )
    main_config = cfg_path.read_bytes()
    cfg = load_config(cfg_path)
    cfg.station.state_dir.mkdir(parents=True)
    station = Station(cfg, StationKeys.init(cfg.station.state_dir))

    v = Volunteer(cfg_path)
    try:
        v.expect("Port 1:")
        v.answer("A")
        v.expect("Audience of port A")
        v.answer("youth")
        v.expect("Plug a stick into port A")
        assert learning(cfg), "the lock names the running learn"
        a = loop(8 * MiB, directory=port_dirs["A"])
        v.expect("learned")
        # the station takes no job on the stick while learning runs
        station.on_event(
            DiskEvent(
                "change", a.path, Path(a.path).name, None, a.size, f"loop:{a.backing}", "loop"
            )
        )
        assert not station.queue and not station.running
        v.expect("Port 2:")
        v.answer("B")
        v.expect("Audience of port B")
        v.answer("")
        v.expect("Plug a stick into port B")
        loop(8 * MiB, directory=port_dirs["A"])  # the wrong port first
        v.expect("That is port A again")
        loop(8 * MiB, directory=port_dirs["B"])
        v.expect("learned")
        v.expect("Port 3:")
        v.answer("")
        v.expect("Wrote 2 port(s)")
        assert v.proc.wait(timeout=30) == 0
    finally:
        if v.proc.poll() is None:
            v.proc.kill()
            v.proc.wait()
    assert not learning(cfg), "the lock is gone"
    assert cfg_path.read_bytes() == main_config, "the main config is never rewritten"
    learned = load_config(cfg_path)
    assert [(p.label, p.path, p.audience) for p in learned.ports] == [
        ("A", f"loop:{port_dirs['A']}/*", "youth"),
        ("B", f"loop:{port_dirs['B']}/*", ""),
    ]
    entry = learned.port_entry(f"loop:{port_dirs['B']}/fdffd-loop-x.img")
    assert entry is not None and entry.label == "B"


def test_port_globs() -> None:
    usb = "pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0"
    assert port_glob(usb) == "pci-0000:00:14.0-usb-0:1.2:*"
    assert port_glob("loop:/dev/shm/x/a.img") == "loop:/dev/shm/x/*"
    assert port_glob("platform-fe320000.mmc") == "platform-fe320000.mmc"
    assert port_glob("loop:/d[1]/a") == "loop:/d[[]1]/*"

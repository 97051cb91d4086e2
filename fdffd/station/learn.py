"""``fdffctl ports learn``: a volunteer plugs a stick into each port in turn and the
station's port map is written from what udev saw.

The map goes to ``station.ports_file`` (never the main config).  While learning runs, a
lock file in the state dir holds its process id; the station takes no job on a drive
that appears meanwhile (:func:`learning`), so the sticks used to learn are never wiped.
"""

from __future__ import annotations

import json
import os
import queue
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ..config import Config, PortEntry
from ..devices.hotplug import DiskEvent, HotplugWatch
from ..errors import UsageError
from ..fsutil import atomic_write
from ..text import clean_untrusted

LOCK_NAME = "ports-learn.lock"
_USB_PORT = re.compile(r"^(.*-usb-[0-9]+:[0-9.]+:)")


def lock_path(config: Config) -> Path:
    return config.station.state_dir / LOCK_NAME


def learning(config: Config) -> bool:
    """Whether ``fdffctl ports learn`` runs now (its lock names a live process)."""
    try:
        pid = int(lock_path(config).read_text().strip() or "0")
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # a learn that died: its lock is stale
    except PermissionError:
        return True
    return True


@contextmanager
def learning_lock(config: Config) -> Iterator[None]:
    path = lock_path(config)
    if learning(config):
        raise UsageError(f"another `fdffctl ports learn` runs ({path}); finish it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{os.getpid()}\n".encode(), mode=0o644)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def port_glob(port: str) -> str:
    """The glob that maps the port a stick was seen on: a USB port without the interface
    and what hangs below it; a loop device's backing file's directory (tests and demos);
    otherwise the path itself, its glob characters escaped."""
    if port.startswith("loop:"):
        return "loop:" + _escape(os.path.dirname(port[5:])) + "/*"
    found = _USB_PORT.match(port)
    if found:
        return _escape(found.group(1)) + "*"
    return _escape(port)


def _escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def render_ports(entries: list[PortEntry]) -> str:
    """The ports file: ``[[ports]]`` tables in physical order (JSON strings are TOML strings)."""
    lines = ["# written by `fdffctl ports learn`: the hub's ports in physical order", ""]
    for e in entries:
        lines += ["[[ports]]", f"label = {json.dumps(e.label)}", f"path = {json.dumps(e.path)}"]
        if e.audience:
            lines.append(f"audience = {json.dumps(e.audience)}")
        if e.media:
            lines.append(f"media = {json.dumps(e.media)}")
        lines.append("")
    return "\n".join(lines)


class _Plugs:
    """New media as udev reports them: a disk (name, DISKSEQ) not seen before, with a size."""

    def __init__(self) -> None:
        self.events: queue.Queue[DiskEvent] = queue.Queue()
        self.seen: set[tuple[str, int | None]] = set()
        self.watch = HotplugWatch(self.events.put)

    def __enter__(self) -> _Plugs:
        self.watch.start()
        self.watch.enumerated.wait(timeout=30)
        self.drain()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watch.stop()

    def drain(self) -> None:
        while True:
            try:
                self._new(self.events.get_nowait())
            except queue.Empty:
                return

    def _new(self, ev: DiskEvent) -> bool:
        key = (ev.name, ev.diskseq)
        if ev.gone or not ev.port or key in self.seen:
            return False
        self.seen.add(key)
        return True

    def next_plug(self, timeout: float) -> DiskEvent | None:
        try:
            while True:
                ev = self.events.get(timeout=timeout)
                if self._new(ev):
                    return ev
        except queue.Empty:
            return None


def learn(config: Config, inp: TextIO, out: TextIO, *, timeout: float = 300.0) -> list[PortEntry]:
    """Ask for each port's label (and audience), wait for a stick on it, and write the map
    to ``station.ports_file``.  An empty label ends; the entries are returned."""
    ports_file = config.station.ports_file
    if ports_file is None:
        raise UsageError(
            "set station.ports_file (e.g. /etc/fdffd/ports.toml) first: "
            "`fdffctl ports learn` writes the map there, never to the main config"
        )
    entries: list[PortEntry] = []
    known = ", ".join(sorted(config.audiences)) or "none defined"
    with learning_lock(config), _Plugs() as plugs:
        say(out, "Plug a stick into each port in turn, in physical order. No job runs meanwhile.")
        while True:
            label = ask(
                out,
                inp,
                f"Port {len(entries) + 1}: the label printed next to it (Enter alone to finish): ",
            )
            if not label:
                break
            if not _valid(label, out):
                continue
            audience = ask(out, inp, f"Audience of port {label} (Enter for none; {known}): ")
            if audience and audience not in config.audiences:
                say(out, f"No audience {audience!r} in the config ({known}); port {label} skipped.")
                continue
            plugs.drain()
            say(out, f"Plug a stick into port {label} now.")
            entry = _wait_for_port(config, plugs, entries, label, audience, out, timeout)
            if entry is None:
                say(out, f"No stick seen in {timeout:.0f} s; port {label} skipped.")
                continue
            entries.append(entry)
            say(out, f"Port {label}: {entry.path} - learned. Pull the stick out.")
        atomic_write(ports_file, render_ports(entries).encode(), mode=0o644)
    say(out, f"Wrote {len(entries)} port(s) to {ports_file}.")
    return entries


def _wait_for_port(
    config: Config,
    plugs: _Plugs,
    entries: list[PortEntry],
    label: str,
    audience: str,
    out: TextIO,
    timeout: float,
) -> PortEntry | None:
    while True:
        ev = plugs.next_plug(timeout)
        if ev is None:
            return None
        glob = port_glob(ev.port)
        taken = next((e for e in entries if e.path == glob), None)
        if taken is not None:
            say(out, f"That is port {taken.label} again; plug into port {label}.")
            continue
        try:
            return PortEntry(label=label, path=glob, audience=audience)
        except ValueError as err:
            say(out, f"Cannot map it: {clean_untrusted(str(err), 200)}")
            return None


def _valid(label: str, out: TextIO) -> bool:
    try:
        PortEntry(label=label, path="*")
    except ValueError as err:
        say(out, clean_untrusted(str(err).splitlines()[-1], 200))
        return False
    return True


def ask(out: TextIO, inp: TextIO, prompt: str) -> str:
    out.write(prompt + "\n")
    out.flush()
    return inp.readline().strip()


def say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()

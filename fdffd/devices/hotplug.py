"""Hotplug: udev events for whole disks, as plain ``DiskEvent`` values.

A supervised pyudev monitor (source ``udev``, subsystem ``block``) runs in a thread.  Card
readers report media through ``change`` events, and so do loop devices, so ``add`` and
``change`` are treated alike; a disk whose size drops to 0 has lost its medium.  If the
monitor dies (pyudev raises when its socket overflows under bursts), it is recreated and the
disks present are enumerated again; the station's DISKSEQ bookkeeping keeps that idempotent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..log import get_logger
from .sysfs import loop_port
from .udev import disk_identity, is_loop


@dataclass(frozen=True)
class DiskEvent:
    action: str  # add | change | remove
    device: str  # /dev/sdb
    name: str  # sdb
    diskseq: int | None
    size_bytes: int
    port: str  # udev ID_PATH ("" when unknown)
    bus: str  # udev ID_BUS, "loop" for loop devices
    vendor: str = ""
    model: str = ""

    @property
    def gone(self) -> bool:
        return self.action == "remove" or self.size_bytes == 0


def event_from_udev(action: str, dev: Any) -> DiskEvent | None:
    """Translate a pyudev ``Device`` into a DiskEvent, or None when it is not a whole disk."""
    if dev.subsystem != "block" or dev.device_type != "disk":
        return None
    name = str(dev.sys_name)
    props = dev.properties
    try:
        size = int(dev.attributes.asint("size")) * 512
    except (KeyError, ValueError, AttributeError):
        size = 0
    seq = props.get("DISKSEQ")
    if action != "remove" and size and seq and _current_diskseq(dev) not in (None, str(seq)):
        # A late event of an earlier medium (a detach's change, read after the next attach):
        # its size and port, read from sysfs now, would be the new medium's, under the old
        # DISKSEQ, and make two jobs of one insertion.  The new medium's own event follows.
        # With no medium now (size 0) it says what it must: the medium is gone.  (A loop
        # detach, or a card pulled from a reader, bumps DISKSEQ: its change event carries the
        # old one.)
        return None
    ident = disk_identity(name, props, loop_port=loop_port(name) if is_loop(name) else "")
    return DiskEvent(
        action=action,
        device=str(dev.device_node or f"/dev/{name}"),
        name=name,
        diskseq=int(seq) if seq and str(seq).isdigit() else None,
        size_bytes=size,
        port=ident.port,
        bus=ident.bus,
        vendor=ident.vendor,
        model=ident.model,
    )


def _current_diskseq(dev: Any) -> str | None:
    """The disk's DISKSEQ now (sysfs ``diskseq``), None when the kernel does not say."""
    try:
        value = dev.attributes.get("diskseq")
    except (KeyError, AttributeError, OSError):
        return None
    if value is None:
        return None
    text = value.decode().strip() if isinstance(value, bytes) else str(value).strip()
    return text or None


class HotplugWatch:
    """Calls ``on_event`` for every whole-disk event, and for every disk present at start;
    then ``on_enumerated()`` once, when the disks present at start have all been handed over
    (the station records the insertions it waited for that were not among them)."""

    def __init__(
        self,
        on_event: Callable[[DiskEvent], None],
        on_enumerated: Callable[[], None] = lambda: None,
    ) -> None:
        self.on_event = on_event
        self.on_enumerated = on_enumerated
        self.enumerated = threading.Event()
        self.log = get_logger(component="hotplug")
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fdffd-hotplug", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    def _emit(self, action: str, dev: Any) -> None:
        ev = event_from_udev(action, dev)
        if ev is not None:
            self._call(self.on_event, ev, device=ev.device)

    def _call(self, handler: Callable[..., None], *args: Any, **context: str) -> None:
        try:
            handler(*args)
        except Exception:  # one bad event must not end the watch
            self.log.exception("hotplug.handler_failed", **context)

    def _run(self) -> None:
        import pyudev

        while not self._stop.is_set():
            try:
                ctx = pyudev.Context()
                monitor = pyudev.Monitor.from_netlink(ctx, source="udev")
                monitor.filter_by("block")
                try:
                    monitor.set_receive_buffer_size(32 << 20)
                except Exception:  # needs CAP_NET_ADMIN beyond rmem_max; the default will do
                    pass
                monitor.start()
                # enumerate after the monitor listens, so no disk falls between the two
                for dev in ctx.list_devices(subsystem="block", DEVTYPE="disk"):
                    self._emit("add", dev)
                if not self.enumerated.is_set():
                    self.enumerated.set()
                    self._call(self.on_enumerated)
                self.log.info("hotplug.watching", restarts=self.restarts)
                while not self._stop.is_set():
                    dev = monitor.poll(timeout=0.5)
                    if dev is not None:
                        self._emit(str(dev.action), dev)
            except Exception as err:  # supervised: recreate the monitor and enumerate again
                self.restarts += 1
                self.log.warning("hotplug.monitor_failed", error=str(err), restarts=self.restarts)
                self._stop.wait(1.0)

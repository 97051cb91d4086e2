"""The one udev adapter: what the udev database says about a block device, as plain data.

Only this module asks udev (through pyudev) about a device the gate decides on.  udev is
where the bus (``ID_BUS``), the port (``ID_PATH``), the vendor, model and serial come
from; without its data the gate cannot tell a USB stick from the station's own disk, so a
failure here is never swallowed: it is logged under a stable event name and handed back as
a sentence that says what is missing and what to do.

Events:

- ``udev.unavailable``: pyudev or libudev cannot be loaded, or no udev context opens;
- ``udev.lookup_failed``: udev could not look the device up (it vanished, or libudev failed);
- ``udev.not_initialized``: udev has no database entry for the device (``/run/udev/data``),
  even after waiting a moment for an event still being processed;
- ``udev.stale``: udev's entry describes an earlier medium in the same device (its
  ``/dev/disk/by-diskseq/N`` link names another sequence number than the kernel's), as
  when udevd stopped before the drive was swapped.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..log import get_logger
from ..text import clean_udev

#: how long a lookup waits for udev to finish a device it has not yet processed: a disk
#: that was just attached (a loop device a moment ago) has its add event still in flight
UDEV_WAIT = 2.0
_POLL = 0.05

#: the udev database; named in the sentences so an operator knows where to look
UDEV_DATA_DIR = "/run/udev/data"
_WHAT_TO_DO = (
    "is systemd-udevd running? (systemctl status systemd-udevd; "
    "udevadm trigger --subsystem-match=block to replay the events)"
)


@dataclass(frozen=True)
class UdevData:
    """udev's view of one device: its properties, or why there are none.

    ``missing`` is empty when udev knows the device (it has a database entry), else a
    sentence naming what is missing and what to do."""

    properties: dict[str, str] = field(default_factory=dict)
    missing: str = ""

    @property
    def known(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class DiskIdentity:
    """Bus, port, vendor, model and serial of a disk: cleaned, ready for logs and records."""

    bus: str
    port: str
    vendor: str
    model: str
    serial: str


def lookup(devnum: tuple[int, int], *, wait: float = UDEV_WAIT) -> UdevData:
    """udev's data on block device ``major:minor``; waits up to ``wait`` seconds for udev to
    finish a device it is still processing.  Never raises: failures are logged and named."""
    node = f"block device {devnum[0]}:{devnum[1]}"
    log = get_logger(component="udev", devnum=f"{devnum[0]}:{devnum[1]}")
    try:
        import pyudev

        context = pyudev.Context()
    except Exception as err:  # ImportError, or libudev missing or failing (OSError, ...)
        log.error("udev.unavailable", error=f"{type(err).__name__}: {err}")
        return UdevData(
            missing=f"no udev data for {node}: the udev library cannot be used "
            f"({type(err).__name__}: {err}); install udev and pyudev (scripts/bootstrap)"
        )
    deadline = time.monotonic() + wait
    while True:
        try:
            device = pyudev.Devices.from_device_number(context, "block", _devt(devnum))
            initialized = bool(device.is_initialized)
            properties = {str(k): str(v) for k, v in device.properties.items()}
            links = [str(link) for link in device.device_links]
        except Exception as err:  # pyudev raises DeviceNotFound*, OSError, ValueError...
            log.warning("udev.lookup_failed", error=f"{type(err).__name__}: {err}")
            return UdevData(
                missing=f"no udev data for {node}: udev cannot look it up "
                f"({type(err).__name__}: {err}); {_WHAT_TO_DO}"
            )
        recorded = recorded_diskseq(links)
        current = properties.get("DISKSEQ", "")
        stale = recorded is not None and current.isdigit() and recorded != int(current)
        if initialized and not stale:
            return UdevData(properties)
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL)
    if stale:
        log.warning("udev.stale", recorded_diskseq=recorded, diskseq=current, waited_s=wait)
        what = (
            f"udev's record of it in {UDEV_DATA_DIR} describes an earlier medium, "
            f"diskseq {recorded} (the kernel's is {current})"
        )
    else:
        log.warning("udev.not_initialized", waited_s=wait)
        what = f"udev has no record of it in {UDEV_DATA_DIR}"
    return UdevData(
        properties,
        missing=f"no udev data for {node}: {what}, after waiting {wait:g} s; {_WHAT_TO_DO}",
    )


_BY_DISKSEQ = re.compile(r"/disk/by-diskseq/(\d+)(?:-part\d+)?$")


def recorded_diskseq(links: list[str]) -> int | None:
    """The medium sequence number udev's record was made for, from its ``by-diskseq`` link
    (None when udev made no such link: older udev, or no DISKSEQ)."""
    for link in links:
        m = _BY_DISKSEQ.search(link)
        if m:
            return int(m.group(1))
    return None


def _devt(devnum: tuple[int, int]) -> int:
    return os.makedev(devnum[0], devnum[1])


def is_loop(name: str) -> bool:
    """Whether the kernel's name ``name`` (from sysfs, never from a path) is a loop device."""
    return name.startswith("loop")


def disk_identity(name: str, properties: Mapping[str, str], *, loop_port: str = "") -> DiskIdentity:
    """The identity of disk ``name`` from udev ``properties``: the one place that reads
    ``ID_BUS``, ``ID_PATH``, ``ID_VENDOR*``, ``ID_MODEL*`` and ``ID_SERIAL_SHORT``.

    A loop device's bus is ``loop`` and its port is ``loop_port`` (``loop:<backing file>``,
    read from sysfs); udev gives neither.  Any other disk has the bus and port udev names,
    or ``""`` when udev names none: never a guess from a sysfs path."""
    if is_loop(name):
        bus, port = "loop", loop_port
    else:
        bus = clean_udev(properties.get("ID_BUS", ""), 32)
        port = clean_udev(properties.get("ID_PATH", ""), 128)
    return DiskIdentity(
        bus=bus,
        port=port,
        vendor=clean_udev(properties.get("ID_VENDOR_ENC") or properties.get("ID_VENDOR", "")),
        model=clean_udev(properties.get("ID_MODEL_ENC") or properties.get("ID_MODEL", "")),
        serial=clean_udev(properties.get("ID_SERIAL_SHORT", ""), 128),
    )

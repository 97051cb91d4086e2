"""Drives for the job's contract suite, on two backends with one interface.

- ``memory``: the in-memory disk (``fdffd_testkit.memdisk``): no root, no devices, milliseconds.
- ``loop``: a FUSE fake behind a real loop device, opened as the station opens it
  (``BlockDevice``), with its facts gathered from the system (needs root).

A test asks for a drive by :class:`DriveSpec`, plants donor data on it, opens it, runs the
job, and then asks whether any donor data is left in its real flash.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fdffd.config import Config
from fdffd.devices.blockdev import BlockDevice
from fdffd.devices.disk import Disk
from fdffd.devices.facts import DeviceFacts, gather
from fdffd.job.gate import evaluate
from fdffd_testkit.fakedrive import FakeDrive, FakeSpec
from fdffd_testkit.markers import MAGIC, find_markers, marker_block, write_markers
from fdffd_testkit.memdisk import PAGE, MemDisk

MiB = 1 << 20


@dataclass(frozen=True)
class DriveSpec:
    """What a test drive announces and really does (as ``FakeSpec``; bad ranges are whole
    4 KiB pages so that both backends fail exactly the same bytes)."""

    announced: int
    real: int
    kind: str = "honest"
    bad_ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def honest(cls, size: int, **kw: object) -> DriveSpec:
        return cls(announced=size, real=size, **kw)  # type: ignore[arg-type]


class JobDrive(Protocol):
    path: str
    #: the serial number the drive reports ("" for none: a loop device)
    serial: str

    def plant_donor(self) -> None:
        """Donor data every MiB of the real flash."""

    def donor_left(self) -> list[int]:
        """Offsets in the real flash where donor data is still found."""

    def set_mode(self, mode: str) -> None:
        """A runtime fault: ``fail`` (every request fails) or ``readonly`` (writes fail)."""

    def opened(self, config: Config) -> AbstractContextManager[tuple[Disk, DeviceFacts]]:
        """The drive opened for a job, and the facts about it."""
        ...


class MemoryDrive:
    def __init__(self, spec: DriveSpec) -> None:
        self.spec = spec
        bad = {o // PAGE + i for o, n in spec.bad_ranges for i in range(n // PAGE)}
        self.disk = MemDisk(spec.announced, spec.real, kind=spec.kind, bad_pages=bad)
        self.path = self.disk.path
        self.serial = "MEM-0001"

    def plant_donor(self) -> None:
        for off in range(0, self.spec.real - PAGE + 1, MiB):
            self.disk.pwrite(memoryview(marker_block(off)), off)

    def donor_left(self) -> list[int]:
        real = self.spec.real
        return sorted(
            page * PAGE
            for page, data in self.disk.pages.items()
            if page * PAGE < real and MAGIC in data
        )

    def set_mode(self, mode: str) -> None:
        self.disk.set_mode(mode)

    @contextmanager
    def opened(self, config: Config) -> Iterator[tuple[Disk, DeviceFacts]]:
        facts = DeviceFacts(
            path=self.path,
            name="memdisk",
            bus="usb",
            port="pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0",
            size_bytes=self.spec.announced,
            vendor="Memory",
            model="Disk",
            serial=self.serial,
        )
        yield self.disk, facts


class LoopDrive:
    def __init__(self, fake: FakeDrive, spec: DriveSpec) -> None:
        self.fake = fake
        self.spec = spec
        self.path = fake.path
        self.serial = ""

    def plant_donor(self) -> None:
        assert write_markers(self.path, self.spec.real) > 0

    def donor_left(self) -> list[int]:
        return find_markers(self.path, self.spec.real)

    def set_mode(self, mode: str) -> None:
        self.fake.set_mode(mode)

    @contextmanager
    def opened(self, config: Config) -> Iterator[tuple[Disk, DeviceFacts]]:
        st = config.station
        facts = gather(self.path, state_dir=st.state_dir, payload_dir=st.payload_dir)
        assert evaluate(facts, config.drives) is None, evaluate(facts, config.drives)
        with BlockDevice(self.path) as dev:
            yield dev, facts


MakeDrive = Callable[[DriveSpec], JobDrive]


def memory_backend() -> MakeDrive:
    return MemoryDrive


def loop_backend(fake: Callable[..., FakeDrive]) -> MakeDrive:
    def make(spec: DriveSpec) -> JobDrive:
        fs = FakeSpec(
            announced=spec.announced, real=spec.real, kind=spec.kind, bad_ranges=spec.bad_ranges
        )
        return LoopDrive(fake(fs), spec)

    return make


def payload_source(root: Path, files: dict[str, int]) -> Path:
    """A payload tree of files of the given sizes."""
    src = root / "src"
    for rel, size in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return src

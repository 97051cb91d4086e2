"""An in-memory model of honest and counterfeit drives: a :class:`fdffd.devices.disk.Disk`.

It behaves like the FUSE fakes (wraparound, dropped writes, I/O errors past the real
size, a write-back cache, bad sectors that fail reads, a runtime fault mode) but costs
nothing, so hypothesis can try thousands of sizes and every verdict of a whole job runs
without root.  The FUSE fakes on loop devices remain the real-device tests.

Storage is kept in 4 KiB pages; requests need only be multiples of the logical sector
(512 by default), as on a real drive.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from fdffd.devices.disk import Geometry
from fdffd.errors import DeviceIOError, DriveRemovedError

PAGE = 4096
#: runtime fault modes, as the FUSE fake's ``ctl`` file has them, and a pulled drive
MODES = ("ok", "fail", "readonly", "removed")


@dataclass
class MemDisk:
    announced: int
    real: int
    kind: str = "honest"  # honest | wraparound | drop-zeros | drop-ff | ioerror
    cache_bytes: int = 0
    bad_pages: set[int] = field(default_factory=set)  # page numbers that fail reads
    path: str = "memdisk"
    pages: dict[int, bytes] = field(default_factory=dict)
    _cache: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    sector: int = 512
    #: set by the job before each stage (the Disk protocol)
    stage: str = "admit"
    #: ok | fail (every request fails) | readonly (writes fail) | removed (the drive is gone)
    mode: str = "ok"
    flushes: int = 0

    @property
    def size(self) -> int:
        return self.announced

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.announced, self.sector, max(self.sector, PAGE), read_only=False)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode

    def gone(self) -> bool:
        return self.mode == "removed"

    def reread_partitions(self) -> None:
        """Nothing to tell: there is no kernel looking at this disk."""

    def _eio(self, offset: int) -> DeviceIOError:
        return DeviceIOError(
            "Input/output error", device=self.path, stage=self.stage, offset=offset
        )

    def _fault(self, offset: int, *, write: bool) -> None:
        if self.mode == "removed":
            raise DriveRemovedError(device=self.path, stage=self.stage)
        if self.mode == "fail" or (write and self.mode == "readonly"):
            raise self._eio(offset)

    def _backend_write(self, page: int, data: bytes) -> None:
        off = page * PAGE
        if off < self.real or self.kind == "honest":
            self.pages[page] = data
        elif self.kind == "wraparound":
            self.pages[(off % self.real) // PAGE] = data
        elif self.kind == "ioerror":
            raise self._eio(off)
        # drop-zeros / drop-ff: the write vanishes

    def _backend_read(self, page: int) -> bytes:
        off = page * PAGE
        if page in self.bad_pages:
            raise self._eio(off)
        if off < self.real or self.kind == "honest":
            return self.pages.get(page, bytes(PAGE))
        if self.kind == "wraparound":
            return self.pages.get((off % self.real) // PAGE, bytes(PAGE))
        if self.kind == "drop-ff":
            return b"\xff" * PAGE
        if self.kind == "ioerror":
            raise self._eio(off)
        return bytes(PAGE)

    def _write_page(self, page: int, data: bytes) -> None:
        if not self.cache_bytes:
            self._backend_write(page, data)
            return
        self._cache[page] = data
        self._cache.move_to_end(page)
        while len(self._cache) * PAGE > self.cache_bytes:
            old, old_data = self._cache.popitem(last=False)
            try:
                self._backend_write(old, old_data)
            except DeviceIOError:
                pass  # a cached write failing later is lost silently, as on a real fake

    def _read_page(self, page: int) -> bytes:
        data = self._cache.get(page)
        return self._backend_read(page) if data is None else data

    def _check(self, offset: int, length: int) -> None:
        assert offset % self.sector == 0 and length % self.sector == 0, (offset, length)
        assert offset >= 0 and offset + length <= self.announced, (offset, length)

    def pwrite(self, buf: memoryview, offset: int) -> None:
        self._check(offset, len(buf))
        self._fault(offset, write=True)
        pos = 0
        while pos < len(buf):
            page, within = divmod(offset + pos, PAGE)
            n = min(PAGE - within, len(buf) - pos)
            if n == PAGE:
                data = bytes(buf[pos : pos + PAGE])
            else:  # part of a page: the rest of it keeps what the drive holds
                try:
                    cur = bytearray(self._read_page(page))
                except DeviceIOError:
                    cur = bytearray(PAGE)
                cur[within : within + n] = buf[pos : pos + n]
                data = bytes(cur)
            self._write_page(page, data)
            pos += n

    def pread(self, buf: memoryview, offset: int) -> None:
        self._check(offset, len(buf))
        self._fault(offset, write=False)
        pos = 0
        while pos < len(buf):
            page, within = divmod(offset + pos, PAGE)
            n = min(PAGE - within, len(buf) - pos)
            buf[pos : pos + n] = self._read_page(page)[within : within + n]
            pos += n

    def flush(self) -> None:
        """A cache flush: real fakes often ignore it; this one does too, to stay adversarial."""
        self._fault(0, write=False)
        self.flushes += 1

"""An in-memory model of honest and counterfeit drives, for property tests of the probe.

It behaves like the FUSE fakes (wraparound, dropped writes, I/O errors past the real
size, a write-back cache) but costs nothing, so hypothesis can try thousands of
sizes.  The FUSE fakes on loop devices remain the real-device tests.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from fdffd.errors import DeviceIOError

PAGE = 4096


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

    @property
    def size(self) -> int:
        return self.announced

    def _backend_write(self, page: int, data: bytes) -> None:
        off = page * PAGE
        if off < self.real or self.kind == "honest":
            self.pages[page] = data
        elif self.kind == "wraparound":
            self.pages[(off % self.real) // PAGE] = data
        elif self.kind == "ioerror":
            raise DeviceIOError("Input/output error", device=self.path, stage="test", offset=off)
        # drop-zeros / drop-ff: the write vanishes

    def _backend_read(self, page: int) -> bytes:
        off = page * PAGE
        if page in self.bad_pages:
            raise DeviceIOError("Input/output error", device=self.path, stage="test", offset=off)
        if off < self.real or self.kind == "honest":
            return self.pages.get(page, bytes(PAGE))
        if self.kind == "wraparound":
            return self.pages.get((off % self.real) // PAGE, bytes(PAGE))
        if self.kind == "drop-ff":
            return b"\xff" * PAGE
        if self.kind == "ioerror":
            raise DeviceIOError("Input/output error", device=self.path, stage="test", offset=off)
        return bytes(PAGE)

    def pwrite(self, buf: memoryview, offset: int) -> None:
        assert offset % PAGE == 0 and len(buf) % PAGE == 0
        for i in range(len(buf) // PAGE):
            page = offset // PAGE + i
            data = bytes(buf[i * PAGE : (i + 1) * PAGE])
            if self.cache_bytes:
                self._cache[page] = data
                self._cache.move_to_end(page)
                while len(self._cache) * PAGE > self.cache_bytes:
                    old, old_data = self._cache.popitem(last=False)
                    try:
                        self._backend_write(old, old_data)
                    except DeviceIOError:
                        pass  # a cached write failing later is lost silently, as on a real fake
            else:
                self._backend_write(page, data)

    def pread(self, buf: memoryview, offset: int) -> None:
        assert offset % PAGE == 0 and len(buf) % PAGE == 0
        for i in range(len(buf) // PAGE):
            page = offset // PAGE + i
            data = self._cache.get(page)
            if data is None:
                data = self._backend_read(page)
            buf[i * PAGE : (i + 1) * PAGE] = data

    def flush(self) -> None:
        """A cache flush: what a real fake does with it is write back; ours too."""
        # Real fakes often ignore flushes; keep the cache as is to stay adversarial.

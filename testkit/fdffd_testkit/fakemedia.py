"""What a simulated drive is and does, without FUSE: the spec, and the behaviour over its
real-flash file (wraparound, dropped writes, I/O errors past the real size, a write-back cache
that ignores flushes, bad ranges, a runtime fault mode and delay).  ``fakedrive`` serves it
through FUSE behind a loop device; the tests also drive it directly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("honest", "wraparound", "drop-zeros", "drop-ff", "ioerror")
MODES = ("ok", "fail", "readonly")
CACHE_PAGE = 4096


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class FakeSpec:
    """What a simulated drive announces and what it really does. JSON-serialisable."""

    announced: int
    real: int
    kind: str = "honest"
    cache_bytes: int = 0
    bad_ranges: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    #: seconds every read and write request takes (a slow drive); changeable at run time
    delay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bad_ranges", tuple((int(o), int(n)) for o, n in self.bad_ranges))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if not 0 < self.real <= self.announced:
            raise ValueError(f"need 0 < real <= announced, got {self.real} / {self.announced}")
        if self.announced % 512 or self.real % 512:
            raise ValueError("announced and real must be multiples of 512")
        if self.kind == "honest" and self.real != self.announced:
            raise ValueError("an honest drive has real == announced; pick a fake kind")
        if self.cache_bytes < 0 or self.cache_bytes % CACHE_PAGE:
            raise ValueError(f"cache_bytes must be a non-negative multiple of {CACHE_PAGE}")
        if not 0 <= self.delay <= 60:
            raise ValueError(f"delay must be between 0 and 60 seconds, not {self.delay}")
        for off, n in self.bad_ranges:
            if off < 0 or n <= 0 or off + n > self.real:
                raise ValueError(f"bad range ({off}, {n}) is not inside the real size")

    @classmethod
    def honest(cls, size: int, **kw: Any) -> FakeSpec:
        return cls(announced=size, real=size, kind="honest", **kw)

    @property
    def is_fake(self) -> bool:
        return self.real < self.announced

    def to_json(self) -> str:
        return json.dumps(
            {
                "announced": self.announced,
                "real": self.real,
                "kind": self.kind,
                "cache_bytes": self.cache_bytes,
                "bad_ranges": [list(r) for r in self.bad_ranges],
                "delay": self.delay,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FakeSpec:
        d = json.loads(text)
        return cls(
            announced=d["announced"],
            real=d["real"],
            kind=d.get("kind", "honest"),
            cache_bytes=d.get("cache_bytes", 0),
            bad_ranges=tuple(tuple(r) for r in d.get("bad_ranges", ())),
            delay=float(d.get("delay", 0.0)),
        )


# --------------------------------------------------------------------------- the behaviour


def _eio() -> OSError:
    return OSError(errno.EIO, os.strerror(errno.EIO))


class FakeMedia:
    """The drive's behaviour over a real-flash file descriptor; no FUSE involved.

    Raises ``OSError`` (EIO, EROFS, ENOSPC) the way the drive would fail a request.
    """

    def __init__(self, spec: FakeSpec, flash_fd: int) -> None:
        self.spec = spec
        self.mode = "ok"
        self.delay = spec.delay
        self._fd = flash_fd
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    # Public entry points --------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode

    def set_delay(self, seconds: float) -> None:
        if not 0 <= seconds <= 60:
            raise ValueError(f"delay must be between 0 and 60 seconds, not {seconds}")
        self.delay = seconds

    def control(self, text: str) -> None:
        """A command written to ``ctl``: a mode, or ``delay SECONDS``."""
        word, _, arg = text.strip().partition(" ")
        if word == "delay":
            try:
                seconds = float(arg)
            except ValueError:
                raise ValueError(f"delay needs a number of seconds, not {arg!r}") from None
            self.set_delay(seconds)
        else:
            self.set_mode(word)

    def _wait(self) -> None:
        if self.delay:
            time.sleep(self.delay)

    def read(self, offset: int, size: int) -> bytes:
        self._wait()
        if self.mode == "fail":
            raise _eio()
        size = max(0, min(size, self.spec.announced - offset))
        if size == 0:
            return b""
        if not self.spec.cache_bytes:
            return self._media_read(offset, size)
        with self._lock:
            return self._cached_read(offset, size)

    def write(self, offset: int, data: bytes) -> int:
        self._wait()
        if self.mode == "fail":
            raise _eio()
        if self.mode == "readonly":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        if offset >= self.spec.announced:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data = data[: self.spec.announced - offset]
        if not self.spec.cache_bytes:
            self._media_write(offset, data)
        else:
            with self._lock:
                self._cached_write(offset, data)
        return len(data)

    # The flash and what lies past it --------------------------------------

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int | None]]:
        """Split a request into (length, physical offset or None for "past the real flash")."""
        real = self.spec.real
        while length > 0:
            if offset < real:
                n = min(length, real - offset)
                yield n, offset
            elif self.spec.kind == "wraparound":
                phys = offset % real
                n = min(length, real - phys)
                yield n, phys
            else:
                n = length
                yield n, None
            offset += n
            length -= n

    def _bad_overlap(self, phys: int, n: int) -> bool:
        return any(o < phys + n and phys < o + ln for o, ln in self.spec.bad_ranges)

    def _media_read(self, offset: int, size: int) -> bytes:
        parts = []
        for n, phys in self._pieces(offset, size):
            if phys is None:
                if self.spec.kind == "ioerror":
                    raise _eio()
                parts.append((b"\xff" if self.spec.kind == "drop-ff" else b"\0") * n)
                continue
            if self._bad_overlap(phys, n):
                raise _eio()
            data = os.pread(self._fd, n, phys)
            parts.append(data if len(data) == n else data.ljust(n, b"\0"))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _media_write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        for n, phys in self._pieces(offset, len(data)):
            chunk = view[pos : pos + n]
            pos += n
            if phys is None:
                if self.spec.kind == "ioerror":
                    raise _eio()
                continue  # dropped on the floor
            for start, stop in self._good_spans(phys, phys + n):
                os.pwrite(self._fd, chunk[start - phys : stop - phys], start)

    def _good_spans(self, start: int, stop: int) -> list[tuple[int, int]]:
        """[start, stop) minus the bad ranges: writes there are accepted and lost."""
        spans = [(start, stop)]
        for o, ln in self.spec.bad_ranges:
            nxt = []
            for a, b in spans:
                if o + ln <= a or b <= o:
                    nxt.append((a, b))
                    continue
                if a < o:
                    nxt.append((a, o))
                if o + ln < b:
                    nxt.append((o + ln, b))
            spans = nxt
        return spans

    # The write-back cache (LRU of CACHE_PAGE pages) ------------------------

    def _cached_read(self, offset: int, size: int) -> bytes:
        first, last = offset // CACHE_PAGE, (offset + size - 1) // CACHE_PAGE
        parts: list[bytes] = []
        run_start: int | None = None  # first page of a run of uncached pages
        for page in range(first, last + 2):
            cached = self._cache.get(page) if page <= last else None
            if cached is None and page <= last:
                if run_start is None:
                    run_start = page
                continue
            if run_start is not None:
                parts.append(self._media_read_pages(run_start, page))
                run_start = None
            if cached is not None:
                self._cache.move_to_end(page)
                parts.append(cached)
        joined = b"".join(parts)
        skip = offset - first * CACHE_PAGE
        return joined[skip : skip + size]

    def _media_read_pages(self, first: int, stop: int) -> bytes:
        start = first * CACHE_PAGE
        return self._media_read(start, min(stop * CACHE_PAGE, self.spec.announced) - start)

    def _cached_write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        end = offset + len(data)
        for page in range(offset // CACHE_PAGE, (end - 1) // CACHE_PAGE + 1):
            p0 = page * CACHE_PAGE
            lo, hi = max(offset, p0), min(end, p0 + CACHE_PAGE)
            if lo == p0 and hi == p0 + CACHE_PAGE:
                content = bytes(view[lo - offset : hi - offset])
            else:
                old = self._cache.get(page)
                if old is None:
                    try:
                        old = self._media_read(p0, min(CACHE_PAGE, self.spec.announced - p0))
                    except OSError:
                        old = bytes(CACHE_PAGE)
                buf = bytearray(old.ljust(CACHE_PAGE, b"\0"))
                buf[lo - p0 : hi - p0] = view[lo - offset : hi - offset]
                content = bytes(buf)
            self._cache[page] = content
            self._cache.move_to_end(page)
        while len(self._cache) * CACHE_PAGE > self.spec.cache_bytes:
            page, content = self._cache.popitem(last=False)
            p0 = page * CACHE_PAGE
            with contextlib.suppress(OSError):  # the host was told "done" long ago
                self._media_write(p0, content[: self.spec.announced - p0])

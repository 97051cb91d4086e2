"""What a simulated drive announces and what it really does: ``FakeSpec`` and ``FakeMedia``.

``FakeMedia`` is the behaviour over a "real flash" file descriptor, with no FUSE involved
(``fakedrive`` serves it through FUSE; tests drive it directly).  Past the real flash a drive
wraps onto lower addresses, drops writes (reads give zeros or 0xFF) or fails them, as its
``kind`` says.  On top of that, each a spec field, as found in fakes in the wild:

- ``cache_bytes``: a write-back cache of the last pages written anywhere (LRU), which ignores
  flush requests; evicted pages take the fake path.
- ``tail_cache_bytes``: the controller keeps the last pages written *past* the real flash (in
  order of writing) and reads them back right; everything older there is lost.  It survives
  flushes.  A cache as large as the missing capacity is indistinguishable from real storage.
- ``stale``: what a read past the real flash returns instead of a blank: ``donor`` (the real
  flash as it was at the first write past it: the donor's data), ``previous`` (what was written
  there the time before: a previous pass's pattern), ``other-block`` (the current contents of
  another, scrambled, position of the real flash).
- ``moving``: capacities the drive seems to have, one per cache flush it receives, cycling: its
  answer changes between rounds.  ``real`` (the smallest of them) is what it keeps for sure.
- ``slow_zone``: ``(offset, length, seconds per MiB)``: writes there take that much longer
  (a speed cliff: worn, recycled or fake flash).
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
STALE = ("", "donor", "previous", "other-block")
MODES = ("ok", "fail", "readonly")
CACHE_PAGE = 4096
MiB = 1 << 20
#: the page an ``other-block`` fake returns for page ``p`` past the real flash is
#: ``p * _SCRAMBLE mod (real pages)``: another position, not a periodic wrap
_SCRAMBLE = 2654435761


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
    tail_cache_bytes: int = 0
    stale: str = ""
    moving: tuple[int, ...] = ()
    slow_zone: tuple[int, int, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bad_ranges", tuple((int(o), int(n)) for o, n in self.bad_ranges))
        object.__setattr__(self, "moving", tuple(int(c) for c in self.moving))
        if self.slow_zone is not None:
            o, n, s = self.slow_zone
            object.__setattr__(self, "slow_zone", (int(o), int(n), float(s)))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if not 0 < self.real <= self.announced:
            raise ValueError(f"need 0 < real <= announced, got {self.real} / {self.announced}")
        if self.announced % 512 or self.real % 512:
            raise ValueError("announced and real must be multiples of 512")
        if self.kind == "honest" and self.real != self.announced:
            raise ValueError("an honest drive has real == announced; pick a fake kind")
        for name in ("cache_bytes", "tail_cache_bytes"):
            n = getattr(self, name)
            if n < 0 or n % CACHE_PAGE:
                raise ValueError(f"{name} must be a non-negative multiple of {CACHE_PAGE}")
        if not 0 <= self.delay <= 60:
            raise ValueError(f"delay must be between 0 and 60 seconds, not {self.delay}")
        for off, n in self.bad_ranges:
            if off < 0 or n <= 0 or off + n > self.real:
                raise ValueError(f"bad range ({off}, {n}) is not inside the real size")
        self._check_wild()

    def _check_wild(self) -> None:
        dropping = self.kind in ("drop-zeros", "drop-ff", "ioerror")
        if (self.tail_cache_bytes or self.moving) and not dropping:
            raise ValueError("tail_cache_bytes and moving need a dropping kind (drop-*, ioerror)")
        if self.stale not in STALE:
            raise ValueError(f"stale must be one of {STALE}, not {self.stale!r}")
        if self.stale and self.kind not in ("drop-zeros", "drop-ff"):
            raise ValueError("stale needs kind drop-zeros or drop-ff (the blank it replaces)")
        if self.moving and self.real != min(self.moving):
            raise ValueError(f"real must be the smallest moving capacity, {min(self.moving)}")
        for cap in self.moving:
            if not self.real <= cap <= self.announced or cap % CACHE_PAGE:
                raise ValueError(
                    f"moving capacity {cap} must be a multiple of {CACHE_PAGE} between "
                    f"real ({self.real}) and announced ({self.announced})"
                )
        if self.real % CACHE_PAGE and (self.tail_cache_bytes or self.stale or self.moving):
            raise ValueError(f"real must be a multiple of {CACHE_PAGE} for these behaviours")
        if self.slow_zone is not None:
            o, n, s = self.slow_zone
            if o < 0 or n <= 0 or o + n > self.announced or not 0 <= s <= 60:
                raise ValueError(f"slow_zone {self.slow_zone} is not (offset, length, s/MiB)")

    @classmethod
    def honest(cls, size: int, **kw: Any) -> FakeSpec:
        return cls(announced=size, real=size, kind="honest", **kw)

    @property
    def is_fake(self) -> bool:
        return self.real < self.announced

    @property
    def flash_bytes(self) -> int:
        """Size of the flash file: the real size, or the largest capacity it ever shows."""
        return max((self.real, *self.moving))

    def to_json(self) -> str:
        return json.dumps(
            {
                "announced": self.announced,
                "real": self.real,
                "kind": self.kind,
                "cache_bytes": self.cache_bytes,
                "bad_ranges": [list(r) for r in self.bad_ranges],
                "delay": self.delay,
                "tail_cache_bytes": self.tail_cache_bytes,
                "stale": self.stale,
                "moving": list(self.moving),
                "slow_zone": list(self.slow_zone) if self.slow_zone else None,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FakeSpec:
        d = json.loads(text)
        slow = d.get("slow_zone")
        return cls(
            announced=d["announced"],
            real=d["real"],
            kind=d.get("kind", "honest"),
            cache_bytes=d.get("cache_bytes", 0),
            bad_ranges=tuple(tuple(r) for r in d.get("bad_ranges", ())),
            delay=float(d.get("delay", 0.0)),
            tail_cache_bytes=d.get("tail_cache_bytes", 0),
            stale=d.get("stale", ""),
            moving=tuple(d.get("moving", ())),
            slow_zone=(int(slow[0]), int(slow[1]), float(slow[2])) if slow else None,
        )


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
        self.flushes = 0
        self._fd = flash_fd
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._tail: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._blank = b"\xff" if spec.kind == "drop-ff" else b"\0"
        #: ``donor``: a copy of the real flash taken at the first write past it;
        #: ``previous``: what each page past the flash held before its last write
        self._stale_fd: int | None = None
        self._last_fd: int | None = None  # ``previous``: the last write to each page
        self._written: set[int] = set()
        self._has_previous: set[int] = set()
        #: plain kinds need no lock (the FUSE server's threads may read at once)
        self._stateful = bool(
            spec.cache_bytes or spec.tail_cache_bytes or spec.stale or spec.moving
        )

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

    def flush(self) -> None:
        """A cache flush request: the write-back caches ignore it (a cheap controller); a
        drive with ``moving`` capacities shows its next one."""
        with self._lock:
            self.flushes += 1

    @property
    def capacity(self) -> int:
        """Where the real flash ends now (``moving`` drives change it at each flush)."""
        if not self.spec.moving:
            return self.spec.real
        return self.spec.moving[self.flushes % len(self.spec.moving)]

    def close(self) -> None:
        for fd in (self._stale_fd, self._last_fd):
            if fd is not None:
                os.close(fd)
        self._stale_fd = self._last_fd = None

    def _locked(self) -> contextlib.AbstractContextManager[object]:
        return self._lock if self._stateful else contextlib.nullcontext()

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
        with self._locked():
            if not self.spec.cache_bytes:
                return self._media_read(offset, size)
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
        self._slow(offset, len(data))
        with self._locked():
            if not self.spec.cache_bytes:
                self._media_write(offset, data)
            else:
                self._cached_write(offset, data)
        return len(data)

    def _slow(self, offset: int, n: int) -> None:
        if self.spec.slow_zone is None:
            return
        o, ln, per_mib = self.spec.slow_zone
        overlap = min(offset + n, o + ln) - max(offset, o)
        if overlap > 0:
            time.sleep(per_mib * overlap / MiB)

    # The flash and what lies past it --------------------------------------

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int | None]]:
        """Split a request into (offset, length, physical offset or None for "past the
        real flash")."""
        real = self.capacity
        while length > 0:
            if offset < real:
                n = min(length, real - offset)
                yield offset, n, offset
            elif self.spec.kind == "wraparound":
                phys = offset % real
                n = min(length, real - phys)
                yield offset, n, phys
            else:
                n = length
                yield offset, n, None
            offset += n
            length -= n

    def _bad_overlap(self, phys: int, n: int) -> bool:
        return any(o < phys + n and phys < o + ln for o, ln in self.spec.bad_ranges)

    def _media_read(self, offset: int, size: int) -> bytes:
        parts = []
        for off, n, phys in self._pieces(offset, size):
            if phys is None:
                parts.append(self._past_read(off, n))
                continue
            if self._bad_overlap(phys, n):
                raise _eio()
            parts.append(self._flash_read(phys, n))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _flash_read(self, phys: int, n: int) -> bytes:
        data = os.pread(self._fd, n, phys)
        return data if len(data) == n else data.ljust(n, b"\0")

    def _media_write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        for off, n, phys in self._pieces(offset, len(data)):
            chunk = view[pos : pos + n]
            pos += n
            if phys is None:
                self._past_write(off, chunk)
                continue
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

    # Past the real flash: lost, cached at the tail, or stale -----------------

    def _plain_past(self) -> bool:
        return not (self.spec.tail_cache_bytes or self.spec.stale)

    def _past_read(self, offset: int, n: int) -> bytes:
        if self._plain_past():
            if self.spec.kind == "ioerror":
                raise _eio()
            return self._blank * n
        first, last = offset // CACHE_PAGE, (offset + n - 1) // CACHE_PAGE
        joined = b"".join(self._past_page(p) for p in range(first, last + 1))
        skip = offset - first * CACHE_PAGE
        return joined[skip : skip + n]

    def _past_page(self, page: int) -> bytes:
        kept = self._tail.get(page)
        if kept is not None:
            return kept
        if self.spec.kind == "ioerror":
            raise _eio()
        stale = self.spec.stale
        real_pages = self.spec.real // CACHE_PAGE
        if stale == "donor":
            if self._stale_fd is None:
                return self._blank * CACHE_PAGE
            return os.pread(self._stale_fd, CACHE_PAGE, (page % real_pages) * CACHE_PAGE)
        if stale == "other-block":
            return self._flash_read((page * _SCRAMBLE % real_pages) * CACHE_PAGE, CACHE_PAGE)
        if stale == "previous" and page in self._has_previous:
            assert self._stale_fd is not None
            return os.pread(self._stale_fd, CACHE_PAGE, page * CACHE_PAGE)
        return self._blank * CACHE_PAGE

    def _past_write(self, offset: int, data: memoryview) -> None:
        if self._plain_past():
            if self.spec.kind == "ioerror":
                raise _eio()
            return  # dropped on the floor
        if self.spec.stale == "donor" and self._stale_fd is None:
            self._snapshot()
        end = offset + len(data)
        for page in range(offset // CACHE_PAGE, (end - 1) // CACHE_PAGE + 1):
            p0 = page * CACHE_PAGE
            lo, hi = max(offset, p0), min(end, p0 + CACHE_PAGE)
            if hi - lo == CACHE_PAGE:
                content = bytes(data[lo - offset : hi - offset])
            else:
                try:
                    old = self._past_page(page)
                except OSError:
                    old = self._blank * CACHE_PAGE
                buf = bytearray(old)
                buf[lo - p0 : hi - p0] = data[lo - offset : hi - offset]
                content = bytes(buf)
            self._keep_past(page, content)

    def _keep_past(self, page: int, content: bytes) -> None:
        if self.spec.stale == "previous":
            self._remember_previous(page, content)
        if self.spec.tail_cache_bytes:
            self._tail[page] = content
            self._tail.move_to_end(page)
            while len(self._tail) * CACHE_PAGE > self.spec.tail_cache_bytes:
                self._tail.popitem(last=False)  # what the controller cannot store is lost

    def _remember_previous(self, page: int, content: bytes) -> None:
        """Keep the page's last write (``_last_fd``) and, readable, the one before it."""
        if self._stale_fd is None or self._last_fd is None:
            self._stale_fd = os.memfd_create("fdffd-fake-previous")
            self._last_fd = os.memfd_create("fdffd-fake-last")
        if page in self._written:
            before = os.pread(self._last_fd, CACHE_PAGE, page * CACHE_PAGE)
            os.pwrite(self._stale_fd, before, page * CACHE_PAGE)
            self._has_previous.add(page)
        os.pwrite(self._last_fd, content, page * CACHE_PAGE)
        self._written.add(page)

    def _snapshot(self) -> None:
        """Copy the real flash as it is now (its data extents only) into a memfd."""
        fd = os.memfd_create("fdffd-fake-donor")
        os.ftruncate(fd, self.spec.real)
        pos = 0
        while pos < self.spec.real:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError:
                break  # no data past pos
            if start >= self.spec.real:
                break
            stop = min(os.lseek(self._fd, start, os.SEEK_HOLE), self.spec.real)
            while start < stop:
                n = min(stop - start, 8 * MiB)
                os.pwrite(fd, os.pread(self._fd, n, start), start)
                start += n
            pos = stop
        self._stale_fd = fd

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

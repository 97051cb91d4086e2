"""What two finished drives have in common that an ordinary drive would not explain.

Pure over readers (``read(offset, length) -> bytes`` and ``size``): the caller opens
images or devices through ``source.py``.  ``compare`` walks both drives, finds every
run of at least ``min_run`` equal bytes that is not just zeros or ``FF`` (what any
freshly formatted drive has), and removes from each run what is *explained*:

* by a **reference** drive (made by a real formatter with the footprint's parameters
  and filled with the same payload by another program): the same bytes at the same
  offset (the footprint's structures), a whole 512-byte sector found anywhere in the
  reference (payload data, tables), or the run's bytes found anywhere in a reference
  of at most ``SEARCH_LIMIT`` bytes (directory entries, FAT chains at other places);
* by **known** byte strings the caller declares (the footprint's constants that no
  formatter on this machine writes, such as newfs_msdos' boot program, or payload
  names as the footprint's copy encodes them).

What is left is a fingerprint: bytes every drive of this program shares and ordinary
drives do not.  With no reference at all, every common run is reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SECTOR = 512
CHUNK = 1 << 20
#: Equal runs shorter than this are coincidence (small integers, padding), not reported.
MIN_RUN = 8
#: References up to this size are searched for a run's bytes anywhere in them.
SEARCH_LIMIT = 2 << 30
_ORDINARY = re.compile(rb"\x00{4,}|\xff{4,}")


class Reader(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class Finding:
    """``length`` bytes at ``offset`` equal on both drives and explained by nothing."""

    offset: int
    length: int
    data: bytes  # the first bytes of the run (at most 64)

    def describe(self) -> str:
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in self.data[:32])
        return (
            f"{self.offset:#014x} ({self.offset}) {self.length:>8} bytes  "
            f"{self.data[:16].hex(' ')}  |{text}|"
        )


@dataclass
class Report:
    compared_bytes: int
    common_bytes: int = 0
    explained_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def unexplained_bytes(self) -> int:
        return sum(f.length for f in self.findings)


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, end) of every run of True in ``mask``."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    for start, end in zip(edges[0::2], edges[1::2], strict=True):
        yield int(start), int(end)


def common_runs(a: Reader, b: Reader, min_run: int = MIN_RUN) -> Iterator[tuple[int, int]]:
    """Runs of equal bytes, at least ``min_run`` long and not only 00/FF, merged across
    chunk boundaries."""
    size = min(a.size, b.size)
    pending: tuple[int, int] | None = None
    for base in range(0, size, CHUNK):
        x = np.frombuffer(a.read(base, CHUNK), dtype=np.uint8)
        y = np.frombuffer(b.read(base, CHUNK), dtype=np.uint8)
        n = min(len(x), len(y))
        eq = x[:n] == y[:n]
        for s, e in _runs(eq):
            s, e = base + s, base + e
            if pending is not None and pending[1] == s:
                pending = (pending[0], e)
                continue
            if pending is not None:
                yield from _keep(a, pending, min_run)
            pending = (s, e)
    if pending is not None:
        yield from _keep(a, pending, min_run)


def _keep(a: Reader, run: tuple[int, int], min_run: int) -> Iterator[tuple[int, int]]:
    s, e = run
    if e - s < min_run:
        return
    for off in range(s, e, CHUNK):
        piece = np.frombuffer(a.read(off, min(CHUNK, e - off)), dtype=np.uint8)
        if ((piece != 0) & (piece != 0xFF)).any():
            yield run
            return


class Explainer:
    """What the references and the known strings account for."""

    def __init__(self, references: Sequence[Reader], known: Sequence[bytes]) -> None:
        self.references = list(references)
        self.known = [k for k in known if k]
        self.sectors: set[bytes] = set()
        for ref in self.references:
            for base in range(0, ref.size, CHUNK):
                data = ref.read(base, CHUNK)
                for i in range(0, len(data) - SECTOR + 1, SECTOR):
                    sec = data[i : i + SECTOR]
                    if sec.strip(b"\x00") and sec.strip(b"\xff"):
                        self.sectors.add(hashlib.blake2b(sec, digest_size=12).digest())
        self._contents = [
            ref.read(0, ref.size) for ref in self.references if ref.size <= SEARCH_LIMIT
        ]

    def explain(self, offset: int, data: bytes) -> np.ndarray:
        """A mask over ``data`` (found at ``offset``): True where something explains it."""
        mask = np.zeros(len(data), dtype=bool)
        mine = np.frombuffer(data, dtype=np.uint8)
        for ref in self.references:
            theirs = np.frombuffer(ref.read(offset, len(data)), dtype=np.uint8)
            n = len(theirs)
            mask[:n] |= mine[:n] == theirs
        first = -offset % SECTOR
        for i in range(first, len(data) - SECTOR + 1, SECTOR):
            digest = hashlib.blake2b(data[i : i + SECTOR], digest_size=12).digest()
            if digest in self.sectors:
                mask[i : i + SECTOR] = True
        for m in _ORDINARY.finditer(data):
            mask[m.start() : m.end()] = True
        for s, e in list(_runs(~mask)):
            piece = data[s:e]
            if len(piece) > 4096:
                continue
            if any(piece in k for k in self.known) or any(piece in c for c in self._contents):
                mask[s:e] = True
        return mask


def compare(
    a: Reader,
    b: Reader,
    references: Sequence[Reader] = (),
    known: Sequence[bytes] = (),
    *,
    min_run: int = MIN_RUN,
) -> Report:
    """Every run common to ``a`` and ``b`` that ``references`` and ``known`` leave
    unexplained, as findings at least ``min_run`` bytes long."""
    explainer = Explainer(references, known)
    report = Report(compared_bytes=min(a.size, b.size))
    for s, e in common_runs(a, b, min_run):
        report.common_bytes += e - s
        for off in range(s, e, CHUNK):
            data = a.read(off, min(CHUNK, e - off))
            mask = explainer.explain(off, data)
            report.explained_bytes += int(mask.sum())
            for us, ue in _runs(~mask):
                if ue - us >= min_run:
                    report.findings.append(Finding(off + us, ue - us, data[us : us + 64]))
    return report

"""Checkpoints that leave the station: the log's head, its line count and the station key's
fingerprint, noted (or photographed as a QR code) by a supervisor, so that a log later cut
short, rolled back, emptied, deleted or re-signed with another key fails ``audit verify``
(docs/auditor.md).

The text form is one line::

    fdffd-checkpoint v1 lines=42 head=<64 hex> key=<64 hex> at=2026-12-03T17:00:00.000Z
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import AuditError, UsageError
from .log import GENESIS, VerifyResult, line_hash

PREFIX = "fdffd-checkpoint v1"
_PATTERN = re.compile(
    r"fdffd-checkpoint v1 lines=(?P<lines>\d+) head=(?P<head>[0-9a-f]{64}) "
    r"key=(?P<key>[0-9a-f]{64})(?: at=(?P<at>\S+))?"
)


@dataclass(frozen=True)
class Checkpoint:
    """What a verified log looked like at one moment."""

    lines: int
    head: str
    key: str | None = None
    at: str | None = None

    def to_text(self) -> str:
        text = f"{PREFIX} lines={self.lines} head={self.head} key={self.key or '0' * 64}"
        return text + (f" at={self.at}" if self.at else "")

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The checkpoint in ``text`` (a line of it anywhere: a file, a decoded QR code)."""
        m = _PATTERN.search(text)
        if m is None:
            raise UsageError(f"no checkpoint found: expected a line starting {PREFIX!r}")
        return cls(int(m["lines"]), m["head"], m["key"], m["at"])

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        try:
            return cls.parse(path.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read checkpoint: {exc.strerror}") from exc


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield line.rstrip(b"\n")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot read: {exc.strerror}") from exc


def check_prefix(path: Path, result: VerifyResult, expect: Checkpoint) -> str | None:
    """Why the log at ``path`` (verified as ``result``) is no longer an extension of the log
    the checkpoint saw; None when it still is."""
    if result.lines_checked < expect.lines:
        return (
            f"the log has {result.lines_checked} verified lines, the checkpoint saw "
            f"{expect.lines}: lines were cut off, or the log was rolled back, emptied or deleted"
        )
    head = GENESIS
    for number, line in enumerate(_lines(path), start=1):
        if number == expect.lines:
            head = line_hash(line)
            break
    if head != expect.head:
        return (
            f"line {expect.lines} is not the one the checkpoint saw (head {head[:16]}..., "
            f"expected {expect.head[:16]}...): the log was rewritten or rolled back"
        )
    return None


def check_key(fingerprint: str, expect: str) -> str | None:
    """Why the log's signing key is not the pinned one; None when it is."""
    if fingerprint.lower() != expect.strip().lower():
        return (
            f"the log is signed by key {fingerprint}, not the pinned {expect.strip()}: "
            "re-signed with another key, or the wrong station.pub"
        )
    return None

"""The one durable write: replace atomically, or create exclusively (keys)."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fdffd.fsutil import atomic_write, create_exclusive
from fdffd.statedir import StateDir


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """The new content replaces the old, with the mode asked for, and no temp file stays."""
    path = tmp_path / "insertions.json"
    atomic_write(path, b"old", mode=0o644)
    atomic_write(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["insertions.json"]


def test_create_exclusive_never_replaces(tmp_path: Path) -> None:
    """The first call creates the file; a second one changes nothing and says so."""
    path = StateDir(tmp_path).serial_secret
    assert create_exclusive(path, b"first", mode=0o600) is True
    assert create_exclusive(path, b"second", mode=0o644) is False
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["serial.secret"]


def _create(args: tuple[Path, bytes]) -> bool:
    return create_exclusive(args[0], args[1])


def test_racing_creators_agree_on_one_winner(tmp_path: Path) -> None:
    """Processes creating the same key at once: exactly one wins, and its bytes are the file."""
    path = tmp_path / "station.key"
    contents = [bytes([i]) * 4096 for i in range(8)]
    with ProcessPoolExecutor(4) as pool:
        won = list(pool.map(_create, [(path, c) for c in contents]))
    assert won.count(True) == 1
    assert path.read_bytes() == contents[won.index(True)]
    assert os.listdir(tmp_path) == ["station.key"]

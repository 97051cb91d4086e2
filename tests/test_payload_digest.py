"""Payload digests: imports record SHA-256 and BLAKE3; the verify pass hashes with BLAKE3,
and a manifest from before BLAKE3 still loads and verifies by SHA-256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3
import pytest

from fdffd.job.image import PayloadCheck
from fdffd.payload import add_profile
from fdffd.payload.manifest import FileRecord, Manifest, parse_manifest


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "영화").mkdir(parents=True)
    (src / "영화" / "1화.mp4").write_bytes(os.urandom(3 << 20))
    (src / "책.txt").write_text("북한 " * 1000)
    (src / "빈 파일").write_bytes(b"")
    with open(src / "sparse.bin", "wb") as f:  # a hole, then data: hashed as its bytes
        f.truncate(5 << 20)
        f.seek(4 << 20)
        f.write(b"x" * 4096)
    return src


def test_import_records_sha256_and_blake3_of_every_file(tree: Path, tmp_path: Path) -> None:
    """Each file's manifest entry carries both digests of exactly its bytes."""
    m = add_profile(tmp_path / "payloads", "default", tree)
    assert len(m.files) == 4
    for f in m.files:
        data = (tree / f.path).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        assert f.blake3 == blake3.blake3(data).hexdigest()


def test_the_read_back_is_checked_with_blake3_when_the_manifest_has_it(
    tree: Path, tmp_path: Path
) -> None:
    """Bytes fed in pieces match; one flipped byte is named as a mismatch."""
    m = add_profile(tmp_path / "payloads", "default", tree)
    check = PayloadCheck(m.files)
    assert check.algorithm == "blake3"
    for f in m.files:
        data = bytearray((tree / f.path).read_bytes())
        if f.path == "책.txt":
            data[100] ^= 1
        for i in range(0, len(data), 1 << 20):
            check.update(f.path, memoryview(data)[i : i + (1 << 20)])
    assert check.mismatches() == ["책.txt"]


def test_a_manifest_without_blake3_loads_and_verifies_by_sha256() -> None:
    """A manifest imported before BLAKE3 keeps its canonical bytes (no blake3 key, so its
    version id is unchanged) and its payload is checked by SHA-256."""
    data = b"payload bytes"
    old = Manifest(
        profile="default",
        created_at="2026-01-01T00:00:00Z",
        files=(FileRecord(path="a.txt", size=len(data), sha256=hashlib.sha256(data).hexdigest()),),
    )
    raw = old.canonical_bytes()
    assert b"blake3" not in raw
    again = parse_manifest(raw, profile="default", where="test")
    assert again.canonical_bytes() == raw and again.manifest_sha256 == old.manifest_sha256
    check = PayloadCheck(again.files)
    assert check.algorithm == "sha256"
    check.update("a.txt", memoryview(data))
    assert check.mismatches() == []
    wrong = PayloadCheck(again.files)
    wrong.update("a.txt", memoryview(b"other bytes!!"))
    assert wrong.mismatches() == ["a.txt"]


def test_a_mixed_manifest_falls_back_to_sha256() -> None:
    """When any file lacks a BLAKE3, every file is checked by SHA-256 (one algorithm a job)."""
    a, b = b"first", b"second"
    files = (
        FileRecord(
            path="a",
            size=len(a),
            sha256=hashlib.sha256(a).hexdigest(),
            blake3=blake3.blake3(a).hexdigest(),
        ),
        FileRecord(path="b", size=len(b), sha256=hashlib.sha256(b).hexdigest()),
    )
    check = PayloadCheck(files)
    assert check.algorithm == "sha256"
    check.update("a", memoryview(a))
    check.update("b", memoryview(b))
    assert check.mismatches() == []

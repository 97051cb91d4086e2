"""The job record, the station keys and the tamper-evident audit log (docs/record.md)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdffd.audit.keys import StationKeys, load_public_key
from fdffd.audit.log import (
    GENESIS,
    AuditLog,
    VerifyResult,
    canonical_bytes,
    iter_log,
    iter_records,
    line_hash,
    quarantine_torn_tail,
    signing_message,
    verify,
)
from fdffd.audit.record import (
    RECORD_KEYS,
    Capacity,
    DeviceInfo,
    ErrorInfo,
    FilesystemInfo,
    JobRecord,
    KeyRotationRecord,
    PayloadInfo,
    ProfileTried,
    Sanitization,
    SpeedProfile,
    Stage,
    Wipe,
    size_class,
    utc_now_iso,
)
from fdffd.audit.report import build_report, render_text
from fdffd.errors import AuditError, AuditVerifyError, UsageError

# --- helpers --------------------------------------------------------------------------


def make_record(i: int = 0, *, serial_hmac: str | None = None, **overrides: Any) -> JobRecord:
    """A full, realistic record; ``i`` varies the content."""
    fields: dict[str, Any] = {
        "job_id": f"job-{i:05d}",
        "station": "station-1",
        "version": "0.1.0",
        "started_at": f"2026-03-{1 + i % 3:02d}T10:00:00.000Z",
        "finished_at": f"2026-03-{1 + i % 3:02d}T10:20:00.000Z",
        "verdict": "ok",
        "wiped": True,
        "device": DeviceInfo(
            path="/dev/sdb",
            port="pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0",
            bus="usb",
            vendor="SanDisk",
            model="Cruzer Blade",
            serial_hmac=serial_hmac,
            announced_bytes=16_000_000_000,
            logical_sector=512,
        ),
        "capacity": Capacity(
            announced_bytes=16_000_000_000, usable_bytes=16_000_000_000, probe_seconds=2.5
        ),
        "wipe": Wipe(
            pattern="aes-ctr",
            passes=1,
            bytes_written=16_000_000_000 + i,
            verified_bytes=16_000_000_000,
            bad_ranges=[(4096 * i, 512)] if i % 2 else [],
        ),
        "filesystem": FilesystemInfo(
            type="fat32",
            label="자유",
            volume_id="1A2B-3C4D",
            partition_offset=1048576,
            partition_bytes=15_998_951_424,
        ),
        "sanitization": Sanitization(tool_version="0.1.0"),
        "payload": PayloadInfo(
            profile="default",
            audience="youth",
            manifest_sha256="ab" * 32,
            files=12,
            bytes=7_000_000_000,
            verified=True,
            choice=[
                ProfileTried(profile="youth-32g", fits=False, reason="needs a 32G drive"),
                ProfileTried(profile="default", fits=True),
            ],
        ),
        "speed": SpeedProfile(
            regions=2, write_bytes_per_second=[2e7, 1.9e7], read_bytes_per_second=[4e7, 4e7]
        ),
        "stages": [
            Stage(name="probe", seconds=2.5, bytes=1 << 20),
            Stage(name="image", seconds=400.0, bytes=16_000_000_000),
            Stage(name="verify", seconds=300.25, bytes=16_000_000_000),
        ],
        "error": None,
    }
    fields.update(overrides)
    return JobRecord(**fields)


def write_log(path: Path, keys: StationKeys, n: int) -> list[dict[str, Any]]:
    log = AuditLog(path, keys)
    return [log.append(make_record(i)) for i in range(n)]


def failed_line(path: Path, data: bytes, keys: StationKeys) -> int | None:
    """Write ``data`` as the log and return the line ``verify`` names, or None if it passes."""
    path.write_bytes(data)
    result = verify(path, keys.public_key)
    return None if result.failure is None else result.failure.line


@pytest.fixture
def keys(tmp_path: Path) -> StationKeys:
    return StationKeys.init(tmp_path / "state")


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, StationKeys, Path]:
    """A five-line log, its keys and a scratch dir, built once for the tampering tests."""
    root = tmp_path_factory.mktemp("base")
    k = StationKeys.init(root / "state")
    write_log(root / "audit.jsonl", k, 5)
    return (root / "audit.jsonl").read_bytes(), k, root


# --- schema and round trip ------------------------------------------------------------

#: the keys of a schema-2 job record, in order (docs/record.md)
SCHEMA2_KEYS = {
    "": [
        "schema",
        "type",
        "job_id",
        "station",
        "version",
        "day",
        "started_at",
        "finished_at",
        "verdict",
        "wiped",
        "device",
        "capacity",
        "wipe",
        "sanitization",
        "filesystem",
        "payload",
        "speed",
        "stages",
        "error",
        "sealed",
        "prev",
        "sig",
    ],
    "device": [
        "path",
        "port",
        "port_label",
        "media",
        "bus",
        "vendor",
        "model",
        "serial_hmac",
        "announced_bytes",
        "logical_sector",
    ],
    "capacity": [
        "announced_bytes",
        "announced_class",
        "usable_bytes",
        "usable_class",
        "counterfeit",
        "kind",
        "probe_seconds",
    ],
    "wipe": [
        "pattern",
        "passes",
        "free_space",
        "bytes_written",
        "verified_bytes",
        "mismatched_bytes",
        "bad_ranges",
    ],
    "sanitization": [
        "standard",
        "method",
        "technique",
        "verification",
        "tool",
        "tool_version",
    ],
    "filesystem": [
        "type",
        "footprint",
        "label",
        "volume_id",
        "partition_offset",
        "partition_bytes",
    ],
    "payload": [
        "profile",
        "audience",
        "manifest_sha256",
        "files",
        "bytes",
        "verified",
        "choice",
    ],
    "speed": ["regions", "write_bytes_per_second", "read_bytes_per_second", "cliff"],
}


def test_round_trip_verifies(tmp_path: Path, keys: StationKeys) -> None:
    """Several appended records verify, chain from the genesis value and read back equal."""
    path = tmp_path / "audit.jsonl"
    written = write_log(path, keys, 6)
    result = verify(path, keys.public_key)
    assert result.ok and result.lines_checked == 6, result.summary()
    lines = path.read_bytes().splitlines()
    assert written[0]["prev"] == GENESIS
    assert all(written[i + 1]["prev"] == line_hash(lines[i]) for i in range(5))
    assert result.head == line_hash(lines[-1])
    assert [r.to_json_dict() for r in iter_records(path)] == written
    assert verify(path, tmp_path / "state" / "station.pub").ok


def test_line_schema_is_schema_2_in_order(tmp_path: Path, keys: StationKeys) -> None:
    """A line's keys, top level and nested, are exactly schema 2's, in docs/record.md's order."""
    path = tmp_path / "audit.jsonl"
    write_log(path, keys, 1)
    line = path.read_bytes().splitlines()[0]
    obj = json.loads(line)
    assert list(obj) == SCHEMA2_KEYS[""] == list(RECORD_KEYS)
    for section in SCHEMA2_KEYS:
        if section:
            assert list(obj[section]) == SCHEMA2_KEYS[section], section
    assert list(obj["stages"][0]) == ["name", "seconds", "bytes"]
    assert obj["schema"] == 2 and obj["type"] == "job" and obj["error"] is None
    assert obj["day"] == obj["started_at"][:10]
    assert obj["wipe"]["bad_ranges"] == []
    assert len(obj["sig"]) == 128 and len(obj["prev"]) == 64
    assert line == canonical_bytes(obj)
    # an outside auditor needs no re-serialisation: the signed bytes are the line minus sig
    assert signing_message(obj) == line[: line.rindex(b',"sig":')] + b"}"
    assert json.loads(make_record(0).model_dump_json())["schema"] == 2
    assert "자유".encode() in line  # ensure_ascii=False: UTF-8, not \\u escapes
    err = ErrorInfo(code="refused", message="mounted", stage="admit", rule="mounted").model_dump()
    assert list(err) == ["code", "message", "stage", "rule"]


def test_append_accepts_dict_and_sets_prev_and_sig(tmp_path: Path, keys: StationKeys) -> None:
    """A plain dict is validated like a model; the result carries prev and sig, sig last."""
    log = AuditLog(tmp_path / "audit.jsonl", keys)
    out = log.append(make_record(1).to_json_dict())
    assert list(out)[-2:] == ["prev", "sig"]
    assert verify(log.path, keys.public_key).ok


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"verdict": "great"}, "verdict"),
        ({"started_at": "2026-03-01T10:00:00+02:00"}, "started_at"),
        ({"prev": GENESIS}, "already carries prev/sig"),
        ({"surprise": 1}, "surprise"),
        ({"device": {"path": "/dev/sdb", "serial": "RAW123"}}, "serial"),
        ({"capacity": {"announced_bytes": 10, "usable_bytes": 11}}, "usable_bytes"),
        ({"capacity": {"probe_seconds": float("nan")}}, "probe_seconds"),
    ],
)
def test_append_refuses_invalid_record(
    tmp_path: Path, keys: StationKeys, change: dict[str, Any], needle: str
) -> None:
    """An invalid record raises AuditError naming the field, and the log is left untouched."""
    log = AuditLog(tmp_path / "audit.jsonl", keys)
    log.append(make_record(0))
    before = log.path.read_bytes()
    bad = make_record(1).to_json_dict() | change
    bad.pop("sig", None)
    if "prev" not in change:
        bad.pop("prev", None)
    with pytest.raises(AuditError, match=needle):
        log.append(bad)
    assert log.path.read_bytes() == before


@settings(max_examples=30, deadline=None)
@given(untrusted=st.text(max_size=40), number=st.integers(0, 2**63), secs=st.floats(0, 1e9))
def test_any_untrusted_text_round_trips(untrusted: str, number: int, secs: float) -> None:
    """Arbitrary vendor, model, label and error text (control chars, surrogates) verify."""
    with tempfile.TemporaryDirectory() as d:
        k = StationKeys.generate()
        log = AuditLog(Path(d) / "audit.jsonl", k)
        rec = make_record(
            3,
            device=DeviceInfo(
                path="/dev/sdc", vendor=untrusted, model=untrusted, announced_bytes=number
            ),
            error=ErrorInfo(code="failed", message=untrusted, stage=None),
            stages=[Stage(name="wipe", seconds=secs, bytes=number)],
        )
        log.append(rec)
        log.append(rec)
        result = verify(log.path, k.public_key)
        assert result.ok and result.lines_checked == 2, result.summary()
        assert b"\x1b" not in log.path.read_bytes()


def test_missing_and_empty_logs_verify_as_empty(tmp_path: Path, keys: StationKeys) -> None:
    """A missing or empty log verifies, and the summary says it is empty."""
    missing = verify(tmp_path / "none.jsonl", keys.public_key)
    assert missing.ok and missing.empty and missing.missing and "missing" in missing.summary()
    (tmp_path / "empty.jsonl").write_bytes(b"")
    empty = verify(tmp_path / "empty.jsonl", keys.public_key)
    assert empty.ok and empty.empty and not empty.missing and "empty" in empty.summary()
    assert list(iter_records(tmp_path / "none.jsonl")) == []


# --- tampering ------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_flipped_byte_is_caught_at_its_line(
    base_log: tuple[bytes, StationKeys, Path], data: st.DataObject
) -> None:
    """Changing any one byte anywhere fails verify at the line holding that byte."""
    original, k, root = base_log
    pos = data.draw(st.integers(0, len(original) - 1), label="pos")
    xor = data.draw(st.integers(1, 255), label="xor")
    tampered = bytearray(original)
    tampered[pos] ^= xor
    assert failed_line(root / "flip.jsonl", bytes(tampered), k) == original[:pos].count(b"\n") + 1


def test_one_byte_in_each_line_is_caught(base_log: tuple[bytes, StationKeys, Path]) -> None:
    """A digit changed in the middle of each line in turn is caught at that line."""
    original, k, root = base_log
    lines = original.splitlines(keepends=True)
    for n, line in enumerate(lines, start=1):
        i = line.index(b'"bytes_written":') + len(b'"bytes_written":') + 1
        changed = line[:i] + (b"9" if line[i : i + 1] != b"9" else b"8") + line[i + 1 :]
        data = b"".join(lines[: n - 1]) + changed + b"".join(lines[n:])
        assert failed_line(root / "digit.jsonl", data, k) == n
    path = root / "digit.jsonl"
    path.write_bytes(
        b"".join(lines[:1]) + lines[1].replace(b'"bytes_written":', b'"bytes_written":9')
    )
    assert "signature" in (verify(path, k.public_key).failure or pytest.fail()).reason


def _with_line(lines: list[bytes], n: int, new: bytes) -> bytes:
    return b"".join([*lines[: n - 1], new, *lines[n:]])


def test_whitespace_and_key_order_changes_are_caught(
    base_log: tuple[bytes, StationKeys, Path],
) -> None:
    """Extra spaces, a CR, an escaped character or reordered keys fail the canonical form."""
    original, k, root = base_log
    lines = original.splitlines(keepends=True)
    path = root / "ws.jsonl"
    assert failed_line(path, _with_line(lines, 2, lines[1].replace(b":", b": ", 1)), k) == 2
    assert failed_line(path, _with_line(lines, 3, lines[2][:-1] + b" \n"), k) == 3
    assert failed_line(path, _with_line(lines, 3, lines[2][:-1] + b"\r\n"), k) == 3
    assert failed_line(path, _with_line(lines, 4, b" " + lines[3]), k) == 4
    escaped = lines[0].replace("자".encode(), b"\\uc790")
    assert escaped != lines[0]
    assert failed_line(path, _with_line(lines, 1, escaped), k) == 1
    obj = json.loads(lines[4])
    reordered = {"job_id": obj.pop("job_id"), **obj}
    assert failed_line(path, _with_line(lines, 5, canonical_bytes(reordered) + b"\n"), k) == 5
    result = verify(path, k.public_key)
    assert result.failure is not None and "canonical" in result.failure.reason


def test_removed_inserted_and_reordered_lines_are_caught(
    base_log: tuple[bytes, StationKeys, Path],
) -> None:
    """Removing, duplicating or swapping lines fails at the first line out of place."""
    original, k, root = base_log
    lines = original.splitlines(keepends=True)
    path = root / "order.jsonl"
    assert failed_line(path, b"".join(lines[1:]), k) == 1  # first line removed
    assert failed_line(path, b"".join(lines[:2] + lines[3:]), k) == 3  # line 3 removed
    assert failed_line(path, b"".join(lines[:3] + lines[:1] + lines[3:]), k) == 4  # copy
    assert failed_line(path, b"".join(lines + lines[-1:]), k) == 6  # last line twice
    swapped = [lines[0], lines[3], lines[2], lines[1], lines[4]]
    assert failed_line(path, b"".join(swapped), k) == 2
    assert failed_line(path, b"".join([*lines[:2], b"\n", *lines[2:]]), k) == 3  # blank line
    result = verify(path, k.public_key)
    assert result.failure is not None and result.lines_checked == 2
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    reason = (verify(path, k.public_key).failure or pytest.fail()).reason
    assert "chain" in reason


def test_line_signed_by_another_key_is_caught(base_log: tuple[bytes, StationKeys, Path]) -> None:
    """A correctly chained line signed by another key fails at that line, middle or end."""
    original, k, root = base_log
    lines = original.splitlines(keepends=True)
    forger = StationKeys.generate()
    fake = root / "forged.jsonl"
    fake.write_bytes(b"".join(lines[:3]))
    AuditLog(fake, forger).append(make_record(99))
    forged_line = fake.read_bytes().splitlines(keepends=True)[3]
    path = root / "inserted.jsonl"
    assert failed_line(path, b"".join([*lines[:3], forged_line, *lines[3:]]), k) == 4
    reason = (verify(path, k.public_key).failure or pytest.fail()).reason
    assert "signature" in reason
    fake.write_bytes(original)
    AuditLog(fake, forger).append(make_record(98))
    assert failed_line(path, fake.read_bytes(), k) == 6
    # and the whole log is refused under another station's public key
    assert failed_line(path, original, forger) == 1


def test_truncated_last_line_is_caught(base_log: tuple[bytes, StationKeys, Path]) -> None:
    """A last line cut mid-way (or missing only its newline) fails as torn at that line."""
    original, k, root = base_log
    lines = original.splitlines(keepends=True)
    path = root / "torn.jsonl"
    for cut in (1, len(lines[-1]) // 2, len(lines[-1]) - 1):
        assert failed_line(path, b"".join(lines[:-1]) + lines[-1][:cut], k) == 5
        result = verify(path, k.public_key)
        assert result.failure is not None and "torn" in result.failure.reason
        assert result.lines_checked == 4
        with pytest.raises(AuditVerifyError, match="line 5: torn"):
            result.raise_for_failure()


# --- torn tail ------------------------------------------------------------------------


def test_torn_tail_refused_then_quarantined(tmp_path: Path, keys: StationKeys) -> None:
    """Append refuses a torn tail; quarantine_torn_tail moves it aside and the log is whole."""
    path = tmp_path / "audit.jsonl"
    write_log(path, keys, 3)
    good = path.read_bytes()
    torn = b'{"schema":1,"job_id":"job-9'
    with path.open("ab") as f:
        f.write(torn)
    log = AuditLog(path, keys)
    with pytest.raises(AuditError, match="torn"):
        log.append(make_record(4))
    assert path.read_bytes() == good + torn
    with pytest.raises(AuditVerifyError, match="line 4"):
        list(iter_records(path))

    side = quarantine_torn_tail(path)
    assert side is not None and side.read_bytes() == torn and side.parent == path.parent
    assert path.read_bytes() == good
    assert quarantine_torn_tail(path) is None  # nothing left to repair
    log.append(make_record(4))
    result = verify(path, keys.public_key)
    assert result.ok and result.lines_checked == 4


def test_quarantine_of_a_log_that_is_one_torn_line(tmp_path: Path, keys: StationKeys) -> None:
    """A log whose only content is torn is emptied, and appends start again from genesis."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"schema":1')
    assert quarantine_torn_tail(path) is not None
    assert path.read_bytes() == b""
    assert AuditLog(path, keys).append(make_record(0))["prev"] == GENESIS
    assert quarantine_torn_tail(tmp_path / "missing.jsonl") is None


# --- concurrency ----------------------------------------------------------------------

WRITERS = 6
PER_WRITER = 50


def _writer(state: str, path: str, writer: int, barrier: Any) -> None:
    k = StationKeys.init(Path(state))
    log = AuditLog(Path(path), k)
    barrier.wait()
    for i in range(PER_WRITER):
        log.append(make_record(i, job_id=f"w{writer}-{i}"))


def test_concurrent_appends_from_processes(tmp_path: Path, keys: StationKeys) -> None:
    """Six processes appending 50 records each: every record once, whole lines, one chain."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    path = tmp_path / "audit.jsonl"
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path / "state"), str(path), w, barrier))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    result = verify(path, keys.public_key)
    assert result.ok and result.lines_checked == WRITERS * PER_WRITER, result.summary()
    ids = [r.job_id for r in iter_records(path)]
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(WRITERS) for i in range(PER_WRITER))
    for w in range(WRITERS):  # each writer's own records stay in its order
        mine = [int(x.split("-")[1]) for x in ids if x.startswith(f"w{w}-")]
        assert mine == sorted(mine)


def test_concurrent_appends_from_threads(tmp_path: Path, keys: StationKeys) -> None:
    """Worker threads of one daemon sharing one AuditLog never interleave or fork the chain."""
    log = AuditLog(tmp_path / "audit.jsonl", keys)

    def work(t: int) -> None:
        for i in range(25):
            log.append(make_record(i, job_id=f"t{t}-{i}"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    result = verify(log.path, keys.public_key)
    assert result.ok and result.lines_checked == 200, result.summary()
    assert len({r.job_id for r in iter_records(log.path)}) == 200


# --- keys -----------------------------------------------------------------------------


def test_keys_created_only_by_init(tmp_path: Path) -> None:
    """``init`` creates station.key 0600 and station.pub 0644 and stores the audit public key
    (never replacing a different one); ``load`` never creates a key: a station without keys
    gets a UsageError naming ``fdffctl keys init``."""
    state = tmp_path / "state"
    with pytest.raises(UsageError, match="fdffctl keys init"):
        StationKeys.load(state)
    assert not state.exists()
    audit_pub = bytes(range(32))
    k1 = StationKeys.init(state, audit_pub)
    assert (state / "station.key").stat().st_mode & 0o777 == 0o600
    assert (state / "station.pub").stat().st_mode & 0o777 == 0o644
    assert b"PRIVATE KEY" in (state / "station.key").read_bytes()
    k2 = StationKeys.load(state)
    assert k1.fingerprint == k2.fingerprint and k2.audit_public_key == audit_pub
    assert load_public_key(state / "station.pub").public_bytes_raw() == (
        k1.public_key.public_bytes_raw()
    )
    assert sorted(p.name for p in state.iterdir()) == [
        "audit-seal.pub",
        "station.key",
        "station.pub",
    ]
    with pytest.raises(AuditError, match="different audit public key"):
        StationKeys.init(state, bytes(32))
    (state / "station.key").unlink()
    with pytest.raises(UsageError, match="fdffctl keys init"):
        StationKeys.load(state)
    assert not (state / "station.key").exists()


def _load_keys(state: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    k = StationKeys.init(Path(state))
    out.put(k.fingerprint)


def test_keys_created_at_once_by_many_processes_agree(tmp_path: Path) -> None:
    """Eight processes creating the keys at the same moment all end with the same keys."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        state = tmp_path / f"state{round_}"
        barrier, out = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_load_keys, args=(str(state), barrier, out)) for _ in range(8)]
        for p in procs:
            p.start()
        seen = {out.get(timeout=30) for _ in procs}
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert len(seen) == 1
        (fingerprint,) = seen
        assert StationKeys.load(state).fingerprint == fingerprint
        assert sorted(p.name for p in state.iterdir()) == ["station.key", "station.pub"]


@pytest.mark.parametrize("name", ["station.key"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_exposed_secret_file_is_refused(tmp_path: Path, name: str, mode: int) -> None:
    """A key or secret readable by group or others is refused with a clear AuditError."""
    state = tmp_path / "state"
    StationKeys.init(state)
    (state / name).chmod(mode)
    with pytest.raises(AuditError, match=rf"{name}: has mode {mode:04o}: group or others"):
        StationKeys.init(state)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_secret_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    """A key file owned by another user is refused."""
    state = tmp_path / "state"
    StationKeys.init(state)
    os.chown(state / "station.key", 4321, 4321)
    with pytest.raises(AuditError, match="owned by uid 4321, not root"):
        StationKeys.init(state)


def test_symlinked_or_mismatched_keys_are_refused(tmp_path: Path) -> None:
    """A symlinked key, or a station.pub that does not match station.key, is refused."""
    state = tmp_path / "state"
    StationKeys.init(state)
    other = tmp_path / "other"
    StationKeys.init(other)
    shutil.copy(other / "station.pub", state / "station.pub")
    with pytest.raises(AuditError, match="does not match"):
        StationKeys.init(state)
    (state / "station.key").unlink()
    (state / "station.key").symlink_to(other / "station.key")
    with pytest.raises(AuditError, match="symlink"):
        StationKeys.init(state)


# --- disk full ------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_ext4(size_mib: int = 8) -> Iterator[Path]:
    """A small ext4 on a loop device of our own, mounted in a temp dir; always torn down."""
    work = Path(tempfile.mkdtemp(prefix="fdffd-audit-", dir="/dev/shm"))
    image, mnt = work / "fs.img", work / "mnt"
    mnt.mkdir()
    loop: str | None = None
    mounted = False
    try:
        with image.open("wb") as f:
            f.truncate(size_mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
        loop = subprocess.run(
            ["losetup", "--find", "--show", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert loop.startswith("/dev/loop"), loop
        subprocess.run(["mount", "-t", "ext4", loop, str(mnt)], check=True)
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(work, ignore_errors=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\xa5" * 65536
        while True:
            try:
                if os.write(fd, block) < len(block):
                    block = block[:1024]
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) <= 512:
                    break
                block = block[: len(block) // 2]
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None,
    reason="needs root, losetup and mkfs.ext4",
)
def test_disk_full_leaves_no_partial_line(tmp_path: Path, keys: StationKeys) -> None:
    """Appending on a full disk raises a clear AuditError and the log stays whole."""
    big = make_record(  # ~6 KiB lines, so a write that runs out of space is often short
        1, stages=[Stage(name=f"stage-{j}", seconds=j, bytes=j) for j in range(120)]
    )
    with tiny_ext4() as mnt:
        state = mnt / "state"
        state.mkdir()
        log = AuditLog(state / "audit.jsonl", keys)
        filler = mnt / "filler"
        _fill(filler)
        appended = failures = 0
        for free in (3_000, 9_000, 20_000):
            os.truncate(filler, max(0, filler.stat().st_size - free))
            for _ in range(100):
                size = log.path.stat().st_size if log.path.exists() else 0
                try:
                    log.append(big)
                except AuditError as exc:
                    failures += 1
                    assert "disk under the state dir" in str(exc) and "is full" in str(exc)
                    assert "NOT written" in str(exc)
                    assert log.path.stat().st_size == size
                    break
                appended += 1
            else:
                pytest.fail("the disk never filled up")
            data = log.path.read_bytes()
            assert not data or data.endswith(b"\n")
            result = verify(log.path, keys.public_key)
            assert result.ok and result.lines_checked == appended, result.summary()
        assert failures == 3 and appended > 0
        filler.unlink()
        log.append(big)
        assert verify(log.path, keys.public_key).lines_checked == appended + 1


def test_short_write_and_failed_fsync_are_rolled_back(
    tmp_path: Path, keys: StationKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short write or an fsync error cuts the log back to its old length and raises."""
    log = AuditLog(tmp_path / "audit.jsonl", keys)
    write_log(log.path, keys, 2)
    before = log.path.read_bytes()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: real_write(fd, bytes(b)[:100]))
    with pytest.raises(AuditError, match=r"short write \(100 of \d+ bytes\).*full"):
        log.append(make_record(2))
    assert log.path.read_bytes() == before
    monkeypatch.setattr(os, "write", real_write)

    real_fsync, calls = os.fsync, []

    def broken_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(AuditError, match=r"write failed .Input/output error.*NOT written"):
        log.append(make_record(2))
    monkeypatch.undo()
    assert log.path.read_bytes() == before
    assert verify(log.path, keys.public_key).lines_checked == 2


# --- report ---------------------------------------------------------------------------


def test_report_counts_verdicts_rates_and_speeds(tmp_path: Path, keys: StationKeys) -> None:
    """The report counts verdicts, the counterfeit rate, bytes, speeds, days and profiles."""
    log = AuditLog(tmp_path / "audit.jsonl", keys)
    log.append(make_record(0))
    log.append(
        make_record(
            1,
            verdict="rescued",
            capacity=Capacity(
                announced_bytes=64, usable_bytes=8, counterfeit=True, kind="wraparound"
            ),
        )
    )
    log.append(
        make_record(
            2,
            verdict="counterfeit",
            payload=None,
            capacity=Capacity(
                announced_bytes=64, usable_bytes=8, counterfeit=True, kind="dropped-zeros"
            ),
        )
    )
    log.append(
        make_record(
            3,
            verdict="refused",
            payload=None,
            stages=[],
            error=ErrorInfo(code="refused", message="mounted", stage="admit"),
        )
    )
    report = build_report(iter_records(log.path))
    assert report["jobs"] == 4
    assert report["by_verdict"]["ok"] == 1 and report["by_verdict"]["refused"] == 1
    assert report["probed"] == 3 and report["counterfeit"] == 2
    assert report["counterfeit_rate"] == pytest.approx(2 / 3)
    assert report["bytes_written"] == sum(16_000_000_000 + i for i in range(4))
    assert report["speeds"]["image"]["mean_bytes_per_second"] == 40_000_000
    assert set(report["per_day"]) == {"2026-03-01", "2026-03-02", "2026-03-03"}
    assert report["per_profile"]["default"]["jobs"] == 2
    assert report["per_profile"]["-"]["jobs"] == 2
    json.dumps(report)
    text = render_text(report)
    assert "counterfeit: 2 of 3 probed (66.7%)" in text and "image" in text
    assert build_report([])["counterfeit_rate"] is None
    assert "jobs: 0" in render_text(build_report([]))


def test_utc_now_iso_is_a_valid_record_timestamp() -> None:
    """utc_now_iso gives an ISO-8601 UTC time ending in Z that the schema accepts."""
    now = utc_now_iso()
    assert now.endswith("Z") and "T" in now
    assert make_record(0, started_at=now, finished_at=now).started_at == now


def test_verify_result_raises_audit_verify_error(tmp_path: Path, keys: StationKeys) -> None:
    """raise_for_failure names the path and the line; an OK result does not raise."""
    path = tmp_path / "audit.jsonl"
    write_log(path, keys, 2)
    verify(path, keys.public_key).raise_for_failure()
    path.write_bytes(path.read_bytes().replace(b"job-00001", b"job-00002"))
    result: VerifyResult = verify(path, keys.public_key)
    with pytest.raises(AuditVerifyError) as info:
        result.raise_for_failure()
    assert info.value.fields["line"] == 2 and str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_keys_on_a_read_only_state_dir_load_or_fail_with_a_message(tmp_path: Path) -> None:
    """On a state dir that turned read-only, existing keys still load (nothing is written);
    missing ones are an AuditError naming the file, not a traceback."""
    mnt = tmp_path / "state"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        made = StationKeys.init(mnt)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        again = StationKeys.init(mnt)
        assert again.fingerprint == made.fingerprint
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        (mnt / "station.pub").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(AuditError, match=r"station\.pub.*cannot create"):
            StationKeys.init(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --- schema 2: other record types, size classes ----------------------------------------


def test_key_rotation_is_a_line_of_the_log_but_not_a_job(tmp_path: Path, keys: StationKeys) -> None:
    """A key-rotation record chains and verifies like any line (signed by the old key, it
    hands over to the new one); reports see only jobs."""
    new = StationKeys.generate()
    log = AuditLog(tmp_path / "audit.jsonl", keys)
    log.append(make_record(0))
    now = utc_now_iso()
    out = log.append(
        KeyRotationRecord(
            station="station-1",
            version="0.1.0",
            day=now[:10],
            at=now,
            old_key=hashlib.sha256(keys.public_key.public_bytes_raw()).hexdigest(),
            new_key=new.public_key.public_bytes_raw().hex(),
            new_key_fingerprint=hashlib.sha256(new.public_key.public_bytes_raw()).hexdigest(),
            reason="yearly rotation",
        )
    )
    assert list(out)[:3] == ["schema", "type", "station"] and out["type"] == "key-rotation"
    assert out["day"] == out["at"][:10]
    AuditLog(log.path, new).append(make_record(1))  # signed by the new key
    result = verify(log.path, keys.public_key)
    assert result.ok and result.lines_checked == 3, result.summary()
    assert [type(r).__name__ for r in iter_log(log.path)] == [
        "JobRecord",
        "KeyRotationRecord",
        "JobRecord",
    ]
    assert [r.job_id for r in iter_records(log.path)] == ["job-00000", "job-00001"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"schema": 3}, "unknown schema 3"),
        ({"type": "inventory"}, "unknown record type 'inventory'"),
        ({"day": "2026-03-09"}, "day 2026-03-09 is not the date of started_at"),
        ({"sealed": "not base64!"}, "sealed"),
        ({"wipe": {"free_space": "random"}}, "free_space"),
        ({"sanitization": {"method": "purge"}}, "method"),
    ],
)
def test_a_record_no_version_knows_is_refused_naming_why(
    tmp_path: Path, keys: StationKeys, change: dict[str, Any], needle: str
) -> None:
    """An unknown schema or type, or a schema-2 field out of its domain, is refused by
    append and named by verify at its line."""
    log = AuditLog(tmp_path / "audit.jsonl", keys)
    bad = make_record(0).to_json_dict() | change
    del bad["prev"], bad["sig"]
    with pytest.raises(AuditError, match=needle):
        log.append(bad)
    line = canonical_bytes(bad | {"prev": GENESIS, "sig": "00" * 64})
    (tmp_path / "bad.jsonl").write_bytes(line + b"\n")
    result = verify(tmp_path / "bad.jsonl", keys.public_key)
    assert result.failure is not None and result.failure.line == 1
    assert needle.split()[0] in result.failure.reason


@given(st.integers(1, 1 << 52), st.integers(1, 1 << 52))
def test_size_classes_are_coarse_and_ordered(a: int, b: int) -> None:
    """A size class is a power of two of megabytes within a factor 1.5 of the size, and a
    larger drive never gets a smaller class."""

    def mb(label: str) -> int:
        return int(label[:-1]) * {"M": 1, "G": 1 << 10, "T": 1 << 20}[label[-1]]

    for n in (a, b):
        got = mb(size_class(n))
        assert got & (got - 1) == 0
        if n >= 1_000_000:
            assert n / 1e6 / 1.5 <= got <= n / 1e6 * 1.5, (n, size_class(n))
    if a <= b:
        assert mb(size_class(a)) <= mb(size_class(b))
    assert size_class(16_000_000_000) == size_class(15_518_924_800) == "16G"
    assert size_class(64 << 20) == "64M" and size_class(10**12) == "1T"

"""The audit log stays trustworthy without the station: deleting, emptying, cutting, rolling
back or re-signing the log is caught by ``audit verify`` given the key's fingerprint or a
checkpoint; a station without keys refuses jobs and writes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from fdffd.audit import AuditLog, StationKeys, iter_records
from fdffd.config import load_config
from fdffd.job.pipeline import interrupted_record

from .cli_util import Run, fdffctl, write_config


def _station(tmp_path: Path, n: int = 3) -> tuple[Path, Path, StationKeys]:
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    keys = StationKeys.load(cfg.station.state_dir)
    _append(cfg_path, keys, 0, n)
    return cfg_path, cfg.audit_log, keys


def _append(cfg_path: Path, keys: StationKeys, first: int, n: int) -> None:
    cfg = load_config(cfg_path)
    log = AuditLog(cfg.audit_log, keys)
    for i in range(first, first + n):
        log.append(interrupted_record(cfg, {"job_id": f"{i:032x}", "device": f"/dev/sd{i}"}))


def _verify(cfg: Path, *extra: str) -> Run:
    return fdffctl("audit", "verify", "--config", str(cfg), *extra)


def _checkpoint(cfg: Path, tmp_path: Path) -> Path:
    run = fdffctl("audit", "checkpoint", "--config", str(cfg))
    assert run.code == 0, run.stderr
    text = run.stdout.splitlines()[0]
    assert text.startswith("fdffd-checkpoint v1 lines=")
    assert "\u2588" in run.stdout or "#" in run.stdout  # the QR code, drawn in text
    path = tmp_path / "checkpoint.txt"
    path.write_text(text + "\n")
    return path


def test_verify_prints_the_key_and_refuses_a_missing_or_empty_log(tmp_path: Path) -> None:
    cfg, log, keys = _station(tmp_path)
    ok = _verify(cfg)
    assert ok.code == 0 and keys.fingerprint in ok.stdout
    log.write_bytes(b"")
    assert _verify(cfg).code == 5
    assert _verify(cfg, "--allow-empty").code == 0
    log.unlink()
    missing = _verify(cfg)
    assert missing.code == 5 and "missing" in missing.stdout
    assert _verify(cfg, "--allow-empty").code == 0


def test_checkpoint_catches_cut_rolled_back_emptied_deleted(tmp_path: Path) -> None:
    cfg, log, keys = _station(tmp_path, 3)
    old = tmp_path / "old.jsonl"
    shutil.copy(log, old)  # two lines shorter than the checkpointed log, later
    _append(cfg, keys, 3, 2)
    cp = _checkpoint(cfg, tmp_path)
    assert _verify(cfg, "--checkpoint", str(cp)).code == 0
    _append(cfg, keys, 5, 1)  # the log grows on: the checkpoint is still a prefix
    assert _verify(cfg, "--checkpoint", str(cp)).code == 0
    whole = log.read_bytes()
    lines = whole.splitlines(keepends=True)
    head = json.loads(fdffctl("audit", "verify", "--config", str(cfg), "--json").stdout)["head"]
    # cut lines off the end
    log.write_bytes(b"".join(lines[:-2]))
    cut = _verify(cfg, "--checkpoint", str(cp))
    assert cut.code == 5 and "cut off" in cut.stdout
    assert _verify(cfg, "--expect-head", head, "--expect-lines", "6").code == 5
    # roll back to an older copy, then append new lines to reach the same length
    shutil.copy(old, log)
    assert _verify(cfg, "--checkpoint", str(cp)).code == 5
    _append(cfg, keys, 10, 4)
    rewritten = _verify(cfg, "--checkpoint", str(cp))
    assert rewritten.code == 5 and "rewritten or rolled back" in rewritten.stdout
    # emptied, deleted
    log.write_bytes(b"")
    assert _verify(cfg, "--checkpoint", str(cp), "--allow-empty").code == 5
    log.unlink()
    assert _verify(cfg, "--checkpoint", str(cp), "--allow-empty").code == 5
    log.write_bytes(whole)
    assert _verify(cfg, "--checkpoint", str(cp)).code == 0
    assert _verify(cfg, "--expect-head", head, "--expect-lines", "6").code == 0


def test_resigned_log_is_caught_by_fingerprint_or_checkpoint(tmp_path: Path) -> None:
    cfg, log, keys = _station(tmp_path, 3)
    cp = _checkpoint(cfg, tmp_path)
    state = log.parent
    # an attacker re-signs every record with a new key and replaces station.pub
    forged = tmp_path / "forged"
    new = StationKeys.init(forged)
    records = list(iter_records(log))
    log.unlink()
    flog = AuditLog(log, new)
    for rec in records:
        rec.prev = rec.sig = None
        flog.append(rec)
    shutil.copy(forged / "station.pub", state / "station.pub")
    assert _verify(cfg).code == 0  # unpinned, the forgery verifies: hence the pins
    pinned = _verify(cfg, "--fingerprint", keys.fingerprint)
    assert pinned.code == 5 and "not the pinned" in pinned.stdout
    assert _verify(cfg, "--checkpoint", str(cp)).code == 5


def test_station_without_keys_refuses_jobs_and_writes_nothing(tmp_path: Path) -> None:
    cfg, log, _ = _station(tmp_path, 0)
    state = log.parent
    (state / "station.key").unlink()
    (state / "station.pub").unlink()
    before = sorted(p.name for p in state.iterdir())
    run = fdffctl("process", "/dev/fdffd-no-such-drive", "--config", str(cfg))
    assert run.code == 2 and "fdffctl keys init" in run.stderr
    daemon = subprocess.run(
        [sys.executable, "-m", "fdffd.cli.daemon", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert daemon.returncode == 2 and "fdffctl keys init" in daemon.stderr
    assert sorted(p.name for p in state.iterdir()) == before
    assert not log.exists() and not (state / "station.key").exists()
    init = fdffctl("keys", "init", "--config", str(cfg))
    assert init.code == 0 and "station key fingerprint" in init.stdout
    assert (state / "station.key").exists()


def test_auditor_commands_on_a_copied_log_create_no_file(tmp_path: Path) -> None:
    _, log, keys = _station(tmp_path, 2)
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shutil.copy(log, auditor / "audit.jsonl")
    shutil.copy(log.parent / "station.pub", auditor / "station.pub")
    files = ["--log", str(auditor / "audit.jsonl"), "--pubkey", str(auditor / "station.pub")]
    assert fdffctl("audit", "verify", *files, "--fingerprint", keys.fingerprint).code == 0
    assert fdffctl("audit", "checkpoint", *files, "--no-qr").code == 0
    assert fdffctl("audit", "report", "--log", str(auditor / "audit.jsonl")).code == 0
    assert sorted(p.name for p in auditor.iterdir()) == ["audit.jsonl", "station.pub"]


def test_a_key_rotation_signed_by_the_old_key_hands_over_to_the_new(tmp_path: Path) -> None:
    """A key-rotation line signed by the old key names the new one: verify (given the old
    key) follows it; a rotation naming the wrong old key, or lines after it signed by another
    key, fail."""
    import hashlib

    from fdffd.audit import KeyRotationRecord, verify

    cfg, log, old = _station(tmp_path, 2)
    new = StationKeys.init(tmp_path / "new-state")
    pub = new.public_key.public_bytes_raw()

    def rotation(old_key: str) -> KeyRotationRecord:
        return KeyRotationRecord(
            station="test-station",
            version="0",
            day="2026-12-03",
            old_key=old_key,
            new_key=pub.hex(),
            new_key_fingerprint=hashlib.sha256(pub).hexdigest(),
            reason="scheduled",
        )

    whole = log.read_bytes()
    AuditLog(log, old).append(
        rotation(hashlib.sha256(old.public_key.public_bytes_raw()).hexdigest())
    )
    _append(cfg, new, 2, 2)
    result = verify(log, old.public_key)
    assert result.ok and result.lines_checked == 5, result.summary()
    # the lines after the rotation signed by the old key instead: caught
    log.write_bytes(whole)
    AuditLog(log, old).append(
        rotation(hashlib.sha256(old.public_key.public_bytes_raw()).hexdigest())
    )
    _append(cfg, old, 2, 1)
    bad = verify(log, old.public_key)
    assert not bad.ok and bad.failure is not None and bad.failure.line == 4
    # a rotation that names another old key: caught at the rotation line
    log.write_bytes(whole)
    AuditLog(log, old).append(rotation("ab" * 32))
    wrong = verify(log, old.public_key)
    assert not wrong.ok and wrong.failure is not None and wrong.failure.line == 3

"""Schema-1 lines written by an older version keep verifying and reporting, alone and with
schema-2 lines appended after them (tests/data/schema1/ holds a real schema-1 log)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fdffd.audit import AuditLog, StationKeys, iter_log, iter_records, verify
from fdffd.audit.record import JobRecord, parse_record, upgrade_v1
from fdffd.audit.report import build_report, render_text
from fdffd.audit.schema1 import JobRecordV1

from .cli_util import fdffctl, write_config
from .test_audit import make_record

DATA = Path(__file__).parent / "data" / "schema1"


@pytest.fixture
def old_log(tmp_path: Path) -> tuple[Path, StationKeys]:
    """A copy of the schema-1 log and its station keys (key files made private again: git
    does not keep their mode)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    for name in ("station.key", "station.pub"):  # serial.secret: removed on upgrade
        shutil.copy(DATA / name, state / name)
        (state / name).chmod(0o644 if name.endswith(".pub") else 0o600)
    shutil.copy(DATA / "audit.jsonl", state / "audit.jsonl")
    return state / "audit.jsonl", StationKeys.init(state)


def test_schema1_log_verifies_as_written(old_log: tuple[Path, StationKeys]) -> None:
    """The four lines the old version wrote verify byte for byte with the old rules (one of
    them has a doubled blank in a model name, which schema 2's cleaning would fold)."""
    path, keys = old_log
    result = verify(path, keys.public_key)
    assert result.ok and result.lines_checked == 4, result.summary()
    assert b'"model":"Flash  Disk"' in path.read_bytes()
    assert all(isinstance(r, JobRecordV1) for r in iter_log(path))


def test_schema2_lines_append_after_schema1_and_all_verify(
    old_log: tuple[Path, StationKeys],
) -> None:
    """Schema-2 records chain onto a schema-1 log; the old lines are left as they were, the
    whole log verifies, and every job reads back as schema 2."""
    path, keys = old_log
    before = path.read_bytes()
    log = AuditLog(path, keys)
    log.append(make_record(0))
    log.append(make_record(1, verdict="failed", wiped=False))
    assert path.read_bytes().startswith(before)
    result = verify(path, keys.public_key)
    assert result.ok and result.lines_checked == 6, result.summary()
    schemas = [json.loads(line)["schema"] for line in path.read_bytes().splitlines()]
    assert schemas == [1, 1, 1, 1, 2, 2]
    stored = list(iter_log(path))
    assert [type(r) for r in stored] == [JobRecordV1] * 4 + [JobRecord] * 2
    jobs = list(iter_records(path))
    assert all(isinstance(r, JobRecord) for r in jobs) and len(jobs) == 6
    report = build_report(jobs)
    assert report["jobs"] == 6
    assert report["by_verdict"] == {
        "ok": 2,
        "rescued": 0,
        "counterfeit": 1,
        "defective": 0,
        "failed": 1,
        "refused": 1,
        "interrupted": 1,
    }
    assert report["counterfeit"] == 1 and report["not_wiped"] == 3
    assert set(report["per_day"]) >= {"2026-11-25", "2026-11-26", "2026-11-27", "2026-03-01"}
    assert "jobs: 6" in render_text(report)


def test_fdffctl_verifies_and_reports_a_mixed_log(
    tmp_path: Path, old_log: tuple[Path, StationKeys]
) -> None:
    """``fdffctl audit verify`` and ``audit report`` on schema-1 lines then schema-2 lines:
    both exit 0 and count every line."""
    path, keys = old_log
    AuditLog(path, keys).append(make_record(2))
    cfg = write_config(tmp_path)
    pub = path.parent / "station.pub"
    run = fdffctl("audit", "verify", "--config", str(cfg), "--log", str(path), "--pubkey", str(pub))
    assert run.code == 0 and "OK, 5 lines verified" in run.stdout, run.stdout + run.stderr
    run = fdffctl("audit", "report", "--config", str(cfg), "--log", str(path), "--json")
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["jobs"] == 5 and report["by_verdict"]["refused"] == 1


def test_tampered_schema1_line_is_still_caught(old_log: tuple[Path, StationKeys]) -> None:
    """A schema-1 line changed (its doubled blank folded, as schema 2 would clean it) fails
    at that line: the old rules are applied, not the new ones."""
    path, keys = old_log
    path.write_bytes(path.read_bytes().replace(b"Flash  Disk", b"Flash Disk"))
    result = verify(path, keys.public_key)
    assert result.failure is not None and result.failure.line == 3


def test_upgrade_invents_nothing(old_log: tuple[Path, StationKeys]) -> None:
    """The schema-2 view of a schema-1 record: same facts, ``wiped`` only for the verdicts
    that meant a verified wipe, no sanitization claimed, no gate rule guessed from text."""
    path, _ = old_log
    ok, fake, refused, lost = (r for r in iter_log(path) if isinstance(r, JobRecordV1))
    for old in (ok, fake, refused, lost):
        new = upgrade_v1(old)
        assert new.job_id == old.job_id and new.verdict == old.verdict
        assert new.day == old.started_at[:10] and new.started_at == old.started_at
        assert new.sanitization is None and new.sealed is None
        assert new.capacity.usable_bytes == old.capacity.usable_bytes
    assert [upgrade_v1(r).wiped for r in (ok, fake, refused, lost)] == [True, True, False, False]
    assert upgrade_v1(fake).capacity.usable_class == "8G"
    assert upgrade_v1(ok).capacity.announced_class == "16G"
    err = upgrade_v1(refused).error
    assert err is not None and err.code == "refused" and err.rule is None


def test_a_schema1_record_kept_in_a_journal_is_appended_as_it_was(
    tmp_path: Path, old_log: tuple[Path, StationKeys]
) -> None:
    """A record an older version kept in a job journal (the audit log could not take it then)
    is still appended after an upgrade, as schema 1, and verifies."""
    path, keys = old_log
    kept = json.loads(path.read_bytes().splitlines()[3])
    kept.pop("prev")
    kept.pop("sig")
    kept["job_id"] = "4b" * 16
    fresh = tmp_path / "fresh.jsonl"
    out = AuditLog(fresh, keys).append(kept)
    assert out["schema"] == 1 and isinstance(parse_record(out), JobRecordV1)
    assert verify(fresh, keys.public_key).ok

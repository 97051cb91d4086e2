"""fdffctl audit and payload commands as operators and auditors use them: output, exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from fdffd.audit import AuditLog, StationKeys
from fdffd.audit.seal import seal_identifying
from fdffd.config import load_config
from fdffd.job.pipeline import interrupted_record

from .cli_util import fdffctl, write_config


def _log_with(tmp_path: Path, n: int, serial: str | None = None) -> Path:
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    keys = StationKeys.load(cfg.station.state_dir)
    log = AuditLog(cfg.audit_log, keys)
    for i in range(n):
        rec = interrupted_record(cfg, {"job_id": f"{i:032x}", "device": f"/dev/sd{i}"})
        if serial:
            seal_identifying(rec, keys.sealer, serial)
        log.append(rec)
    return cfg_path


def test_audit_verify_names_the_tampered_line(tmp_path: Path) -> None:
    """audit verify: exit 0 on an intact log; exit 5 naming the line after one byte changes."""
    cfg = _log_with(tmp_path, 3)
    ok = fdffctl("audit", "verify", "--config", str(cfg), "--json")
    assert ok.code == 0
    log = tmp_path / "state" / "audit.jsonl"
    last = log.read_bytes().splitlines()[-1]
    assert json.loads(ok.stdout)["head"] == hashlib.sha256(last).hexdigest()
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"interrupted"', b'"ok"', 1)
    log.write_bytes(b"".join(lines))
    run = fdffctl("audit", "verify", "--config", str(cfg), "--json")
    assert run.code == 5
    assert json.loads(run.stdout)["failure"]["line"] == 2


def test_audit_repair_moves_a_torn_line_aside(tmp_path: Path) -> None:
    """A torn last line fails verify; audit repair moves it aside and the log verifies."""
    cfg = _log_with(tmp_path, 2)
    log = tmp_path / "state" / "audit.jsonl"
    with log.open("ab") as f:
        f.write(b'{"schema":1,"job_id":"to')
    assert fdffctl("audit", "verify", "--config", str(cfg)).code == 5
    run = fdffctl("audit", "repair", "--config", str(cfg))
    assert run.code == 0 and "moved to" in run.stdout
    assert fdffctl("audit", "verify", "--config", str(cfg)).code == 0
    assert len(log.read_bytes().splitlines()) == 2


def test_audit_lookup_finds_a_known_serial(tmp_path: Path) -> None:
    """audit lookup SERIAL --key opens the sealed fields of a copied log; exit 5 for none;
    exit 2 without the private key; the station's own files cannot look a drive up; the
    auditor's lookup creates no file."""
    serial = "4C530001230912345678"
    _log_with(tmp_path, 2, serial=serial)
    station_log = tmp_path / "state" / "audit.jsonl"
    assert serial.encode() not in station_log.read_bytes()
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    copied = auditor / "audit.jsonl"
    shutil.copyfile(station_log, copied)
    key = str(tmp_path / "audit-seal.key")
    run = fdffctl("audit", "lookup", serial, "--log", str(copied), "--key", key, "--json")
    assert run.code == 0, run.stderr
    assert len(json.loads(run.stdout)["jobs"]) == 2
    assert fdffctl("audit", "lookup", "OTHER", "--log", str(copied), "--key", key).code == 5
    no_key = fdffctl("audit", "lookup", serial, "--log", str(copied))
    assert no_key.code == 2 and "--key" in no_key.stderr
    # the station's keys (all a seized station holds) do not open the sealed fields
    for name in ("station.key", "audit-seal.pub"):
        other = fdffctl(
            "audit", "lookup", serial, "--log", str(copied), "--key", str(tmp_path / "state" / name)
        )
        assert other.code != 0
    assert sorted(p.name for p in auditor.iterdir()) == ["audit.jsonl"]


def test_audit_report_counts_verdicts(tmp_path: Path) -> None:
    """audit report --json counts the jobs by verdict."""
    cfg = _log_with(tmp_path, 3)
    run = fdffctl("audit", "report", "--config", str(cfg), "--json")
    assert run.code == 0
    report = json.loads(run.stdout)
    assert report["jobs"] == 3 and report["by_verdict"]["interrupted"] == 3


def test_payload_commands(tmp_path: Path) -> None:
    """payload add, list and verify: exit 0; a changed file makes verify exit 5 naming it;
    a name FAT cannot hold makes add exit 2 naming it."""
    src = tmp_path / "src"
    (src / "영화").mkdir(parents=True)
    (src / "영화" / "겨울연가 1화.mp4").write_bytes(b"x" * 1000)
    cfg = write_config(tmp_path)
    assert fdffctl("payload", "add", "films", str(src), "--config", str(cfg)).code == 0
    run = fdffctl("payload", "list", "--config", str(cfg), "--json")
    assert run.code == 0 and json.loads(run.stdout)["profiles"][0]["name"] == "films"
    assert fdffctl("payload", "verify", "films", "--config", str(cfg)).code == 0
    stored = next((tmp_path / "payloads" / "films").rglob("겨울연가 1화.mp4"))
    stored.chmod(0o644)
    stored.write_bytes(b"y" * 1000)
    run = fdffctl("payload", "verify", "films", "--config", str(cfg))
    assert run.code == 5 and "겨울연가 1화.mp4" in run.stdout
    (src / "bad:name.txt").write_bytes(b"")
    run = fdffctl("payload", "add", "films", str(src), "--config", str(cfg))
    assert run.code == 2 and "bad:name.txt" in run.stderr


def test_unknown_command_exits_2() -> None:
    """A mistyped command exits 2 (usage)."""
    assert fdffctl("proces", "/dev/null").code == 2


def test_daemon_with_a_state_dir_that_is_a_file_exits_2_naming_it(tmp_path: Path) -> None:
    """fdffd whose station.state_dir is a regular file (or lies under one) exits 2 with the key
    and the path named, instead of a traceback."""
    (tmp_path / "file").write_text("not a directory")
    for state in (tmp_path / "file", tmp_path / "file" / "state"):
        cfg = write_config(tmp_path, station={"state_dir": str(state)})
        p = subprocess.run(
            [sys.executable, "-m", "fdffd.cli.daemon", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert p.returncode == 2, p.stderr
        assert f"station.state_dir {state}" in p.stderr and "Traceback" not in p.stderr


def test_audit_verify_on_a_new_station_says_there_is_no_record_yet(tmp_path: Path) -> None:
    """No log yet: verify says so and fails (a deleted log looks the same) unless told the log
    may be empty; it names the key it would check, and creates nothing."""
    cfg = write_config(tmp_path)
    run = fdffctl("audit", "verify", "--config", str(cfg))
    assert run.code == 5, run.stdout + run.stderr
    assert "no log yet" in run.stdout and "--allow-empty" in run.stdout
    run = fdffctl("audit", "verify", "--allow-empty", "--config", str(cfg))
    assert run.code == 0 and "no log yet" in run.stdout, run.stdout + run.stderr
    assert "station key fingerprint" in run.stdout
    run = fdffctl("audit", "verify", "--allow-empty", "--config", str(cfg), "--json")
    answer = json.loads(run.stdout)
    assert run.code == 0 and answer["ok"] is True and answer["lines"] == 0
    assert answer["head"] == "0" * 64
    assert not (tmp_path / "state" / "audit.jsonl").exists()  # verifying creates nothing


def test_payload_add_creates_the_state_dir_0700(tmp_path: Path) -> None:
    """The first `payload add` on a station makes the state dir 0700 (as the unit does), not
    0755 as a parent of the payload dir."""
    state = tmp_path / "state"
    cfg = write_config(tmp_path, station={"payload_dir": str(state / "payloads")})
    src = tmp_path / "src"
    (src / "books").mkdir(parents=True)
    (src / "books" / "a.txt").write_bytes(b"a book")
    run = fdffctl("payload", "add", "default", str(src), "--config", str(cfg))
    assert run.code == 0, run.stderr
    assert state.stat().st_mode & 0o777 == 0o700

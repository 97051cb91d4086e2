"""Identifying fields sealed to the program's audit key: a copy of the state dir, the daemon's
log output and a finished drive do not find the drive's record; the audit private key does."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from fdffd import __version__
from fdffd.audit import AuditLog, StationKeys
from fdffd.audit.record import Capacity, DeviceInfo, FilesystemInfo, JobRecord, Stage, Wipe
from fdffd.audit.seal import Opener, Sealer, new_audit_keypair, parse_key_text, seal_identifying
from fdffd.config import load_config
from fdffd.job.pipeline import interrupted_record
from fdffd.payload import add_profile
from fdffd_testkit.loopdev import LoopDevice

from .cli_util import fdffctl, write_config

MiB = 1 << 20


def _record() -> JobRecord:
    return JobRecord(
        job_id="0" * 32,
        station="s",
        version="0",
        day="2026-12-03",
        started_at="2026-12-03T10:11:12.345Z",
        finished_at="2026-12-03T10:21:12.345Z",
        verdict="ok",
        wiped=True,
        device=DeviceInfo(path="/dev/sdz", port="pci-0:1", announced_bytes=15_931_539_456),
        capacity=Capacity(announced_bytes=15_931_539_456, usable_bytes=15_931_539_456),
        wipe=Wipe(bytes_written=15_931_539_456, verified_bytes=15_931_539_456, bad_ranges=[]),
        filesystem=FilesystemInfo(
            type="fat32",
            volume_id="1A2B-3C4D",
            partition_offset=1 << 20,
            partition_bytes=15_930_490_880,
        ),
        stages=[Stage(name="wipe", seconds=1.0, bytes=15_931_539_456)],
    )


def test_sealed_fields_open_only_with_the_audit_private_key() -> None:
    """Every exact value moves into ``sealed``; classes and the day stay; the private key
    opens it, another key does not; without a sealer the values are dropped."""
    priv, pub = new_audit_keypair()
    sealer = Sealer(parse_key_text(Path("pub"), pub.encode()))
    rec = seal_identifying(_record(), sealer, " 4C530001230918117062\x00")
    text = json.dumps(rec.to_json_dict())
    for value in ("15931539456", "15930490880", "1A2B-3C4D", "4C5300", "10:11:12"):
        assert value not in text
    assert rec.day == "2026-12-03" and rec.capacity.usable_class == "16G"
    assert rec.sealed is not None
    opened = Opener(parse_key_text(Path("priv"), priv.encode())).open(rec.sealed)
    assert opened is not None
    assert opened["serial"] == "4C530001230918117062"
    assert opened["volume_id"] == "1A2B-3C4D"
    assert opened["usable_bytes"] == 15_931_539_456
    assert opened["started_at"] == "2026-12-03T10:11:12.345Z"
    other, _ = new_audit_keypair()
    assert Opener(parse_key_text(Path("other"), other.encode())).open(rec.sealed) is None
    dropped = seal_identifying(_record(), None, "4C530001230918117062")
    assert dropped.sealed is None and dropped.capacity.usable_bytes is None
    assert "1A2B-3C4D" not in json.dumps(dropped.to_json_dict())
    assert JobRecord.model_validate(rec.to_json_dict()) == rec


def test_finished_drive_does_not_find_its_record(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    """A real job on a loop device: neither the state dir nor the log output holds the
    drive's volume serial or its exact sizes; ``audit lookup --volume-id`` with the audit
    private key finds the job."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "readme.txt").write_bytes(os.urandom(4096))
    add_profile(tmp_path / "payloads", "default", src)
    dev = loop(96 * MiB)
    cfg = write_config(tmp_path, job={"profile": "default"})
    run = fdffctl("process", dev.path, "--config", str(cfg), "--json", "--log-level", "debug")
    assert run.code == 0, run.stderr
    assert "job.identified" in run.stderr and "probe.done" in run.stderr
    rec = run.record  # what the operator's terminal saw: the whole record
    volume_id = str(rec["filesystem"]["volume_id"])
    assert volume_id and len(volume_id) == 9
    # the volume serial as the drive carries it (FAT32 boot sector, offset 0x43, LE)
    off = int(rec["filesystem"]["partition_offset"])
    with open(dev.path, "rb") as f:
        f.seek(off + 0x43)
        raw = int.from_bytes(f.read(4), "little")
    assert f"{raw >> 16:04X}-{raw & 0xFFFF:04X}" == volume_id
    exact = {
        str(dev.size),
        str(rec["capacity"]["usable_bytes"]),
        str(rec["filesystem"]["partition_bytes"]),
        str(rec["wipe"]["bytes_written"]),
    }
    needles = {volume_id, volume_id.replace("-", ""), volume_id.lower(), f"{raw:08x}", str(raw)}
    needles |= exact
    state = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    for needle in needles:
        assert needle.encode() not in state, needle
        assert needle not in run.stderr, needle
    key = str(tmp_path / "audit-seal.key")
    log = str(tmp_path / "state" / "audit.jsonl")
    found = fdffctl(
        "audit", "lookup", volume_id, "--volume-id", "--log", log, "--key", key, "--json"
    )
    assert found.code == 0, found.stderr
    jobs = json.loads(found.stdout)["jobs"]
    assert [j["job_id"] for j in jobs] == [rec["job_id"]] and jobs[0]["wiped"] is True
    # the logged record names the sanitization it met (SP 800-88 Clear, read back), in clear
    (logged,) = [json.loads(line) for line in Path(log).read_text().splitlines()]
    assert logged["wiped"] is True and logged["sealed"] and logged["started_at"] is None
    assert logged["sanitization"] == {
        "standard": "NIST SP 800-88 Rev. 2 / IEEE 2883-2022",
        "method": "clear",
        "technique": "overwrite",
        "verification": "full-read-back",
        "tool": "fdffd",
        "tool_version": __version__,
    }
    report = fdffctl("audit", "report", "--log", log)
    assert report.code == 0 and "not wiped: 0" in report.stdout and "128M 1" in report.stdout


def test_unfinished_jobs_are_shown_not_wiped(tmp_path: Path) -> None:
    """A job found interrupted on restart is logged (day only) and counted as not wiped."""
    cfg = load_config(write_config(tmp_path))
    log = AuditLog(cfg.audit_log, StationKeys.load(cfg.station.state_dir))
    rec = interrupted_record(
        cfg, {"job_id": "e" * 32, "device": "/dev/sdq", "started_at": "2026-12-03T09:08:07.000Z"}
    )
    log.append(rec)
    text = cfg.audit_log.read_text()
    assert "09:08:07" not in text and '"day":"2026-12-03"' in text and '"wiped":false' in text
    report = fdffctl("audit", "report", "--log", str(cfg.audit_log))
    assert "not wiped: 1" in report.stdout and "interrupted 1" in report.stdout


def test_records_from_before_sealing_are_found_with_the_archived_secret(tmp_path: Path) -> None:
    """A record that carries the old serial HMAC is found with the station's archived
    ``serial.secret`` (``--serial-secret``), next to sealed records found with the key."""
    import hashlib
    import hmac

    cfg = load_config(write_config(tmp_path))
    keys = StationKeys.load(cfg.station.state_dir)
    log = AuditLog(cfg.audit_log, keys)
    secret = os.urandom(32)
    (tmp_path / "serial.secret").write_bytes(secret)
    old = _record()
    old.device.serial_hmac = hmac.new(secret, b"OLD-SERIAL-1", hashlib.sha256).hexdigest()
    log.append(old)
    args = ["--log", str(cfg.audit_log), "--serial-secret", str(tmp_path / "serial.secret")]
    found = fdffctl("audit", "lookup", "OLD-SERIAL-1", *args, "--json")
    assert found.code == 0, found.stderr
    assert [j["job_id"] for j in json.loads(found.stdout)["jobs"]] == [old.job_id]
    assert fdffctl("audit", "lookup", "OTHER", *args).code == 5

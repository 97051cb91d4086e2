"""Every verdict of a whole job, as ``run_job`` decides it on an opened drive.

The same contract, written once, runs on two backends: the in-memory disk (no root, no
device: every case in well under a second) and FUSE fakes behind real loop devices opened as
the station opens them.  Each case checks the verdict, the exit code, the record's stable
error code and stage, whether the drive is recorded as wiped, and that the donor's data is
gone from the real flash wherever the record says the drive was wiped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from fdffd.audit.record import JobRecord, parse_record
from fdffd.audit.seal import Opener, Sealer, new_audit_keypair, parse_key_text
from fdffd.config import load_config
from fdffd.errors import DriveRemovedError
from fdffd.job.pipeline import JobOutcome, StatusCallback, run_job
from fdffd.payload import add_profile, open_profile

from .cli_util import write_config
from .job_backends import (
    DriveSpec,
    JobDrive,
    MakeDrive,
    MemoryDrive,
    loop_backend,
    memory_backend,
    payload_source,
)

MiB = 1 << 20
PAYLOAD = {"README.TXT": 42, "책/朝鮮語 入門.pdf": 300_001, "영화/1화.mp4": 2 * MiB + 5}
AUDIT_PRIVATE, AUDIT_PUBLIC = new_audit_keypair()


@pytest.fixture(params=["memory", "loop"])
def make_drive(request: pytest.FixtureRequest) -> MakeDrive:
    if request.param == "memory":
        return memory_backend()
    return loop_backend(request.getfixturevalue("fake"))


@pytest.fixture
def profile(tmp_path: Path) -> str:
    add_profile(tmp_path / "payloads", "default", payload_source(tmp_path, PAYLOAD))
    return "default"


def _job(
    tmp_path: Path,
    drive: JobDrive,
    *,
    profile: str = "",
    status: StatusCallback | None = None,
    **job: object,
) -> JobOutcome:
    cfg = load_config(write_config(tmp_path, job={"profile": profile, **job}))
    with ExitStack() as stack:
        payload = None
        if profile:
            payload = stack.enter_context(open_profile(cfg.station.payload_dir, profile))
        disk, facts = stack.enter_context(drive.opened(cfg))
        sealer = Sealer(parse_key_text(Path("audit.pub"), AUDIT_PUBLIC.encode()))
        out = run_job(cfg, disk, facts, payload=payload, status=status, sealer=sealer)
    _check_record(out)
    return out


def _check_record(out: JobOutcome) -> None:
    """What holds for every record: schema 2, valid as written, an error exactly when the
    drive is not a finished one, a wiped drive's error never a failure of the drive."""
    rec = out.record
    again = parse_record(rec.to_json_dict())
    assert isinstance(again, JobRecord) and again == rec
    assert rec.schema_ == 2 and rec.type == "job" and rec.day == (rec.started_at or "")[:10]
    assert (rec.error is None) == (rec.verdict in ("ok", "rescued")), rec.error
    assert (out.exit_code == 0) == (rec.verdict in ("ok", "rescued"))
    if rec.wiped:
        assert rec.verdict in ("ok", "rescued", "counterfeit", "failed")
        assert rec.wipe.bad_ranges == []
    # the log keeps the record sealed: exact values only behind the audit private key
    logged = out.logged
    assert logged.sealed is not None and logged.started_at is None
    assert logged.capacity.usable_bytes is None and logged.verdict == rec.verdict
    opened = Opener(parse_key_text(Path("audit.key"), AUDIT_PRIVATE.encode())).open(logged.sealed)
    assert opened is not None and opened["usable_bytes"] == rec.capacity.usable_bytes
    assert opened["started_at"] == rec.started_at


def _at(stage: str, action: Callable[[], None]) -> StatusCallback:
    """A status callback that does ``action`` once, when the job enters ``stage``."""
    fired: list[bool] = []

    def status(name: str, done: int, total: int) -> None:
        if name == stage and not fired:
            fired.append(True)
            action()

    return status


def test_honest_drive_is_ok_wiped_and_verified(tmp_path: Path, make_drive: MakeDrive) -> None:
    """An honest drive without a payload: ok, exit 0, the whole surface written and read
    back, no donor data left, the sanitization named."""
    drive = make_drive(DriveSpec.honest(64 * MiB))
    drive.plant_donor()
    out = _job(tmp_path, drive)
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("ok", 0, True)
    assert rec.capacity.usable_bytes == rec.capacity.announced_bytes == 64 * MiB
    assert rec.capacity.usable_class == rec.capacity.announced_class == "64M"
    assert rec.wipe.verified_bytes == 64 * MiB and rec.wipe.mismatched_bytes == 0
    assert [s.name for s in rec.stages] == ["admit", "probe", "image", "verify", "finish"]
    assert rec.sanitization is not None and rec.sanitization.method == "clear"
    assert rec.sanitization.verification == "full-read-back"
    assert rec.device.serial_hmac is None  # the serial is only ever sealed
    assert out.logged.sealed is not None
    opened = Opener(parse_key_text(Path("audit.key"), AUDIT_PRIVATE.encode())).open(
        out.logged.sealed
    )
    assert opened is not None and opened["serial"] == (drive.serial or None)
    assert drive.donor_left() == []


def test_honest_drive_with_a_payload_is_ok(
    tmp_path: Path, make_drive: MakeDrive, profile: str
) -> None:
    """With a payload: ok, and the payload read back from the drive matches its manifest."""
    drive = make_drive(DriveSpec.honest(64 * MiB))
    out = _job(tmp_path, drive, profile=profile)
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("ok", 0, True)
    assert rec.payload is not None and rec.payload.verified and rec.payload.files == 3
    assert rec.filesystem is not None and rec.filesystem.type == "fat32"


FAKE = DriveSpec(announced=256 * MiB, real=64 * MiB, kind="wraparound")


def test_counterfeit_is_rejected_after_its_real_flash_is_wiped(
    tmp_path: Path, make_drive: MakeDrive, profile: str
) -> None:
    """counterfeit = reject: verdict counterfeit, exit 3, no payload written, the real flash
    wiped and verified."""
    drive = make_drive(FAKE)
    drive.plant_donor()
    out = _job(tmp_path, drive, profile=profile)
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("counterfeit", 3, True)
    assert rec.error is not None and rec.error.code == "counterfeit"
    assert rec.capacity.counterfeit and rec.capacity.kind == "wraparound"
    usable = rec.capacity.usable_bytes or 0
    assert FAKE.real * 0.99 <= usable <= FAKE.real
    assert rec.payload is None and rec.filesystem is None
    assert drive.donor_left() == []


def test_counterfeit_is_rescued_at_its_real_size(
    tmp_path: Path, make_drive: MakeDrive, profile: str
) -> None:
    """counterfeit = rescue: verdict rescued, exit 0, the payload inside the real size."""
    drive = make_drive(FAKE)
    out = _job(tmp_path, drive, profile=profile, counterfeit="rescue")
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("rescued", 0, True)
    assert rec.payload is not None and rec.payload.verified
    fs = rec.filesystem
    assert fs is not None and (fs.partition_offset or 0) + (fs.partition_bytes or 0) <= FAKE.real


def test_bad_flash_makes_a_defective_drive(tmp_path: Path, make_drive: MakeDrive) -> None:
    """Sectors that fail inside the real size: defective, exit 4, every bad page mapped, and
    the drive is not recorded as wiped (those sectors may still hold donor data)."""
    bad = ((5 * MiB + 4096, 8192), (40 * MiB, 4096))
    drive = make_drive(DriveSpec.honest(96 * MiB, bad_ranges=bad))
    out = _job(tmp_path, drive)
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("defective", 4, False)
    assert rec.error is not None and (rec.error.code, rec.error.stage) == ("defective", "verify")
    ranges = rec.wipe.bad_ranges or []
    for off, n in bad:
        assert any(s <= off and off + n <= s + ln for s, ln in ranges), (off, n, ranges)


def test_payload_too_large_fails_after_the_wipe(tmp_path: Path, make_drive: MakeDrive) -> None:
    """A payload larger than the drive: failed, exit 5, both sizes named; the drive was still
    wiped and verified whole."""
    add_profile(tmp_path / "payloads", "big", payload_source(tmp_path / "b", {"f.mkv": 72 * MiB}))
    drive = make_drive(DriveSpec.honest(64 * MiB))
    drive.plant_donor()
    out = _job(tmp_path, drive, profile="big")
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("failed", 5, True)
    assert rec.error is not None and rec.error.code == "payload-too-large"
    assert "needs" in rec.error.message and "holds" in rec.error.message
    assert rec.wipe.verified_bytes == 64 * MiB and rec.payload is None
    assert drive.donor_left() == []


def test_payload_changed_since_its_manifest_fails(
    tmp_path: Path, make_drive: MakeDrive, profile: str
) -> None:
    """A profile file changed after import (same size): failed, exit 5, the file named."""
    victim = next((tmp_path / "payloads" / profile).rglob("README.TXT"))
    os.chmod(victim, 0o644)
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    drive = make_drive(DriveSpec.honest(64 * MiB))
    out = _job(tmp_path, drive, profile=profile)
    rec = out.record
    assert (rec.verdict, out.exit_code) == ("failed", 5)
    assert rec.error is not None and rec.error.code == "payload-changed"
    assert "README.TXT" in rec.error.message and rec.error.stage == "verify"
    assert rec.payload is not None and not rec.payload.verified


def test_drive_that_turns_read_only_is_defective(tmp_path: Path, make_drive: MakeDrive) -> None:
    """Writes start failing while reads work: defective, exit 4, not wiped, and the job stops
    there (no verify, no finish)."""
    drive = make_drive(DriveSpec.honest(64 * MiB))
    out = _job(tmp_path, drive, status=_at("image", lambda: drive.set_mode("readonly")))
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("defective", 4, False)
    assert rec.error is not None and (rec.error.code, rec.error.stage) == ("defective", "image")
    assert "turned read-only during image" in rec.error.message
    assert [s.name for s in rec.stages] == ["admit", "probe"]


def test_drive_that_stops_responding_fails(tmp_path: Path, make_drive: MakeDrive) -> None:
    """Every I/O fails from the image pass on: failed, exit 5, code device-i-o, not wiped."""
    drive = make_drive(DriveSpec.honest(64 * MiB))
    out = _job(tmp_path, drive, status=_at("image", lambda: drive.set_mode("fail")))
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("failed", 5, False)
    assert rec.error is not None and (rec.error.code, rec.error.stage) == ("device-i-o", "image")
    assert "stopped responding" in rec.error.message


def test_drive_pulled_mid_job_fails(tmp_path: Path, make_drive: MakeDrive) -> None:
    """The station cancels a job whose drive was pulled (udev says it is gone): failed,
    exit 5, code drive-removed, not wiped."""
    drive = make_drive(DriveSpec.honest(64 * MiB))

    def pulled() -> None:
        raise DriveRemovedError(device=drive.path, stage="image")

    out = _job(tmp_path, drive, status=_at("image", pulled))
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("failed", 5, False)
    assert rec.error is not None and (rec.error.code, rec.error.stage) == ("drive-removed", "image")


# --- the in-memory disk only: what a loop device cannot be made to do ------------------


def test_drive_gone_under_the_pass_fails_as_removed(tmp_path: Path) -> None:
    """The disk itself says it is gone (every request: the device node disappeared)."""
    drive = memory_backend()(DriveSpec.honest(64 * MiB))
    out = _job(tmp_path, drive, status=_at("verify", lambda: drive.set_mode("removed")))
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("failed", 5, False)
    assert rec.error is not None and rec.error.code == "drive-removed"
    assert rec.error.stage == "verify"


def test_too_many_failing_sectors_give_up_as_defective(tmp_path: Path) -> None:
    """More than the pass's budget of unreadable bytes, scattered (never two dead chunks in a
    row): the verify pass gives up, defective, exit 4, the ranges found so far recorded."""
    chunk = 4 * MiB
    drive = MemoryDrive(DriveSpec.honest(256 * MiB))
    pages = chunk // 4096
    # every other 4 MiB chunk from 64 MiB on, 18 of them: 72 MiB that cannot be read
    drive.disk.bad_pages = {
        p for c in range(16, 16 + 2 * 18, 2) for p in range(c * pages, (c + 1) * pages)
    }
    out = _job(tmp_path, drive)
    rec = out.record
    assert (rec.verdict, out.exit_code, rec.wiped) == ("defective", 4, False)
    assert rec.error is not None and (rec.error.code, rec.error.stage) == ("defective", "verify")
    assert "giving up" in rec.error.message and rec.wipe.bad_ranges


def test_verify_off_is_recorded_as_unverified(tmp_path: Path) -> None:
    """verify = "off": ok, nothing read back, and the record's sanitization says so."""
    drive = memory_backend()(DriveSpec.honest(64 * MiB))
    out = _job(tmp_path, drive, verify="off")
    rec = out.record
    assert rec.verdict == "ok" and rec.wipe.verified_bytes == 0
    assert rec.sanitization is not None and rec.sanitization.verification == "none"

"""The records of the audit log, schema 2 (docs/record.md describes every field).

A log line is one record: a :class:`JobRecord` (``type: "job"``, one per job, whatever
happened) or a :class:`KeyRotationRecord` (``type: "key-rotation"``, not a job).  The pipeline
fills a :class:`JobRecord` from the first line of the job and hands it to
:class:`fdffd.audit.log.AuditLog`, which fills ``prev`` and ``sig``.  Field order here is the
order of the serialised JSON, and so part of the contract: do not reorder fields.

Schema 2 has room for what identifies a drive to move out of the clear: exact times, exact
sizes and bad ranges are optional (``None`` when left out), ``sealed`` can carry them
encrypted to the program's audit key, and coarse size classes (``announced_class``,
``usable_class``) stand beside the exact sizes.  ``day`` (the UTC date) stays in clear.

Schema 1 lines (:mod:`fdffd.audit.schema1`) keep verifying; :func:`parse_record` reads either,
:func:`upgrade_v1` gives a schema-2 view of a schema-1 record for reports.

Strings read from a drive (vendor, model, port, label, volume id) and error messages are
untrusted: :func:`fdffd.text.clean_untrusted` makes them safe before they reach the log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    model_validator,
)

from ..errors import FdffdError
from ..text import clean_untrusted
from .schema1 import JobRecordV1

SCHEMA_VERSION: Literal[2] = 2

#: every verdict a job can end with: the one list (views, reports and errors use it)
Verdict = Literal["ok", "rescued", "counterfeit", "defective", "failed", "refused", "interrupted"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

CapacityKind = Literal["wraparound", "dropped-zeros", "dropped-ff", "io-error", "cache", "unknown"]
FilesystemType = Literal["fat32", "exfat", "fat16"]
FreeSpace = Literal["keyed", "zeros"]

#: the sanitization a finished job applied (SP 800-88 Rev. 2 defers techniques to IEEE 2883)
STANDARD = "NIST SP 800-88 Rev. 2 / IEEE 2883-2022"

_HEX64 = r"^[0-9a-f]{64}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"
_DAY = r"^\d{4}-\d{2}-\d{2}$"
#: how long a cleaned message may be (a drive's strings are capped shorter)
MESSAGE_LIMIT = 2000


def utc_now_iso() -> str:
    """The current UTC time as ISO-8601 with millisecond precision and a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def size_class(n: int) -> str:
    """``n`` bytes rounded to the nearest power of two of megabytes (10^6), the way drives
    are sold: ``"64M"``, ``"16G"``, ``"1T"``.  Coarse on purpose: many drives share a class."""
    if n <= 0:
        return "0"
    exp = max(0, round(math.log2(n / 1e6)))
    if exp >= 20:
        return f"{1 << (exp - 20)}T"
    if exp >= 10:
        return f"{1 << (exp - 10)}G"
    return f"{1 << exp}M"


def _check_utc_timestamp(value: str) -> str:
    if not value.endswith("Z"):
        raise ValueError("timestamp must be ISO-8601 UTC ending in 'Z'")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
    if parsed.utcoffset() is None or parsed.utcoffset() != UTC.utcoffset(None):
        raise ValueError("timestamp must be in UTC")
    return value


def _cleaner(limit: int) -> BeforeValidator:
    def clean(value: object) -> object:
        # rstrip: a string cut at ``limit`` may end in a space, which a second cleaning would
        # drop; a stored value must come out of the validator unchanged for its line to verify
        return clean_untrusted(value, limit) if isinstance(value, str) else value

    return BeforeValidator(clean)


UntrustedStr = Annotated[str, _cleaner(200)]
UntrustedText = Annotated[str, _cleaner(MESSAGE_LIMIT)]
UtcTimestamp = Annotated[str, AfterValidator(_check_utc_timestamp)]
Hex64 = Annotated[str, Field(pattern=_HEX64)]
Name = Annotated[str, Field(pattern=_NAME)]
Day = Annotated[str, Field(pattern=_DAY)]
Base64 = Annotated[str, Field(pattern=_BASE64, min_length=4)]
BadRange = tuple[NonNegativeInt, NonNegativeInt]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class DeviceInfo(_Model):
    """What identify found out about the drive.  No raw serial: only its HMAC."""

    path: str
    #: udev ``ID_PATH`` of the hub port
    port: UntrustedStr | None = None
    #: the label printed next to the port (from the station's port map), when it has one
    port_label: UntrustedStr | None = None
    #: the kind of media (``usb-stick``, ``sd-card``...), when the station knows it
    media: Name | None = None
    bus: UntrustedStr | None = None
    vendor: UntrustedStr | None = None
    model: UntrustedStr | None = None
    serial_hmac: Hex64 | None = None
    #: exact; ``None`` when left out of the clear
    announced_bytes: NonNegativeInt | None = 0
    logical_sector: NonNegativeInt = 512


class Capacity(_Model):
    """What the probe (and the verify pass) proved about the real capacity."""

    announced_bytes: NonNegativeInt | None = 0
    announced_class: str | None = None
    usable_bytes: NonNegativeInt | None = 0
    usable_class: str | None = None
    counterfeit: bool = False
    kind: CapacityKind | None = None
    probe_seconds: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _usable_within_announced(self) -> Capacity:
        usable, announced = self.usable_bytes, self.announced_bytes
        if usable is not None and announced is not None and usable > announced:
            raise ValueError(f"usable_bytes {usable} exceeds announced_bytes {announced}")
        return self


class Wipe(_Model):
    """The write passes and the verify pass.  ``bad_ranges`` are ``[offset, length]`` pairs."""

    pattern: str = ""
    passes: NonNegativeInt = 0
    #: what the free space of a finished drive holds: keyed fill, or zeros
    free_space: FreeSpace = "keyed"
    bytes_written: NonNegativeInt | None = 0
    verified_bytes: NonNegativeInt | None = 0
    mismatched_bytes: NonNegativeInt | None = 0
    bad_ranges: list[BadRange] | None = Field(default_factory=list)


class Sanitization(_Model):
    """Which sanitization the job applies, in the terms of NIST SP 800-88's certificate.
    Whether it was achieved is the record's ``wiped``."""

    standard: str = STANDARD
    #: an overwrite with read-back of flash is Clear, never Purge (spare blocks are beyond it)
    method: Literal["clear"] = "clear"
    technique: Literal["overwrite"] = "overwrite"
    verification: Literal["full-read-back", "none"] = "full-read-back"
    tool: str = "fdffd"
    tool_version: str = ""


class FilesystemInfo(_Model):
    """The filesystem the image pass wrote."""

    type: FilesystemType
    #: the formatter whose output the volume imitates, when it imitates one
    footprint: Name | None = None
    label: UntrustedStr = ""
    volume_id: UntrustedStr | None = ""
    partition_offset: NonNegativeInt | None = 0
    partition_bytes: NonNegativeInt | None = 0


class ProfileTried(_Model):
    """One payload profile considered for the drive, larger ones first."""

    profile: Name
    fits: bool
    #: why it did not fit (no exact sizes: e.g. "needs a 32G drive")
    reason: UntrustedText | None = None


class PayloadInfo(_Model):
    """The payload profile written, and whether it read back intact."""

    profile: str
    #: the audience the drive's port serves, when the station has audiences
    audience: Name | None = None
    manifest_sha256: Hex64
    files: NonNegativeInt = 0
    bytes: NonNegativeInt = 0
    verified: bool = False
    #: the profiles tried, in order, when the audience offers several
    choice: list[ProfileTried] | None = None


class SpeedProfile(_Model):
    """Write and read speed over equal regions of the surface, in bytes per second."""

    regions: NonNegativeInt = 0
    write_bytes_per_second: list[NonNegativeFloat] | None = None
    read_bytes_per_second: list[NonNegativeFloat] | None = None
    #: a sudden change of speed between regions (fake or worn flash); never a verdict alone
    cliff: bool = False


class Stage(_Model):
    """Time and bytes of one pipeline stage."""

    name: str
    seconds: NonNegativeFloat = 0.0
    bytes: NonNegativeInt | None = 0


class ErrorInfo(_Model):
    """Why a job did not end ``ok``: the error's stable code, its message, the stage, and
    for a refusal the safety gate's rule."""

    code: str
    message: UntrustedText
    stage: str | None = None
    rule: str | None = None

    @classmethod
    def of(cls, err: FdffdError) -> ErrorInfo:
        return cls(code=err.code, message=err.message, stage=err.stage, rule=err.rule)


_RECORD_CONFIG = ConfigDict(
    extra="forbid",
    allow_inf_nan=False,
    validate_assignment=True,
    populate_by_name=True,  # JobRecord(schema_=2) as well as {"schema": 2}
    serialize_by_alias=True,  # model_dump_json() says "schema", never "schema_"
)


def _fill_day(data: Any) -> Any:
    """``day`` defaults to the UTC date of ``started_at``."""
    if isinstance(data, dict) and data.get("day") is None and data.get("started_at"):
        return {**data, "day": str(data["started_at"])[:10]}
    return data


class JobRecord(BaseModel):
    """One job, schema 2.  ``prev`` and ``sig`` are set by the audit log, never by the caller."""

    model_config = _RECORD_CONFIG

    schema_: Literal[2] = Field(default=SCHEMA_VERSION, alias="schema")
    type: Literal["job"] = "job"
    job_id: str
    station: str
    version: str
    #: the UTC date the job started: kept in clear when exact times are not
    day: Day
    started_at: UtcTimestamp | None = None
    finished_at: UtcTimestamp | None = None
    verdict: Verdict
    #: the whole real capacity was overwritten (and read back, with verification) without a
    #: bad sector; false for every job that did not finish
    wiped: bool = False
    device: DeviceInfo
    capacity: Capacity = Field(default_factory=Capacity)
    wipe: Wipe = Field(default_factory=Wipe)
    sanitization: Sanitization | None = None
    filesystem: FilesystemInfo | None = None
    payload: PayloadInfo | None = None
    speed: SpeedProfile | None = None
    stages: list[Stage] = Field(default_factory=list)
    error: ErrorInfo | None = None
    #: identifying fields sealed to the program's audit key (base64 of a NaCl SealedBox)
    sealed: Base64 | None = None
    prev: Hex64 | None = None
    sig: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")] | None = None

    @model_validator(mode="before")
    @classmethod
    def _day(cls, data: Any) -> Any:
        return _fill_day(data)

    @model_validator(mode="after")
    def _consistent(self) -> JobRecord:
        if self.started_at is not None and self.started_at[:10] != self.day:
            raise ValueError(f"day {self.day} is not the date of started_at {self.started_at}")
        return self

    def to_json_dict(self) -> dict[str, object]:
        """The record as plain JSON values, keys in schema order (``schema`` first)."""
        return self.model_dump(mode="json", by_alias=True)


class KeyRotationRecord(BaseModel):
    """The station's signing key changes: signed by the old key, naming the new one.
    Not a job: reports skip it."""

    model_config = _RECORD_CONFIG

    schema_: Literal[2] = Field(default=SCHEMA_VERSION, alias="schema")
    type: Literal["key-rotation"] = "key-rotation"
    station: str
    version: str
    day: Day
    at: UtcTimestamp | None = None
    #: SHA-256 (hex) of the raw public key that signs this line
    old_key: Hex64
    #: the raw Ed25519 public key (hex) that signs the lines after this one, and its SHA-256
    new_key: Hex64
    new_key_fingerprint: Hex64
    reason: UntrustedText | None = None
    prev: Hex64 | None = None
    sig: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")] | None = None

    @model_validator(mode="before")
    @classmethod
    def _day(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("day") is None and data.get("at"):
            return {**data, "day": str(data["at"])[:10]}
        return data

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


#: what a log line holds
LogRecord = JobRecordV1 | JobRecord | KeyRotationRecord
#: what a station appends today
NewRecord = JobRecord | KeyRotationRecord


class RecordError(ValueError):
    """A line that is a JSON object but no record this version knows (schema, type)."""


def parse_record(obj: Mapping[str, Any]) -> LogRecord:
    """The record ``obj`` holds, by its ``schema`` (and ``type``).  Raises
    :class:`RecordError` for an unknown schema or type, pydantic's ``ValidationError`` when
    a field is wrong."""
    schema = obj.get("schema")
    if schema == 1:
        return JobRecordV1.model_validate(obj)
    if schema != SCHEMA_VERSION:
        raise RecordError(f"unknown schema {schema!r} (this version reads 1 and 2)")
    kind = obj.get("type")
    if kind == "job":
        return JobRecord.model_validate(obj)
    if kind == "key-rotation":
        return KeyRotationRecord.model_validate(obj)
    raise RecordError(f"unknown record type {kind!r} (expected 'job' or 'key-rotation')")


def upgrade_v1(old: JobRecordV1) -> JobRecord:
    """A schema-2 view of a schema-1 record, for reports and lookups (never appended: it
    keeps the old line's ``prev`` and ``sig``, which sign the old bytes).  Nothing is
    invented: ``sanitization`` and ``error.rule`` stay unknown (``None``); ``wiped`` is true
    for the verdicts that meant a whole verified wipe then (ok, rescued, counterfeit)."""
    data = old.model_dump(mode="json", by_alias=True)
    data["schema"] = SCHEMA_VERSION
    data["type"] = "job"
    data["wiped"] = old.verdict in ("ok", "rescued", "counterfeit")
    cap = data["capacity"]
    cap["announced_class"] = size_class(cap["announced_bytes"]) if cap["announced_bytes"] else None
    cap["usable_class"] = size_class(cap["usable_bytes"]) if cap["usable_bytes"] else None
    return JobRecord.model_validate(data)


def as_job(record: LogRecord) -> JobRecord | None:
    """The schema-2 job record of a log line (schema 1 upgraded), None for other records."""
    if isinstance(record, JobRecordV1):
        return upgrade_v1(record)
    return record if isinstance(record, JobRecord) else None


#: the keys of a serialised job record, in order
RECORD_KEYS: tuple[str, ...] = tuple(
    (info.alias or name) for name, info in JobRecord.model_fields.items()
)

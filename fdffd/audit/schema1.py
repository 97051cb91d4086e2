"""The job record, schema 1: frozen, to read and verify the lines older stations wrote.

Jobs are recorded as schema 2 now (:mod:`fdffd.audit.record`; only a record an older version
kept in a job journal is still appended as it was), but logs keep their schema-1 lines for
ever and they must keep verifying: a line verifies only when it is exactly the
canonical serialisation of this model, so **nothing here may change**, not a field, not its
order, not a default, not the cleaning of strings.  :func:`fdffd.audit.record.upgrade_v1`
turns a schema-1 record into a schema-2 view of it for reports and lookups.

Strings read from a drive (vendor, model, port, label, volume id) were cleaned of control
characters and unpaired surrogates when written; the same cleaning here keeps that a no-op.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

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

SCHEMA: Literal[1] = 1

#: the verdicts of schema 1 (frozen; schema 2 has the same list)
Verdict = Literal["ok", "rescued", "counterfeit", "defective", "failed", "refused", "interrupted"]

CapacityKind = Literal["wraparound", "dropped-zeros", "dropped-ff", "io-error", "cache", "unknown"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_HEX64 = r"^[0-9a-f]{64}$"


def _clean_v1(value: object) -> object:
    """Schema 1's cleaning: control characters and unpaired surrogates removed."""
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    return value


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


UntrustedStr = Annotated[str, BeforeValidator(_clean_v1)]
UtcTimestamp = Annotated[str, AfterValidator(_check_utc_timestamp)]
Hex64 = Annotated[str, Field(pattern=_HEX64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class DeviceInfoV1(_Model):
    """What identify found out about the drive.  No raw serial: only its HMAC."""

    path: str
    port: UntrustedStr | None = None
    bus: UntrustedStr | None = None
    vendor: UntrustedStr | None = None
    model: UntrustedStr | None = None
    serial_hmac: Hex64 | None = None
    announced_bytes: NonNegativeInt = 0
    logical_sector: NonNegativeInt = 512


class CapacityV1(_Model):
    """What the probe (and the verify pass) proved about the real capacity."""

    announced_bytes: NonNegativeInt = 0
    usable_bytes: NonNegativeInt = 0
    counterfeit: bool = False
    kind: CapacityKind | None = None
    probe_seconds: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _usable_within_announced(self) -> CapacityV1:
        if self.usable_bytes > self.announced_bytes:
            raise ValueError(
                f"usable_bytes {self.usable_bytes} exceeds announced_bytes {self.announced_bytes}"
            )
        return self


BadRange = tuple[NonNegativeInt, NonNegativeInt]


class WipeV1(_Model):
    """The write passes and the verify pass.  ``bad_ranges`` are ``[offset, length]`` pairs."""

    pattern: str = ""
    passes: NonNegativeInt = 0
    bytes_written: NonNegativeInt = 0
    verified_bytes: NonNegativeInt = 0
    mismatched_bytes: NonNegativeInt = 0
    bad_ranges: list[BadRange] = Field(default_factory=list)


class FilesystemInfoV1(_Model):
    """The filesystem the image pass wrote."""

    type: Literal["fat32", "exfat"]
    label: UntrustedStr = ""
    volume_id: UntrustedStr = ""
    partition_offset: NonNegativeInt = 0
    partition_bytes: NonNegativeInt = 0


class PayloadInfoV1(_Model):
    """The payload profile written, and whether it read back intact."""

    profile: str
    manifest_sha256: Hex64
    files: NonNegativeInt = 0
    bytes: NonNegativeInt = 0
    verified: bool = False


class StageV1(_Model):
    """Time and bytes of one pipeline stage."""

    name: str
    seconds: NonNegativeFloat = 0.0
    bytes: NonNegativeInt = 0


class ErrorInfoV1(_Model):
    """Why a job did not end ``ok``: the error's stable code, its message, the stage."""

    code: str
    message: UntrustedStr
    stage: str | None = None


class JobRecordV1(_Model):
    """One job, schema 1.  ``prev`` and ``sig`` are set by the audit log, never by the caller."""

    schema_: Literal[1] = Field(default=SCHEMA, alias="schema")
    job_id: str
    station: str
    version: str
    started_at: UtcTimestamp
    finished_at: UtcTimestamp
    verdict: Verdict
    device: DeviceInfoV1
    capacity: CapacityV1 = Field(default_factory=CapacityV1)
    wipe: WipeV1 = Field(default_factory=WipeV1)
    filesystem: FilesystemInfoV1 | None = None
    payload: PayloadInfoV1 | None = None
    stages: list[StageV1] = Field(default_factory=list)
    error: ErrorInfoV1 | None = None
    prev: Hex64 | None = None
    sig: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")] | None = None

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        validate_assignment=True,
        populate_by_name=True,  # JobRecordV1(schema_=1) as well as {"schema": 1}
        serialize_by_alias=True,  # model_dump_json() says "schema", never "schema_"
    )

    def to_json_dict(self) -> dict[str, object]:
        """The record as plain JSON values, keys in schema order (``schema`` first)."""
        return self.model_dump(mode="json", by_alias=True)

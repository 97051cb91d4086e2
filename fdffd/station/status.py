"""The station's live status: one typed model, shared by the daemon and the views.

The daemon keeps its ports as :class:`PortStatus` values, builds a :class:`StationStatus` and
answers ``{"cmd": "status"}`` on its control socket with its JSON form
(:meth:`StationStatus.to_json`).  ``fdffctl status`` and ``fdffctl watch`` turn whatever came
back into the same model with :meth:`StationStatus.read`, which never raises: the answer is
untrusted (an older daemon, a socket that is not ours), so a missing key, a wrong type or a NaN
becomes the field's "unknown" value (``None``, ``""``, ``0``, state ``unknown``), never an
exception.  Strings stay untrusted: the views clean them before they reach a terminal.

```json
{"station": "station-1", "version": "0.1.0", "now": "2026-…Z", "started_at": "2026-…Z",
 "totals": {"active": 2, "queued": 1, "done": 41,
            "by_verdict": {"ok": 38, "counterfeit": 2, "refused": 1},
            "bytes_written": 123456789, "unrecorded": 0},
 "ports": [
   {"port": "pci-0000:00:14.0-usb-0:3:1.0-scsi-0:0:0:0", "name": "3",
    "device": "/dev/sdb", "drive": "SanDisk Cruzer 16.0 GiB",
    "state": "active", "stage": "image", "percent": 42.5,
    "speed_bps": 21000000.0, "eta_seconds": 312.0, "job_id": "…",
    "last": {"verdict": "ok", "code": null, "rule": null, "wiped": true, "message": "",
             "finished_at": "2026-…Z", "job_id": "…"}}]}
```

- ``port`` is udev's ``ID_PATH`` (the device name for loop devices); ``name`` is a short label
  for volunteers (the hub port number where it can be read off the path).  With a port map
  (``[[ports]]``) every mapped port comes first, in physical order, named by its printed
  label and with its ``audience``, empty ones included.
- ``state``: ``active`` (its job has begun: it is in the job journal), ``queued`` (taken and
  journaled, waiting for a worker, or, after a restart, waiting to be seen again), ``idle`` (no
  drive, or a finished drive still plugged in: then ``last`` says how it ended).
- ``stage``: ``admit``, ``probe``, ``wipe-N``, ``image``, ``verify``, ``finish``; ``percent`` is
  the stage's progress, ``speed_bps`` the stage's current throughput, ``eta_seconds`` the time
  the *current stage* still needs at that speed (null when unknown), not the whole job's.
- ``last`` is read from the job's record by stable codes, never from its English message:
  ``verdict`` (a record verdict), ``code`` (the error's code, e.g. ``drive-removed``), ``rule``
  (the safety gate's rule for a refusal, e.g. ``read-only``), ``wiped`` (whether the drive was
  wiped; ``false`` for every drive that still holds what it came with).  ``message`` is the
  error message, for people.
- ``totals.queued`` counts the queued ports; ``totals.unrecorded`` counts finished jobs whose
  records the audit log has not taken yet (the disk under the state dir is full, or its last
  line is torn: ``fdffctl audit repair``); they are kept in the job journal and appended as
  soon as it can.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..audit.record import VERDICTS, Verdict

PortState = Literal["active", "queued", "idle", "unknown"]
"""``unknown``: a state this version does not know (only ever read, never sent)."""

_STATES = ("active", "queued", "idle")
_MAX_COUNT = 10**15


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: object) -> int:
    number = _finite(value)
    return int(number) if number is not None and 0 <= number < _MAX_COUNT else 0


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _state(value: object) -> str:
    if value is None:
        return "idle"
    return value if isinstance(value, str) and value in _STATES else "unknown"


def _verdict(value: object) -> Verdict | None:
    return next((v for v in VERDICTS if v == value), None)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _fields(value: object) -> BaseModel | Mapping[str, Any]:
    """What a nested model is built from: the model itself, a mapping, else nothing."""
    return value if isinstance(value, BaseModel | Mapping) else {}


def _fields_or_none(value: object) -> BaseModel | Mapping[str, Any] | None:
    return value if isinstance(value, BaseModel | Mapping) else None


def _each_fields(value: object) -> list[BaseModel | Mapping[str, Any]]:
    return [_fields(v) for v in value] if isinstance(value, list) else []


def _counts(value: object) -> dict[str, int]:
    return {str(k): _count(v) for k, v in _mapping(value).items() if isinstance(k, str)}


Text = Annotated[str, BeforeValidator(_text)]
OptText = Annotated[str | None, BeforeValidator(_text_or_none)]
Number = Annotated[float | None, BeforeValidator(_finite)]
Count = Annotated[int, BeforeValidator(_count)]


class _Status(BaseModel):
    # lenient by construction: every field's BeforeValidator turns a bad value into "unknown"
    model_config = ConfigDict(extra="ignore")


class LastJob(_Status):
    """How the port's last job ended, by stable codes (``message`` is for people only)."""

    verdict: Annotated[Verdict | None, BeforeValidator(_verdict)] = None
    code: OptText = None
    rule: OptText = None
    wiped: Annotated[bool | None, BeforeValidator(_flag)] = None
    message: Text = ""
    finished_at: Text = ""
    job_id: Text = ""
    #: the payload profile the drive got (the audience's edition that fit), when it got one
    profile: OptText = None

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> LastJob:
        """The summary of a job record (schema 1 or 2) that a port shows."""
        err = _mapping(record.get("error"))
        verdict = _verdict(record.get("verdict"))
        message = _text(err.get("message"))
        rule = _text_or_none(err.get("rule"))
        if rule is None and verdict == "refused":
            rule = _schema1_rule(message)
        wiped = _flag(record.get("wiped"))
        if wiped is None:  # schema 1 has no ``wiped``: these verdicts meant a verified wipe
            wiped = verdict in ("ok", "rescued", "counterfeit")
        return cls(
            verdict=verdict,
            code=_text_or_none(err.get("code")),
            rule=rule,
            wiped=wiped,
            message=message,
            finished_at=_text(record.get("finished_at")),
            job_id=_text(record.get("job_id")),
            profile=_text_or_none(_mapping(record.get("payload")).get("profile")),
        )


_SCHEMA1_RULE = re.compile(r"\(rule: ([a-z-]+)\)$")


def _schema1_rule(message: str) -> str | None:
    """A schema 1 refusal names its rule only in the fixed ``(rule: …)`` end of its message
    (the refusal's message template); schema 2 records carry ``error.rule``."""
    found = _SCHEMA1_RULE.search(message)
    return found.group(1) if found else None


class PortStatus(_Status):
    """One port (or loop device) and what is on it."""

    port: Text = ""
    name: Text = ""
    #: the audience the port serves (from the station's port map), "" without one
    audience: Text = ""
    device: Text = ""
    drive: Text = ""
    state: Annotated[PortState, BeforeValidator(_state)] = "idle"
    stage: OptText = None
    percent: Number = None
    speed_bps: Number = None
    eta_seconds: Number = None
    job_id: OptText = None
    last: Annotated[LastJob | None, BeforeValidator(_fields_or_none)] = None

    @classmethod
    def read(cls, untrusted: object) -> PortStatus:
        """A port from anything (a port of a status answer); never raises."""
        if isinstance(untrusted, PortStatus):
            return untrusted
        return cls.model_validate(dict(_mapping(untrusted)))


class Totals(_Status):
    active: Count = 0
    queued: Count = 0
    done: Count = 0
    by_verdict: Annotated[dict[str, int], BeforeValidator(_counts)] = Field(default_factory=dict)
    bytes_written: Count = 0
    #: finished jobs whose records wait for the audit log (disk full, torn last line)
    unrecorded: Count = 0


class StationStatus(_Status):
    station: Text = ""
    version: Text = ""
    now: Text = ""
    started_at: Text = ""
    totals: Annotated[Totals, BeforeValidator(_fields)] = Field(default_factory=Totals)
    ports: Annotated[list[PortStatus], BeforeValidator(_each_fields)] = Field(default_factory=list)

    @classmethod
    def read(cls, untrusted: object) -> StationStatus:
        """The status from anything (a control socket's answer); never raises."""
        if isinstance(untrusted, StationStatus):
            return untrusted
        return cls.model_validate(dict(_mapping(untrusted)))

    def to_json(self) -> dict[str, Any]:
        """The status as plain JSON values, as the control socket sends it."""
        return self.model_dump(mode="json")


def port_name(port: str, device: str) -> str:
    """A short name for a port: the last USB port number in ``ID_PATH``, else the device name."""
    if port.startswith("loop:"):
        return device.rsplit("/", 1)[-1] if device else "loop"
    if "-usb-" in port:
        usb = port.split("-usb-", 1)[1].split("-", 1)[0]  # e.g. 0:3.2:1.0
        path = usb.split(":")
        if len(path) >= 2:
            return path[1]
    return device.rsplit("/", 1)[-1] if device else port or "?"


def example_status() -> dict[str, Any]:
    """A status with one port in every state, as the control socket sends it, for renderers'
    tests and docs."""
    usb = "pci-0000:00:14.0-usb-0:{}:1.0-scsi-0:0:0:0"

    def port(n: int, device: str, drive: str, state: PortState, **kw: Any) -> PortStatus:
        return PortStatus(
            port=usb.format(n), name=str(n), device=device, drive=drive, state=state, **kw
        )

    def last(verdict: str, job: str, at: str, message: str = "", **kw: Any) -> LastJob:
        return LastJob.of_record(
            {
                "verdict": verdict,
                "job_id": job * 32,
                "finished_at": f"2026-11-25T{at}.000Z",
                "error": {"message": message, **kw} if message else None,
            }
        )

    return StationStatus(
        station="station-1",
        version="0.1.0",
        now="2026-11-25T10:00:00.000Z",
        started_at="2026-11-25T08:00:00.000Z",
        totals=Totals(
            active=2,
            queued=1,
            done=6,
            by_verdict={"ok": 3, "counterfeit": 1, "refused": 1, "failed": 1},
            bytes_written=5 << 30,
        ),
        ports=[
            port(1, "/dev/sdb", "SanDisk Cruzer 16.0 GiB", "active", stage="image",
                 percent=42.5, speed_bps=21e6, eta_seconds=312.0, job_id="a" * 32),
            port(2, "/dev/sdc", "Generic Flash 64.0 GiB", "active", stage="probe",
                 percent=10.0, job_id="b" * 32),
            port(3, "/dev/sdd", "Kingston 8.0 GiB", "queued"),
            port(4, "/dev/sde", "Toshiba 32.0 GiB", "idle", last=last("ok", "c", "09:58:00")),
            port(5, "/dev/sdf", "Generic 128.0 GiB", "idle",
                 last=last("counterfeit", "d", "09:50:00", "announces 128.0 GiB, holds 8.0 GiB",
                           code="counterfeit")),
            port(6, "/dev/sdg", "Lexar 16.0 GiB", "idle",
                 last=last("refused", "e", "09:40:00",
                           "write-protected: the drive refuses writes (flip its lock switch)",
                           code="refused", rule="read-only")),
            port(7, "", "", "idle"),
            port(8, "", "", "idle",
                 last=last("failed", "f", "09:30:00",
                           "pulled while it waited for a worker; it was not wiped",
                           code="drive-removed", stage="queued")),
        ],
    ).to_json()

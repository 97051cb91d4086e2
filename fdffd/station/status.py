"""The station's live status: what ``fdffctl status`` and ``fdffctl watch`` show.

The daemon answers ``{"cmd": "status"}`` on its control socket with one JSON object of this
shape (plain dicts, so it travels as JSON unchanged):

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
    "last": {"verdict": "ok", "message": "", "finished_at": "2026-…Z", "job_id": "…"}}]}
```

- ``port`` is udev's ``ID_PATH`` (the device name for loop devices); ``name`` is a short label
  for volunteers (the hub port number where it can be read off the path).
- ``state``: ``active`` (a job runs), ``queued`` (waiting for a worker), ``idle`` (no drive, or a
  finished drive still plugged in: then ``last`` says how it ended).
- ``stage``: ``admit``, ``probe``, ``wipe-N``, ``image``, ``verify``, ``finish``; ``percent`` is
  the stage's progress, ``speed_bps`` the current throughput, ``eta_seconds`` the estimate for the
  whole job (null when unknown).
- ``last.verdict`` is one of the record verdicts; ``message`` is the error message, if any.
- ``totals.unrecorded`` counts finished jobs whose records the audit log has not taken yet (the
  disk under the state dir is full, or its last line is torn: ``fdffctl audit repair``); they
  are kept in the job journal and appended as soon as it can.
"""

from __future__ import annotations

from typing import Any, TypedDict


class LastJob(TypedDict):
    verdict: str
    message: str
    finished_at: str
    job_id: str


class PortStatus(TypedDict):
    port: str
    name: str
    device: str
    drive: str
    state: str  # active | queued | idle
    stage: str | None
    percent: float | None
    speed_bps: float | None
    eta_seconds: float | None
    job_id: str | None
    last: LastJob | None


class Totals(TypedDict):
    active: int
    queued: int
    done: int
    by_verdict: dict[str, int]
    bytes_written: int
    #: finished jobs whose records wait for the audit log (disk full, torn last line)
    unrecorded: int


class StationStatus(TypedDict):
    station: str
    version: str
    now: str
    started_at: str
    totals: Totals
    ports: list[PortStatus]


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
    """A status with one port in every state, for renderers' tests and docs."""
    base = {
        "drive": "",
        "stage": None,
        "percent": None,
        "speed_bps": None,
        "eta_seconds": None,
        "job_id": None,
        "last": None,
    }
    usb = "pci-0000:00:14.0-usb-0:{}:1.0-scsi-0:0:0:0"
    return {
        "station": "station-1",
        "version": "0.1.0",
        "now": "2026-11-25T10:00:00.000Z",
        "started_at": "2026-11-25T08:00:00.000Z",
        "totals": {
            "active": 2,
            "queued": 1,
            "done": 5,
            "by_verdict": {"ok": 3, "counterfeit": 1, "refused": 1},
            "bytes_written": 5 << 30,
        },
        "ports": [
            {
                **base,
                "port": usb.format(1),
                "name": "1",
                "device": "/dev/sdb",
                "drive": "SanDisk Cruzer 16.0 GiB",
                "state": "active",
                "stage": "image",
                "percent": 42.5,
                "speed_bps": 21e6,
                "eta_seconds": 312.0,
                "job_id": "a" * 32,
            },
            {
                **base,
                "port": usb.format(2),
                "name": "2",
                "device": "/dev/sdc",
                "drive": "Generic Flash 64.0 GiB",
                "state": "active",
                "stage": "probe",
                "percent": 10.0,
                "speed_bps": None,
                "eta_seconds": None,
                "job_id": "b" * 32,
            },
            {
                **base,
                "port": usb.format(3),
                "name": "3",
                "device": "/dev/sdd",
                "drive": "Kingston 8.0 GiB",
                "state": "queued",
            },
            {
                **base,
                "port": usb.format(4),
                "name": "4",
                "device": "/dev/sde",
                "drive": "Toshiba 32.0 GiB",
                "state": "idle",
                "last": {
                    "verdict": "ok",
                    "message": "",
                    "finished_at": "2026-11-25T09:58:00.000Z",
                    "job_id": "c" * 32,
                },
            },
            {
                **base,
                "port": usb.format(5),
                "name": "5",
                "device": "/dev/sdf",
                "drive": "Generic 128.0 GiB",
                "state": "idle",
                "last": {
                    "verdict": "counterfeit",
                    "finished_at": "2026-11-25T09:50:00.000Z",
                    "message": "announces 128.0 GiB, holds 8.0 GiB",
                    "job_id": "d" * 32,
                },
            },
            {
                **base,
                "port": usb.format(6),
                "name": "6",
                "device": "/dev/sdg",
                "drive": "Lexar 16.0 GiB",
                "state": "idle",
                "last": {
                    "verdict": "refused",
                    "finished_at": "2026-11-25T09:40:00.000Z",
                    "message": "write-protected: the drive refuses writes (flip its lock switch) "
                    "(rule: read-only)",
                    "job_id": "e" * 32,
                },
            },
            {**base, "port": usb.format(7), "name": "7", "device": "", "state": "idle"},
        ],
    }

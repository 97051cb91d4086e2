"""Summaries of the audit log for operators and auditors (``fdffctl audit report``).

Pure functions of the records: :func:`build_report` makes a JSON-ready dict,
:func:`render_text` turns it into plain text.  Definitions:

- ``probed``: jobs that got past the safety gate (every verdict except ``refused``).
- ``counterfeit_rate``: jobs whose probe found a fake (``capacity.counterfeit``, whether the
  drive was then rejected or rescued) divided by ``probed``; null when nothing was probed.
- speeds: per stage name, total bytes / total seconds over all jobs (aggregate throughput),
  counting only stages that took time and say their bytes.
- ``per_day``: by the record's ``day`` (the UTC date the job started).  ``per_profile``: by
  payload profile (``"-"`` for jobs without a payload).
- ``not_wiped``: jobs whose drive was not wiped (``wiped`` false: refused, or did not finish).

Records come as schema 2 (:func:`fdffd.audit.log.iter_records` upgrades schema-1 lines); a
size left out of the clear (``None``) counts as 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from fdffd.audit.record import VERDICTS, JobRecord


def _verdict_counts(records: list[JobRecord]) -> dict[str, int]:
    counts = Counter(r.verdict for r in records)
    return {v: counts.get(v, 0) for v in VERDICTS}


def _summary(records: list[JobRecord]) -> dict[str, Any]:
    probed = [r for r in records if r.verdict != "refused"]
    counterfeit = sum(1 for r in records if r.capacity.counterfeit)
    return {
        "jobs": len(records),
        "by_verdict": _verdict_counts(records),
        "probed": len(probed),
        "counterfeit": counterfeit,
        "counterfeit_rate": (counterfeit / len(probed)) if probed else None,
        "not_wiped": sum(1 for r in records if not r.wiped),
        # sealed records keep sizes only as classes: drives counted per usable class
        "by_usable_class": dict(
            sorted(Counter(r.capacity.usable_class or "-" for r in records).items())
        ),
        "bytes_written": sum(r.wipe.bytes_written or 0 for r in records),
        "verified_bytes": sum(r.wipe.verified_bytes or 0 for r in records),
        "mismatched_bytes": sum(r.wipe.mismatched_bytes or 0 for r in records),
        "payload_bytes": sum(r.payload.bytes for r in records if r.payload is not None),
    }


def build_report(records: Iterable[JobRecord]) -> dict[str, Any]:
    """Totals, by verdict, counterfeit rate, bytes, mean speeds, per day and per profile."""
    items = list(records)
    stage_bytes: dict[str, int] = defaultdict(int)
    stage_seconds: dict[str, float] = defaultdict(float)
    stage_jobs: Counter[str] = Counter()
    for r in items:
        for s in r.stages:
            if s.seconds > 0 and s.bytes is not None:
                stage_bytes[s.name] += s.bytes
                stage_seconds[s.name] += s.seconds
                stage_jobs[s.name] += 1
    by_day: dict[str, list[JobRecord]] = defaultdict(list)
    by_profile: dict[str, list[JobRecord]] = defaultdict(list)
    for r in items:
        by_day[r.day].append(r)
        by_profile[r.payload.profile if r.payload is not None else "-"].append(r)
    report = _summary(items)
    report["drives"] = len({r.device.serial_hmac for r in items if r.device.serial_hmac})
    report["first_started_at"] = min((r.started_at for r in items if r.started_at), default=None)
    report["last_finished_at"] = max((r.finished_at for r in items if r.finished_at), default=None)
    report["first_day"] = min((r.day for r in items), default=None)
    report["last_day"] = max((r.day for r in items), default=None)
    report["speeds"] = {
        name: {
            "jobs": stage_jobs[name],
            "bytes": stage_bytes[name],
            "seconds": round(stage_seconds[name], 3),
            "mean_bytes_per_second": round(stage_bytes[name] / stage_seconds[name]),
        }
        for name in sorted(stage_seconds)
        if stage_bytes[name] and stage_seconds[name] > 0  # admit, finish: no bytes moved
    }
    report["per_day"] = {day: _summary(rs) for day, rs in sorted(by_day.items())}
    report["per_profile"] = {name: _summary(rs) for name, rs in sorted(by_profile.items())}
    return report


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _verdict_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {n}" for v, n in counts.items() if n) or "none"


def _rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def render_text(report: dict[str, Any]) -> str:
    """The report as plain text for a terminal."""
    lines = [
        f"jobs: {report['jobs']}  (distinct drives by serial: {report['drives']})",
        f"period: {report['first_day'] or '-'} .. {report['last_day'] or '-'}",
        f"verdicts: {_verdict_line(report['by_verdict'])}",
        f"not wiped: {report['not_wiped']} (refused, or the job did not finish)",
        "sizes: " + (", ".join(f"{c} {n}" for c, n in report["by_usable_class"].items()) or "none"),
        f"counterfeit: {report['counterfeit']} of {report['probed']} probed "
        f"({_rate(report['counterfeit_rate'])})",
        f"written: {_size(report['bytes_written'])}  verified: {_size(report['verified_bytes'])}"
        f"  mismatched: {_size(report['mismatched_bytes'])}",
    ]
    if report["speeds"]:
        lines.append("mean speeds:")
        for name, s in report["speeds"].items():
            lines.append(
                f"  {name:<10} {_size(s['mean_bytes_per_second'])}/s over {s['jobs']} jobs"
            )
    for title, key in (("per day", "per_day"), ("per payload profile", "per_profile")):
        if report[key]:
            lines.append(f"{title}:")
            for name, s in report[key].items():
                lines.append(
                    f"  {name:<12} {s['jobs']:>5} jobs  {_verdict_line(s['by_verdict'])}  "
                    f"counterfeit {_rate(s['counterfeit_rate'])}  "
                    f"written {_size(s['bytes_written'])}"
                )
    return "\n".join(lines) + "\n"

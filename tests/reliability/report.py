"""Render the reliability suite's tally (its JSON output) into docs/reliability.md.

    python -m tests.reliability.report TALLY.json [docs/reliability.md]

Replaces what lies between the ``<!-- reliability:begin -->`` and ``<!-- reliability:end -->``
markers with the figures table and the cases, and leaves the rest of the page alone.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BEGIN = "<!-- reliability:begin -->"
END = "<!-- reliability:end -->"


def _n(counts: dict[str, dict[str, int]], section: str, metric: str) -> int:
    return int(counts.get(section, {}).get(metric, 0))


def render(tally: dict[str, Any], when: str | None = None) -> str:
    counts: dict[str, dict[str, int]] = tally.get("counts", {})
    cases: dict[str, list[dict[str, str]]] = tally.get("cases", {})
    when = when or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run = "full run (`scripts/reliability`)" if tally.get("full") else "fast run"
    rows = [
        ("faults injected", _n(counts, "faults", "injected"), ""),
        ("faults survived", _n(counts, "faults", "survived"), "= injected"),
        ("bad inputs tried", _n(counts, "bad input", "tried"), ""),
        (
            "bad inputs rejected cleanly",
            _n(counts, "bad input", "rejected cleanly"),
            "= tried - accepted (inputs that were valid)",
        ),
        ("drives processed under load", _n(counts, "load", "drives processed"), ""),
        ("records written under load", _n(counts, "load", "records"), "= drives"),
        ("crash-window runs", _n(counts, "crash", "runs"), ""),
        ("crash-window runs passed", _n(counts, "crash", "runs passed"), "= runs"),
        ("insertions through crash windows", _n(counts, "crash", "insertions"), ""),
        (
            "records lost (insertions without a record, under load and through crashes)",
            _n(counts, "load", "records lost") + _n(counts, "crash", "insertions lost"),
            "0",
        ),
        ("wrong devices touched", _n(counts, "safety", "wrong devices touched"), "0"),
    ]
    shown = {
        ("faults", "injected"),
        ("faults", "survived"),
        ("bad input", "tried"),
        ("bad input", "rejected cleanly"),
        ("load", "drives processed"),
        ("load", "records"),
        ("load", "records lost"),
        ("crash", "runs"),
        ("crash", "runs passed"),
        ("crash", "insertions"),
        ("crash", "insertions lost"),
        ("safety", "wrong devices touched"),
    }
    out = [
        BEGIN,
        f"Figures of the last {run}, {when}:",
        "",
        "| what | count | target |",
        "| --- | ---: | --- |",
    ]
    out += [f"| {what} | {n} | {target} |" for what, n, target in rows]
    extra = [
        f"| {section}: {metric} | {n} | |"
        for section, metrics in sorted(counts.items())
        for metric, n in sorted(metrics.items())
        if (section, metric) not in shown
    ]
    out += extra
    for section, items in sorted(cases.items()):
        out += ["", f"**{section}** ({len(items)} cases)", ""]
        out += ["| case | outcome |", "| --- | --- |"]
        out += [f"| {c['case']} | {c['outcome']} |" for c in items]
    out.append(END)
    return "\n".join(out)


def replace_block(page: str, block: str) -> str:
    if BEGIN not in page or END not in page:
        raise SystemExit(f"the page has no {BEGIN} ... {END} block to replace")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    tally = json.loads(Path(argv[0]).read_text())
    page_path = Path(argv[1] if len(argv) > 1 else "docs/reliability.md")
    page_path.write_text(replace_block(page_path.read_text(), render(tally)))
    print(f"{page_path}: figures updated from {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

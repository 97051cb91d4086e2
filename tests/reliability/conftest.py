"""The reliability suite's tally: what each test injected, tried and survived.

Tests in this folder count what they prove through the ``tally`` fixture, *after* their
assertions pass, so a count is a fact the suite checked, never a hope:

    tally.count("faults", "injected")          # a fault was injected ...
    tally.count("faults", "survived")          # ... and everything was right afterwards
    tally.case("faults", "removed during verify", "failed, record ok, others ok")

Sections and metrics are free strings; ``docs/reliability.md`` is built from the totals by
``scripts/reliability``.  At the end of the session the totals are printed, and written as
JSON to ``$FDFFD_RELIABILITY_OUT`` when it is set.

``FDFFD_RELIABILITY=full`` (``support.FULL``, set by ``scripts/reliability``) selects the
long run: more
hypothesis examples, every fault in every stage, the 200-job load.  Without it the suite
runs its fast part, which is part of the default test run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from .support import Tally

_TALLY = Tally()


@pytest.fixture
def tally() -> Iterator[Tally]:
    yield _TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLY.counts:
        return
    terminalreporter.section("reliability tally")
    for section, counts in sorted(_TALLY.counts.items()):
        figures = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        terminalreporter.write_line(f"{section}: {figures}")
    out = os.environ.get("FDFFD_RELIABILITY_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(_TALLY.as_json(), f, indent=2, ensure_ascii=False)
            f.write("\n")

"""The README's first command works: a live station processes its drives and ends on its own."""

from __future__ import annotations

import re

from .cli_util import fdffctl


def test_demo_runs_to_the_end() -> None:
    """fdffctl demo: each simulated drive gets its verdict, the audit log verifies, exit 0."""
    run = fdffctl("demo", timeout=300)
    assert run.code == 0, run.stdout + run.stderr
    out = run.stdout
    for verdict in ("OK", "COUNTERFEIT", "REFUSED"):  # the report's column (its width varies)
        assert re.search(rf"^/dev/\S+ +{verdict} ", out, re.M), out
    assert "payload verified" in out
    assert "DONE - pull it" in out and "WRITE-PROTECTED - flip the switch" in out  # the live view
    assert "audit log:" in out and ": OK, 6 lines verified" in out

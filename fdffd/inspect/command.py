"""``fdffctl fingerprint A B [--reference R ...]``: print what two drives share.

Exit status 0 when nothing common is left unexplained, 1 when something is, 2 for
a drive or image that cannot be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import TextIO

from fdffd.imaging.footprint import known_constants
from fdffd.inspect.fingerprint import MIN_RUN, compare
from fdffd.inspect.source import open_source

#: Findings printed before the rest are only counted.
SHOWN = 40


def run_fingerprint(
    a: str, b: str, references: Sequence[str], out: TextIO, *, min_run: int = MIN_RUN
) -> int:
    """Compare drives or images ``a`` and ``b`` (and ``references``) and print the report."""
    with ExitStack() as stack:
        da, db = (stack.enter_context(open_source(p)) for p in (a, b))
        refs = [stack.enter_context(open_source(p)) for p in references]
        report = compare(da, db, refs, known_constants(), min_run=min_run)
    print(f"compared {report.compared_bytes} bytes of {a} and {b}", file=out)
    print(
        f"common to both (runs of {min_run}+ bytes, not only 00/FF): {report.common_bytes} bytes; "
        f"explained by {'the references and ' if refs else ''}the footprint: "
        f"{report.explained_bytes} bytes",
        file=out,
    )
    print(
        f"not explained: {report.unexplained_bytes} bytes in {len(report.findings)} runs",
        file=out,
    )
    for finding in report.findings[:SHOWN]:
        print("  " + finding.describe(), file=out)
    if len(report.findings) > SHOWN:
        print(f"  ... and {len(report.findings) - SHOWN} more", file=out)
    if not refs and report.findings:
        print(
            "  (without --reference, payload data and metadata count as common too: give a "
            "drive made by a real formatter and filled with the same files)",
            file=out,
        )
    return 1 if report.findings else 0

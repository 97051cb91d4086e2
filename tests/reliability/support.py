"""What the reliability suite's tests share: the run length and the tally (see conftest)."""

from __future__ import annotations

import os
from collections import Counter, defaultdict

from hypothesis import HealthCheck, settings

#: ``FDFFD_RELIABILITY=full`` (set by ``scripts/reliability``) selects the long run
FULL = os.environ.get("FDFFD_RELIABILITY") == "full"

settings.register_profile(
    "reliability-fast",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "reliability-full",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: hypothesis settings for this suite's property tests: ``@RELIABILITY_SETTINGS``
RELIABILITY_SETTINGS = settings.get_profile("reliability-full" if FULL else "reliability-fast")


class Tally:
    """Counts per (section, metric), and named cases per section, for the report."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.cases: dict[str, list[dict[str, str]]] = defaultdict(list)

    def count(self, section: str, metric: str, n: int = 1) -> None:
        self.counts[section][metric] += n

    def case(self, section: str, name: str, outcome: str) -> None:
        self.cases[section].append({"case": name, "outcome": outcome})

    def as_json(self) -> dict[str, object]:
        return {
            "full": FULL,
            "counts": {s: dict(c) for s, c in sorted(self.counts.items())},
            "cases": {s: v for s, v in sorted(self.cases.items())},
        }

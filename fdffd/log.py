"""Logging: structlog, JSON lines under systemd, readable lines on a terminal.

Every event has a fixed, greppable name (``job.started``, ``probe.counterfeit``, ...)
and a job binds its drive's context once (``log.bind(job_id=..., device=...)``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO, cast

import structlog


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (not when logging was configured):
    a caller that swaps stderr and closes it later (a test capturing output, a daemonising
    wrapper) must not leave every later log line writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, json: bool | None = None, level: str = "info") -> None:
    """Set up structlog; JSON when not on a terminal or under systemd (JOURNAL_STREAM)."""
    if json is None:
        json = bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("fdffd").bind(**context)

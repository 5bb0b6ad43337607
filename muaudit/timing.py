"""Per-phase wall-clock timings of an audit (recorded in the scorecard; never a pass/fail criterion).

Each phase that finishes (without an error) is also logged (one line; INFO when it took a second or more, else
DEBUG) on the ``muaudit`` logger, so that a run whose stderr is
not a terminal (a pipe, a CI log) shows where it is; the CLI prints those lines unless ``--quiet``.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator


LOG = logging.getLogger("muaudit")
#: Phases shorter than this are logged at DEBUG only: a progress log names what takes time, and bad input found
#: in a quick phase (e.g. a checkpoint of another architecture) stays a single stderr line.
LOG_AFTER_SECONDS = 1.0


def log_after_seconds() -> float:
    """:data:`LOG_AFTER_SECONDS`, or ``$MUAUDIT_LOG_AFTER_SECONDS`` when set to a number (0 logs every phase)."""
    import os

    try:
        return float(os.environ["MUAUDIT_LOG_AFTER_SECONDS"])
    except (KeyError, ValueError):
        return LOG_AFTER_SECONDS


class PhaseTimer:
    """Accumulates seconds per named phase: ``with timer("inference"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[phase] = self.seconds.get(phase, 0.0) + elapsed
        LOG.log(logging.INFO if elapsed >= log_after_seconds() else logging.DEBUG, "%s done in %.1f s", phase, elapsed)

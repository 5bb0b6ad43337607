"""Method-seed statistics: a method is itself random, so one run is one draw (``--method-seeds K``).

The method is run K times on the same task, original and gold models, with seeds ``seed_k``
(:func:`method_seeds`: the run's usual seed first). Each readout is then reported as the mean, the standard
deviation and a Student-t confidence interval of the mean over the K runs (``scipy.stats.t``; level 95%).

**Verdicts over seeds.** For each Streisand check, the interval of the *mean over method seeds* is compared with
the check's gold band (the gold models' range widened as in :mod:`muaudit.verdicts`) by the same rule a single run
uses (:func:`muaudit.verdicts.decide`): over- or under-forgetting when the whole interval lies beyond the band on
one side, aligned otherwise. The interval now reflects the method's seed-to-seed variation instead of one run's
sampling noise. A check that a single run leaves ``undetermined`` (the task shows no signal on it, or too few
examples) stays undetermined. With K = 1 there is no interval and no section.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

from muaudit.results import Scorecard
from muaudit.training import derive_seed
from muaudit.verdicts import UNDETERMINED, decide, summary_of

LEVEL = 0.95


def method_seeds(first: int, count: int) -> list[int]:
    """``count`` method seeds: ``first`` (the single-run seed) and seeds derived from it."""
    return [first] + [derive_seed(first, "method-seed", k) for k in range(1, count)]


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, tuple[float, float]]:
    """Mean, sample standard deviation and the Student-t interval of the mean (zero width when all agree)."""
    array = np.asarray(values, dtype=np.float64)
    mean, std = float(array.mean()), float(array.std(ddof=1))
    if std == 0.0:
        return mean, 0.0, (mean, mean)
    low, high = stats.t.interval(level, len(array) - 1, loc=mean, scale=std / math.sqrt(len(array)))
    return mean, std, (float(low), float(high))


def seed_section(cards: Sequence[Scorecard], seeds: Sequence[int]) -> dict[str, Any]:
    """The ``method_seeds`` section of a scorecard from the K runs' scorecards (module docstring)."""
    if len(cards) < 2:
        raise ValueError("method-seed statistics need at least two runs")
    readouts = []
    for i, first in enumerate(cards[0].readouts):
        values = [c.readouts[i].unlearned for c in cards]
        if any(v is None for v in values):
            continue
        mean, std, interval = mean_interval(values)
        readouts.append({"name": first.name, "unit": first.unit, "values": values, "mean": mean, "std": std,
                         "interval": list(interval), "gold": first.gold})
    verdicts = []
    for i, first in enumerate(cards[0].verdicts):
        values = [c.verdicts[i].unlearned for c in cards]
        mean, std, interval = mean_interval(values)
        determined = all(c.verdicts[i].verdict != UNDETERMINED for c in cards)
        verdict = decide(interval, first.band, first.forgotten_side) if determined else UNDETERMINED
        verdicts.append({"check": first.check, "values": values, "mean": mean, "std": std, "interval": list(interval),
                         "band": list(first.band), "forgotten_side": first.forgotten_side, "verdict": verdict})
    determined = [v for v in verdicts if v["verdict"] != UNDETERMINED]
    return {"count": len(cards), "seeds": list(seeds), "level": LEVEL, "readouts": readouts, "verdicts": verdicts,
            "verdict_summary": _summary(determined),
            "rule": "aligned unless the Student-t interval of the mean over method seeds lies entirely beyond the "
                    "gold band on one side (muaudit.seeds)"}


def _summary(verdicts: list[dict[str, Any]]) -> str:
    return summary_of(v["verdict"] for v in verdicts) if verdicts else UNDETERMINED

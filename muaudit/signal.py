"""Can this task show forgetting at all? The signal section of every scorecard.

A verdict compares the unlearned model with the gold models. It means something only if the audit could tell a
model that forgot nothing from a gold model: when the **original** model is itself indistinguishable from the
gold models on D_f, an unlearned model that did nothing would be called "aligned", and a claim check that an
untouched model would pass is no evidence. So every scorecard measures, for each verdict check, the original's
value against the gold models, with the same rule the verdicts use (:mod:`muaudit.verdicts`):

- a check **has signal** (``detectable``) when the original's sampling interval lies wholly outside the gold band
  (the gold models' range widened by ``SPREAD_FACTOR`` times itself), i.e. when the original itself would be
  called under- (or over-) forgetting by that check;
- ``snr`` = |original - gold mean| / gold spread (max - min across gold seeds) is reported as the effect size in
  units of the gold-vs-gold spread (``None`` with a single gold model).

How the verdicts use it (:func:`apply_signal`):

- no check has signal: every verdict is ``undetermined`` ("this task cannot show forgetting"), and so is the
  summary;
- a check without signal: its ``aligned`` becomes ``undetermined`` (the original would be aligned too), while an
  ``over-``/``under-forgetting`` verdict stands (the unlearned model left the gold band, which needs no contrast
  between original and gold: the Streisand effect is visible even where the original is not);
- the summary is taken over the checks that are not ``undetermined``.

**Consistency of the original with the task** (:func:`consistency_check`): a checkpoint trained on other data or
with another recipe can look "aligned" everywhere. The original saw all of D_r, so on D_r and on the test
examples of retained classes it should behave like a gold model. The check flags the original when its error
there is farther from the nearest gold model's than max(``SPREAD_FACTOR`` x the gold range, ``SAMPLING_SDS``
binomial standard deviations at the gold models' mean rate): a deliberately generous floor, because the original
legitimately differs a little (it trained on D_f too), and a false alarm would teach users to ignore the warning.
On label-flip (poisoning) tasks the test error legitimately differs (the poison is the point), so only D_r is
checked there. Measured on digits: an MLP trained on the *test* split has retain error 1.9% against the gold
models' 0% and is flagged; its test error (0.23% against 2.31%, 432 examples) stays inside the generous floor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from muaudit.metrics import proportion_interval
from muaudit.verdicts import ALIGNED, LEVEL, SPREAD_FACTOR, UNDETERMINED, Verdict, summary

SAMPLING_SDS = 3.0
NO_SIGNAL = ("the original model is indistinguishable from the gold models on D_f (no check separates them): "
             "this task cannot show forgetting")


@dataclass(frozen=True)
class SignalCheck:
    """The original against the gold models on one verdict check."""

    check: str
    original: float
    original_interval: tuple[float, float]
    golds: tuple[float, ...]
    band: tuple[float, float]
    gap: float
    gold_spread: float
    snr: float | None
    detectable: bool
    evidence: str


@dataclass(frozen=True)
class ConsistencyCheck:
    """Is the original's error where a model trained on D with the task's recipe would have it?"""

    check: str
    original: float
    original_interval: tuple[float, float]
    golds: tuple[float, ...]
    band: tuple[float, float]
    consistent: bool
    message: str


@dataclass(frozen=True)
class Signal:
    """Every signal and consistency check of one audit (the same for every method of a set-up)."""

    checks: tuple[SignalCheck, ...]
    consistency: tuple[ConsistencyCheck, ...] = ()
    distributions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def detectable(self) -> bool:
        return any(c.detectable for c in self.checks)

    @property
    def warnings(self) -> list[str]:
        return [c.message for c in self.consistency if not c.consistent]

    def check(self, name: str) -> SignalCheck | None:
        return next((c for c in self.checks if c.check == name), None)

    def line(self) -> str:
        """One plain line: is there signal, and where is it largest."""
        if not self.detectable:
            return "signal: none. " + NO_SIGNAL
        found = [c for c in self.checks if c.detectable]
        best = max(found, key=lambda c: -1.0 if c.snr is None else c.snr)
        if best.snr is not None:
            ratio = f"gap {best.snr:.1f}x the gold spread"
        else:
            ratio = "one gold model: no spread" if len(best.golds) == 1 else "the gold models agree exactly"
        return (f"signal: {len(found)} of {len(self.checks)} checks separate the original from the gold models "
                f"(largest: {best.check}, original {best.original:.4g} vs gold {np.mean(best.golds):.4g}, {ratio})")

    def to_dict(self) -> dict[str, Any]:
        return {"detectable": self.detectable, "line": self.line(), "warnings": self.warnings,
                "checks": [asdict(c) for c in self.checks], "consistency": [asdict(c) for c in self.consistency],
                "distributions": dict(self.distributions)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Signal":
        checks = tuple(SignalCheck(**{**c, "original_interval": tuple(c["original_interval"]),
                                      "golds": tuple(c["golds"]), "band": tuple(c["band"])}) for c in raw["checks"])
        consistency = tuple(ConsistencyCheck(**{**c, "original_interval": tuple(c["original_interval"]),
                                                "golds": tuple(c["golds"]), "band": tuple(c["band"])})
                            for c in raw.get("consistency", ()))
        return cls(checks, consistency, dict(raw.get("distributions", {})))


def signal_check(verdict: Verdict) -> SignalCheck:
    """The signal of one check from the verdict the rule gives the *original* model: any verdict but
    ``aligned`` means the original is separable from the gold models on that check."""
    golds = verdict.golds or (verdict.gold,)
    spread = max(golds) - min(golds)
    gap = verdict.unlearned - float(np.mean(golds))
    snr = abs(gap) / spread if spread > 0 else None
    return SignalCheck(verdict.check, verdict.unlearned, verdict.interval, tuple(golds), verdict.band, gap, spread,
                       snr, verdict.verdict != ALIGNED, "original: " + verdict.evidence)


#: Below this many forget examples no verdict is given: a bootstrap interval from so few examples is too narrow
#: (from one example it has zero width) to separate a method from the gold band. With 20 examples the percentile
#: bootstrap of a mean covers close to its nominal level; Clopper-Pearson stays valid, but every check is treated
#: alike so that a scorecard never mixes confident and unsupported verdicts.
MIN_VERDICT_EXAMPLES = 20


def too_few_examples(n_forget: int) -> str | None:
    """The reason verdicts are withheld for a forget set of ``n_forget`` examples, or ``None``."""
    if n_forget >= MIN_VERDICT_EXAMPLES:
        return None
    return (f"undetermined (too few examples): the forget set has {n_forget} example(s), fewer than the "
            f"{MIN_VERDICT_EXAMPLES} a verdict needs")


def apply_signal(verdicts: Sequence[Verdict], signal: Signal, n_forget: int | None = None
                 ) -> tuple[list[Verdict], str]:
    """The verdicts with ``undetermined`` where the task gives no contrast (module docstring) or the forget set
    is smaller than :data:`MIN_VERDICT_EXAMPLES`, and the summary."""
    few = None if n_forget is None else too_few_examples(n_forget)
    if few is not None:
        return [_undetermined(v, few) for v in verdicts], UNDETERMINED
    if not signal.detectable:
        out = [_undetermined(v, NO_SIGNAL) for v in verdicts]
        return out, UNDETERMINED
    out = []
    for v in verdicts:
        check = signal.check(v.check)
        if v.verdict == ALIGNED and check is not None and not check.detectable:
            out.append(_undetermined(v, "no signal on this check: the original is within the gold band too"))
        else:
            out.append(v)
    determined = [v for v in out if v.verdict != UNDETERMINED]
    return out, summary(determined) if determined else UNDETERMINED


def _undetermined(v: Verdict, reason: str) -> Verdict:
    return Verdict(**{**asdict(v), "verdict": UNDETERMINED, "raw_verdict": v.verdict,
                      "evidence": f"{reason} [rule alone: {v.verdict}] {v.evidence}"})


# -------------------------------------------------------------------------------------- consistency
def consistency_check(check: str, what: str, original_wrong: int, n: int, gold_wrong: Sequence[int]
                      ) -> ConsistencyCheck:
    """Compare the original's error count on ``n`` examples with the gold models' (module docstring)."""
    orig_interval = tuple(100 * v for v in proportion_interval(original_wrong, n))
    rates = [100 * g / n for g in gold_wrong]
    p = min(max(float(np.mean(rates)) / 100, 1.0 / (n + 1)), 1.0 - 1.0 / (n + 1))
    reach = max(SPREAD_FACTOR * (max(rates) - min(rates)), SAMPLING_SDS * 100 * float(np.sqrt(p * (1 - p) / n)))
    band = (min(rates) - reach, max(rates) + reach)
    value = 100 * original_wrong / n
    consistent = band[0] <= value <= band[1]
    message = (f"the original's {what} is {value:.2f}% ({LEVEL:.0%} interval {orig_interval[0]:.2f}..."
               f"{orig_interval[1]:.2f}) against the gold models' {min(rates):.2f}..{max(rates):.2f}% "
               f"(tolerated {max(band[0], 0):.2f}..{band[1]:.2f}): "
               + ("consistent with the task" if consistent else
                  "was it trained on this task's training split, with its recipe? Verdicts may be meaningless"))
    return ConsistencyCheck(check, value, (float(orig_interval[0]), float(orig_interval[1])),
                            tuple(rates), (float(band[0]), float(band[1])), consistent, message)

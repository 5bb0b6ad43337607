"""Streisand (over-forgetting) checks: two-sided verdicts relative to the gold model and its seed spread.

Unlearning succeeds when the unlearned model is indistinguishable from the gold model, so every check compares
the unlearned model's value ``u`` with the reference gold model's value ``g_0``, never with an absolute target
(attacks reference, section 5). A check has

- a **band** of values a gold model can take: from the lowest to the highest gold model's value, widened on each
  side by ``SPREAD_FACTOR`` (2) times that range, ``[min_j g_j - r, max_j g_j + r]`` with ``r = max_j g_j - min_j
  g_j`` (the noise floor). The widening is needed because a few gold seeds under-estimate the spread of the next
  one (of three gold seeds, the third falls outside the range of the first two two times in three); spanning the
  range rather than centring on ``g_0`` keeps one outlying gold seed from shifting the band. Measured: with a
  factor of 1, ``retrain`` (one more gold draw) was flagged on Fashion-MNIST for the loss attack's member rate
  (0.906 against three gold models at 0.932-0.940; that attack fits its threshold per model, which varies more
  between seeds than three seeds show), hence 2. With one gold model the band is ``{g_0}``;
  three or more seeds give a meaningful band;
- the **sampling interval** of ``u`` (Clopper-Pearson for accuracies and rates, bootstrap for means and AUCs), so
  that a difference that a different draw of D_f could erase is not called;
- a **direction**: which side of the band means "forgot more than gold" for this quantity.

The verdict is ``over-forgetting`` (the Streisand effect: D_f is *more* recognisable than never-seen data) when
the whole interval lies beyond the band on the forgotten side, ``under-forgetting`` when it lies beyond the band
on the other side, and ``aligned`` otherwise. The checks:

- ``forget_accuracy``: accuracy on D_f; lower = forgot more.
- ``forget_loss``: mean cross-entropy on D_f; higher = forgot more (the original fits D_f, so its loss is low).
- ``forget_entropy``: mean softmax entropy on D_f; the forgotten side is the side of ``g_0`` away from the
  original model (the original is confident on D_f, so usually higher entropy = forgot more; when original and
  gold agree within the tolerance, higher entropy counts as forgetting). KS and Wasserstein distances to the gold
  distribution are given as evidence.
- ``attack_auc:<attack>``: each attack's AUC of D_f against its non-members; lower = forgot more (an AUC
  significantly below the gold's, typically below 0.5, is the Streisand signature).
- ``member_rate:<attack>``: the fraction of D_f each attack calls member (the "MIA ratio" of the entropy attack);
  lower = forgot more.

The summary is ``over-forgetting`` / ``under-forgetting`` when at least one check says so and none says the
opposite, ``aligned`` when all are aligned, and ``mixed`` when checks disagree.

A fourth verdict, ``undetermined``, is given where the task cannot tell: see :mod:`muaudit.signal`, which turns
a check's ``aligned`` into ``undetermined`` when the original model would be aligned too, and every verdict
when no check separates the original from the gold models (``raw_verdict`` keeps what the rule alone said).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from muaudit.metrics import proportion_interval

UNDER, ALIGNED, OVER, UNDETERMINED = "under-forgetting", "aligned", "over-forgetting", "undetermined"
SPREAD_FACTOR = 2.0
LEVEL = 0.95


@dataclass(frozen=True)
class Verdict:
    """One two-sided check of the unlearned model against the gold band."""

    check: str
    verdict: str
    evidence: str
    unlearned: float
    gold: float
    original: float | None
    band: tuple[float, float]
    interval: tuple[float, float]
    forgotten_side: str  # "lower" or "higher"
    raw_verdict: str | None = None  # set when muaudit.signal replaced the rule's verdict by "undetermined"
    golds: tuple[float, ...] = ()  # every gold model's value (the reference first)


@dataclass(frozen=True)
class GoldReference:
    """The gold models' values of a quantity: ``values[0]`` is the reference gold, the rest extra seeds."""

    values: tuple[float, ...]

    @property
    def reference(self) -> float:
        return self.values[0]

    @property
    def tolerance(self) -> float:
        """How far beyond the gold models' range the band reaches: ``SPREAD_FACTOR`` x that range."""
        return SPREAD_FACTOR * (max(self.values) - min(self.values))

    @property
    def band(self) -> tuple[float, float]:
        return min(self.values) - self.tolerance, max(self.values) + self.tolerance


def decide(interval: tuple[float, float], band: tuple[float, float], forgotten_side: str) -> str:
    """Over/under-forgetting when the whole interval lies beyond the band on one side, else aligned."""
    low, high = interval
    if forgotten_side not in ("lower", "higher"):
        raise ValueError(f"forgotten_side must be 'lower' or 'higher', got {forgotten_side!r}")
    if high < band[0]:
        return OVER if forgotten_side == "lower" else UNDER
    if low > band[1]:
        return OVER if forgotten_side == "higher" else UNDER
    return ALIGNED


def _check(name: str, unlearned: float, interval: tuple[float, float], gold: GoldReference,
           original: float | None, forgotten_side: str, what: str, fmt: str = "{:.4f}") -> Verdict:
    verdict = decide(interval, gold.band, forgotten_side)
    f = fmt.format
    evidence = (f"{what} {f(unlearned)} ({LEVEL:.0%} interval {f(interval[0])}..{f(interval[1])}) vs gold "
                f"{f(gold.reference)} (gold models {f(min(gold.values))}..{f(max(gold.values))}, band "
                f"{f(gold.band[0])}..{f(gold.band[1])}: their range widened by {SPREAD_FACTOR:g}x itself on each side, "
                f"{len(gold.values)} gold model(s))"
                + ("" if original is None else f", original {f(original)}")
                + f"; {forgotten_side} = forgot more")
    return Verdict(name, verdict, evidence, float(unlearned), gold.reference, original, gold.band,
                   (float(interval[0]), float(interval[1])), forgotten_side, golds=gold.values)


def forget_accuracy_verdict(correct: np.ndarray, gold_accuracies: Sequence[float],
                            original_accuracy: float | None) -> Verdict:
    """``correct``: the unlearned model's per-example correctness on D_f (booleans)."""
    correct = np.asarray(correct, dtype=bool)
    return _check("forget_accuracy", float(correct.mean()), proportion_interval(int(correct.sum()), len(correct)),
                  GoldReference(tuple(gold_accuracies)), original_accuracy, "lower", "forget accuracy")


def mean_interval(values: np.ndarray, seed: int, level: float = LEVEL, n_resamples: int = 1000
                  ) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (SciPy), seeded."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=level,
                          method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def entropy_forgotten_side(gold_means: Sequence[float], original_mean: float) -> str:
    """The side of the reference gold away from the original (higher when they agree within the tolerance)."""
    gold = GoldReference(tuple(gold_means))
    if abs(gold.reference - original_mean) <= gold.tolerance:
        return "higher"
    return "higher" if gold.reference > original_mean else "lower"


def forget_loss_verdict(unlearned: np.ndarray, golds: Sequence[np.ndarray], original: np.ndarray,
                        seed: int) -> Verdict:
    """Per-example D_f cross-entropies of the unlearned, gold (reference first) and original models."""
    gold = GoldReference(tuple(float(np.mean(g)) for g in golds))
    return _check("forget_loss", float(np.mean(unlearned)), mean_interval(unlearned, seed), gold,
                  float(np.mean(original)), "higher", "mean D_f cross-entropy (nats)")


def forget_entropy_verdict(unlearned: np.ndarray, golds: Sequence[np.ndarray], original: np.ndarray,
                           seed: int) -> Verdict:
    """Per-example D_f entropies of the unlearned, gold (reference first) and original models."""
    gold = GoldReference(tuple(float(np.mean(g)) for g in golds))
    orig_mean = float(np.mean(original))
    side = entropy_forgotten_side(gold.values, orig_mean)
    verdict = _check("forget_entropy", float(np.mean(unlearned)), mean_interval(unlearned, seed), gold, orig_mean,
                     side, "mean D_f entropy (nats)")
    ks = stats.ks_2samp(unlearned, golds[0])
    w1 = stats.wasserstein_distance(unlearned, golds[0])
    extra = f"; vs gold distribution: KS {ks.statistic:.3f} (p={ks.pvalue:.2g}), Wasserstein-1 {w1:.4f}"
    return Verdict(**{**verdict.__dict__, "evidence": verdict.evidence + extra})


def attack_verdicts(attack: str, auc: float, auc_interval: tuple[float, float], gold_aucs: Sequence[float],
                    original_auc: float | None, member_rate: float, member_rate_interval: tuple[float, float],
                    gold_member_rates: Sequence[float], original_member_rate: float | None) -> list[Verdict]:
    """The AUC and member-rate checks of one attack."""
    return [
        _check(f"attack_auc:{attack}", auc, auc_interval, GoldReference(tuple(gold_aucs)), original_auc, "lower",
               f"{attack} AUC (D_f vs non-members; 0.5 = chance)"),
        _check(f"member_rate:{attack}", member_rate, member_rate_interval, GoldReference(tuple(gold_member_rates)),
               original_member_rate, "lower", f"{attack} member rate on D_f"),
    ]


def summary(verdicts: Sequence[Verdict]) -> str:
    """One word for a set of checks: over-/under-forgetting, aligned, or mixed when they disagree."""
    return summary_of(v.verdict for v in verdicts)


def summary_of(words: Iterable[str]) -> str:
    """:func:`summary` of verdict words (e.g. the verdicts over method seeds, :mod:`muaudit.seeds`)."""
    kinds = set(words)
    if OVER in kinds and UNDER in kinds:
        return "mixed"
    if OVER in kinds:
        return OVER
    if UNDER in kinds:
        return UNDER
    return ALIGNED

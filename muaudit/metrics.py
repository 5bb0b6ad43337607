"""Membership-attack metrics, computed once, centrally, with scikit-learn.

Conventions (see the reporting conventions in the project's attack reference): scores are higher for members;
TPR at a false-positive rate alpha is reported only when there are at least ``ceil(1/alpha)`` non-members, else it
is ``None`` with the reason "insufficient negatives"; balanced accuracy is evaluated at the attack's own
threshold when it has one, and at the threshold maximising balanced accuracy otherwise (labelled as such).

Confidence intervals (:func:`confidence_intervals`): the member rate at a fixed threshold is a binomial proportion
and gets the exact Clopper-Pearson interval (``scipy.stats.binomtest``); AUC, balanced accuracy and TPR at 1% FPR
get percentile bootstrap intervals (``scipy.stats.bootstrap``, members and non-members resampled independently,
seeded). AUC in the bootstrap is the Mann-Whitney U statistic / (n_members * n_nonmembers) (``scipy.stats.
mannwhitneyu``, vectorised over resamples), which equals ``roc_auc_score`` (ties count 1/2). The threshold is held
fixed, as the attack fitted it on other data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

LOW_FPRS = (0.01, 0.001)
#: Confidence level of every interval, and bootstrap resamples (AUC and balanced accuracy; TPR uses fewer).
CI_LEVEL = 0.95
N_BOOTSTRAP = 1000
N_BOOTSTRAP_TPR = 200
#: Largest number of ROC points kept in a report (log-spaced in FPR, so the low-FPR region stays resolved).
MAX_ROC_POINTS = 100


@dataclass(frozen=True)
class AttackMetrics:
    """Metrics of one attack on one model: members (forget set) vs non-members (held-out)."""

    auc: float
    tpr_at_1pct_fpr: float | None
    tpr_at_01pct_fpr: float | None
    balanced_accuracy: float
    advantage: float
    member_rate: float
    threshold: float
    threshold_source: str
    n_members: int
    n_nonmembers: int
    notes: tuple[str, ...] = ()


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float | None:
    """Highest TPR whose FPR is at most ``fpr``; ``None`` when there are too few non-members to resolve it."""
    if len(nonmembers) < math.ceil(1.0 / fpr):
        return None
    labels, scores = _stack(members, nonmembers)
    # Keep every threshold: the default drop_intermediate=True removes collinear ROC points (runs of tied scores
    # in equal proportions), which can be exactly the highest-TPR point at or below ``fpr``.
    fprs, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tprs[fprs <= fpr].max())


def tpr_at_fpr_rows(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> np.ndarray:
    """:func:`tpr_at_fpr` for every row of 2-D ``members``/``nonmembers`` at once (bootstrap resamples).

    Predicting "member" for scores >= t, the FPR stays at most ``fpr`` while at most k non-members reach t, with k
    the largest count whose rate ``k / N`` is at most ``fpr`` in floating point (as ``roc_curve``'s rates are
    compared); TPR falls as t rises, so the best t is the lowest score above the (k+1)-th largest non-member, and
    the TPR there is the fraction of members strictly above it (all of them when k = N). Checked against the
    ``roc_curve`` implementation in ``tests/test_metrics.py``.
    """
    members, nonmembers = np.atleast_2d(members), np.atleast_2d(nonmembers)
    n = nonmembers.shape[1]
    k = int(math.floor(fpr * n))
    while k + 1 <= n and (k + 1) / n <= fpr:
        k += 1
    while k > 0 and k / n > fpr:
        k -= 1
    if k >= n:
        return np.ones(len(members))
    cut = -np.partition(-nonmembers, k, axis=1)[:, k]  # the (k+1)-th largest non-member score per row
    return (members > cut[:, None]).mean(axis=1)


def best_balanced_threshold(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """The ROC threshold that maximises balanced accuracy (TPR + TNR) / 2 (the highest one among ties).

    When no finite threshold beats predicting "non-member" for everything (e.g. every member scores below every
    non-member), the result is the smallest float above the largest score: finite, and nothing is called member.
    """
    labels, scores = _stack(members, nonmembers)
    fprs, tprs, thresholds = roc_curve(labels, scores)
    # Youden's J = TPR - FPR in exact integer counts (J * P * N), so that equally good thresholds tie exactly and
    # the highest one wins, instead of whichever float rounding happens to favour.
    n_pos, n_neg = len(members), len(nonmembers)
    youden = np.rint(tprs * n_pos).astype(np.int64) * n_neg - np.rint(fprs * n_neg).astype(np.int64) * n_pos
    best = int(np.argmax(youden))
    top = float(np.max(scores))
    if not thresholds[best] <= top:  # sklearn's leading +inf (or max + 1 in old releases): the (0, 0) ROC point
        return float(np.nextafter(top, np.inf))
    return float(thresholds[best])


def attack_metrics(members: np.ndarray, nonmembers: np.ndarray, threshold: float | None) -> AttackMetrics:
    """AUC, TPR at 1% and 0.1% FPR, balanced accuracy, advantage and member rate at ``threshold``."""
    members = np.asarray(members, dtype=np.float64)
    nonmembers = np.asarray(nonmembers, dtype=np.float64)
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("attack metrics need at least one member and one non-member score")
    labels, scores = _stack(members, nonmembers)
    source = "attack"
    if threshold is None:
        threshold, source = best_balanced_threshold(members, nonmembers), "max-balanced-accuracy"
    predicted = (scores >= threshold).astype(int)
    bacc = float(balanced_accuracy_score(labels, predicted))
    tprs = [tpr_at_fpr(members, nonmembers, a) for a in LOW_FPRS]
    notes = tuple(f"TPR@{a:.1%} FPR: insufficient negatives ({len(nonmembers)} < {math.ceil(1 / a)})"
                  for a, t in zip(LOW_FPRS, tprs) if t is None)
    return AttackMetrics(
        auc=float(roc_auc_score(labels, scores)),
        tpr_at_1pct_fpr=tprs[0],
        tpr_at_01pct_fpr=tprs[1],
        balanced_accuracy=bacc,
        advantage=2.0 * bacc - 1.0,
        member_rate=float(np.mean(members >= threshold)),
        threshold=float(threshold),
        threshold_source=source,
        n_members=len(members),
        n_nonmembers=len(nonmembers),
        notes=notes,
    )


def roc_points(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) points of the ROC curve, for linear and log-log plots."""
    labels, scores = _stack(members, nonmembers)
    fprs, tprs, _ = roc_curve(labels, scores)
    return fprs, tprs


def roc_summary(members: np.ndarray, nonmembers: np.ndarray, max_points: int = MAX_ROC_POINTS) -> dict[str, list]:
    """At most ``max_points`` ROC points for a report: the step curve sampled at log-spaced FPRs.

    At each sampled FPR the highest TPR reached with FPR <= it is kept (the ROC step function), so the curve is
    exact at those FPRs; the smallest FPR sampled is ``1 / n_nonmembers`` (the resolution of the data), plus 0.
    """
    fprs, tprs = roc_points(members, nonmembers)
    n_neg = max(len(nonmembers), 1)
    # log-spaced FPRs snapped down to the achievable rates k / n_nonmembers (so no two points are the same)
    grid = np.unique(np.floor(np.geomspace(1.0 / n_neg, 1.0, max_points - 1) * n_neg + 1e-9) / n_neg)
    grid = np.concatenate([[0.0], grid[grid > 0]])
    sampled = [round(float(tprs[fprs <= f + 1e-12].max()), 8) for f in grid]
    return {"fpr": [round(float(f), 8) for f in grid], "tpr": sampled}


@dataclass(frozen=True)
class MetricIntervals:
    """Confidence intervals (level ``level``) of an attack's metrics; ``None`` where a metric is undefined."""

    level: float
    auc: tuple[float, float]
    balanced_accuracy: tuple[float, float]
    advantage: tuple[float, float]
    member_rate: tuple[float, float]
    tpr_at_1pct_fpr: tuple[float, float] | None
    method: str = ("AUC, balanced accuracy, TPR@1%: percentile bootstrap (members and non-members resampled "
                   "independently); member rate: Clopper-Pearson exact")


def proportion_interval(successes: int, total: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Clopper-Pearson exact interval of a binomial proportion (SciPy)."""
    ci = stats.binomtest(int(successes), int(total)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def _auc_statistic(members: np.ndarray, nonmembers: np.ndarray, axis: int = -1) -> np.ndarray:
    u = stats.mannwhitneyu(members, nonmembers, axis=axis, method="asymptotic", use_continuity=False).statistic
    return u / (members.shape[axis] * nonmembers.shape[axis])


def confidence_intervals(members: np.ndarray, nonmembers: np.ndarray, threshold: float, seed: int,
                         level: float = CI_LEVEL, n_resamples: int = N_BOOTSTRAP) -> MetricIntervals:
    """Intervals of AUC, balanced accuracy (at the fixed ``threshold``), member rate and TPR at 1% FPR."""
    members = np.asarray(members, dtype=np.float64)
    nonmembers = np.asarray(nonmembers, dtype=np.float64)
    rng = np.random.default_rng(seed)

    def bootstrap(statistic, resamples: int) -> tuple[float, float]:
        if len(members) < 2 or len(nonmembers) < 2:  # a single point cannot be resampled meaningfully
            value = float(statistic(members, nonmembers, axis=-1))
            return value, value
        res = stats.bootstrap((members, nonmembers), statistic, n_resamples=resamples, vectorized=True,
                              paired=False, confidence_level=level, method="percentile", random_state=rng)
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    def bacc(m: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        return ((m >= threshold).mean(axis=axis) + (n < threshold).mean(axis=axis)) / 2.0

    def tpr1(m: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        values = tpr_at_fpr_rows(m, n, LOW_FPRS[0])
        return values[0] if m.ndim == 1 else values

    rate = proportion_interval(int(np.sum(members >= threshold)), len(members), level)
    has_tpr = len(nonmembers) >= math.ceil(1.0 / LOW_FPRS[0])
    bacc_ci = bootstrap(bacc, n_resamples)
    return MetricIntervals(
        level=level,
        auc=bootstrap(_auc_statistic, n_resamples),
        balanced_accuracy=bacc_ci,
        advantage=(2 * bacc_ci[0] - 1, 2 * bacc_ci[1] - 1),
        member_rate=rate,
        tpr_at_1pct_fpr=bootstrap(tpr1, N_BOOTSTRAP_TPR) if has_tpr else None,
    )


def _stack(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.ones(len(members), dtype=int), np.zeros(len(nonmembers), dtype=int)])
    return labels, np.concatenate([np.asarray(members, float), np.asarray(nonmembers, float)])

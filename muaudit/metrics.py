"""Membership-attack metrics, computed once, centrally, with scikit-learn.

Conventions (see the reporting conventions in the project's attack reference): scores are higher for members;
TPR at a false-positive rate alpha is reported only when there are at least ``ceil(1/alpha)`` non-members, else it
is ``None`` with the reason "insufficient negatives"; balanced accuracy is evaluated at the attack's own
threshold when it has one, and at the threshold maximising balanced accuracy otherwise (labelled as such).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

LOW_FPRS = (0.01, 0.001)


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


def _stack(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.ones(len(members), dtype=int), np.zeros(len(nonmembers), dtype=int)])
    return labels, np.concatenate([np.asarray(members, float), np.asarray(nonmembers, float)])

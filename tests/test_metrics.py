"""Known-answer and oracle tests of :mod:`muaudit.metrics` (AUC, TPR at low FPR, thresholds, balanced accuracy).

Oracles: AUC as the Mann-Whitney pairwise count (ties count 1/2); TPR at FPR, balanced accuracy and the
max-balanced-accuracy threshold by brute force over every candidate threshold ``t`` with the convention
"score >= t is member".
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from muaudit import metrics as M


# ------------------------------------------------------------------------------------------------ oracles
def o_auc(members, nonmembers) -> float:
    m = np.asarray(members, float)[:, None]
    n = np.asarray(nonmembers, float)[None, :]
    return float(((m > n).sum() + 0.5 * (m == n).sum()) / (m.size * n.size))


def o_rates(members, nonmembers, t) -> tuple[float, float]:
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    return float(np.mean(members >= t)), float(np.mean(nonmembers >= t))


def o_candidates(members, nonmembers) -> list[float]:
    return sorted(set(np.concatenate([members, nonmembers]).tolist()) | {math.inf}, reverse=True)


def o_tpr_at_fpr(members, nonmembers, alpha) -> float:
    best = 0.0
    for t in o_candidates(members, nonmembers):
        tpr, fpr = o_rates(members, nonmembers, t)
        if fpr <= alpha:
            best = max(best, tpr)
    return best


def o_max_bacc(members, nonmembers) -> tuple[float, float]:
    """(max balanced accuracy, highest threshold achieving it)."""
    best, best_t = -1.0, None
    for t in o_candidates(members, nonmembers):  # descending: the first maximiser is the highest threshold
        tpr, fpr = o_rates(members, nonmembers, t)
        bacc = (tpr + 1.0 - fpr) / 2.0
        if bacc > best + 1e-15:
            best, best_t = bacc, t
    return best, best_t


# ------------------------------------------------------------------------------------------------- AUC
@pytest.mark.parametrize("members,nonmembers,expected", [
    ([3, 4, 5], [0, 1, 2], 1.0),
    ([0, 1, 2], [3, 4, 5], 0.0),
    ([1, 3, 5], [0, 2, 4], 6 / 9),          # pairs won: 1 + 2 + 3
    ([1, 2, 3], [2, 0], 4.5 / 6),           # one tie (2 vs 2) counts 1/2
    ([7, 7], [7, 7, 7], 0.5),               # all tied
    ([0.5, 2.5, 1.5, 3.5], [1.0, 2.0, 3.0, 0.0], 10 / 16),
])
def test_auc_known_answers(members, nonmembers, expected):
    got = M.attack_metrics(np.array(members, float), np.array(nonmembers, float), threshold=None)
    assert got.auc == pytest.approx(expected, abs=1e-15)
    assert got.n_members == len(members) and got.n_nonmembers == len(nonmembers)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 300), st.integers(1, 300), st.sampled_from([None, 3, 20]))
def test_auc_matches_sklearn_and_mann_whitney(seed, n_m, n_n, levels):
    rng = np.random.default_rng(seed)
    draw = (lambda n, mu: rng.normal(mu, 1.0, n)) if levels is None else \
        (lambda n, mu: np.round(rng.normal(mu, 1.0, n) * levels / 4) / levels)  # heavy ties
    members, nonmembers = draw(n_m, 0.3), draw(n_n, 0.0)
    got = M.attack_metrics(members, nonmembers, threshold=None).auc
    labels = np.r_[np.ones(n_m), np.zeros(n_n)]
    assert got == pytest.approx(roc_auc_score(labels, np.r_[members, nonmembers]), abs=1e-12)
    assert got == pytest.approx(o_auc(members, nonmembers), abs=1e-12)


# -------------------------------------------------------------------------------------- TPR at low FPR
def crafted_low_fpr():
    """1000 non-members scored 0..999; 100 members placed around the 1% and 0.1% FPR cut-offs."""
    nonmembers = np.arange(1000, dtype=float)
    members = np.r_[np.full(30, 2000.0),   # above every non-member
                    np.full(20, 995.5),    # above 4 non-members (FPR 0.4%)
                    np.full(10, 989.5),    # above 10 non-members (FPR exactly 1%)
                    np.full(5, 988.5),     # above 11 non-members (FPR 1.1%)
                    np.full(35, 500.0)]
    return members, nonmembers


def test_tpr_at_fpr_known_answer():
    members, nonmembers = crafted_low_fpr()
    # FPR <= 1%: thresholds above 989 (at most 10 non-members >= t) -> members 2000, 995.5, 989.5 -> 60/100
    assert M.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.60, abs=1e-15)
    # FPR <= 0.1%: at most one non-member (999) -> only the 30 members at 2000
    assert M.tpr_at_fpr(members, nonmembers, 0.001) == pytest.approx(0.30, abs=1e-15)
    got = M.attack_metrics(members, nonmembers, threshold=None)
    assert got.tpr_at_1pct_fpr == pytest.approx(0.60, abs=1e-15)
    assert got.tpr_at_01pct_fpr == pytest.approx(0.30, abs=1e-15)
    assert got.notes == ()


def test_tpr_at_fpr_keeps_collinear_tied_points():
    """Regression: roc_curve(drop_intermediate=True) dropped the (FPR 1%, TPR 20%) corner of equal tied runs."""
    members = np.r_[np.full(10, 3.0), np.full(10, 2.0), np.full(10, 1.0), np.zeros(70)]
    nonmembers = np.r_[np.full(5, 3.0), np.full(5, 2.0), np.full(5, 1.0), np.full(985, -1.0)]
    # t = 2: TPR 20/100, FPR 10/1000 = 1%  (t = 1 would be FPR 1.5%)
    assert M.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.20, abs=1e-15)
    assert M.tpr_at_fpr(members, nonmembers, 0.001) == 0.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 200), st.integers(1000, 1500), st.sampled_from([None, 2, 8]))
def test_tpr_at_fpr_matches_brute_force(seed, n_m, n_n, levels):
    rng = np.random.default_rng(seed)
    members, nonmembers = rng.normal(1.0, 1.0, n_m), rng.normal(0.0, 1.0, n_n)
    if levels is not None:
        members, nonmembers = np.round(members * levels) / levels, np.round(nonmembers * levels) / levels
    for alpha in M.LOW_FPRS:
        assert M.tpr_at_fpr(members, nonmembers, alpha) == pytest.approx(
            o_tpr_at_fpr(members, nonmembers, alpha), abs=1e-15)


@pytest.mark.parametrize("n_nonmembers,have_1pct,have_01pct", [
    (10, False, False), (99, False, False), (100, True, False), (999, True, False), (1000, True, True),
])
def test_insufficient_negatives(n_nonmembers, have_1pct, have_01pct):
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1, 1, 50), rng.normal(0, 1, n_nonmembers)
    got = M.attack_metrics(members, nonmembers, threshold=None)
    assert (got.tpr_at_1pct_fpr is not None) == have_1pct
    assert (got.tpr_at_01pct_fpr is not None) == have_01pct
    assert (M.tpr_at_fpr(members, nonmembers, 0.01) is None) == (not have_1pct)
    assert (M.tpr_at_fpr(members, nonmembers, 0.001) is None) == (not have_01pct)
    expected_notes = []
    if not have_1pct:
        expected_notes.append(f"TPR@1.0% FPR: insufficient negatives ({n_nonmembers} < 100)")
    if not have_01pct:
        expected_notes.append(f"TPR@0.1% FPR: insufficient negatives ({n_nonmembers} < 1000)")
    assert list(got.notes) == expected_notes
    for note in got.notes:
        assert "insufficient negatives" in note
    if have_1pct:
        assert got.tpr_at_1pct_fpr == pytest.approx(o_tpr_at_fpr(members, nonmembers, 0.01), abs=1e-15)


# ------------------------------------------------------------------- balanced accuracy and thresholds
def test_balanced_accuracy_and_member_rate_at_given_threshold():
    members = np.array([1.0, 2.0, 3.0, 4.0])
    nonmembers = np.array([0.0, 1.0, 2.5, 5.0, -1.0])
    got = M.attack_metrics(members, nonmembers, threshold=2.0)
    # members >= 2: 3/4; non-members >= 2: {2.5, 5} = 2/5  ->  bacc = (0.75 + 0.6) / 2
    assert got.balanced_accuracy == pytest.approx(0.675, abs=1e-15)
    assert got.advantage == pytest.approx(0.35, abs=1e-15)
    assert got.member_rate == pytest.approx(0.75, abs=1e-15)
    assert got.threshold == 2.0 and got.threshold_source == "attack"
    # a score equal to the threshold counts as member
    at_edge = M.attack_metrics(members, nonmembers, threshold=4.0)
    assert at_edge.member_rate == 0.25
    assert at_edge.balanced_accuracy == pytest.approx((0.25 + 0.8) / 2, abs=1e-15)


def test_threshold_none_uses_max_balanced_accuracy_known_answer():
    members = np.array([1.0, 3.0, 4.0, 5.0])
    nonmembers = np.array([0.0, 1.0, 2.0, 3.5])
    # t=5: (.25, 0) .625 | t=4: (.5, 0) .75 | t=3.5: (.5,.25) .625 | t=3: (.75,.25) .75 | t=2: .625 | t=1: .625
    got = M.attack_metrics(members, nonmembers, threshold=None)
    assert got.threshold_source == "max-balanced-accuracy"
    assert got.threshold == 4.0  # the higher of the two maximisers
    assert got.balanced_accuracy == pytest.approx(0.75, abs=1e-15)
    assert got.advantage == pytest.approx(0.5, abs=1e-15)
    assert got.member_rate == pytest.approx(0.5, abs=1e-15)
    assert M.best_balanced_threshold(members, nonmembers) == 4.0


def test_threshold_when_nothing_beats_chance():
    """Every member below every non-member (Streisand-like): the best threshold calls nobody a member."""
    members, nonmembers = np.array([0.0, 1.0, 2.0]), np.array([5.0, 6.0, 7.0])
    got = M.attack_metrics(members, nonmembers, threshold=None)
    assert got.auc == 0.0
    assert math.isfinite(got.threshold) and got.threshold > 7.0
    assert got.balanced_accuracy == 0.5 and got.advantage == 0.0 and got.member_rate == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 80), st.integers(1, 80), st.floats(-2, 2),
       st.sampled_from([None, 1, 4]))
def test_best_threshold_matches_brute_force(seed, n_m, n_n, shift, levels):
    rng = np.random.default_rng(seed)
    members, nonmembers = rng.normal(shift, 1, n_m), rng.normal(0, 1, n_n)
    if levels is not None:
        members, nonmembers = np.round(members * levels) / levels, np.round(nonmembers * levels) / levels
    best_bacc, best_t = o_max_bacc(members, nonmembers)
    got = M.attack_metrics(members, nonmembers, threshold=None)
    assert got.threshold_source == "max-balanced-accuracy"
    assert math.isfinite(got.threshold)
    assert got.balanced_accuracy == pytest.approx(best_bacc, abs=1e-12)
    tpr, fpr = o_rates(members, nonmembers, got.threshold)
    assert got.balanced_accuracy == pytest.approx((tpr + 1 - fpr) / 2, abs=1e-12)
    assert got.member_rate == pytest.approx(tpr, abs=1e-15)
    if math.isfinite(best_t):
        assert got.threshold == best_t


def test_roc_points_and_empty_inputs():
    fprs, tprs = M.roc_points(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert fprs[0] == 0.0 and tprs[-1] == 1.0 and fprs[-1] == 1.0
    assert np.all(np.diff(fprs) >= 0) and np.all(np.diff(tprs) >= 0)
    with pytest.raises(ValueError):
        M.attack_metrics(np.array([]), np.array([1.0]), None)
    with pytest.raises(ValueError):
        M.attack_metrics(np.array([1.0]), np.array([]), None)


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.05, 0.3])
def test_vectorised_tpr_at_fpr_matches_the_roc_curve_implementation(fpr):
    """The bootstrap's row-wise TPR at low FPR against sklearn's ROC (rounded scores: many ties)."""
    from muaudit.metrics import tpr_at_fpr, tpr_at_fpr_rows

    rng = np.random.default_rng(7)
    for decimals in (0, 1, 3):
        members = np.round(rng.normal(0.4, 1.0, size=(20, 37)), decimals)
        nonmembers = np.round(rng.normal(0.0, 1.0, size=(20, 1200)), decimals)
        expected = [tpr_at_fpr(m, n, fpr) for m, n in zip(members, nonmembers)]
        np.testing.assert_array_equal(tpr_at_fpr_rows(members, nonmembers, fpr), expected)

"""LiRA / U-LiRA numerical core: signal, keep matrix, Gaussian fits, scores, and convergence to the analytic ROC."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from muaudit.metrics import tpr_at_fpr
from muaudit_attacks.likelihood import (
    balanced_keep_matrix,
    fit_gaussians,
    lira_offline,
    lira_online,
    logit_scaled_confidence,
)


def _direct_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log(p_y) - log(1 - p_y) from the softmax: fine for moderate logits."""
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p_y = np.take_along_axis(p, labels[..., None], -1)[..., 0]
    return np.log(p_y) - np.log1p(-p_y)


def test_logit_scaled_confidence_matches_direct_formula():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 3, (50, 10)), rng.integers(0, 10, 50)
    np.testing.assert_allclose(logit_scaled_confidence(logits, labels), _direct_phi(logits, labels), rtol=1e-10)


def test_logit_scaled_confidence_is_stable_for_huge_margins():
    logits = np.array([[1e4, 0.0, 0.0], [1e4, 0.0, 0.0], [0.0, -1e4, -1e4]])
    phi = logit_scaled_confidence(logits, np.array([0, 1, 0]))
    assert phi[0] == pytest.approx(1e4 - math.log(2), rel=1e-15)  # p_y rounds to 1: the softmax form gives inf
    assert phi[1] == pytest.approx(-1e4, rel=1e-15)
    assert phi[2] == pytest.approx(1e4 - math.log(2), rel=1e-15)
    assert np.all(np.isfinite(phi))


def test_logit_scaled_confidence_batch_shapes_and_tensors():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(3, 5, 4)), rng.integers(0, 4, (3, 5))
    phi = logit_scaled_confidence(logits, labels)
    assert phi.shape == (3, 5) and phi.dtype == np.float64
    for m in range(3):
        np.testing.assert_allclose(phi[m], logit_scaled_confidence(logits[m], labels[m]), rtol=1e-12)
    tensor = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    np.testing.assert_allclose(logit_scaled_confidence(tensor, torch.tensor(labels)), phi, rtol=1e-5)


def test_logit_scaled_confidence_rejects_bad_input():
    with pytest.raises(ValueError, match="labels shape"):
        logit_scaled_confidence(np.zeros((4, 3)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="K >= 2"):
        logit_scaled_confidence(np.zeros((4, 1)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="labels must lie"):
        logit_scaled_confidence(np.zeros((4, 3)), np.array([0, 1, 2, 3]))


def test_balanced_keep_matrix():
    keep = balanced_keep_matrix(8, 1000, seed=3)
    assert keep.shape == (8, 1000) and keep.dtype == np.bool_
    assert np.all(keep.sum(axis=0) == 4)
    assert 0.45 < keep.mean(axis=1).min() and keep.mean(axis=1).max() < 0.55  # each shadow sees about half
    np.testing.assert_array_equal(keep, balanced_keep_matrix(8, 1000, seed=3))
    assert not np.array_equal(keep, balanced_keep_matrix(8, 1000, seed=4))
    for bad in (7, 0, -2):
        with pytest.raises(ValueError, match="even"):
            balanced_keep_matrix(bad, 10, seed=0)


# Hand-built shadows: M = 4, N = 2.
#   example 0: IN {1, 3} -> median 2, std 1;     OUT {2, 6}   -> median 4, std 2
#   example 1: IN {14, 20} -> median 17, std 3;  OUT {10, 11} -> median 10.5, std 0.5
# Pooled residuals about the medians: IN (1 + 1 + 9 + 9) / 4 = 5, OUT (4 + 4 + 0.25 + 0.25) / 4 = 2.125.
PHI = np.array([[1.0, 10.0], [3.0, 14.0], [2.0, 11.0], [6.0, 20.0]])
KEEP = np.array([[True, False], [True, True], [False, False], [False, True]])


def _log_normal(x: float, mean: float, std: float) -> float:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def test_fit_known_answer_per_example_and_scores():
    fit = fit_gaussians(PHI, KEEP, variance="per-example")
    np.testing.assert_allclose(fit.mean_in, [2.0, 17.0])
    np.testing.assert_allclose(fit.std_in, [1.0, 3.0])
    np.testing.assert_allclose(fit.mean_out, [4.0, 10.5])
    np.testing.assert_allclose(fit.std_out, [2.0, 0.5])
    np.testing.assert_array_equal(fit.n_in, [2, 2])
    np.testing.assert_array_equal(fit.n_out, [2, 2])
    target = np.array([3.0, 12.0])
    expected_online = [_log_normal(3, 2, 1) - _log_normal(3, 4, 2), _log_normal(12, 17, 3) - _log_normal(12, 10.5, 0.5)]
    np.testing.assert_allclose(lira_online(target, fit), expected_online, rtol=1e-12)
    assert expected_online[0] == pytest.approx(-0.375 + math.log(2))
    # Offline: log Pr[Z <= phi], Z ~ N(mu_out, s_out^2), with Phi(z) = erfc(-z / sqrt 2) / 2.
    expected_offline = [math.log(0.5 * math.erfc(0.5 / math.sqrt(2))), math.log(0.5 * math.erfc(-3 / math.sqrt(2)))]
    np.testing.assert_allclose(lira_offline(target, fit), expected_offline, rtol=1e-12)


def test_fit_known_answer_global_and_auto():
    fit = fit_gaussians(PHI, KEEP, variance="global")
    np.testing.assert_allclose(fit.std_in, [math.sqrt(5.0)] * 2)
    np.testing.assert_allclose(fit.std_out, [math.sqrt(2.125)] * 2)
    np.testing.assert_allclose(fit.mean_in, [2.0, 17.0])
    assert fit_gaussians(PHI, KEEP).variance == "global"  # 2 shadows per side < 64
    auto = fit_gaussians(PHI, KEEP, min_per_example=2)
    assert auto.variance == "per-example" and auto.variance_requested == "auto"
    assert auto.settings["n_in_min"] == 2 and auto.settings["location"] == "median"


def test_fit_uses_the_median_not_the_mean():
    phi = np.array([[0.0], [1.0], [10.0], [4.0], [6.0]])
    keep = np.array([[True], [True], [True], [False], [False]])
    fit = fit_gaussians(phi, keep, variance="per-example")
    assert fit.mean_in[0] == 1.0 and fit.mean_out[0] == 5.0


def test_global_std_is_the_within_example_spread():
    """[DECISION] check: between-example spread (std 3) must not leak into the global std (true 0.5)."""
    rng = np.random.default_rng(5)
    keep = balanced_keep_matrix(16, 2000, seed=5)
    phi = rng.normal(0, 3, 2000) + 1.0 * keep + 0.5 * rng.normal(size=(16, 2000))
    fit = fit_gaussians(phi, keep, variance="global")
    assert fit.std_in[0] == pytest.approx(0.5, rel=0.1) and fit.std_out[0] == pytest.approx(0.5, rel=0.1)
    assert np.std(phi[keep]) > 2.5  # what Carlini's fix_variance would have used


def test_fit_rejects_bad_input():
    keep = KEEP.copy()
    keep[:, 1] = True
    with pytest.raises(ValueError, match="1 of 2 examples have no OUT"):
        fit_gaussians(PHI, keep)
    with pytest.raises(ValueError, match="variance"):
        fit_gaussians(PHI, KEEP, variance="pooled")
    with pytest.raises(ValueError, match="boolean"):
        fit_gaussians(PHI, KEEP.astype(int))
    with pytest.raises(ValueError, match="phi_target"):
        lira_online(np.zeros(3), fit_gaussians(PHI, KEEP))


def test_constant_shadows_give_finite_scores():
    phi = np.array([[1.0], [1.0], [0.0], [0.0]])
    fit = fit_gaussians(phi, np.array([[True], [True], [False], [False]]), variance="per-example")
    assert np.isfinite(lira_online(np.array([0.5]), fit)).all()
    assert lira_online(np.array([1.0]), fit)[0] > lira_online(np.array([0.0]), fit)[0]


# Synthetic Gaussian signals: hardness mu_out_x ~ N(0, 3^2), mu_in_x = mu_out_x + D, common SIGMA.
# The best test knows mu_out_x and thresholds phi - mu_out_x ~ N(D, SIGMA^2) (members) vs N(0, SIGMA^2):
#   AUC = Pr[N(D, s^2) > N(0, s^2)] = Pr[N(D, 2 s^2) > 0] = Phi(D / (s sqrt 2));
#   FPR a at threshold t = s Phi^-1(1 - a), so TPR = Pr[N(D, s^2) > t] = 1 - Phi(Phi^-1(1 - a) - D / s).
D, SIGMA, SPREAD, N_EXAMPLES = 2.0, 1.0, 3.0, 10_000
AUC_ANALYTIC = norm.cdf(D / (SIGMA * math.sqrt(2)))
TPR1_ANALYTIC = 1 - norm.cdf(norm.ppf(0.99) - D / SIGMA)


def _synthetic_target(seed: int):
    rng = np.random.default_rng(seed)
    mu_out = rng.normal(0, SPREAD, N_EXAMPLES)
    member = rng.permutation(N_EXAMPLES) < N_EXAMPLES // 2
    phi_target = mu_out + D * member + SIGMA * rng.normal(size=N_EXAMPLES)
    return rng, mu_out, member, phi_target


def _auc_tpr(scores: np.ndarray, member: np.ndarray) -> tuple[float, float]:
    return float(roc_auc_score(member, scores)), tpr_at_fpr(scores[member], scores[~member], 0.01)


def test_analytic_roc_of_the_oracle():
    """The formulas above hold for the known-parameter test on the same data (checks the derivation)."""
    _, mu_out, member, phi_target = _synthetic_target(seed=0)
    auc, tpr = _auc_tpr(phi_target - mu_out, member)
    assert AUC_ANALYTIC == pytest.approx(0.9214, abs=1e-4) and TPR1_ANALYTIC == pytest.approx(0.3721, abs=1e-4)
    assert auc == pytest.approx(AUC_ANALYTIC, abs=0.01) and tpr == pytest.approx(TPR1_ANALYTIC, abs=0.04)


@pytest.mark.parametrize("score", [lira_online, lira_offline])
def test_lira_approaches_the_analytic_roc_as_shadows_grow(score):
    rng, mu_out, member, phi_target = _synthetic_target(seed=0)
    auc_gaps, tpr_gaps = [], []
    for m in (4, 16, 64, 256):
        keep = balanced_keep_matrix(m, N_EXAMPLES, seed=m)
        shadows = mu_out + D * keep + SIGMA * rng.normal(size=(m, N_EXAMPLES))
        auc, tpr = _auc_tpr(score(phi_target, fit_gaussians(shadows, keep)), member)
        auc_gaps.append(abs(auc - AUC_ANALYTIC))
        tpr_gaps.append(abs(tpr - TPR1_ANALYTIC))
    assert auc_gaps[0] > 0.03 and auc_gaps[-1] < 0.01, auc_gaps
    assert all(b <= a + 0.005 for a, b in zip(auc_gaps, auc_gaps[1:])), auc_gaps
    assert tpr_gaps[0] > 0.08 and tpr_gaps[-1] < 0.05 and tpr_gaps[-1] < tpr_gaps[0] / 2, tpr_gaps
    assert all(b <= a + 0.01 for a, b in zip(tpr_gaps, tpr_gaps[1:])), tpr_gaps

    # LiRA (256 shadows) beats the population attack (one global threshold on raw phi) by a wide margin: the
    # population attack sees members N(D, s^2 + 9) vs non-members N(0, s^2 + 9), AUC Phi(D / sqrt(2 (s^2 + 9))).
    pop_auc, pop_tpr = _auc_tpr(phi_target, member)
    assert pop_auc == pytest.approx(norm.cdf(D / math.sqrt(2 * (SIGMA**2 + SPREAD**2))), abs=0.015)
    assert auc - pop_auc > 0.2 and tpr > 4 * pop_tpr


def test_orientation_members_score_higher():
    rng, mu_out, member, phi_target = _synthetic_target(seed=1)
    keep = balanced_keep_matrix(32, N_EXAMPLES, seed=1)
    fit = fit_gaussians(mu_out + D * keep + SIGMA * rng.normal(size=(32, N_EXAMPLES)), keep)
    for score in (lira_online, lira_offline):
        s = score(phi_target, fit)
        assert s[member].mean() > s[~member].mean() and roc_auc_score(member, s) > 0.85
        assert np.all(score(fit.mean_in, fit) > score(fit.mean_out, fit))


@pytest.mark.parametrize("score", [lira_online, lira_offline])
def test_null_target_from_out_gives_chance(score):
    """Both groups drawn from the OUT distribution: AUC within 4 standard errors of 0.5."""
    rng, mu_out, member, _ = _synthetic_target(seed=2)
    phi_target = mu_out + SIGMA * rng.normal(size=N_EXAMPLES)
    keep = balanced_keep_matrix(64, N_EXAMPLES, seed=2)
    fit = fit_gaussians(mu_out + D * keep + SIGMA * rng.normal(size=(64, N_EXAMPLES)), keep)
    n1, n0 = int(member.sum()), int((~member).sum())
    se = math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))  # null standard error of the Mann-Whitney AUC
    assert abs(roc_auc_score(member, score(phi_target, fit)) - 0.5) < 4 * se

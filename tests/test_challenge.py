"""NeurIPS 2023 unlearning challenge score: per-example epsilon, binning, forgetting quality, final score."""
from __future__ import annotations

import math

import numpy as np
import pytest

from muaudit.challenge import (
    DELTA,
    EPSILON_CAP,
    challenge_score,
    forgetting_quality,
    max_resolvable_epsilon,
    per_example_epsilon,
)


def test_hand_computed_epsilon_tiny_case():
    """Gold {0, 1, 2}, unlearned {1.5, 2.5, 3.5} (one example, 3 models each).

    Unlearned has the larger median (positive). Single thresholds: only t in (1.5, 2] leaves both error rates
    non-zero: TPR 2/3, FPR 1/3, FNR 1/3. Double thresholds (ranges equal, so gold is the "peakier" positive): the
    sorted values are g0 g1 u0 g2 u1 u2 and the best interval holds two gold and one unlearned value (FNR = FPR =
    1/3); every other usable interval gives epsilon <= 0 and intervals with all three gold values have FNR = 0
    (discarded). So epsilon = log(1 - delta - 1/3) - log(1/3) = log(2 - 3 delta).
    """
    gold = np.array([[0.0], [1.0], [2.0]])
    unlearned = np.array([[1.5], [2.5], [3.5]])
    eps = per_example_epsilon(unlearned, gold)
    assert eps.shape == (1,)
    assert eps[0] == pytest.approx(math.log(2 - 3 * DELTA), rel=1e-12)
    # The roles are symmetric: swapping the samples gives the same epsilon.
    assert per_example_epsilon(gold, unlearned)[0] == pytest.approx(eps[0], rel=1e-12)
    # 3 models: bins up to ceil(log 2) = 1, so eps 0.693 lands in [0.5, 1): 1/2 point.
    result = challenge_score(unlearned, gold, 0.9, 0.9, 0.8, 0.8)
    assert result.max_epsilon == 1.0 and result.forgetting_quality == 0.5


def test_binning_values():
    assert forgetting_quality(np.array([0.2])) == 1.0
    assert forgetting_quality(np.array([0.7])) == 0.5
    assert forgetting_quality(np.array([1.2])) == 0.25
    assert forgetting_quality(np.array([0.0, 0.5, 1.0])) == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert forgetting_quality(np.array([0.2, 0.7, 1.2])) == pytest.approx(1.75 / 3)
    assert forgetting_quality(np.array([1.2]), bin_width=1.0) == 0.5
    # Bins exist only up to max_epsilon (metric.py: ceil(log(n - 1)) = 7 for 512 models).
    assert forgetting_quality(np.array([6.9]), max_epsilon=7.0) == 2.0**-13
    assert forgetting_quality(np.array([7.0, EPSILON_CAP]), max_epsilon=7.0) == 0.0
    assert forgetting_quality(np.array([1.2]), max_epsilon=1.0) == 0.0
    with pytest.raises(ValueError):
        forgetting_quality(np.array([-0.1]))
    with pytest.raises(ValueError):
        forgetting_quality(np.array([np.nan]))


def test_max_resolvable_epsilon():
    assert max_resolvable_epsilon(512) == 7.0
    assert max_resolvable_epsilon(64) == 5.0
    assert max_resolvable_epsilon(3) == 1.0
    with pytest.raises(ValueError):
        max_resolvable_epsilon(2)


def _samples(seed: int, n: int, examples: int, shift: float):
    rng = np.random.default_rng(seed)
    hardness = rng.normal(0, 2, examples)
    gold = hardness + rng.normal(size=(n, examples))
    unlearned = hardness + shift + rng.normal(size=(n, examples))
    return unlearned, gold


def test_identical_distributions_score_near_the_metric_noise_floor():
    """Unlearned and gold drawn from the same distribution: epsilon stays small, far below the cap.

    The metric's own noise floor is not zero: with 512 models per side the max over thresholds of the empirical
    tail-ratio statistics gives epsilons around log 3 to log 9 even for identical distributions (measured here:
    median ~1.5, F ~ 0.2). F for identical distributions is the ceiling a perfect unlearner can reach.
    """
    unlearned, gold = _samples(seed=0, n=512, examples=12, shift=0.0)
    eps = per_example_epsilon(unlearned, gold)
    assert np.all(eps < 2.5) and np.median(eps) < 2.0
    quality = forgetting_quality(eps, max_epsilon=max_resolvable_epsilon(512))
    shifted = per_example_epsilon(*_samples(seed=0, n=512, examples=12, shift=1.0))
    assert np.median(shifted) > 2.5 and shifted.mean() > eps.mean() + 1.0
    assert quality > 4 * forgetting_quality(shifted, max_epsilon=7.0)
    assert quality > 0.1


def test_separated_distributions_hit_the_cap():
    unlearned, gold = _samples(seed=1, n=64, examples=5, shift=20.0)
    result = challenge_score(unlearned, gold, 0.9, 0.9, 0.8, 0.8)
    np.testing.assert_array_equal(result.epsilons, EPSILON_CAP)
    assert result.forgetting_quality == 0.0 and result.score == 0.0


def test_peaky_unlearned_distribution_is_capped():
    """Unlearned models that all output (nearly) the same confidence: range ratio < 1% -> the cap (metric.py)."""
    rng = np.random.default_rng(2)
    gold = rng.normal(size=(64, 3))
    unlearned = np.median(gold, axis=0) + 1e-4 * rng.normal(size=(64, 3))
    np.testing.assert_array_equal(per_example_epsilon(unlearned, gold), EPSILON_CAP)


def test_constant_samples():
    same = np.ones((4, 2))
    np.testing.assert_array_equal(per_example_epsilon(same, same), 0.0)
    np.testing.assert_array_equal(per_example_epsilon(same, same + 1.0), EPSILON_CAP)


def test_score_multiplies_the_accuracy_ratios():
    unlearned, gold = _samples(seed=3, n=16, examples=6, shift=0.0)
    result = challenge_score(unlearned, gold, retain_acc_u=0.9, retain_acc_gold=1.0, test_acc_u=np.array([0.6, 0.8]),
                             test_acc_gold=0.8)
    assert result.retain_ratio == pytest.approx(0.9) and result.test_ratio == pytest.approx(0.875)
    assert result.score == pytest.approx(result.forgetting_quality * 0.9 * 0.875)
    assert result.epsilons.shape == (6,)
    assert (result.n_unlearned, result.n_gold, result.n_examples) == (16, 16, 6)
    assert result.delta == DELTA and result.bin_width == 0.5 and result.max_epsilon == 3.0
    assert any("16 models per side" in note for note in result.notes)


def test_invalid_input():
    ok = np.zeros((4, 3)) + np.arange(4)[:, None]
    with pytest.raises(ValueError, match="at least 3"):
        challenge_score(ok[:2], ok, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="same N"):
        per_example_epsilon(ok, ok[:, :2])
    with pytest.raises(ValueError, match="non-finite"):
        per_example_epsilon(np.full((4, 3), np.nan), ok)
    with pytest.raises(ValueError, match="positive"):
        challenge_score(ok, ok, 1, 0.0, 1, 1)
